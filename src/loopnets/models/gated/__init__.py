"""Feedback-gated ReLU networks (Kemmerling): the model family `ln.gated`."""

# The public names are network.py's __all__ (one list, kept there).
from loopnets.models.gated.network import *  # noqa: F403
from loopnets.models.gated.network import __all__  # noqa: F401
