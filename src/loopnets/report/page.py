"""`build_report`: an experiment's run folders -> report/ (HTML, Markdown, PNG, LaTeX, JSON).

The page is assembled once as a list of blocks (headings, paragraphs, tables, figures) and
rendered twice through the Jinja2 templates in `loopnets/report/templates/`: a self-contained
HTML file (report.html.j2: figures as base64 data URIs, inline CSS, no other file referenced;
autoescaped) and a Markdown file linking the PNGs beside it (report.md.j2). Each block has a
`kind` the templates switch on.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Union

import jinja2
import pandas as pd
from markupsafe import Markup, escape

from loopnets.report.figures import FigureFile, write_figures, write_sweep_figure
from loopnets.report.run_figures import run_figures
from loopnets.report.results import Experiment, family_sections, load_experiment
from loopnets.report.tables import (NO_VALUES, Table, probe_table, skip_block_starts, timing_table, to_html, to_latex,
                                     to_markdown)
from loopnets.report.verdicts import CONFIDENCE, Verdict, verdict

PROBE_CAPTION = ("Probes on the validation split after training (thesis sec 4.4): original model; skip off = the "
                 "bypassing skip severed; feedback off = every loop runs one pass (the compact network). "
                 "Mean ± sample sd over the finished seeds; — = not applicable; n/a = no finished seed.")
TIMING_CAPTION = ("Milliseconds per epoch (training: one epoch of updates; validation: one pass over the "
                  "validation split), mean ± sample sd over the finished seeds; change against the FFN "
                  "with the same skip setting. Seeds that trained together in one batched computation were timed "
                  "once as a group: their time is the group's divided by its seeds, marked \"shared\", with no "
                  "spread; n/a = a single measurement has no sd.")
VERDICT_CAPTION = ("Each variant against the best by a paired comparison over the seeds both finished: the "
                   "mean difference (the best's lead: positive when the best is better) and its {confidence:.0f} % t "
                   "interval. Within noise = the interval reaches 0 (or the lead is under one validation sample); "
                   "inconclusive = fewer than 2 shared seeds. The rule: loopnets.report.verdicts.")
TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("loopnets.report", "templates"),
                               autoescape=jinja2.select_autoescape(["html.j2"]), undefined=jinja2.StrictUndefined,
                               trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


@dataclass(frozen=True)
class Heading:
    kind: ClassVar[str] = "heading"

    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    kind: ClassVar[str] = "paragraph"

    text: str
    caption: bool = False  # a table's or figure's caption: small print
    strong: bool = False  # a conclusion: bold


@dataclass(frozen=True)
class FreeText:
    """Free text from experiment.toml (may be Markdown): verbatim in .md, paragraphs in .html."""

    kind: ClassVar[str] = "free_text"

    text: str


@dataclass(frozen=True)
class Bullets:
    kind: ClassVar[str] = "bullets"

    items: tuple[str, ...]


@dataclass(frozen=True)
class Alert:
    """A warning the reader must not miss (e.g. timings taken under load): bold "Warning:" first."""

    kind: ClassVar[str] = "alert"

    text: str


Block = Union[Heading, Paragraph, FreeText, Bullets, Alert, Table, FigureFile]


def build_report(experiment_dir: Path | str) -> Path:
    """Rebuild `experiment_dir/report/` from the run folders only (no retraining); returns that folder.

    Writes report.html (self-contained), report.md, val_loss.png, val_loss_time.png (and
    val_accuracy*.png for classification), unroll_sweep.png (when runs have summary.json's
    unroll_sweep), probes.tex, timing.tex, probes.md (the probe table
    alone, for a terminal) and results.json (the numbers in the tables). Missing and diverged
    runs are reported, not fatal.

    Raises:
        FileNotFoundError: `experiment_dir` holds no `<variant>/seed=<n>/summary.json`.
    """
    experiment = load_experiment(experiment_dir)
    out = experiment.path / "report"
    out.mkdir(exist_ok=True)
    figures = write_figures(experiment, out)
    probes, timing = probe_table(experiment), timing_table(experiment)
    (out / "probes.tex").write_text(to_latex(probes, f"{experiment.name}: {PROBE_CAPTION}"))
    (out / "timing.tex").write_text(to_latex(timing, f"{experiment.name}: {TIMING_CAPTION}"))
    (out / "probes.md").write_text(f"{experiment.name}: probes, mean ± sd over finished seeds "
                                   f"({experiment.status_line()})\n\n{to_markdown(probes)}")
    results = experiment.to_dict()
    judged = verdict(experiment)
    results["verdict"] = judged.to_dict()
    sections = family_sections(experiment, out, results)  # each model family's own section (its registry entry)
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    blocks = _blocks(experiment, judged, figures, probes, timing)
    sweep = write_sweep_figure(experiment, out)
    if sweep is not None:
        blocks += [Heading("Passes at test time"), Paragraph(
            "Each trained looped model evaluated on the validation split with every loop run for more or fewer "
            "passes than it trained with: does it converge to a fixed point, or only work at its training unroll?"),
            sweep]
    extra_figures = run_figures(experiment, out)
    if extra_figures:
        blocks += [Heading("Analyses of each variant's first seed"), *extra_figures]
    for heading, content, caption in sections:
        if heading:
            blocks.append(Heading(heading))
        if isinstance(content, FigureFile):
            blocks.append(FigureFile(content.name, caption))
        else:
            blocks += [Paragraph(caption, caption=True), content]
    (out / "report.md").write_text(render_markdown(blocks))
    (out / "report.html").write_text(render_html(blocks, experiment.name, out))
    return out


def _blocks(experiment: Experiment, judged: Verdict, figures: list[FigureFile], probes: Table,
            timing: Table) -> list[Block]:
    config = experiment.config
    blocks: list[Block] = [Heading(f"Experiment {experiment.name}", 1)]
    if config.get("description"):
        blocks.append(FreeText(str(config["description"])))
    blocks.append(Paragraph(_summary(experiment)))
    warnings = [Alert(w) for w in experiment.warnings()]
    blocks += warnings
    blocks += _verdict_blocks(judged)
    settings = settings_table(config)
    if settings.rows:
        blocks += [Heading("Settings", 3), settings]
    if config.get("notes"):
        blocks += [Heading("Notes", 3), FreeText(str(config["notes"]))]

    blocks += [Heading("Runs"), _runs_table(experiment)]
    diverged = [f"{v.label} (`{v.name}`) seed {r.seed}: {r.summary.get('error') or 'diverged'} "
                f"(after {len(r.metrics['epoch'])} epochs)" for v in experiment.variants for r in v.diverged]
    if diverged:
        blocks += [Paragraph("Diverged runs (left out of the tables; their finished epochs are in the curves):"),
                   Bullets(tuple(diverged))]
    problems = list(experiment.problems)
    problems += [f"variant `{n}` is in experiment.toml but has no run folder" for n in experiment.absent_variants]
    if problems:
        blocks += [Paragraph("Not included:"), Bullets(tuple(problems))]

    blocks.append(Heading("Validation curves"))
    blocks += figures
    blocks += [Heading("Probes"), Paragraph(PROBE_CAPTION, caption=True), probes]
    blocks += [Heading("Time per epoch"), *warnings, Paragraph(TIMING_CAPTION, caption=True), timing]
    return blocks


def _verdict_blocks(judged: Verdict) -> list[Block]:
    """The verdict section: its conclusion, the validation size, and each comparison with the best."""
    blocks: list[Block] = [Heading("Verdict"), Paragraph(f"{judged.conclusion} (By the validation {judged.metric} "
                                                         "of the original model.)", strong=True)]
    if judged.higher_is_better:  # accuracy: how much one sample moves it
        blocks.append(Paragraph(
            f"Validation set: {judged.val_samples} samples; one sample is worth {judged.one_sample:.4f} accuracy."
            if judged.val_samples else "Validation set: size not recorded by these runs (summary.json has no "
                                       "`val_samples`), so the accuracy one sample is worth is unknown."))
    if judged.comparisons:
        rows = [[c.variant, str(c.seeds), NO_VALUES if c.difference is None else f"{c.difference:+.4f}",
                 NO_VALUES if c.low is None else f"[{c.low:+.4f}, {c.high:+.4f}]", c.outcome]
                for c in judged.comparisons]
        header = ["Model", "Shared seeds", f"Best's lead ({judged.metric})", f"{100 * CONFIDENCE:.0f} % interval",
                  "Verdict"]
        blocks += [Paragraph(VERDICT_CAPTION.format(confidence=100 * CONFIDENCE), caption=True),
                   Table(header, rows, align="lrrrl")]
    return blocks


def settings_table(config: dict[str, Any]) -> Table:
    """experiment.toml's [data], [model] and [train] as rows Section | Setting | Value (nested keys dotted)."""
    rows = []
    for section in ("data", "model", "train"):
        if isinstance(config.get(section), dict) and config[section]:
            flat = pd.json_normalize(config[section], sep=".").to_dict("records")[0]
            rows += [[section, key, _setting(value)] for key, value in flat.items()]
    return Table(["Section", "Setting", "Value"], rows, align="lll")


