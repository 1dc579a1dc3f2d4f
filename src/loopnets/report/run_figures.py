"""Figures a run wrote into its own folder (its config's `train.analyses`), gathered into the report.

The gated family's are gathered by `loopnets.report.gated`; this module gathers the rest: for each
variant, the PNGs of its first finished seed (e.g. the loopy CNN family's guided-backpropagation
maps and merge-node images) are copied into report/ as `<variant>-<name>.png` with a caption.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from loopnets.report.figures import FigureFile
from loopnets.report.results import Experiment

CAPTIONS = {  # file name prefix -> what it shows
    "guided_": "guided backpropagation (Caswell et al. sec 6.4, Fig 10): validation images, then the map of filter 0 "
               "of {layer} onto the input at every unroll",
    "merge": "merge-node images (Fig 9): validation images, then what the first conv receives before each unroll",
}


def run_figures(experiment: Experiment, out: Path) -> list[FigureFile]:
    """Copy each non-gated variant's first-seed PNGs into `out`; return them with captions."""
    figures = []
    for v in experiment.variants:
        if v.method == "gated":
            continue
        run = next(iter(v.finished), None)
        if run is None:
            continue
        for png in sorted((experiment.path / v.name / f"seed={run.seed}").glob("*.png")):
            target = f"{v.name}-{png.name}"
            shutil.copyfile(png, out / target)
            what = next((c.format(layer=png.stem[len(p):]) for p, c in CAPTIONS.items() if png.name.startswith(p)),
                        png.stem.replace("_", " "))
            figures.append(FigureFile(target, f"{v.label or v.name}, seed {run.seed}: {what}."))
    return figures
