"""Summary statistics of runs: mean ± sd over seeds (`Stat`), shared timing (`Timing`), and
percentile bands of curves (`Band`). Pure functions of numbers; `results` builds them from runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Stat:
    """Mean and sample sd (n - 1; 0 for a single value, shown as n/a and written as null) of `values` over seeds."""

    mean: float
    sd: float
    n: int
    values: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"mean": json_float(self.mean), "sd": json_float(self.sd) if self.n > 1 else None, "n": self.n,
                "values": [json_float(v) for v in self.values]}


def mean_sd(values: Sequence[float]) -> Stat | None:
    """Mean ± sample sd (ddof=1, as the thesis's μ ± σ over runs); one value gives sd 0; none gives None."""
    values = tuple(float(v) for v in values)
    if not values:
        return None
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr)):  # e.g. an inf probe loss: mean inf (or nan), sd undefined
        with np.errstate(invalid="ignore"):
            return Stat(float(np.mean(arr)), math.nan, len(values), values)
    sd = float(np.std(arr, ddof=1)) if len(values) > 1 else 0.0
    return Stat(float(np.mean(arr)), sd, len(values), values)


@dataclass(frozen=True)
class Timing:
    """A variant's time per epoch over its finished seeds, honest about what was timed separately.

    Seeds that trained together (one batched `ln.fit_many` call, summary.json's training.path
    "batched") were timed once as a group: each seed's time is the group's divided by its seeds,
    so the group is one measurement, not n. `sd` is the sample sd over the independent
    measurements (a seed trained alone, or one group), None when there are fewer than two.
    """

    mean: float  # over the finished seeds' values
    sd: float | None
    n: int  # finished seeds with a value
    measurements: int  # independently timed units: seeds alone + groups
    groups: tuple[int, ...]  # sizes of the groups whose time is shared; () when every seed trained alone
    values: tuple[float, ...]  # per seed

    def to_dict(self) -> dict:
        return {"mean": json_float(self.mean), "sd": None if self.sd is None else json_float(self.sd), "n": self.n,
                "values": [json_float(v) for v in self.values], "independent_measurements": self.measurements,
                "shared_groups": list(self.groups)}


def timing_over(values: Sequence[tuple[float, tuple[int, ...] | None]]) -> Timing | None:
    """`Timing` of per-seed values, each with the seeds of the group it shared its time with (None: alone)."""
    if not values:
        return None
    units: dict[object, list[float]] = {}
    for i, (value, group) in enumerate(values):
        units.setdefault(("group", group) if group else ("seed", i), []).append(float(value))
    per_unit = [float(np.mean(u)) for u in units.values()]
    sd = float(np.std(per_unit, ddof=1)) if len(per_unit) > 1 else None
    groups = tuple(len(key[1]) for key in units if key[0] == "group")
    seeds = tuple(float(v) for v, _ in values)
    return Timing(float(np.mean(seeds)), sd, len(seeds), len(per_unit), groups, seeds)


@dataclass(frozen=True)
class Band:
    """Per-epoch mean and percentile band over seeds; `n[i]` seeds reached `epochs[i]`."""

    epochs: np.ndarray  # (E,) epoch numbers as written in metrics.csv (1-based)
    mean: np.ndarray  # (E,)
    low: np.ndarray  # (E,) 20th percentile by default
    high: np.ndarray  # (E,) 80th percentile by default
    n: np.ndarray  # (E,) number of seeds with a finite value at that epoch


def band(curves: Sequence[tuple[Sequence[float], Sequence[float]]], low: float = 20.0,
         high: float = 80.0) -> Band:
    """Aggregate per-seed curves `(epochs, values)` by epoch: mean and [low, high] percentiles.

    Each epoch uses the seeds that reached it (early stopping, divergence) and have a finite
    value there. Percentiles interpolate linearly between order statistics (numpy's default).
    """
    by_epoch: dict[int, list[float]] = {}
    for epochs, values in curves:
        for epoch, value in zip(epochs, values):
            if math.isfinite(value):
                by_epoch.setdefault(int(epoch), []).append(float(value))
    order = sorted(by_epoch)
    stacks = [np.asarray(by_epoch[e]) for e in order]
    return Band(
        epochs=np.asarray(order, dtype=int),
        mean=np.asarray([s.mean() for s in stacks], dtype=float),
        low=np.asarray([np.percentile(s, low) for s in stacks], dtype=float),
        high=np.asarray([np.percentile(s, high) for s in stacks], dtype=float),
        n=np.asarray([len(s) for s in stacks], dtype=int),
    )


def json_float(x: float | None) -> float | None:
    """x for JSON: None when missing or not finite (JSON has no nan / inf)."""
    return None if x is None or not math.isfinite(x) else x

