"""Which variant is best, and which are within noise of it: the report's verdict rule.

The measure is the "original" probe on the validation split after training: accuracy (higher is
better) for classification, the loss (lower is better) otherwise, one value per finished seed.

- **Best**: the variant with the best mean over its finished seeds.
- **Noise floor (seeds)**: each other variant is compared with the best by a paired comparison
  over the seeds both finished: d_s = best_s - other_s (sign flipped for a loss, so d > 0 means the
  best is better), and the 95 % paired t interval mean(d) ± t(0.975, n - 1) sd(d) / sqrt(n). The
  variant is **within noise** of the best when that interval reaches 0, **worse** when it lies
  above 0. With fewer than 2 shared seeds there is no spread to judge by: **inconclusive** (also a
  variant with no finished seed).
- **Resolution floor (one sample)**: with n validation samples one sample moves the accuracy by
  1 / n; a mean accuracy difference smaller than that is within noise whatever the interval says
  (used when summary.json records `val_samples`).
- **Chance floor**: with `classes` recorded in summary.json, chance accuracy is 1 / classes; a best
  mean within one sample (or 0.01 without `val_samples`) of chance makes the whole verdict
  **inconclusive**: a ranking of runs at chance says nothing.

The number of seeds behind every comparison is stated, and a best variant with a single seed
gives an inconclusive verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from loopnets.report.results import Experiment, Variant

CONFIDENCE = 0.95
CHANCE_MARGIN = 0.01  # above chance by less than this (without a recorded validation size): at chance


@dataclass(frozen=True)
class Comparison:
    """A variant against the best: the paired difference over `seeds` (positive: the best is better)."""

    variant: str  # the variant's label
    seeds: int  # seeds both finished
    difference: float | None  # mean paired difference; None with no shared seed
    low: float | None  # the 95 % paired t interval, None below 2 shared seeds
    high: float | None
    outcome: str  # "within noise" | "worse" | "inconclusive"

    def to_dict(self) -> dict:
        return {"variant": self.variant, "seeds": self.seeds, "difference": self.difference, "low": self.low,
                "high": self.high, "outcome": self.outcome}


@dataclass(frozen=True)
class Verdict:
    """The best variant by mean and every other variant's comparison with it."""

    metric: str  # "accuracy" or the loss's name, e.g. "rmse"
    higher_is_better: bool
    best: str | None  # label; None when no variant has a finished seed
    best_mean: float | None
    best_seeds: int
    comparisons: tuple[Comparison, ...]
    val_samples: int | None  # validation-set size, when the runs record it
    chance: float | None  # chance accuracy (1 / classes), when the runs record the classes
    conclusion: str  # one sentence: the verdict, or why it is inconclusive

    @property
    def one_sample(self) -> float | None:
        """The accuracy one validation sample is worth (1 / val_samples)."""
        return None if not self.val_samples else 1.0 / self.val_samples

    def to_dict(self) -> dict:
        return {"metric": self.metric, "higher_is_better": self.higher_is_better, "best": self.best,
                "best_mean": self.best_mean, "best_seeds": self.best_seeds, "val_samples": self.val_samples,
                "one_sample": self.one_sample, "chance": self.chance, "confidence": CONFIDENCE,
                "conclusion": self.conclusion, "comparisons": [c.to_dict() for c in self.comparisons]}


def seed_values(v: Variant, metric: str) -> dict[int, float]:
    """{seed: the original probe's `metric`} over the variant's finished seeds with a finite value."""
    return {r.seed: x for r in v.finished if (x := r.probe("original", metric)) is not None and math.isfinite(x)}


def paired(best: dict[int, float], other: dict[int, float], higher_is_better: bool,
           resolution: float | None = None) -> tuple[int, float | None, float | None, float | None, str]:
    """(shared seeds, mean difference, interval low, high, outcome) of `other` against `best` (module docstring)."""
    shared = sorted(set(best) & set(other))
    sign = 1.0 if higher_is_better else -1.0
    d = np.asarray([sign * (best[s] - other[s]) for s in shared], dtype=float)
    if d.size == 0:
        return 0, None, None, None, "inconclusive"
    mean = float(d.mean())
    if d.size < 2:
        return 1, mean, None, None, "inconclusive"
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    low, high = mean - half, mean + half
    below_resolution = resolution is not None and abs(mean) < resolution
    return int(d.size), mean, low, high, "within noise" if low <= 0.0 or below_resolution else "worse"


def verdict(experiment: Experiment) -> Verdict:
    """The verdict of `experiment` by the rule in the module docstring."""
    classification = experiment.task == "classification"
    metric = "accuracy" if classification else "loss"
    values = {v.label: seed_values(v, metric) for v in experiment.variants}
    measured = [label for label, by_seed in values.items() if by_seed]  # a variant may have no finished seed
    val_samples = _recorded(experiment, "val_samples")
    classes = _recorded(experiment, "classes")
    chance = 1.0 / classes if classification and classes else None
    resolution = 1.0 / val_samples if classification and val_samples else None
    name = metric if classification else experiment.loss
    if not measured:
        return Verdict(name, classification, None, None, 0, (), val_samples, chance,
                       "Inconclusive: no variant has a finished seed.")
    pick = max if classification else min
    best = pick(measured, key=lambda label: float(np.mean(list(values[label].values()))))
    best_mean = float(np.mean(list(values[best].values())))
    comparisons = tuple(Comparison(label, *paired(values[best], by_seed, classification, resolution))
                        for label, by_seed in values.items() if label != best)
    seeds = len(values[best])
    if seeds < 2:
        conclusion = f"Inconclusive: {best} is best by mean, but on one seed, which gives no noise estimate."
    elif chance is not None and best_mean - chance < (resolution or CHANCE_MARGIN):
        conclusion = (f"Inconclusive: the best mean accuracy ({best_mean:.4f}) is at chance ({chance:.4f}, "
                      f"{classes} classes), so the ranking says nothing.")
    else:
        by = {o: [c.variant for c in comparisons if c.outcome == o] for o in ("within noise", "worse", "inconclusive")}
        parts = [f"{best} is best by mean ({best_mean:.4f} over {seeds} seeds).",
                 f"Within noise of it: {', '.join(by['within noise'])}." if by["within noise"]
                 else "No other variant is within noise of it."]
        if by["worse"]:
            parts.append(f"Worse: {', '.join(by['worse'])}.")
        if by["inconclusive"]:
            parts.append(f"Inconclusive (fewer than 2 shared seeds): {', '.join(by['inconclusive'])}.")
        conclusion = " ".join(parts)
    return Verdict(name, classification, best, best_mean, seeds, comparisons, val_samples, chance, conclusion)


def _recorded(experiment: Experiment, key: str) -> int | None:
    """A positive integer that every run's summary.json records under `key` alike, else None."""
    found = {r.summary.get(key) for r in experiment.runs}
    if len(found) != 1:
        return None
    (value,) = found
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
