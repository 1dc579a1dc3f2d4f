"""The training engine: one loop (`engine.train`), its data sources, devices, callbacks and loggers.

`loopnets.fit` / `loopnets.evaluate` (`loopnets.training.fit`) and `loopnets.models.inn.fit_sequences` /
`fit_iterations` are its fronts. What the config layer maps onto: `logger(name, directory)` for
`loggers = ["csv", "tensorboard"]`, and fit's `device`, `precision`, `scheduler`, `clip` arguments.
"""

from loopnets.training.callbacks import LOGGERS, CSVLogger, TensorBoardLogger, logger
from loopnets.training.device import resolve_device
from loopnets.training.engine import EVAL_BATCH_SIZE, Task, train
from loopnets.training.history import EpochRecord, History, TrainingDiverged

__all__ = [
    "train",
    "Task",
    "EVAL_BATCH_SIZE",
    "EpochRecord",
    "History",
    "TrainingDiverged",
    "CSVLogger",
    "TensorBoardLogger",
    "logger",
    "LOGGERS",
    "resolve_device",
]
