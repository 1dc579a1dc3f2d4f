"""Probe and timing tables (thesis Tables 4.4-4.5, App. B and C) as Markdown, HTML and LaTeX.

A `Table` holds formatted cells; pandas writes them (`DataFrame.to_markdown` through tabulate,
`Styler.to_html`, `Styler.to_latex`), escaping each format's special characters.

Cells are mean ± sample sd over the finished seeds, formatted as the thesis: 4 decimals for
accuracy and loss (values of 1000 or more as 2.45e+03), 2 decimals for milliseconds. "—" marks a
probe that does not apply (no skip to sever, no loop to cut); "n/a" a cell without values
(e.g. every seed diverged). Rows: without skip first, then with skip (a rule between the blocks);
within a block FFN, COMBINE, COUPLE, Tied by unroll.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd

from loopnets.report.results import Experiment, Variant
from loopnets.report.stats import Stat, Timing

NOT_APPLICABLE = "—"
NO_VALUES = "n/a"
PROBE_TITLES = {"original": "Original", "skip_off": "Skip off", "feedback_off": "Feedback off"}


@dataclass
class Table:
    """A rendered-agnostic table: header cells, row cells, and the rows that start a new block."""

    kind: ClassVar[str] = "table"  # the report templates' block kind

    header: list[str]
    rows: list[list[str]]
    block_starts: set[int] = field(default_factory=set)  # row indices preceded by a rule
    align: str = ""  # LaTeX column spec, e.g. "lrrr"; "" = first column left, the rest right

    @property
    def column_format(self) -> str:
        return self.align or "l" + "r" * (len(self.header) - 1)


def format_value(x: float) -> str:
    """Thesis number format for accuracy / loss: 0.9333, 286.2516, 2.45e+03."""
    if not math.isfinite(x):
        return str(x)  # "inf", "-inf", "nan"
    return f"{x:.2e}" if abs(x) >= 1e3 else f"{x:.4f}"


def format_stat(stat: Stat | None, ms: bool = False) -> str:
    """"mean ± sd"; 2 decimals for milliseconds, `format_value` otherwise; "n/a" for no values, and for
    the sd of a single value (one seed has no spread to show)."""
    if stat is None:
        return NO_VALUES
    number = (lambda x: f"{x:.2f}") if ms else format_value
    return f"{number(stat.mean)} ± {number(stat.sd) if stat.n > 1 else NO_VALUES}"


def format_timing(timing: Timing | None) -> str:
    """Milliseconds as "mean ± sd" over independently timed seeds; seeds timed together as one group say
    so instead of a spread they do not have: "12.30 (shared, group of 5)" (each seed's time is the
    group's / 5); "12.30 ± n/a" for one seed."""
    if timing is None:
        return NO_VALUES
    sd = "" if timing.sd is None and timing.groups else f" ± {NO_VALUES if timing.sd is None else f'{timing.sd:.2f}'}"
    shared = ""
    if timing.groups:
        sizes = ", ".join(map(str, timing.groups))
        shared = f" (shared, group{'s' if len(timing.groups) > 1 else ''} of {sizes})"
    return f"{timing.mean:.2f}{sd}{shared}"


def format_percent(p: float | None) -> str:
    """Relative change, e.g. "+45.9 %"; "—" when there is nothing to compare with."""
    return NOT_APPLICABLE if p is None else f"{p:+.1f} %"


def probe_table(experiment: Experiment) -> Table:
    """Original / skip off / feedback off per variant; accuracy and loss for classification.

    A probe column is left out when no variant has it (e.g. no skip variants at all).
    """
    variants = experiment.variants
    probes = [p for p in PROBE_TITLES if any(v.probe_applies(p) for v in variants)]
    metrics = ("accuracy", "loss") if experiment.task == "classification" else ("loss",)
    header = ["Model"]
    for p in probes:
        if len(metrics) == 1:
            header.append(f"{PROBE_TITLES[p]} ({experiment.loss})")
        else:
            header.extend([f"{PROBE_TITLES[p]} acc.", f"{PROBE_TITLES[p]} loss"])
    header.append("Seeds")
    rows = []
    for v in variants:
        row = [v.label]
        for p in probes:
            for m in metrics:
                row.append(format_stat(v.probe_stat(p, m)) if v.probe_applies(p) else NOT_APPLICABLE)
        rows.append(row + [_seeds(v)])
    return Table(header, rows, skip_block_starts(variants))


def timing_table(experiment: Experiment) -> Table:
    """Train and validation ms per epoch, mean ± sd (or "shared" for seeds timed together, `format_timing`),
    and change against the FFN with the same skip."""
    has_ffn = any(v.method == "ffn" for v in experiment.variants)
    header = ["Model", "Train ms/epoch"] + (["Train vs FFN"] if has_ffn else [])
    header += ["Validate ms/epoch"] + (["Validate vs FFN"] if has_ffn else []) + ["Seeds"]
    rows = []
    for v in experiment.variants:
        row = [v.label]
        for key in ("train_ms_per_epoch", "val_ms_per_epoch"):
            row.append(format_timing(v.timing(key)))
            if has_ffn:
                row.append(format_percent(experiment.relative_to_ffn(v, key)))
        rows.append(row + [_seeds(v)])
    return Table(header, rows, skip_block_starts(experiment.variants))


def frame(table: Table) -> pd.DataFrame:
    """The table's cells as a DataFrame of strings (columns = header), for pandas' writers."""
    return pd.DataFrame(table.rows, columns=table.header, dtype=object)


def to_markdown(table: Table) -> str:
    """A pipe table (tabulate via `DataFrame.to_markdown`): padded columns, left / right aligned by `align`."""
    def escape(cell: str) -> str:
        return cell.replace("|", "\\|")

    cells = frame(table).map(escape).rename(columns=escape)
    colalign = ["left" if a == "l" else "right" for a in table.column_format]
    return cells.to_markdown(index=False, disable_numparse=True, colalign=colalign) + "\n"


def to_html(table: Table, uuid: str = "table") -> str:
    """An HTML <table> (`Styler.to_html`), cells escaped, left-aligned where `align` says "l"; the rows in
    `block_starts` carry the class "block-start" (the report's CSS draws a rule above them). `uuid` makes
    the ids unique on a page."""
    data = frame(table)
    classes = pd.DataFrame("", index=data.index, columns=data.columns)
    for i in table.block_starts:
        classes.iloc[i] = "block-start"
    left = [{"selector": f"{cell}.col{i}", "props": "text-align: left"}
            for i, a in enumerate(table.column_format) if a == "l" for cell in ("th", "td")]
    styler = data.style.hide(axis="index").format(escape="html").format_index(escape="html", axis=1)
    return styler.set_td_classes(classes).set_table_styles(left).set_uuid(uuid).to_html()


def to_latex(table: Table, caption: str) -> str:
    """A booktabs tabular (`Styler.to_latex`, `\\usepackage{booktabs}`), with `caption` as a leading comment;
    a \\midrule above each row in `block_starts`."""
    styler = frame(table).style.hide(axis="index").format(escape="latex", formatter=_latex)
    lines = styler.format_index(escape="latex", formatter=_latex, axis=1).to_latex(
        column_format=table.column_format, hrules=True).splitlines()
    first_row = lines.index("\\midrule") + 1  # the rule under the header
    for i in sorted(table.block_starts, reverse=True):
        lines.insert(first_row + i, "\\midrule")
    return "\n".join([f"% {caption}", "% generated by `loopnets report`; needs \\usepackage{booktabs}", *lines]) + "\n"


def _seeds(v: Variant) -> str:
    return f"{len(v.finished)}/{len(v.runs) + len(v.missing)}"


def skip_block_starts(variants: list[Variant]) -> set[int]:
    """Rows preceded by a rule: the first with-skip row, when rows without skip precede it."""
    return {i for i in range(1, len(variants)) if variants[i].skip and not variants[i - 1].skip}


def _latex(cell: str) -> str:
    """An escaped cell with the thesis's symbols in LaTeX: ± as $\\pm$, — as ---."""
    return cell.replace("±", "$\\pm$").replace("—", "---")
