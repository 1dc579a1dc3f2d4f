"""Callbacks: what happens beside training (logging, progress elsewhere), hung on three plain hooks.

A callback is any object with some of these methods; the training loop calls those it has:

    on_train_start(model)      once, before the first epoch
    on_epoch_end(record)       after every finished epoch, with its EpochRecord
    on_train_end(history)      once, at the end, also when training raised (so files are closed)

Built in: `CSVLogger` (one row per epoch) and `TensorBoardLogger` (`torch.utils.tensorboard`, the
optional extra `loopnets[tensorboard]`); `logger(name, directory)` builds them by name for configs.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

HOOKS = ("on_train_start", "on_epoch_end", "on_train_end")


class CSVLogger:
    """Writes one row per epoch (the EpochRecord's columns) to `path`, flushed after every epoch.

    The file is created at the start of training (its folder too) and replaced if it exists.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = self._writer = None

    def on_train_start(self, model: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", newline="", encoding="utf-8")
        self._writer = None

    def on_epoch_end(self, record: Any) -> None:
        row = asdict(record)
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(row))
            self._writer.writeheader()
        self._writer.writerow({k: "" if v is None else v for k, v in row.items()})
        self._file.flush()

    def on_train_end(self, history: Any) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoardLogger:
    """Writes every epoch's numbers as TensorBoard scalars (`tensorboard --logdir DIRECTORY`).

    Each column of the EpochRecord but `epoch` becomes a scalar ("train_loss", "val_loss", ...)
    at step = epoch. Needs the `tensorboard` package: `pip install loopnets[tensorboard]`.
    """

    def __init__(self, directory: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch.utils.tensorboard imports the tensorboard package
            raise ImportError(
                "TensorBoardLogger needs the tensorboard package: pip install 'loopnets[tensorboard]' "
                "(or pip install tensorboard)"
            ) from None
        self.directory = Path(directory)
        self._writer_class = SummaryWriter
        self._writer = None

    def on_train_start(self, model: Any) -> None:
        self._writer = self._writer_class(log_dir=str(self.directory))

    def on_epoch_end(self, record: Any) -> None:
        for name, value in asdict(record).items():
            if name != "epoch" and value is not None and math.isfinite(value):
                self._writer.add_scalar(name, value, global_step=record.epoch)
        self._writer.flush()

    def on_train_end(self, history: Any) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


LOGGERS = {"csv": (CSVLogger, "metrics.csv"), "tensorboard": (TensorBoardLogger, "tensorboard")}


def logger(name: str, directory: str | Path) -> CSVLogger | TensorBoardLogger:
    """A built-in logger by name, writing inside `directory`: "csv" -> directory/metrics.csv,
    "tensorboard" -> directory/tensorboard/ (the names configs use in `[train] loggers`)."""
    if name not in LOGGERS:
        raise ValueError(f"unknown logger {name!r}; choose one of {', '.join(LOGGERS)}")
    cls, place = LOGGERS[name]
    return cls(Path(directory) / place)


def check_callbacks(callbacks: Any) -> list:
    """The callbacks as a list; TypeError naming any object that has none of the hooks."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        callbacks = [callbacks]
    for callback in callbacks:
        if isinstance(callback, str):
            raise TypeError(f"callback {callback!r} is a name; build the logger with "
                            f"loopnets.training.logger({callback!r}, directory) (names: {', '.join(LOGGERS)})")
        if not any(callable(getattr(callback, hook, None)) for hook in HOOKS):
            raise TypeError(f"callback {type(callback).__name__} has none of the hooks {', '.join(HOOKS)}; "
                            "give it at least one of these methods")
    return list(callbacks)


def call(callbacks: list, hook: str, argument: Any) -> None:
    """Call `hook(argument)` on every callback that has it, in order."""
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(argument)