def _summary(experiment: Experiment) -> str:
    """One paragraph: task, data, seeds, epochs, run status."""
    config = experiment.config
    parts = [f"Task: {experiment.task}, loss {experiment.loss}."]
    data = config.get("data")
    if isinstance(data, dict) and data.get("name"):
        parts.append(f"Data: {data['name']} (all settings below).")
    seeds = experiment.expected_seeds
    parts.append(f"Seeds: {len(seeds)} ({_seed_list(seeds)}) per variant, {len(experiment.variants)} variants.")
    epochs = [len(r.metrics["epoch"]) for r in experiment.runs]
    configured = config.get("train", {}).get("epochs") if isinstance(config.get("train"), dict) else None
    early = sum(bool(r.summary.get("stopped_early")) for r in experiment.runs)
    ran = f"{min(epochs)}" if min(epochs) == max(epochs) else f"{min(epochs)}-{max(epochs)}"
    parts.append((f"Epochs: at most {configured}; " if configured is not None else "Epochs: ")
                 + f"runs lasted {ran} epochs" + (f" ({early} stopped early)." if early else "."))
    parts.append(f"Runs: {experiment.status_line()}.")
    return " ".join(parts)


def _runs_table(experiment: Experiment) -> Table:
    rows = []
    for v in experiment.variants:
        epochs = [len(r.metrics["epoch"]) for r in v.runs]
        ran = "—" if not epochs else str(min(epochs)) if min(epochs) == max(epochs) else f"{min(epochs)}-{max(epochs)}"
        rows.append([v.label, v.name, v.status_line(), ran])
    return Table(["Model", "Folder", "Seeds", "Epochs run"], rows, skip_block_starts(experiment.variants), "llll")


