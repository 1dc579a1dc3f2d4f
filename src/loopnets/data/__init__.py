"""Data sets, offline: each loader returns tensors with a documented split and normalisation."""

from loopnets.data.iris import Split, load_iris

__all__ = ["Split", "load_iris"]
