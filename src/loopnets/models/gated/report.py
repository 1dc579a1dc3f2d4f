"""The report's section for gated autoencoder runs (Kemmerling): per-pass losses, gain, contrast.

Reads only what the runner wrote into the run folders (summary.json `extra`, and the PNGs of
`train.analyses`), so it regenerates without retraining:

  - the validation loss of every pass's output (does the second pass improve on the first? Fig 3),
  - the feedback mu_D and the gain of the lowest feedback-receiving layer (Fig 5: "the overwhelming
    majority of values are the maximum gain"),
  - reconstructions of reduced-contrast inputs, pass 1 vs last pass (App 7.5, Figs 20, 21),
  - the analysis figures of each variant's first finished seed (histograms, t-SNE, image strips).

Numbers are means (± sample sd) over the finished seeds that have them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loopnets.report.figures import DPI, FigureFile
from loopnets.report.results import Experiment, Variant
from loopnets.report.stats import mean_sd
from loopnets.report.tables import NOT_APPLICABLE, Table, format_stat
from loopnets.models.gated.schema import FAMILY

CONTRAST_AT = 0.5  # the contrast factor of Fig 21, tabulated
RUN_FIGURES = {  # PNG written by a train.analyses entry -> caption in the report
    "histograms.png": "feedback mu_D (top) and gain (bottom) of the lowest feedback-receiving layer over the "
                      "validation set, passes t >= 2 (Kemmerling Fig 5)",
    "tsne.png": "t-SNE of the bottleneck (E2) per pass over the validation set, colored by digit (Figs 18, 19)",
    "strip.png": "validation inputs (top row) and each pass's reconstructions below",
    "strip_noise.png": "the same with N(0, 2^2) noise on every pre-activation in every pass (Fig 8)",
    "strip_contrast.png": "inputs at contrast 0.5 (x' = 0.5 x) and each pass's reconstructions (Fig 21)",
    "contrast.png": "reconstruction MSE against the original images vs contrast factor, pass 1 and last pass",
}


def gated_section(experiment: Experiment, out: Path) -> list[tuple[str, Table | FigureFile, str]]:
    """(heading, table or figure, caption) items for the report; writes figures into `out`."""
    gated = [v for v in experiment.variants if v.model_family == FAMILY]
    if not gated:
        return []
    items: list[tuple[str, Table | FigureFile, str]] = []
    table = pass_loss_table(gated)
    if table.rows:
        items.append(("Loss per pass", table,
                      f"Validation {experiment.loss} of the output of pass t (pass 1 has no feedback; the last "
                      "pass is the trained output), mean ± sd over the finished seeds; the last column is the "
                      "last pass's change against pass 1."))
    table = gain_table(gated)
    if table.rows:
        items.append(("Feedback and gain", table,
                      "mu_D and gain 1 / (1 - min(beta_max mu_D / eta, beta_max)) of the lowest feedback-"
                      "receiving layer over the validation set, passes t >= 2; 'at max gain' is the fraction "
                      "of (unit, sample, pass) values with mu_D >= eta (Kemmerling Fig 5). Mean ± sd over seeds."))
    fig = contrast_figure(gated, experiment.name)
    if fig is not None:
        fig.savefig(out / "contrast.png", dpi=DPI)
        items.append(("Reduced contrast", FigureFile("contrast.png", ""),
                      "Reconstruction MSE against the ORIGINAL validation images when the inputs are scaled "
                      "by the contrast factor c (x' = c x, App 7.5; c = 0 is a black image): pass 1 dashed, "
                      "last pass solid, mean over seeds. The paper asks whether the second pass restores "
                      "something closer to the regular-contrast image."))
        items.append(("", contrast_table(gated),
                      f"At contrast {CONTRAST_AT}: MSE against the originals, and Fig 20's quantity |mean pixel "
                      "of the last pass's reconstructions - that of pass 1's|, mean ± sd over seeds."))
    heading = "Analyses of each variant's first seed"
    for v in gated:
        run = next((r for r in v.finished if r.summary.get("extra")), None)
        if run is None:
            continue
        folder = experiment.path / v.name / f"seed={run.seed}"
        for name, caption in RUN_FIGURES.items():
            if name == "contrast.png" or not (folder / name).is_file():
                continue
            target = f"{v.name}-{name}"
            shutil.copyfile(folder / name, out / target)
            items.append((heading, FigureFile(target, ""), f"{v.label or v.name}, seed {run.seed}: {caption}."))
            heading = ""
    return items


def gated_results(experiment: Experiment) -> dict:
    """The numbers behind the section, per variant name, for results.json."""
    out = {}
    for v in experiment.variants:
        if v.model_family != FAMILY:
            continue
        passes = _pass_losses(v)
        out[v.name] = {
            "pass_loss_mean": [_mean(p) for p in passes],
            "histograms": {k: _mean(_values(v, "histograms", k)) for k in
                           ("mean_mu_d", "mean_gain", "fraction_max_gain", "max_gain")},
            "contrast": _contrast_means(v),
        }
    return out


# ----------------------------------------------------------------------------- tables


def pass_loss_table(variants: list[Variant]) -> Table:
    per_variant = {v.name: _pass_losses(v) for v in variants}
    width = max((len(p) for p in per_variant.values()), default=0)
    rows = []
    for v in variants:
        passes = per_variant[v.name]
        if not passes:
            continue
        cells = [format_stat(mean_sd(p)) if p else NOT_APPLICABLE for p in passes]
        cells += [NOT_APPLICABLE] * (width - len(passes))
        first, last = _mean(passes[0]), _mean(passes[-1])
        change = NOT_APPLICABLE if len(passes) < 2 or not first else f"{100 * (last / first - 1):+.1f} %"
        rows.append([v.label or v.name, *cells, change])
    return Table(["Model", *[f"Pass {t}" for t in range(1, width + 1)], "Last vs pass 1"], rows,
                 align="l" + "r" * (width + 1))


def gain_table(variants: list[Variant]) -> Table:
    rows = []
    for v in variants:
        if not _values(v, "histograms", "mean_gain"):
            continue
        layer = _values(v, "histograms", "layer")
        max_gain = _values(v, "histograms", "max_gain")
        rows.append([v.label or v.name, str(int(layer[0])), format_stat(mean_sd(_values(v, "histograms", "mean_mu_d"))),
                     format_stat(mean_sd(_values(v, "histograms", "mean_gain"))), f"{max_gain[0]:.2f}",
                     format_stat(mean_sd(_values(v, "histograms", "fraction_max_gain")))])
    return Table(["Model", "Layer", "Mean mu_D", "Mean gain", "Max gain", "At max gain"], rows, align="lrrrrr")


def contrast_table(variants: list[Variant]) -> Table:
    rows = []
    for v in variants:
        at = []
        for r in v.finished:
            c = (r.summary.get("extra") or {}).get("contrast")
            if c and CONTRAST_AT in c["factors"]:
                i = c["factors"].index(CONTRAST_AT)
                at.append((c["first"][i], c["last"][i], c["mean_pixel_gap"][i]))
        if at:
            first, last, gap = (mean_sd([a[j] for a in at]) for j in range(3))
            rows.append([v.label or v.name, format_stat(first), format_stat(last), format_stat(gap)])
    return Table(["Model", "Pass 1 MSE", "Last pass MSE", "Mean pixel gap"], rows, align="lrrr")


# ----------------------------------------------------------------------------- figure


def contrast_figure(variants: list[Variant], title: str) -> Figure | None:
    curves = {v.name: c for v in variants if (c := _contrast_means(v)) is not None}
    if not curves:
        return None
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, v in enumerate(v for v in variants if v.name in curves):
        c, color = curves[v.name], f"C{i % 10}"
        ax.plot(c["factors"], c["last"], color=color, linewidth=1.4, label=f"{v.legend or v.name}, last pass")
        if v.unroll > 1:
            ax.plot(c["factors"], c["first"], color=color, linewidth=1.2, linestyle="--",
                    label=f"{v.legend or v.name}, pass 1")
    ax.set_xlabel("contrast factor c (input x' = c x)")
    ax.set_ylabel("MSE against the original images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.suptitle(f"{title}: reconstructions of reduced-contrast inputs")
    return fig


# ----------------------------------------------------------------------------- reading summaries


def _pass_losses(v: Variant) -> list[list[float]]:
    """pass_losses[t - 1] = the finished seeds' loss of pass t."""
    passes: list[list[float]] = []
    for r in v.finished:
        for t, value in enumerate((r.summary.get("extra") or {}).get("pass_loss") or []):
            if t >= len(passes):
                passes.append([])
            if value is not None and np.isfinite(value):
                passes[t].append(float(value))
    return passes


def _values(v: Variant, analysis: str, key: str) -> list[float]:
    return [float(entry[key]) for r in v.finished
            if (entry := (r.summary.get("extra") or {}).get(analysis)) and entry.get(key) is not None]


def _contrast_means(v: Variant) -> dict | None:
    sweeps = [c for r in v.finished if (c := (r.summary.get("extra") or {}).get("contrast"))]
    if not sweeps:
        return None
    return {"factors": sweeps[0]["factors"],
            **{k: np.mean([s[k] for s in sweeps], axis=0).tolist() for k in ("first", "last", "mean_pixel_gap")}}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


