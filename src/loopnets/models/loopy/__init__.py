"""Loopy CNNs (Caswell et al. 2016): the model family `ln.loopy`."""

# The public names are network.py's __all__ (one list, kept there).
from loopnets.models.loopy.network import *  # noqa: F403
from loopnets.models.loopy.network import __all__  # noqa: F401
