"""Data sets, offline: each loader returns tensors with a documented split and normalisation."""

from loopnets.data.iris import load_iris
from loopnets.data.split import Split

__all__ = ["Split", "load_iris"]
