"""Build docs/modes.md: every backprop mode on the same tasks, and which to pick when.

    make modes          # runs configs/modes/*.toml into runs/, then this script
    .venv/bin/python docs/build_modes.py --runs-dir runs [--out docs/modes.md]

Reads the run folders runs/modes-<task>/ through the report's own reader
(`loopnets.report.results.load_experiment`) and writes modes.md with its figures beside it
(modes-<task>.png). Every number on the page is computed here from the run folders' summary.json
files; every finding states the rule that decides it. Tasks not run show the command that fills them.

Measures (mean ± sample sd over the finished seeds):
  acc    = validation accuracy after training (the "original" probe);
  ms     = training milliseconds per epoch (summary timing);
  saved  = KiB autograd keeps for backward in one training step (summary loop_training.memory,
           exact; the step uses the run's deep supervision);
  peak   = KiB of the malloc peak of that step above the level before it;
  passes = the fixed-point solver's passes in eval mode over the validation split (Implicit, OneStep),
           and the share of seeds whose solve converged.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from loopnets.report.results import Experiment, Variant, load_experiment, page_cli

HERE = Path(__file__).resolve().parent
TASKS = (("iris", "Iris"), ("meats", "NIR meat spectra"), ("mnist-cnn", "MNIST tiny CNN"), ("hershey", "Hershey MNIST"))
UNROLLED = ("tied", "truncated", "couple", "combine")  # modes swept over unroll 2, 4, 8
FIXED = ("implicit-ift", "implicit-phantom", "onestep", "tied-x4-deep", "tied-random", "ffn")  # one variant each
CLOSE = 0.02  # "as accurate as": a mean within 2 accuracy points of the reference's

MODES_TABLE = """\
| mode | gradient it computes | memory vs unroll k | time per step | needs | deep supervision / random passes |
|---|---|---|---|---|---|
| `Tied()` | exact (backprop through all k passes, tied weights) | grows with k | k passes + k backward | nothing | yes / yes |
| `Truncated(grad_passes=g)` | exact for the last g passes; earlier passes are constants | grows with g, not k | k passes + g backward | nothing | yes (no-grad passes add no gradient) / yes |
| `Couple()` | exact for k untied copies, averaged after each step (Lavik) | grows with k (and k copies of the weights and optimizer state) | k passes + k backward + a re-tie | unroll fixed at build | yes / up to k |
| `Combine()` | Lavik's approximation: one backward at the combined values | flat | k graph-free passes + 1 backward | a body of affine layers and element-wise activations | no / yes |
| `Implicit(backward="ift")` | exact at the fixed point (implicit function theorem) | flat | solver passes + a backward solve | a contractive loop (a fixed point to find) | fixed-point correction / no |
| `Implicit(backward="phantom")` | approximate: a few damped steps from the fixed point | grows with the steps, not the solve | solver passes + steps backward | a contractive loop | fixed-point correction / no |
| `OneStep()` | Jacobian-free: one pass from the detached fixed point | flat | solver passes + 1 backward | a contractive loop | fixed-point correction / no |
"""


# ----------------------------------------------------------------------------- measures


def acc(v: Variant) -> list[float]:
    return [x for r in v.finished if (x := r.probe("original", "accuracy")) is not None]


def ms(v: Variant) -> list[float]:
    return [1000 * s for r in v.finished if (s := r.train_seconds_per_epoch()) is not None]


def memory(v: Variant, key: str) -> list[float]:
    return [m[key] / 1024 for r in v.finished
            if (m := ((r.summary.get("loop_training") or {}).get("memory") or {})).get(key) is not None]


def solver(v: Variant) -> tuple[list[float], list[bool]]:
    """(eval passes, converged) per finished seed, for a loop with a fixed-point solver."""
    passes, converged = [], []
    for r in v.finished:
        stats = (((r.summary.get("loop_training") or {}).get("solver") or {}).get("loop") or {}).get("eval_forward")
        if stats:
            passes.append(float(stats["passes"]))
            converged.append(bool(stats["converged"]))
    return passes, converged


def sweep_at(v: Variant, passes: int) -> float:
    """Mean validation accuracy with the loop run `passes` times (summary unroll_sweep)."""
    swept = v.sweep("accuracy")
    if swept is None:
        return math.nan
    band, _ = swept
    at = [i for i, p in enumerate(band.epochs) if int(p) == passes]
    return float(band.mean[at[0]]) if at else math.nan


def m(values: list[float]) -> float:
    return statistics.mean(values) if values else math.nan


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    if not values:
        return "–"
    spread = f"{sd(values) * scale:.{digits}f}" if len(values) > 1 else "n/a"  # one seed has no spread
    return f"{m(values) * scale:.{digits}f} ± {spread}"


def by_name(exp: Experiment) -> dict[str, Variant]:
    return {v.name: v for v in exp.variants}


def unrolled(exp: Experiment, mode: str) -> list[Variant]:
    return sorted((v for v in exp.variants if v.name == f"{mode}-x{v.unroll}" and v.method == mode), key=lambda v: v.unroll)


# ----------------------------------------------------------------------------- page parts


def task_table(exp: Experiment) -> list[str]:
    lines = ["| variant | acc (%) | ms / epoch | saved KiB | peak KiB | solver passes (eval) | converged |",
             "|---|---|---|---|---|---|---|"]
    for v in exp.variants:
        passes, converged = solver(v)
        lines.append(
            f"| {v.name} | {fmt(acc(v), 100)} | {fmt(ms(v))} | {fmt(memory(v, 'saved_bytes'))} | "
            f"{fmt(memory(v, 'peak_bytes'))} | {fmt(passes) if passes else '–'} | "
            f"{f'{sum(converged)} / {len(converged)}' if converged else '–'} |"
        )
    return lines


def figure(exp: Experiment, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("validation accuracy (%)", lambda v: [100 * a for a in acc(v)]), ("ms per epoch", ms),
              ("saved KiB, one step", lambda v: memory(v, "saved_bytes")))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    names = by_name(exp)
    for ax, (label, measure) in zip(axes, panels):
        for mode in UNROLLED:
            vs = unrolled(exp, mode)
            if vs:
                ax.errorbar([v.unroll for v in vs], [m(measure(v)) for v in vs], [sd(measure(v)) for v in vs],
                            marker="o", capsize=3, label=mode)
        for i, name in enumerate(FIXED):
            if name in names and measure(names[name]):
                ax.axhline(m(measure(names[name])), ls=(0, (4, 2 + i)), lw=1, color=f"C{4 + i}", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks([2, 4, 8], ["2", "4", "8"])
        ax.set_xlabel("training unroll k")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_parts(exp: Experiment) -> list[str]:
    best = max((v for v in exp.variants if acc(v)), key=lambda v: m(acc(v)), default=None)
    if best is None:
        return []
    close = [v.name for v in exp.variants if acc(v) and m(acc(v)) >= m(acc(best)) - CLOSE]
    return [f"best {best.name} {100 * m(acc(best)):.1f} %", f"within {100 * CLOSE:.0f} points: {len(close)} of "
            f"{len(exp.variants)} variants ({', '.join(close)})"]


def memory_parts(exp: Experiment) -> list[str]:
    parts = []
    for mode in UNROLLED:
        vs = {v.unroll: memory(v, "saved_bytes") for v in unrolled(exp, mode)}
        if vs.get(2) and vs.get(8):
            parts.append(f"{mode} {m(vs[8]) / m(vs[2]):.2f}")
    return parts


def time_parts(exp: Experiment) -> list[str]:
    names = by_name(exp)
    ref = names.get("tied-x8")
    if ref is None or not ms(ref):
        return []
    return [f"{n} {m(ms(names[n])) / m(ms(ref)):.2f}" for n in
            ("truncated-x8", "couple-x8", "combine-x8", "implicit-ift", "implicit-phantom", "onestep")
            if n in names and ms(names[n])]


def convergence_parts(exp: Experiment) -> list[str]:
    parts = []
    for n in ("implicit-ift", "implicit-phantom", "onestep"):
        passes, converged = solver(by_name(exp)[n]) if n in by_name(exp) else ([], [])
        if converged:
            parts.append(f"{n} {sum(converged)} / {len(converged)} seeds converged, {m(passes):.1f} passes")
    return parts


def depth_parts(exp: Experiment) -> list[str]:
    names = by_name(exp)
    if "tied-x4" not in names or "tied-random" not in names:
        return []
    plain, rand, deep = names["tied-x4"], names["tied-random"], names.get("tied-x4-deep")
    parts = [f"tied-x4 {100 * sweep_at(plain, 4):.1f} % at 4 passes → {100 * sweep_at(plain, 8):.1f} % at 8",
             f"tied-random {100 * sweep_at(rand, 4):.1f} % → {100 * sweep_at(rand, 8):.1f} %"]
    if deep is not None and acc(deep):
        parts.append(f"tied-x4-deep {100 * m(acc(deep)):.1f} % vs tied-x4 {100 * m(acc(plain)):.1f} %")
    return parts


FINDINGS = (
    (f"**Accuracy.** Rule: the variants whose mean is within {100 * CLOSE:.0f} points of the best mean.", accuracy_parts),
    ("**Memory versus unroll.** Rule: saved bytes of one training step at unroll 8 divided by unroll 2 "
     "(1.00 = flat).", memory_parts),
    ("**Time per epoch relative to Tied x8** (below 1: faster).", time_parts),
    ("**Do the implicit modes find their fixed point?** Rule: the eval-mode solve over the validation split "
     "after training reached tol (per seed), and the passes it used.", convergence_parts),
    ("**Random pass counts and deep supervision.** Rule: validation accuracy from the test-time unroll sweep "
     "at 4 passes (the training unroll) and at 8 (beyond it); a drop means the model learned one depth.", depth_parts),
)


def findings(exps: dict[str, Experiment]) -> list[str]:
    """Cross-task statements, each under the rule that decides it, one line per task."""
    out = []
    for heading, parts_of in FINDINGS:
        out.append(f"- {heading}")
        out.extend(f"  - {task}: " + "; ".join(parts) for task, exp in exps.items() if (parts := parts_of(exp)))
    return out


def build(runs_dir: Path, out: Path) -> str:
    exps: dict[str, Experiment] = {}
    lines = ["# Which backprop mode? Every mode on the same tasks", "",
             "_Generated by `docs/build_modes.py` from the run folders of `configs/modes/`; do not edit by hand. "
             "Reproduce with `make modes`._", "",
             "loopnets trains a loop in seven ways. This page runs all of them, with the same model, data, "
             "optimizer and seeds, on four tasks, and measures accuracy, time per epoch and the memory one "
             "training step keeps for backward, at unroll 2, 4 and 8. Every loop re-injects its input in every "
             "pass (`merge = \"add\"`), so that the implicit modes have an input-dependent fixed point.", "",
             "## The modes", "", MODES_TABLE]
    for task, title in TASKS:
        folder = runs_dir / f"modes-{task}"
        lines += [f"## {title}", ""]
        if not any(folder.glob("*/seed=*/summary.json")):
            lines += [f"Not run yet: `loopnets run configs/modes/{task}.toml`.", ""]
            continue
        exp = load_experiment(folder)
        exps[task] = exp
        lines += [exp.config.get("description", ""), "", *task_table(exp), ""]
        png = out.with_name(f"modes-{task}.png")
        figure(exp, png, f"{title}: accuracy, time and memory vs unroll")
        lines += [f"![{title}]({png.name})", ""]
    if exps:
        lines += ["## Findings across tasks", "", *findings(exps), ""]
    lines += ["## Which to pick when", "",
              "- **Start with `Tied()`**: the exact gradient, no assumptions. Its memory grows linearly with the "
              "unroll (the memory finding above), which is the reason to leave it.",
              "- **`Truncated(grad_passes=1..2)`** when memory or time per step limits the unroll: the saved "
              "bytes stop growing with k (the memory finding above), and the accuracy finding shows whether the lost "
              "early-pass gradient matters on your task.",
              "- **`Combine()`** for Lavik's reproduction and flat memory with plain layers; it is an approximation "
              "(not the gradient of the forward function), cannot use deep supervision, and needs a body of affine "
              "layers and element-wise activations.",
              "- **`Couple()`** when you want the untied-copies training of the thesis; it costs k copies of the "
              "weights and of the optimizer state.",
              "- **`Implicit()` / `OneStep()`** when the loop is contractive and you want the passes chosen by a "
              "tolerance rather than fixed: check the convergence finding (`loop.solver_stats`, "
              "`ln.NotConvergedWarning`) before trusting the result; `OneStep` is the cheapest backward, "
              "`backward=\"ift\"` the exact one.",
              "- **`pass_weights` / `random_passes`** (any mode with a graph per pass) when the model must work "
              "at other pass counts than it was trained with: compare the sweep numbers of tied-random and "
              "tied-x4 above, and `ln.early_exit` to stop per sample at inference.", ""]
    text = "\n".join(lines)
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    page_cli(build, __doc__, HERE / "modes.md", argv)


if __name__ == "__main__":
    main()
