"""Build docs/reproductions/caswell.md: Caswell, Shen and Wang's numbers beside what our runs show.

    .venv/bin/loopnets run configs/caswell/<name>.toml --workers 2    # mnist, synthetic-batch5/32, depth
    .venv/bin/loopnets run configs/caswell/cifar10-batch32.toml --data-dir ~/cifar-10-batches-py   # with the data
    .venv/bin/python docs/reproductions/build_caswell.py --runs-dir runs

Reads the run folders runs/caswell-*/ (through `loopnets.report.results.load_experiment`, the
report's own reader) and the hand-written prose in caswell-text.toml beside this script, and
writes caswell.md. Every number of ours on the page is computed here from the run folders, and
so is each check, by the rule printed beside it; configs not run show the command that fills them.

Measures (mean ± sample sd over the finished seeds):
  val   = accuracy on the validation split after training (the "original" probe);
  train = accuracy on the training split after training (summary extra.train; Fig 8's train acc);
  off   = the feedback_off probe (a tied model run for one pass);
  time  = training seconds per epoch (summary timing), and its ratio to Vanilla's;
  elapsed = first run's start to last run's end, from the summary files' times and run lengths.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from loopnets.report.results import Experiment, Variant, load_experiment, page_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
CONFIGS = ("mnist", "cifar10-batch5", "cifar10-batch32", "synthetic-batch5", "synthetic-batch32", "depth")
MODELS = (("vanilla", "Vanilla"), ("loopy", "Loopy"), ("plus_layer", "+layer"), ("times_layer", "×layer"),
          ("deep", "Deep"))  # Fig 8's column order
# Fig 8, "CIFAR-10 accuracy results after 24 epochs" (None: "The two loop layer models were not trained with batchsize 32")
PAPER = {
    5: {"train": {"vanilla": 61.9, "loopy": 72.6, "plus_layer": 90.5, "times_layer": 89.9, "deep": 69.8},
        "val": {"vanilla": 46.6, "loopy": 57.4, "plus_layer": 51.8, "times_layer": 37.7, "deep": 56.1},
        "test": {"vanilla": 49.7, "loopy": 56.4, "plus_layer": 53.5, "times_layer": 45.1, "deep": 50.2}},
    32: {"train": {"vanilla": 43.7, "loopy": 45.2, "plus_layer": None, "times_layer": None, "deep": 35.6},
         "val": {"vanilla": 47.3, "loopy": 42.45, "plus_layer": None, "times_layer": None, "deep": 28.3},
         "test": {"vanilla": 37.9, "loopy": 40.8, "plus_layer": None, "times_layer": None, "deep": 34.7}},
}
MNIST_TARGET = 0.97  # "With one unroll, a validation accuracy of 97% was achieved"
NO_DROP = 0.005  # "did not decrease": a mean at most 0.5 points (or one sd of k = 1) below k = 1's


# ----------------------------------------------------------------------------- measures


def val(v: Variant) -> list[float]:
    return [x for r in v.finished if (x := r.probe("original", "accuracy")) is not None]


def off(v: Variant) -> list[float]:
    return [x for r in v.finished if (x := r.probe("feedback_off", "accuracy")) is not None]


def train(v: Variant) -> list[float]:
    return [float(t["accuracy"]) for r in v.finished if (t := (r.summary.get("extra") or {}).get("train"))]


def seconds(v: Variant) -> list[float]:
    return [s for r in v.finished if (s := r.train_seconds_per_epoch()) is not None]


def counts(v: Variant) -> dict | None:
    return next((r.summary["parameter_counts"] for r in v.finished if r.summary.get("parameter_counts")), None)


def m(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def pct(values: list[float]) -> str:
    """Accuracies as "93.1 ± 0.6 %" (one seed: "93.1 %"); "—" for none."""
    if not values:
        return "—"
    return f"{100 * m(values):.1f} %" if len(values) == 1 else f"{100 * m(values):.1f} ± {100 * sd(values):.1f} %"


def secs(values: list[float]) -> str:
    return "—" if not values else f"{m(values):.2f} s" if len(values) == 1 else f"{m(values):.2f} ± {sd(values):.2f} s"


def params(v: Variant) -> str:
    c = counts(v)
    return "—" if c is None else f"{c['conv+fc']:,} / {c['total']:,}"


def find(exp: Experiment | None, model: str, unroll: int | None = None) -> Variant | None:
    if exp is None:
        return None
    return next((v for v in exp.variants if v.method == model and (unroll is None or v.unroll == unroll)), None)


def elapsed_minutes(exp: Experiment) -> float:
    """First run's start to last run's end: summary.json's write time minus its run's wall seconds."""
    ends, starts = [], []
    for v in exp.variants:
        for r in v.runs:
            end = (exp.path / v.name / f"seed={r.seed}" / "summary.json").stat().st_mtime
            ends.append(end)
            starts.append(end - r.summary["timing"]["wall_seconds"])
    return (max(ends) - min(starts)) / 60


def command(config: str) -> str:
    data = " --data-dir ~/cifar-10-batches-py" if config.startswith("cifar10") else ""
    return f"loopnets run configs/caswell/{config}.toml{data}"


# ----------------------------------------------------------------------------- sections


def mnist_section(x: dict[str, Experiment], text: dict) -> list[str]:
    exp = x.get("mnist")
    lines = ["## MNIST (sec 5.1, Fig 4)", "", text["mnist"].strip(), ""]
    if exp is None:
        return lines + [f"Not run: `{command('mnist')}`.", ""]
    lines += ["| Unroll k | Paper: validation acc. | Ours: validation acc. | Ours: train acc. | Ours: feedback off "
              "(1 pass) | Train s / epoch | Parameters (conv+fc / total) |", "|---:|:---|---:|---:|---:|---:|---:|"]
    by_k = {v.unroll: v for v in exp.variants if v.method == "mnist_loopy"}
    for k, v in sorted(by_k.items()):
        paper = "97 %" if k == 1 else "not below k = 1 (\"did not decrease\")"
        lines.append(f"| {k} | {paper} | {pct(val(v))} | {pct(train(v))} | {pct(off(v))} | {secs(seconds(v))} | {params(v)} |")
    lines.append("")
    if 1 in by_k:
        base = val(by_k[1])
        reached = m(base) >= MNIST_TARGET
        lines.append(f"- **97 % with one unroll: {'reached' if reached else 'not reached'}** (ours {pct(base)}; rule: mean "
                     f"validation accuracy at k = 1 >= 97 %).")
        tolerance = max(NO_DROP, sd(base))
        later = {k: m(val(v)) for k, v in by_k.items() if k > 1}
        if later:
            holds = all(a >= m(base) - tolerance for a in later.values())
            shown = ", ".join(f"k = {k}: {100 * (a - m(base)):+.1f} points" for k, a in sorted(later.items()))
            lines.append(f"- **More unrolls do not decrease it: {'agrees' if holds else 'disagrees'}** ({shown} against k = 1; "
                         f"rule: every k > 1 within {100 * tolerance:.1f} points (0.5 or k = 1's sd, the larger) below k = 1 "
                         "or above).")
        lines.append("")
    return lines


def cifar_section(x: dict[str, Experiment], text: dict) -> list[str]:
    lines = ["## CIFAR-10 (sec 5.2, Fig 8)", "", text["cifar"].strip(), ""]
    for batch in (5, 32):
        config = f"cifar10-batch{batch}"
        exp = x.get(config)
        lines += [f"### Batch size {batch}", "",
                  "| Model | Paper: train | Paper: val | Paper: test | Ours: train | Ours: val | Ours: train s / epoch |",
                  "|:---|---:|---:|---:|---:|---:|---:|"]
        for model, label in MODELS:
            paper = [PAPER[batch][col][model] for col in ("train", "val", "test")]
            cells = ["—" if p is None else f"{p:g} %" for p in paper]
            v = find(exp, model)
            ours = [pct(train(v)), pct(val(v)), secs(seconds(v))] if v else ["", "", ""]
            lines.append(f"| {label} | " + " | ".join(cells + ours) + " |")
        status = (f"Ours: `runs/caswell-{config}/`, {exp.status_line()}." if exp else
                  f"Ours: not run here (no CIFAR-10 files on this machine). With the data: `{command(config)}`, then "
                  "`python docs/reproductions/build_caswell.py` fills this column.")
        lines += ["", status, ""]
    return lines


def synthetic_section(x: dict[str, Experiment], text: dict) -> list[str]:
    lines = ["## The synthetic stand-in (not CIFAR-10: not comparable with the paper)", "", text["synthetic"].strip(), ""]
    checks = []
    for batch in (5, 32):
        config = f"synthetic-batch{batch}"
        exp = x.get(config)
        lines += [f"### Stand-in, batch size {batch}", ""]
        if exp is None:
            lines += [f"Not run: `{command(config)}`.", ""]
            continue
        lines += ["| Model | Stand-in: train acc. | Stand-in: val acc. | Feedback off | Train s / epoch | × Vanilla's time "
                  "| Parameters (conv+fc / total) |", "|:---|---:|---:|---:|---:|---:|---:|"]
        base = find(exp, "vanilla")
        for model, label in MODELS:
            v = find(exp, model)
            if v is None:
                continue
            ratio = f"{m(seconds(v)) / m(seconds(base)):.2f}" if base and seconds(v) and seconds(base) else "—"
            name = label if model == "vanilla" else f"{label} x{v.unroll}"
            lines.append(f"| {name} | {pct(train(v))} | {pct(val(v))} | {pct(off(v))} | {secs(seconds(v))} | {ratio} | {params(v)} |")
        lines += ["", f"`runs/caswell-{config}/`: {exp.status_line()}.", ""]
        checks += stand_in_checks(exp, batch)
    if checks:
        lines += ["### The paper's CIFAR-10 claims, checked on the stand-in only", "",
                  "| Claim (Fig 8, sec 5.2) | Stand-in | Rule |", "|:---|:---|:---|"] + checks + [""]
    return lines


def beats(a: list[float], b: list[float]) -> str:
    """"holds" if mean(a) > mean(b) by more than the larger sd, "does not hold" if below by that much, else "within noise"."""
    gap, noise = m(a) - m(b), max(sd(a), sd(b))
    return "within noise" if abs(gap) <= noise else "holds" if gap > 0 else "does not hold"


BEATS_RULE = "mean val acc. {} > {} by more than the larger sd over seeds (within it: within noise)"


def stand_in_checks(exp: Experiment, batch: int) -> list[str]:
    vanilla, loopy_, deep, plus, times = (find(exp, model) for model in ("vanilla", "loopy", "deep", "plus_layer", "times_layer"))
    rows = []

    def row(claim: str, verdict: str, ours: str, rule: str) -> None:
        rows.append(f"| {claim} (batch {batch}) | **{verdict}**: {ours} | {rule} |")

    def compare(claim: str, a: Variant, b: Variant, names: tuple[str, str]) -> None:
        row(claim, beats(val(a), val(b)), f"val {pct(val(a))} vs {pct(val(b))}", BEATS_RULE.format(*names))

    if vanilla and loopy_:
        compare("Loopy beats Vanilla", loopy_, vanilla, ("Loopy", "Vanilla"))
    if loopy_ and deep:
        compare("Loopy beats Deep", loopy_, deep, ("Loopy", "Deep"))
    if vanilla and deep:
        compare("Deep sometimes worse than Vanilla", vanilla, deep, ("Vanilla", "Deep"))
    if loopy_ and plus and times:
        over = all(m(train(v)) > m(train(loopy_)) and m(val(v)) < m(val(loopy_)) for v in (plus, times))
        row("Loop-layer models overfit: higher train, lower val than Loopy", "holds" if over else "does not hold",
            f"train +layer {pct(train(plus))}, ×layer {pct(train(times))}, Loopy {pct(train(loopy_))}; val +layer "
            f"{pct(val(plus))}, ×layer {pct(val(times))}, Loopy {pct(val(loopy_))}", "both: train > Loopy's and val < Loopy's")
        compare("Additive beats multiplicative merge", plus, times, ("+layer", "×layer"))
    if vanilla and loopy_ and deep and seconds(vanilla):
        ratios = [m(seconds(v)) / m(seconds(vanilla)) for v in (loopy_, deep)]
        k = loopy_.unroll
        row(f"Loopy and Deep train in about k = {k} times Vanilla's time",
            "holds" if all(0.5 * k <= r <= 1.5 * k for r in ratios) else "does not hold",
            f"Loopy {ratios[0]:.2f}×, Deep {ratios[1]:.2f}×", "both within 0.5 k .. 1.5 k")
    return rows


def depth_section(x: dict[str, Experiment], text: dict) -> list[str]:
    exp = x.get("depth")
    lines = ["## Recurrence vs depth: tied against untied at matched effective depth", "", text["depth"].strip(), ""]
    if exp is None:
        return lines + [f"Not run: `{command('depth')}`.", ""]
    lines += ["| Effective depth (convs) | k | Tied (Loopy): val acc. | Untied (Deep): val acc. | Tied vs untied "
              "| Tied: params conv+fc | Untied: params conv+fc | Tied: s / epoch | Untied: s / epoch |",
              "|---:|---:|---:|---:|:---|---:|---:|---:|---:|"]
    base = find(exp, "vanilla")
    ks = sorted({v.unroll for v in exp.variants if v.method in ("loopy", "deep")})
    if base:
        c = counts(base)
        shared = "—" if c is None else f"{c['conv+fc']:,}"
        lines.append(f"| 3 | 1 | {pct(val(base))} | (the same network) | | {shared} | {shared} | {secs(seconds(base))} | |")
    for k in ks:
        tied, untied = find(exp, "loopy", k), find(exp, "deep", k)
        ct, cu = (counts(v) if v else None for v in (tied, untied))
        if not (ct and cu):
            lines.append(f"| {3 * k} | {k} | incomplete | | | | | | |")
            continue
        verdict = {"holds": "tied better", "does not hold": "untied better"}.get(beats(val(tied), val(untied)), "within noise")
        lines.append(f"| {3 * k} | {k} | {pct(val(tied))} | {pct(val(untied))} | {verdict} | {ct['conv+fc']:,} | "
                     f"{cu['conv+fc']:,} | {secs(seconds(tied))} | {secs(seconds(untied))} |")
    lines += ["", "Tied vs untied: the difference of the means against the larger sd over seeds (within it: within noise).", "",
              "Test-time passes of the tied models (validation accuracy when the trained model runs for n passes; "
              "its trained k in bold; mean over seeds):", ""]
    for k in ks:
        tied = find(exp, "loopy", k)
        sweeps = [(r.summary.get("extra") or {}).get("unroll_sweep") for r in tied.finished] if tied else []
        sweeps = [s for s in sweeps if s]
        if not sweeps:
            continue
        cells = []
        for i, n in enumerate(sweeps[0]["unrolls"]):
            acc = f"{100 * m([s['accuracy'][i] for s in sweeps]):.1f} %"
            cells.append(f"n = {n}: **{acc}**" if n == k else f"n = {n}: {acc}")
        lines.append(f"- Loopy x{k}: " + ", ".join(cells))
    return lines + ["", f"`runs/caswell-depth/`: {exp.status_line()}.", ""]


def analyses_section(x: dict[str, Experiment], text: dict) -> list[str]:
    lines = ["## What the loops look at (Figs 9-11)", "", text["analyses"].strip(), ""]
    exp = x.get("mnist")
    v = find(exp, "mnist_loopy", 3)
    run = next((r for r in v.finished if (r.summary.get("extra") or {}).get("guided")), None) if v else None
    if run is None:
        return lines + ["Not run (`train.analyses` of configs/caswell/mnist.toml).", ""]
    guided, merge = run.summary["extra"]["guided"], run.summary["extra"].get("merge")
    lines += [f"MNIST, unroll 3, seed {run.seed}, {guided['images']} validation digits, filter {guided['filter']}: "
              "correlation of each unroll's guided-backprop map with unroll 0's (1 = the same map):", "",
              "| Layer | unroll 0 | unroll 1 | unroll 2 |", "|:---|---:|---:|---:|"]
    for layer, g in guided["layers"].items():
        cells = [f"{c:.2f}" if c is not None else "—" for c in g["corr_with_unroll_0"]]
        lines.append(f"| {layer} | " + " | ".join(cells + [""] * (3 - len(cells))) + " |")
    if merge:
        lines += ["", "Mean |merge-node output - image| (what conv 1 receives, minus the digit): "
                  + ", ".join(f"before unroll {t}: {c:.3f}" for t, c in enumerate(merge["mean_abs_change"], start=1)) + "."]
    folder = f"runs/caswell-mnist/{v.name}/seed={run.seed}"
    lines += ["", f"Images: `{folder}/guided_conv1.png` .. `guided_conv3.png` and `{folder}/merge.png` (rows: the digits, "
              "then one row per unroll); the stand-in runs have the same files for their CIFAR-shaped images.", ""]
    return lines


def runs_section(x: dict[str, Experiment]) -> list[str]:
    lines = ["## The runs", "", "| Config | Runs | Epochs × seeds | Elapsed (first start to last end) | Summed run time | Report |",
             "|:---|:---|:---|---:|---:|:---|"]
    for config in CONFIGS:
        exp = x.get(config)
        if exp is None:
            lines.append(f"| `configs/caswell/{config}.toml` | not run (`{command(config)}`) | | | | |")
            continue
        train_cfg = exp.config.get("train", {})
        summed = sum(r.summary["timing"]["wall_seconds"] for r in exp.runs) / 60
        lines.append(f"| `configs/caswell/{config}.toml` | {exp.status_line()} | {train_cfg.get('epochs')} × "
                     f"{len(train_cfg.get('seeds', []))} | {elapsed_minutes(exp):.1f} min | {summed:.1f} min "
                     f"| `runs/caswell-{config}/report/report.html` |")
    return lines + [""]


# ----------------------------------------------------------------------------- page


def load_runs(runs_dir: Path) -> dict[str, Experiment]:
    out = {}
    for config in CONFIGS:
        folder = runs_dir / f"caswell-{config}"
        if (folder / "experiment.toml").is_file():
            try:
                out[config] = load_experiment(folder)
            except FileNotFoundError:
                pass
    return out


def build(runs_dir: Path, out: Path) -> str:
    text = tomllib.loads((HERE / "caswell-text.toml").read_text())
    x = load_runs(runs_dir)
    lines = [text["intro"].rstrip(), ""]
    lines += mnist_section(x, text) + cifar_section(x, text) + synthetic_section(x, text) + depth_section(x, text)
    lines += analyses_section(x, text) + runs_section(x)
    lines += [text["deviations"].rstrip(), ""]
    page = "\n".join(lines)
    out.write_text(page)
    return page


def main(argv: list[str] | None = None) -> None:
    page_cli(build, __doc__, HERE / "caswell.md", argv)


if __name__ == "__main__":
    main()
