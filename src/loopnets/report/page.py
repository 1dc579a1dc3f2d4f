"""`build_report`: an experiment's run folders -> report/ (HTML, Markdown, PNG, LaTeX, JSON).

The page is assembled once as a list of blocks (headings, paragraphs, tables, figures) and
rendered twice: a self-contained HTML file (figures as base64 data URIs, inline CSS, no other
file referenced) and a Markdown file linking the PNGs beside it.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from loopnets.report.figures import FigureFile, write_figures, write_sweep_figure
from loopnets.report.run_figures import run_figures
from loopnets.report.results import Experiment, family_sections, load_experiment
from loopnets.report.tables import Table, probe_table, timing_table, to_html, to_latex, to_markdown

PROBE_CAPTION = ("Probes on the validation split after training (thesis sec 4.4): original model; skip off = the "
                 "bypassing skip severed; feedback off = every loop runs one pass (the compact network). "
                 "Mean ± sample sd over the finished seeds; — = not applicable; n/a = no finished seed.")
TIMING_CAPTION = ("Milliseconds per epoch (training: one epoch of updates; validation: one pass over the "
                  "validation split), mean ± sample sd over the finished seeds; change against the FFN "
                  "with the same skip setting. Seeds that trained together in one batched computation were timed "
                  "once as a group: their time is the group's divided by its seeds, marked \"shared\", with no "
                  "spread; n/a = a single measurement has no sd.")
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{padding:0.25em 0.7em;text-align:right;border-bottom:1px solid #ddd}
th:first-child,td:first-child{text-align:left}
thead th{border-bottom:2px solid #444}
tr.block-start td{border-top:2px solid #444}
figure{margin:1.5em 0}img{max-width:100%}figcaption,.caption{color:#555;font-size:0.9em}
code{background:#f4f4f4;padding:0 0.2em}
.warning{background:#fff3cd;border-left:4px solid #c90;padding:0.5em 0.8em}"""


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str
    caption: bool = False


@dataclass(frozen=True)
class FreeText:
    """Free text from experiment.toml (may be Markdown): verbatim in .md, paragraphs in .html."""

    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Alert:
    """A warning the reader must not miss (e.g. timings taken under load): bold "Warning:" first."""

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
    sections = family_sections(experiment, out, results)  # each model family's own section (its registry entry)
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    blocks = _blocks(experiment, figures, probes, timing)
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


def _blocks(experiment: Experiment, figures: list[FigureFile], probes: Table, timing: Table) -> list[Block]:
    config = experiment.config
    blocks: list[Block] = [Heading(f"Experiment {experiment.name}", 1)]
    if config.get("description"):
        blocks.append(FreeText(str(config["description"])))
    blocks.append(Paragraph(_summary(experiment)))
    warnings = [Alert(w) for w in experiment.warnings()]
    blocks += warnings
    settings = [f"[{section}] " + _flat(config[section]) for section in ("data", "model", "train")
                if isinstance(config.get(section), dict)]
    if settings:
        blocks += [Heading("Settings", 3), Bullets(tuple(settings))]
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


def _summary(experiment: Experiment) -> str:
    """One paragraph: task, data, seeds, epochs, run status."""
    config = experiment.config
    parts = [f"Task: {experiment.task}, loss {experiment.loss}."]
    data = config.get("data")
    if isinstance(data, dict) and data:
        parts.append(f"Data: {_flat(data)}.")
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
    starts = {i for i in range(1, len(experiment.variants))
              if experiment.variants[i].skip and not experiment.variants[i - 1].skip}
    return Table(["Model", "Folder", "Seeds", "Epochs run"], rows, starts, "llll")


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Paragraph):
            out.append(f"*{b.text}*" if b.caption else b.text)
        elif isinstance(b, FreeText):
            out.append(b.text.strip())
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Alert):
            out.append(f"> **Warning:** {b.text}")
        elif isinstance(b, Table):
            out.append(to_markdown(b).rstrip("\n"))
        elif isinstance(b, FigureFile):
            out.append(f"![{b.name}]({b.name})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


def render_html(blocks: list[Block], title: str, figure_dir: Path) -> str:
    """One self-contained page: figures read from `figure_dir` and embedded as data URIs."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f'<p class="caption">{_inline(b.text)}</p>' if b.caption else f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, FreeText):
            out += [f"<p>{_inline(p.strip())}</p>" for p in b.text.strip().split("\n\n") if p.strip()]
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in b.items) + "</ul>")
        elif isinstance(b, Alert):
            out.append(f'<p class="warning"><strong>Warning:</strong> {_inline(b.text)}</p>')
        elif isinstance(b, Table):
            out.append(to_html(b).rstrip("\n"))
        elif isinstance(b, FigureFile):
            data = base64.b64encode((figure_dir / b.name).read_bytes()).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(b.name)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)} - loopnets report</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(out) + "\n</body>\n</html>\n")


def _inline(text: str) -> str:
    """Escape for HTML; `code` spans (as written for Markdown) become <code>."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def _flat(section: dict[str, Any], prefix: str = "") -> str:
    """A config table as "key = value, sub.key = value" (values as JSON)."""
    items = []
    for key, value in section.items():
        if isinstance(value, dict):
            items.append(_flat(value, f"{prefix}{key}."))
        else:
            items.append(f"{prefix}{key} = {json.dumps(value, default=str)}")
    return ", ".join(i for i in items if i)


def _seed_list(seeds: list[int]) -> str:
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))