def render_markdown(blocks: list[Block]) -> str:
    """The blocks as Markdown (templates/report.md.j2), figures linked by file name."""
    return TEMPLATES.get_template("report.md.j2").render(blocks=blocks)


def render_html(blocks: list[Block], title: str, figure_dir: Path) -> str:
    """One self-contained page (templates/report.html.j2): figures read from `figure_dir`, embedded as data URIs."""

    def data_uri(name: str) -> str:
        return "data:image/png;base64," + base64.b64encode((figure_dir / name).read_bytes()).decode("ascii")

    template = TEMPLATES.get_template("report.html.j2")
    return template.render(blocks=blocks, title=title, data_uri=data_uri)


def _inline(text: str) -> Markup:
    """Escape for HTML; `code` spans (as written for Markdown) become <code>."""
    pieces = str(escape(text)).split("`")
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces)))


TEMPLATES.filters.update(inline=_inline, md_table=lambda table: to_markdown(table).rstrip("\n"),
                         html_table=lambda table, i: Markup(to_html(table, uuid=f"table{i}")))


def _setting(value: Any) -> str:
    """A config value as written in TOML, without JSON quoting: "iris", "true", "0, 1, 2"."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ", ".join(_setting(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} = {_setting(v)}" for k, v in value.items())
    return str(value)


def _seed_list(seeds: list[int]) -> str:
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))
