"""loopnets: neural networks with feedback connections (layer reuse) in PyTorch.

The public API is exactly what this module re-exports; everything else is private.
"""

from loopnets.backprop import Combine, Couple, Implicit, OneStep, Tied, Truncated
from loopnets.batched import ManyHistories, fit_many
from loopnets.checkpoint import CheckpointError, load, save
from loopnets.dropout import Dropout
from loopnets.loop import Loop, tie_
from loopnets.network import Network
from loopnets.probe import severed, unrolled
from loopnets.solvers import NotConvergedWarning, SolverStats
from loopnets.passes import EarlyExit, early_exit, pass_outputs
from loopnets.train import History, TrainingDiverged, evaluate, fit
from loopnets import gated, inn, layers, loopy, viz

__all__ = [
    "Combine",
    "Couple",
    "Tied",
    "Truncated",
    "Implicit",
    "OneStep",
    "NotConvergedWarning",
    "SolverStats",
    "Loop",
    "tie_",
    "Dropout",
    "Network",
    "layers",
    "gated",
    "loopy",
    "inn",
    "viz",
    "fit",
    "fit_many",
    "ManyHistories",
    "evaluate",
    "History",
    "TrainingDiverged",
    "severed",
    "unrolled",
    "pass_outputs",
    "early_exit",
    "EarlyExit",
    "save",
    "load",
    "CheckpointError",
]

__version__ = "0.1.0"
