"""Build docs/reproductions/lavik.md: our runs of configs/lavik/*.toml beside the thesis's numbers.

    .venv/bin/loopnets run configs/lavik/<name>.toml --workers 2    # for each config (writes the reports)
    .venv/bin/python docs/reproductions/build_lavik.py --runs-dir runs

Reads runs/<experiment>/report/results.json (written by `loopnets report`), the thesis's numbers
from lavik-thesis.toml beside this script, and the hand-written analysis in lavik-notes.md, and
writes lavik.md. Every number of ours on the page comes from the run folders.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from loopnets.report.results import page_cli

HERE = Path(__file__).resolve().parent
EXPERIMENTS = {  # our experiment -> (title, the thesis tables it sits beside)
    "lavik-iris": ("Iris classification", "Tables B.1, C.1"),
    "lavik-meats-dense-classification": ("Spectroscopy, dense, classification (meats for FTIR)", "Tables B.2 / 4.4, C.2"),
    "lavik-meats-dense-regression": ("Spectroscopy, dense, regression (meats for FTIR)", "Tables B.4, C.4"),
    "lavik-meats-conv-classification": ("Spectroscopy, conv, classification (meats for FTIR)", "Tables B.3, C.3"),
    "lavik-meats-conv-regression": ("Spectroscopy, conv, regression (meats for FTIR)", "Tables B.5, C.5"),
    "lavik-bike": ("Bike-sharing regression (synthetic stand-in)", "Tables B.6, C.6"),
    "lavik-ftir-timing-conv": ("Timing at the FTIR sizes (synthetic spectra, conv)", "Tables 4.5, C.3"),
    "lavik-mnist-tiny-cnn": ("MNIST tiny CNN (the `neurons` comparison)", "neurons repository tables"),
}


def cell(stat: dict | None, digits: int = 4) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    mean, sd = stat["mean"], stat.get("sd") or 0.0
    fmt = (lambda v: f"{v:.2e}") if abs(mean) >= 1000 else (lambda v: f"{v:.{digits}f}")
    return f"{fmt(mean)} ± {fmt(sd)}"


def probe_table(results: dict, reference: dict) -> list[str]:
    classification = results["task"] == "classification"
    metric = "accuracy" if classification else "loss"
    ref_key = "accuracy_percent" if results["experiment"] == "lavik-mnist-tiny-cnn" else metric
    unit = "accuracy" if classification else f"{results['loss']} (lower is better)"
    if ref_key == "accuracy_percent":
        unit += " (the `neurons` column in %, on the full MNIST test set)"
    lines = [f"Validation {unit}; thesis / ours, mean ± sd over seeds.", "",
             "| Model | Original: thesis | ours | Skip off: thesis | ours | Feedback off: thesis | ours |",
             "|:---|---:|---:|---:|---:|---:|---:|"]
    for v in results["variants"]:
        ref = reference.get(v["variant"], {})
        probes = v.get("probes") or {}
        ours = {k: (probes.get(k) or {}).get(metric) for k in ("original", "skip_off", "feedback_off")}
        lines.append(
            f"| {v['label']} | {ref.get(ref_key, '—')} | {cell(ours['original'])} "
            f"| {ref.get('skip_off_' + ref_key, '—')} | {cell(ours['skip_off'])} "
            f"| {ref.get('feedback_off_' + ref_key, '—')} | {cell(ours['feedback_off'])} |"
        )
    return lines


def timing_table(results: dict, reference: dict) -> list[str]:
    mnist = results["experiment"] == "lavik-mnist-tiny-cnn"
    ref_key, ref_unit = ("train_s", "s") if mnist else ("train_ms", "ms")
    ffn_ref = {s: _mean(reference.get("ffn" + s, {}).get(ref_key)) for s in ("", "-skip")}
    ffn_ours = {}
    for v in results["variants"]:
        if v["method"] == "ffn":
            ffn_ours["-skip" if v["skip"] else ""] = (v["timing"]["train_ms_per_epoch"] or {}).get("mean")
    note = " The `neurons` epoch is 60,000 images, ours 4,000." if mnist else ""
    lines = [f"Training time per epoch: thesis ({ref_unit}, Rust on an Apple M2) and ours (ms, PyTorch on 2 CPU cores, "
             f"2 runs in parallel), and each relative to the FFN with the same skip setting.{note}", "",
             f"| Model | thesis ({ref_unit}) | thesis / FFN | ours (ms) | ours / FFN |", "|:---|---:|---:|---:|---:|"]
    for v in results["variants"]:
        suffix = "-skip" if v["skip"] else ""
        ref = reference.get(v["variant"], {}).get(ref_key)
        ours = (v["timing"]["train_ms_per_epoch"] or {})
        ratio_ref = _ratio(_mean(ref), ffn_ref.get(suffix))
        ratio_ours = _ratio(ours.get("mean"), ffn_ours.get(suffix))
        lines.append(f"| {v['label']} | {ref or '—'} | {ratio_ref} | {cell(ours, 2)} | {ratio_ours} |")
    return lines


def headline(results: dict) -> str:
    """Mean change of the main metric when loops / skips are severed, over the variants that have them."""
    metric = "accuracy" if results["task"] == "classification" else "loss"
    drops, skips = [], []
    for v in results["variants"]:
        p = v.get("probes") or {}
        orig = ((p.get("original") or {}).get(metric) or {}).get("mean")
        fb = ((p.get("feedback_off") or {}).get(metric) or {}).get("mean")
        sk = ((p.get("skip_off") or {}).get(metric) or {}).get("mean")
        if orig is not None and fb is not None:
            drops.append((orig, fb))
        if orig is not None and sk is not None:
            skips.append((orig, sk))
    parts = []
    if drops:
        o, f = statistics.mean(d[0] for d in drops), statistics.mean(d[1] for d in drops)
        parts.append(f"feedback off: {metric} {o:.4g} -> {f:.4g} (mean over the {len(drops)} loop variants)")
    if skips:
        o, s = statistics.mean(d[0] for d in skips), statistics.mean(d[1] for d in skips)
        parts.append(f"skip off: {metric} {o:.4g} -> {s:.4g} (mean over the {len(skips)} variants with a skip)")
    return "; ".join(parts) + "." if parts else ""


def _mean(text: str | None) -> float | None:
    if not text:
        return None
    return float(text.split("±")[0])


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}x"


def build(runs_dir: Path, out: Path) -> str:
    reference = tomllib.loads((HERE / "lavik-thesis.toml").read_text())
    notes = (HERE / "lavik-notes.md").read_text()
    lines = [notes.rstrip(), ""]
    for experiment, (title, tables) in EXPERIMENTS.items():
        lines += [f"## {title}", ""]
        path = runs_dir / experiment / "report" / "results.json"
        if not path.is_file():
            lines += [f"Not run yet: `loopnets run configs/lavik/{experiment.removeprefix('lavik-')}.toml`.", ""]
            continue
        results = json.loads(path.read_text())
        walls = [s for v in results["variants"] for s in _wall_seconds(runs_dir / experiment / v["variant"])]
        lines += [f"Config `configs/lavik/{experiment.removeprefix('lavik-')}.toml`; thesis {tables}; "
                  f"{results['status']}; {sum(walls) / 60:.1f} minutes of training summed over its runs.", ""]
        lines += [f"**Probes.** {headline(results)}", ""]
        if experiment != "lavik-ftir-timing-conv":
            lines += probe_table(results, reference.get(experiment, {})) + [""]
        lines += timing_table(results, reference.get(experiment, {})) + [""]
        lines += [f"Figures and full tables: `runs/{experiment}/report/report.html` (rebuild with "
                  f"`loopnets report runs/{experiment}`).", ""]
    text = "\n".join(lines)
    out.write_text(text)
    return text


def _wall_seconds(variant_dir: Path) -> list[float]:
    return [json.loads(p.read_text())["timing"]["wall_seconds"] for p in variant_dir.glob("seed=*/summary.json")]


def main(argv: list[str] | None = None) -> None:
    page_cli(build, __doc__, HERE / "lavik.md", argv)


if __name__ == "__main__":
    main()
