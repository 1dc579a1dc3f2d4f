"""Validation curves laid out as in the thesis (Lavik 2024, sec 3.4 / 4.3, App. D).

Two columns: left the variants without a bypassing skip, right those with one (one column if the
experiment has only one kind); y axes shared across columns. One color per method family, one
line style per unroll. Epoch curves show the mean over seeds with a 20-80 % percentile band;
time-weighted curves (x = epoch x the variant's mean training seconds per epoch) show the mean
only, as the thesis's Appendix D.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas: no pyplot, no global
backend switch, nothing to close, no window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loopnets.report.results import Experiment, Variant

COLORS = {"ffn": "black", "combine": "tab:blue", "couple": "tab:red", "tied": "tab:green"}
OTHER_COLORS = ("tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink", "tab:gray")
LINESTYLES = ("-", "--", ":", "-.")  # by rank of the unroll among the experiment's unrolls
LOG_SCALE_RATIO = 10.0  # a loss axis spanning more than a decade is drawn on a log scale
DPI = 120


@dataclass(frozen=True)
class FigureFile:
    """A figure written beside the report: file name (relative to the report folder) and caption."""

    kind: ClassVar[str] = "figure"  # the report templates' block kind

    name: str
    caption: str


def columns(variants: list[Variant]) -> list[tuple[str, list[Variant]]]:
    """Variants split as the thesis figures: ("without bypassing skip", ...), ("with bypassing skip", ...).

    A kind with no variants is dropped, so an experiment with one kind gets one column.
    """
    groups = [("without bypassing skip", [v for v in variants if not v.skip]),
              ("with bypassing skip", [v for v in variants if v.skip])]
    return [(title, group) for title, group in groups if group]


def curve_figure(experiment: Experiment, column: str, time_weighted: bool = False) -> Figure | None:
    """The figure for one metrics.csv column ("val_loss", "val_accuracy"); None if it has no data.

    Args:
        column: the metrics.csv column to plot.
        time_weighted: x = epoch x mean training seconds per epoch (variant's mean over seeds),
            mean line only; otherwise x = epoch with a 20-80 % band.
    """
    bands = {v.name: v.band(column) for v in experiment.variants}
    if not any(b.epochs.size for b in bands.values()):
        return None
    groups = columns(experiment.variants)
    fig = Figure(figsize=(6.0 * len(groups), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    styles = _linestyles(experiment.variants)
    colors = _colors(experiment.variants)
    drawn: list[np.ndarray] = []
    for ax, (title, group) in zip(axes, groups):
        for v in group:
            b = bands[v.name]
            seconds = v.train_seconds_per_epoch() if time_weighted else None
            if not b.epochs.size or (time_weighted and seconds is None):
                continue
            x = b.epochs * seconds if time_weighted else b.epochs
            ax.plot(x, b.mean, color=colors[v.name], linestyle=styles[v.name], linewidth=1.4, label=v.legend)
            drawn.append(b.mean)
            if not time_weighted:
                ax.fill_between(x, b.low, b.high, color=colors[v.name], alpha=0.15, linewidth=0)
                drawn.extend([b.low, b.high])
        ax.set_title(title)
        ax.set_xlabel("training time (s)" if time_weighted else "epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # an empty legend call would warn
            ax.legend(fontsize="small")
    metric = "accuracy" if column.endswith("accuracy") else f"loss ({experiment.loss})"
    axes[0].set_ylabel(f"validation {metric}")
    if column.endswith("loss") and _wide_positive_range(drawn):
        axes[0].set_yscale("log")
    how = "time-weighted, mean over seeds" if time_weighted else "mean and 20-80 % band over seeds"
    fig.suptitle(f"{experiment.name}: validation {metric}, {how}")
    return fig


def write_figures(experiment: Experiment, out_dir: Path) -> list[FigureFile]:
    """Write val_loss(.png, _time.png) and, for classification, val_accuracy(...) into `out_dir`."""
    written = []
    metrics = ["val_loss"] + (["val_accuracy"] if experiment.task == "classification" else [])
    for column in metrics:
        what = "accuracy" if column == "val_accuracy" else f"loss ({experiment.loss})"
        for time_weighted in (False, True):
            fig = curve_figure(experiment, column, time_weighted)
            if fig is None:
                continue
            name = f"{column}{'_time' if time_weighted else ''}.png"
            fig.savefig(out_dir / name, dpi=DPI)
            if time_weighted:
                caption = (f"Time-weighted validation {what}: x = epoch x the variant's mean training "
                           "seconds per epoch (mean over seeds); mean over seeds, no band (thesis App. D).")
            else:
                caption = (f"Validation {what} per epoch: mean over seeds with the 20-80 % percentile band; "
                           "each epoch uses the seeds that reached it (diverged runs up to their last "
                           "finished epoch).")
            written.append(FigureFile(name, caption))
    fig = noise_figure(experiment)
    if fig is not None:
        fig.savefig(out_dir / "noise.png", dpi=DPI)
        written.append(FigureFile("noise.png", "Validation loss with N(0, sigma^2) noise added to every "
                                  "pre-activation in every pass, at evaluation only (Kemmerling eq 7, sec 4.4); "
                                  "mean over the finished seeds (summary.json extra.noise)."))
    return written


def sweep_metric(experiment: Experiment) -> str | None:
    """The metric the unroll-sweep figure shows: accuracy where swept (classification), else loss;
    None when no variant has a sweep."""
    for metric in ("accuracy", "loss"):
        if any(v.sweep(metric) for v in experiment.variants):
            return metric
    return None


def sweep_figure(experiment: Experiment) -> Figure | None:
    """Validation accuracy (or loss) versus the passes every loop runs at test time, one line per
    variant (mean over finished seeds, 20-80 % band), each variant's training unroll ringed
    (Hershey Fig. 3.22). Columns as `columns`; None when no run has summary.json's unroll_sweep."""
    metric = sweep_metric(experiment)
    if metric is None:
        return None
    swept = {v.name: s for v in experiment.variants if (s := v.sweep(metric))}
    groups = [(title, [v for v in group if v.name in swept]) for title, group in columns(experiment.variants)]
    groups = [(title, group) for title, group in groups if group]
    fig = Figure(figsize=(6.0 * len(groups), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    styles, colors = _linestyles(experiment.variants), _colors(experiment.variants)
    drawn: list[np.ndarray] = []
    for ax, (title, group) in zip(axes, groups):
        for v in group:
            b, trained = swept[v.name]
            ax.plot(b.epochs, b.mean, color=colors[v.name], linestyle=styles[v.name], marker=".", linewidth=1.4,
                    label=v.legend)
            ax.fill_between(b.epochs, b.low, b.high, color=colors[v.name], alpha=0.15, linewidth=0)
            drawn.extend([b.mean, b.low, b.high])
            if trained is not None and trained in b.epochs:
                at = int(np.flatnonzero(b.epochs == trained)[0])
                ax.plot([trained], [b.mean[at]], marker="o", markersize=9, markerfacecolor="none",
                        markeredgecolor=colors[v.name], markeredgewidth=1.6, linestyle="none")
        ax.set_title(title if len(groups) > 1 else "")
        ax.set_xlabel("passes through every loop at test time")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    label = "accuracy" if metric == "accuracy" else f"loss ({experiment.loss})"
    axes[0].set_ylabel(f"validation {label}")
    if metric == "loss" and _wide_positive_range(drawn):
        axes[0].set_yscale("log")
    fig.suptitle(f"{experiment.name}: validation {label} by test-time passes (ring: training unroll)")
    return fig


def write_sweep_figure(experiment: Experiment, out_dir: Path) -> FigureFile | None:
    """Write unroll_sweep.png into `out_dir`; None (nothing written) when no run has a sweep."""
    fig = sweep_figure(experiment)
    if fig is None:
        return None
    fig.savefig(out_dir / "unroll_sweep.png", dpi=DPI)
    what = "accuracy" if sweep_metric(experiment) == "accuracy" else f"loss ({experiment.loss})"
    return FigureFile("unroll_sweep.png", (
        f"Validation {what} when every loop runs 1, 2, ... passes at test time (summary.json unroll_sweep; "
        "train.unroll_sweep sets the last, by default max(8, 2 x the training unroll)): mean over the finished "
        "seeds with the 20-80 % band; the ring marks the passes the variant trained with. A line that stays "
        "flat beyond its ring has learned a fixed point (Hershey Fig. 3.22); one that falls off has learned "
        "to stop after exactly its training unroll."))


def _linestyles(variants: list[Variant]) -> dict[str, str]:
    unrolls = sorted({v.unroll for v in variants if v.method != "ffn"})
    return {v.name: "-" if v.method == "ffn" else LINESTYLES[unrolls.index(v.unroll) % len(LINESTYLES)]
            for v in variants}


def noise_figure(experiment: Experiment) -> Figure | None:
    """Validation loss vs evaluation-time noise sigma per variant (Kemmerling Fig 9); None without data."""
    curves = {v.name: c for v in experiment.variants if (c := v.noise_curve()) is not None}
    if not curves:
        return None
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colors = _colors(experiment.variants)
    for v in experiment.variants:
        if v.name in curves:
            sigmas, losses = curves[v.name]
            ax.plot(sigmas, losses, marker="o", color=colors[v.name], linewidth=1.4, label=v.legend)
    ax.set_xlabel("noise sigma (every pre-activation, every pass)")
    ax.set_ylabel(f"validation loss ({experiment.loss})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.suptitle(f"{experiment.name}: loss under evaluation-time noise, mean over seeds")
    return fig


def _colors(variants: list[Variant]) -> dict[str, str]:
    if len({v.method for v in variants}) == 1 and variants[0].method not in COLORS:  # one method: a color per variant
        palette = (*COLORS.values(), *OTHER_COLORS)
        return {v.name: palette[i % len(palette)] for i, v in enumerate(variants)}
    others = sorted({v.method for v in variants if v.method not in COLORS})
    return {v.name: COLORS.get(v.method) or OTHER_COLORS[others.index(v.method) % len(OTHER_COLORS)]
            for v in variants}


def _wide_positive_range(arrays: list[np.ndarray]) -> bool:
    values = np.concatenate(arrays) if arrays else np.empty(0)
    values = values[np.isfinite(values)]
    return bool(values.size) and values.min() > 0 and values.max() / values.min() > LOG_SCALE_RATIO
