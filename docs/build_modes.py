"""Build docs/modes.md: every backprop mode on the same tasks, and which to pick when.

    python docs/reproductions/collect.py runs modes-<task>   # after `loopnets run configs/modes/<task>.toml`
    python docs/build_modes.py                               # or `make pages`: every page, offline

Reads the committed results (docs/reproductions/results/modes-*/, written by collect.py) or, with
--runs-dir, run folders, through the report's own reader (`loopnets.report.results.load_experiment`),
and writes modes.md from modes.md.j2 with its figures beside it (modes-<task>.png). Every number the
template prints passes through a template field (build_lavik's Recorder), so tests/test_modes.py can
tell computed numbers from typed ones. Each finding states the rule that decides it; the accuracy
finding is paired over seeds (verdicts.py). A task not committed yet shows the command that produces it.

Measures (mean ± sample sd over the finished seeds; n/a for one seed):
  acc    = validation accuracy after training (the "original" probe);
  ms     = training milliseconds per epoch (summary timing; the runs shared the machine, see the page);
  saved  = KiB autograd keeps for backward in one training step (summary loop_training.memory,
           exact; the step uses the run's deep supervision);
  peak   = KiB of the malloc peak of that step above the level before it;
  passes = the fixed-point solver's passes in eval mode over the validation split (Implicit, OneStep),
           and the share of seeds whose solve converged.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPRO = HERE / "reproductions"
sys.path.insert(0, str(REPRO))
import verdicts as V  # noqa: E402  (docs/reproductions)
from lavik_results import load  # noqa: E402
from page_tools import builder_main, render_template  # noqa: E402

from loopnets.report.results import Experiment, Variant, load_experiment  # noqa: E402

TASKS = (("iris", "Iris"), ("meats", "NIR meat spectra"), ("mnist-cnn", "MNIST tiny CNN"), ("hershey", "Hershey MNIST"))
UNROLLED = ("tied", "truncated", "couple", "combine")  # modes swept over the unrolls below
UNROLLS = (2, 4, 8)
FIXED = ("implicit-ift", "implicit-phantom", "onestep", "tied-x4-deep", "tied-random", "ffn")  # one variant each
SOLVERS = ("implicit-ift", "implicit-phantom", "onestep")


def config_name(task: str) -> str:
    return f"configs/modes/{task}.toml"


def produce_command(task: str) -> str:
    return f"loopnets run {config_name(task)} --workers 1 && python docs/reproductions/collect.py runs modes-{task}"


# ----------------------------------------------------------------------------- measures


def acc(v: Variant) -> list[float]:
    return [x for r in v.finished if (x := r.probe("original", "accuracy")) is not None]


def acc_by_seed(v: Variant) -> dict[int, float]:
    return {r.seed: x for r in v.finished if (x := r.probe("original", "accuracy")) is not None}


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


def task_rows(exp: Experiment) -> list[tuple[str, ...]]:
    rows = []
    for v in exp.variants:
        passes, converged = solver(v)
        rows.append((v.name, fmt(acc(v), 100), fmt(ms(v)), fmt(memory(v, "saved_bytes")), fmt(memory(v, "peak_bytes")),
                     fmt(passes) if passes else "–", f"{sum(converged)} / {len(converged)}" if converged else "–"))
    return rows


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
        ax.set_xticks(list(UNROLLS), [str(u) for u in UNROLLS])
        ax.set_xlabel("training unroll k")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_parts(exp: Experiment, chance: float | None) -> list[str]:
    """The best variant by mean, and the variants within noise of it: the paired interval of
    (best - variant) over shared seeds reaches zero."""
    scored = [v for v in exp.variants if acc(v)]
    if not scored:
        return []
    best = max(scored, key=lambda v: m(acc(v)))
    within, behind = [], []
    for v in scored:
        if v is best:
            continue
        iv = V.paired(acc_by_seed(v), acc_by_seed(best))
        (within if iv is None or iv.low <= 0 else behind).append(v.name)
    n = len(acc(best))
    floor = ""
    if chance is not None:
        ok, text = V.above_chance(acc_by_seed(best), chance)
        floor = f" ({'above' if ok else 'not above'} chance: {text})"
    return [f"best {best.name} {100 * m(acc(best)):.1f} % over {n} seeds{floor}",
            f"within noise of it: {len(within)} of {len(scored) - 1} others ({', '.join(within) or 'none'})",
            f"behind it beyond noise: {', '.join(behind) or 'none'}"]


def memory_parts(exp: Experiment) -> list[str]:
    parts = []
    low, high = UNROLLS[0], UNROLLS[-1]
    for mode in UNROLLED:
        vs = {v.unroll: memory(v, "saved_bytes") for v in unrolled(exp, mode)}
        if vs.get(low) and vs.get(high):
            parts.append(f"{mode} {m(vs[high]) / m(vs[low]):.2f}")
    return parts


def time_parts(exp: Experiment) -> list[str]:
    names = by_name(exp)
    high = UNROLLS[-1]
    ref = names.get(f"tied-x{high}")
    if ref is None or not ms(ref):
        return []
    return [f"{n} {m(ms(names[n])) / m(ms(ref)):.2f}" for n in
            (f"truncated-x{high}", f"couple-x{high}", f"combine-x{high}", *SOLVERS)
            if n in names and ms(names[n])]


def convergence_parts(exp: Experiment) -> list[str]:
    parts = []
    for n in SOLVERS:
        passes, converged = solver(by_name(exp)[n]) if n in by_name(exp) else ([], [])
        if converged:
            parts.append(f"{n} {sum(converged)} / {len(converged)} seeds converged, {m(passes):.1f} passes")
    return parts


def depth_parts(exp: Experiment) -> list[str]:
    names = by_name(exp)
    trained, beyond = UNROLLS[1], UNROLLS[-1]
    plain_name = f"tied-x{trained}"
    if plain_name not in names or "tied-random" not in names:
        return []
    plain, rand, deep = names[plain_name], names["tied-random"], names.get(f"{plain_name}-deep")
    parts = [f"{plain_name} {100 * sweep_at(plain, trained):.1f} % at {trained} passes → "
             f"{100 * sweep_at(plain, beyond):.1f} % at {beyond}",
             f"tied-random {100 * sweep_at(rand, trained):.1f} % → {100 * sweep_at(rand, beyond):.1f} %"]
    if deep is not None and acc(deep):
        parts.append(f"{plain_name}-deep {100 * m(acc(deep)):.1f} % vs {plain_name} {100 * m(acc(plain)):.1f} %")
    return parts


def findings(exps: dict[str, tuple[Experiment, float | None]]) -> list[dict]:
    """Cross-task statements, each under the rule that decides it, one line per task."""
    rules = (("accuracy", lambda e, c: accuracy_parts(e, c)), ("memory", lambda e, c: memory_parts(e)),
             ("time", lambda e, c: time_parts(e)), ("convergence", lambda e, c: convergence_parts(e)),
             ("depth", lambda e, c: depth_parts(e)))
    return [{"rule": rule, "tasks": [(task, "; ".join(parts)) for task, (exp, chance) in exps.items()
                                     if (parts := parts_of(exp, chance))]} for rule, parts_of in rules]


def context(results_dir: Path, figures: Path | None) -> dict:
    tasks, exps = [], {}
    for task, title in TASKS:
        folder = Path(results_dir) / f"modes-{task}"
        row = {"task": task, "title": title, "config": config_name(task), "command": produce_command(task), "rows": None}
        if not any(folder.glob("*/seed=*/summary.json")):
            tasks.append(row)
            continue
        exp, facts = load_experiment(folder), load(Path(results_dir), f"modes-{task}")
        data = facts.data if facts is not None else {}
        chance = facts.chance if facts is not None else None
        exps[task] = (exp, chance)
        seeds = sorted({r.seed for v in exp.variants for r in v.runs})
        row |= {"description": exp.config.get("description", ""), "rows": task_rows(exp), "png": f"modes-{task}.png",
                "n_val": f"{data['n_val']:,}" if "n_val" in data else "—",
                "one_sample": f"{data['one_sample_accuracy']:.3f}" if "one_sample_accuracy" in data else "—",
                "chance": f"{chance:.3f}" if chance is not None else "—",
                "runs": sum(len(v.runs) for v in exp.variants), "seeds": str(len(seeds)),
                "epochs": "/".join(str(x) for x in sorted({r.summary.get("epochs_run") for v in exp.variants
                                                           for r in v.runs if r.summary.get("epochs_run")})),
                "minutes": f"{facts.wall_minutes():.1f}" if facts else "—", "threads": facts.threads() if facts else "—",
                "load": f"{max(facts.loads(), default=0.0):.1f}" if facts else "—"}
        if figures is not None:
            figure(exp, figures / row["png"], f"{title}: accuracy, time and memory vs unroll")
        tasks.append(row)
    return {"tasks": tasks, "findings": findings(exps) if exps else [], "level": f"{V.LEVEL:.0%}",
            "unrolls": [str(u) for u in UNROLLS], "low": str(UNROLLS[0]), "high": str(UNROLLS[-1]),
            "trained": str(UNROLLS[1]), "missing": [(f"modes-{t['task']}", t["command"]) for t in tasks if t["rows"] is None]}


def render(results_dir: Path, figures: Path | None = None) -> tuple[str, set[str]]:
    """(the page, the numbers the template printed through its fields); figures written to `figures` if given."""
    return render_template("modes.md.j2", context(results_dir, figures), folder=HERE)


def build(results_dir: Path, out: Path) -> str:
    text, _ = render(Path(results_dir), Path(out).parent)
    Path(out).write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    builder_main(render, __doc__, HERE / "modes.md", argv, build=build)


if __name__ == "__main__":
    main()
