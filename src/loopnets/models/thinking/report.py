"""The report's section for thinking runs: per-instance accuracy vs test-time passes at each size, halting.

Reads only summary.json `extra` of the finished runs (`loopnets.models.thinking.experiments`):

  - per-instance (exact) accuracy at every (test size, test passes) pair, mean over the finished
    seeds, one row per (variant, size);
  - for halting variants: mean passes and accuracy when stopping by halting probability, beside
    the fixed budget's accuracy and `ln.early_exit`'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loopnets.report.results import Experiment, Variant
from loopnets.report.tables import Table
from loopnets.models.thinking.schema import FAMILY


def results_grid(v: Variant) -> dict | None:
    """{"sizes", "passes", "seeds", "accuracy": (sizes x passes) mean over the finished seeds} or None."""
    tests = [t for r in v.finished if (t := (r.summary.get("extra") or {}).get("test"))]
    if not tests:
        return None
    first = tests[0]
    same = [t for t in tests if t["sizes"] == first["sizes"] and t["passes"] == first["passes"]]
    return {"sizes": first["sizes"], "passes": first["passes"], "seeds": len(same),
            "fixed_depth": bool(first.get("fixed_depth")),
            "accuracy": np.mean([t["accuracy"] for t in same], axis=0).tolist()}


def accuracy_at(grid: dict, size: int, passes: int | None = None, where: str = "the runs") -> float:
    """Per-instance accuracy of a `results_grid` at `size` after `passes` passes (None: the best pass count).

    Raises ValueError naming what is missing when no run tested that size or pass count (a test
    size with no trained model's results), and how to get it.
    """
    if size not in grid["sizes"]:
        raise ValueError(f"no run tested size {size} ({where}); tested sizes: {', '.join(map(str, grid['sizes']))}: "
                         f"add {size} to model.thinking.test_sizes and run the config again")
    row = grid["accuracy"][grid["sizes"].index(size)]
    if passes is None:
        return max(row)
    if passes not in grid["passes"]:
        raise ValueError(f"no run tested size {size} at passes {passes} ({where}); tested pass counts: "
                         f"{', '.join(map(str, grid['passes']))}: add it to model.thinking.test_passes")
    return row[grid["passes"].index(passes)]


def halting_means(v: Variant) -> dict | None:
    """The halting record averaged over the finished seeds (None: not a halting variant)."""
    records = [h for r in v.finished if (h := (r.summary.get("extra") or {}).get("halting"))]
    if not records:
        return None
    mean = lambda key, sub=None: np.mean([(h[sub] if sub else h)[key] for h in records], axis=0).tolist()  # noqa: E731
    return {"sizes": records[0]["sizes"], "max_passes": records[0]["max_passes"], "seeds": len(records),
            "mean_passes": mean("mean_passes"), "accuracy": mean("accuracy"), "fixed_accuracy": mean("fixed_accuracy"),
            "early_exit": {"criterion": records[0]["early_exit"]["criterion"],
                           "mean_passes": mean("mean_passes", "early_exit"), "accuracy": mean("accuracy", "early_exit")}}


def thinking_section(experiment: Experiment, out: Path) -> list:
    """(heading, table, caption) items for the report."""
    mine = [v for v in experiment.variants if v.model_family == FAMILY]
    grids = {v.name: g for v in mine if (g := results_grid(v)) is not None}
    if not grids:
        return []
    passes = next(iter(grids.values()))["passes"]
    rows, starts = [], set()
    for v in mine:
        g = grids.get(v.name)
        if g is None or g["passes"] != passes:
            continue
        starts.add(len(rows))
        for size, accs in zip(g["sizes"], g["accuracy"]):
            rows.append([v.label or v.name, str(size), str(g["seeds"]), *(f"{100 * a:.1f}" for a in accs)])
    items = [("Accuracy vs test-time passes", Table(["Model", "Size", "Seeds", *(f"{p} passes" for p in passes)],
                                                     rows, block_starts=starts),
              "Per-instance (exact) accuracy in %, every position right, on fresh test sets of each size, "
              "mean over the finished seeds; a feedforward net has one depth (the same number in every column).")]
    halting_rows = []
    for v in mine:
        h = halting_means(v)
        if h is None:
            continue
        for i, size in enumerate(h["sizes"]):
            halting_rows.append([v.label or v.name, str(size), f"{h['mean_passes'][i]:.1f}",
                                 f"{100 * h['accuracy'][i]:.1f}", f"{100 * h['fixed_accuracy'][i]:.1f}",
                                 f"{h['early_exit']['mean_passes'][i]:.1f}", f"{100 * h['early_exit']['accuracy'][i]:.1f}"])
    if halting_rows:
        items.append(("Learned halting", Table(["Model", "Size", "Halting passes", "Halting acc.", "Fixed-budget acc.",
                                                "early_exit passes", "early_exit acc."], halting_rows),
                      "Stopping each instance by its cumulative halting probability (PonderNet) against running "
                      "the fixed budget (the largest test pass count) and ln.early_exit; accuracy in %, mean "
                      "over the finished seeds."))
    return items


def thinking_results(experiment: Experiment) -> dict:
    """The numbers behind the section, per variant name, for results.json."""
    out = {}
    for v in experiment.variants:
        if v.model_family == FAMILY and (g := results_grid(v)) is not None:
            out[v.name] = {"test": g, "halting": halting_means(v)}
    return out
