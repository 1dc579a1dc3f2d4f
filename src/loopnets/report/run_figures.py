"""Figures a run wrote into its own folder (its config's `train.analyses`), gathered into the report.

For each variant, the PNGs of its first finished seed (e.g. guided-backpropagation maps) are copied
into report/ as `<variant>-<name>.png`, captioned by its family's `figure_captions`. A family whose
report section gathers its runs' figures itself (`Family.gathers_own_figures`) is skipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from loopnets.report.figures import FigureFile
from loopnets.report.results import Experiment, family_of


def run_figures(experiment: Experiment, out: Path) -> list[FigureFile]:
    """Copy each variant's first-seed PNGs into `out` (families that gather their own: not); return them with captions."""
    figures = []
    for v in experiment.variants:
        if getattr(family_of(v), "gathers_own_figures", False):
            continue
        run = next(iter(v.finished), None)
        if run is None:
            continue
        for png in sorted((experiment.path / v.name / f"seed={run.seed}").glob("*.png")):
            target = f"{v.name}-{png.name}"
            shutil.copyfile(png, out / target)
            captions = getattr(family_of(v), "figure_captions", {})  # file name prefix -> what it shows
            what = next((c.format(layer=png.stem[len(p):]) for p, c in captions.items() if png.name.startswith(p)),
                        png.stem.replace("_", " "))
            figures.append(FigureFile(target, f"{v.label or v.name}, seed {run.seed}: {what}."))
    return figures
