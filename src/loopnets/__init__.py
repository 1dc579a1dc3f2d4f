"""loopnets: neural networks with feedback connections (layer reuse) in PyTorch.

The public API is exactly what this module re-exports; everything else is private.
"""

from loopnets.core.modes import Combine, Couple, Implicit, OneStep, Progressive, Tied, Truncated
from loopnets.training.batched import ManyHistories, fit_many
from loopnets.checkpoint import CheckpointError, load, save
from loopnets.core.dropout import Dropout
from loopnets.core.perpass import PerPass
from loopnets.core.loop import Loop, tie_
from loopnets.builder.network import Network
from loopnets.core.probe import severed, unrolled
from loopnets.core.solvers import NotConvergedWarning, SolverStats
from loopnets.core.passes import EarlyExit, early_exit, pass_outputs
from loopnets.core.halting import Halting
from loopnets.training.fit import History, TrainingDiverged, evaluate, fit
from loopnets.training.halting import fit_halting
from loopnets import viz
from loopnets.builder import layers
from loopnets.models import gated, inn, loopy, thinking

__all__ = [
    "Combine",
    "Couple",
    "Tied",
    "Truncated",
    "Implicit",
    "OneStep",
    "Progressive",
    "NotConvergedWarning",
    "SolverStats",
    "Loop",
    "tie_",
    "Dropout",
    "PerPass",
    "Network",
    "layers",
    "gated",
    "loopy",
    "inn",
    "thinking",
    "viz",
    "fit",
    "fit_halting",
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
    "Halting",
    "save",
    "load",
    "CheckpointError",
]

from loopnets.version import __version__  # noqa: E402  (public: ln.__version__)
