"""Build docs/thinking-longer.md: networks that think longer (issue 18), from the committed results.

    loopnets run configs/thinking/<name>.toml --workers 1 --runs-dir runs
    python docs/reproductions/collect.py runs thinking-<name>    # copy the compact results into results/
    python docs/build_thinking.py --runs-dir docs/reproductions/results   # or `make pages`: every page, offline

Reads the committed results docs/reproductions/results/thinking-*/ (collect.py) or run folders
(--runs-dir, default runs), the
DeepThinking papers' settings and claims from docs/thinking-papers.toml (transcribed, with the file or
section each comes from) and the prose from docs/thinking-longer.md.j2. Every number the page prints
passes through a template field (build_lavik's Recorder), so tests can tell computed numbers from typed
ones. Experiments not committed yet say "not run yet" with the command that produces them.

Measures, from each run's summary.json `extra` (`loopnets.models.thinking.experiments`):
  per-string accuracy = the share of fresh test strings with every bit right, at each (size, passes);
  halting = mean passes and accuracy when each string stops by its halting probability, beside the
  fixed budget (the largest test pass count) and `ln.early_exit`.
Means are over the finished seeds; the seeds are printed with every verdict.
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

import jinja2
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REPRO = HERE / "reproductions"
sys.path.insert(0, str(REPRO))
from build_lavik import Recorder  # noqa: E402  (docs/reproductions)
from page_tools import load_experiments  # noqa: E402
from lavik_results import Exp  # noqa: E402

from loopnets.report.results import page_cli  # noqa: E402

RESULTS = REPRO / "results"
PAPERS = HERE / "thinking-papers.toml"
TEMPLATE = "thinking-longer.md.j2"
CONFIGS = {  # key -> config file stem under configs/thinking (experiment thinking-<stem>)
    "target": "prefix-sums-recall-progressive",
    "no_recall": "prefix-sums-no-recall",
    "no_progressive": "prefix-sums-no-progressive",
    "feedforward": "prefix-sums-feedforward",
    "halting": "prefix-sums-halting",
    "transformer": "prefix-sums-transformer",
    "mazes": "mazes-recall-progressive",
}
PREFIX = ("target", "no_recall", "no_progressive", "feedforward", "halting")  # one table: the same sizes and passes
OTHERS = ("transformer", "mazes")  # a table each
LABELS = {"target": "recall + progressive", "no_recall": "no recall (progressive)",
          "no_progressive": "recall, no progressive (tied)", "feedforward": "feedforward, same depth",
          "halting": "recall + learned halting (PonderNet head on the progressive net)",
          "transformer": "looped transformer (sliding window, random passes, truncated backprop)",
          "mazes": "mazes, recall + progressive"}
OVERTHINKING = ("target", "no_recall", "no_progressive", "transformer")
ISSUE = 18
KERNEL = 3  # the convolutions' kernel size (loopnets.models.thinking.recurrent.conv)


BENCH = ROOT / "benchmarks" / "results" / "thinking"
BENCH_RUNS = (  # measured by benchmarks/thinking.py, not (yet) as configs: (key, JSON file stem, title)
    ("maze", "mazes-recall-progressive-w32", "Mazes, recall + progressive loss"),
    ("maze_no_recall", "mazes-no-recall-w32", "Mazes, no recall (progressive loss)"),
    ("transformer", "prefix_sums-transformer-bits16-eval", "Prefix sums, looped transformer (random passes, truncated backprop)"),
)


def benchmark_runs() -> list[dict]:
    """The committed benchmarks/thinking.py measurements, as tables: exact (and per-position) accuracy
    per (size, test passes), one seed each."""
    runs = []
    for key, stem, title in BENCH_RUNS:
        path = BENCH / f"{stem}.json"
        if not path.is_file():
            continue
        d = json.loads(path.read_text())
        trained = d  # a re-test from a checkpoint (<stem>-eval) takes its training time from the training run's file
        if d["train_s"] is None and (BENCH / f"{stem.removesuffix('-eval')}.json").is_file():
            trained = json.loads((BENCH / f"{stem.removesuffix('-eval')}.json").read_text())
        s = d["settings"]
        passes = [str(k) for k in d["passes"]]
        rows = [{"size": r["size"], "n": r["n"], "exact": [pct(r["accuracy"][k]) for k in passes],
                 "position": [pct(r["position_accuracy"][k]) for k in passes] if "position_accuracy" in r else None}
                for r in d["results"]]
        runs.append({"key": key, "title": title, "file": f"benchmarks/results/thinking/{stem}.json", "passes": passes,
                     "rows": rows, "settings": s, "train_minutes": f"{trained['train_s'] / 60:.1f}",
                     "load": f"{trained['load_at_start']:.1f} / {trained['load_at_end']:.1f}",
                     "threads": trained["torch_threads"],
                     "raw": d})
    return runs


def verdict_maze(runs: list[dict], size: int, goal: float) -> dict:
    """Hit when the maze net's exact accuracy at `size`, at its best test pass count, reaches `goal` (one seed)."""
    run = next((r for r in runs if r["key"] == "maze"), None)
    result = None if run is None else next((r for r in run["raw"]["results"] if r["size"] == size), None)
    if result is None:
        return {"status": "not run yet", "text": f"no committed maze measurement at {size} x {size}"}
    best = max(result["accuracy"], key=lambda k: (result["accuracy"][k], -int(k)))
    value = result["accuracy"][best]
    return {"status": "hit" if value >= goal else "missed",
            "text": f"best {pct(value)} of {result['n']} mazes at {best} passes (one seed, benchmarks/thinking.py, "
                    f"trained on {run['settings']['size']} x {run['settings']['size']})"}


def experiment_name(key: str) -> str:
    return f"thinking-{CONFIGS[key]}"


def config_path(key: str) -> str:
    return f"configs/thinking/{CONFIGS[key]}.toml"


def produce_command(key: str) -> str:
    return (f"nice -n 15 loopnets run {config_path(key)} --workers 1 --runs-dir runs && "
            f"python docs/reproductions/collect.py runs {experiment_name(key)}")


def papers() -> dict:
    return tomllib.loads(PAPERS.read_text())


def config(key: str) -> dict:
    return tomllib.loads((ROOT / config_path(key)).read_text())


# --- per-experiment measures -----------------------------------------------------------------------

def finished(exp: Exp) -> list[tuple[int, dict]]:
    """(seed, summary) of every finished run (each thinking config has one variant)."""
    return sorted((seed, s) for seeds in exp.runs.values() for seed, s in seeds.items()
                  if s.get("status") == "finished" and (s.get("extra") or {}).get("test"))


def unfinished(exp: Exp) -> list[tuple[int, str, str]]:
    """(seed, status, the run's error) of every run that did not finish (e.g. diverged)."""
    return sorted((seed, s.get("status", "?"), s.get("error") or "") for seeds in exp.runs.values()
                  for seed, s in seeds.items() if s.get("status") != "finished")


def no_result(exps: dict, key: str) -> dict:
    """The verdict of a config with no finished run: not run yet, or run and not finished (with why)."""
    failed = unfinished(exps[key]) if key in exps else []
    if not failed:
        return {"status": "not run yet", "text": f"`{produce_command(key)}`"}
    why = "; ".join(f"seed {seed} {status}: {error.split('. ')[0]}" for seed, status, error in failed)
    return {"status": "no finished run", "text": f"{why} (`{config_path(key)}`; its report has the full error)"}


def grid(exp: Exp) -> dict | None:
    """{"sizes", "passes", "seeds": [...], "per_seed": {seed: rows}, "mean": rows (sizes x passes)}."""
    runs = finished(exp)
    if not runs:
        return None
    first = runs[0][1]["extra"]["test"]
    per_seed = {seed: s["extra"]["test"]["accuracy"] for seed, s in runs
                if s["extra"]["test"]["sizes"] == first["sizes"] and s["extra"]["test"]["passes"] == first["passes"]}
    rows = [[statistics.mean(per_seed[seed][i][j] for seed in per_seed) for j in range(len(first["passes"]))]
            for i in range(len(first["sizes"]))]
    return {"sizes": first["sizes"], "passes": first["passes"], "examples": first["examples"],
            "seeds": sorted(per_seed), "per_seed": per_seed, "mean": rows, "fixed_depth": first["fixed_depth"]}


def at(g: dict, size: int, passes: int | None = None, seed: int | None = None) -> float:
    """Accuracy at `size` after `passes` (None: the best test pass count) of the seeds' mean or one seed.
    A size or pass count no run tested is a ValueError naming it and how to add it."""
    if size not in g["sizes"]:
        raise ValueError(f"no run tested size {size}; tested sizes: {', '.join(map(str, g['sizes']))}: add {size} to "
                         f"model.thinking.test_sizes and run the config again")
    row = (g["mean"] if seed is None else g["per_seed"][seed])[g["sizes"].index(size)]
    if passes is None:
        return max(row)
    if passes not in g["passes"]:
        raise ValueError(f"no run tested {passes} passes; tested: {', '.join(map(str, g['passes']))}")
    return row[g["passes"].index(passes)]


def best_passes(g: dict, size: int) -> int:
    row = g["mean"][g["sizes"].index(size)]
    return g["passes"][row.index(max(row))]


def halting(exp: Exp) -> dict | None:
    """The halting record, each list the mean over the finished seeds."""
    records = [(seed, h) for seed, s in finished(exp) if (h := s["extra"].get("halting"))]
    if not records:
        return None
    mean = lambda get: [statistics.mean(v) for v in zip(*(get(h) for _, h in records))]  # noqa: E731
    first = records[0][1]
    return {"per_seed": records,
            "sizes": first["sizes"], "max_passes": first["max_passes"], "threshold": first["threshold"],
            "seeds": [seed for seed, _ in records], "criterion": first["early_exit"]["criterion"],
            "ee_threshold": first["early_exit"]["threshold"],
            "passes": mean(lambda h: h["mean_passes"]), "accuracy": mean(lambda h: h["accuracy"]),
            "fixed": mean(lambda h: h["fixed_accuracy"]), "ee_passes": mean(lambda h: h["early_exit"]["mean_passes"]),
            "ee_accuracy": mean(lambda h: h["early_exit"]["accuracy"]),
            "sweep": [{"threshold": row["threshold"],
                       "passes": mean(lambda h, i=i: h["sweep"][i]["mean_passes"]),
                       "accuracy": mean(lambda h, i=i: h["sweep"][i]["accuracy"])}
                      for i, row in enumerate(first.get("sweep", []))]}


# --- formatting ------------------------------------------------------------------------------------

def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def seeds_text(seeds: list[int]) -> str:
    return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})"


# --- verdicts --------------------------------------------------------------------------------------

def verdict_accuracy(exps: dict, key: str, bits: int, goal: float) -> dict:
    """Hit when the seeds' mean accuracy at the best test pass count reaches `goal`."""
    if key not in exps or (g := grid(exps[key])) is None:
        return no_result(exps, key)
    value = at(g, bits)
    passes = best_passes(g, bits)
    each = ", ".join(f"seed {s}: {pct(at(g, bits, passes, s))}" for s in g["seeds"])
    status = "hit" if value >= goal else "missed"
    reached = sum(at(g, bits, None, s) >= goal for s in g["seeds"])
    return {"status": status, "text": f"{pct(value)} at {passes} passes, mean of {seeds_text(g['seeds'])} ({each}); "
                                      f"target {pct(goal)}; {reached} of {len(g['seeds'])} seeds reach it alone, "
                                      f"each at its own best pass count"}


def verdict_fails(exps: dict, bits: int, limit: float) -> dict:
    """Both baselines fail visibly: at most `limit` at `bits` at every test pass count."""
    parts, missing = [], []
    for key in ("feedforward", "no_recall"):
        if key not in exps or (g := grid(exps[key])) is None:
            missing.append(key)
            continue
        parts.append((key, at(g, bits), g["seeds"]))
    if missing:
        absent = [no_result(exps, k) for k in missing]
        status = next((v["status"] for v in absent if v["status"] != "not run yet"), "not run yet")
        return {"status": status, "text": "; ".join(v["text"] for v in absent)}
    status = "hit" if all(v <= limit for _, v, _ in parts) else "missed"
    text = "; ".join(f"{LABELS[k]}: best {pct(v)} over the test pass counts ({seeds_text(s)})" for k, v, s in parts)
    return {"status": status, "text": f"{text}; a visible failure is at most {pct(limit)}"}


def verdict_halting(exps: dict, bits: int, within: float, share: float) -> dict:
    if "halting" not in exps or (h := halting(exps["halting"])) is None:
        return no_result(exps, "halting")
    if bits not in h["sizes"]:
        raise ValueError(f"the halting runs did not test size {bits}; add it to model.thinking.test_sizes")
    i = h["sizes"].index(bits)
    grows = all(a < b for a, b in zip(h["passes"], h["passes"][1:]))
    gap = h["accuracy"][i] - h["fixed"][i]
    used = h["passes"][i] / h["max_passes"]
    ok = grows and abs(gap) <= within + 1e-12 and used <= share
    passes = ", ".join(f"{s} bits: {p:.1f}" for s, p in zip(h["sizes"], h["passes"]))
    g = grid(exps["halting"])
    row = g["mean"][g["sizes"].index(bits)]
    enough = next(p for p, a in zip(g["passes"], row) if a >= row[-1] - within - 1e-12)
    text = (f"mean passes by size {passes} ({'growing' if grows else 'not growing'} with the size); at {bits} bits "
            f"halting {pct(h['accuracy'][i])} with {h['passes'][i]:.1f} passes ({pct(used)} of the fixed budget's "
            f"{h['max_passes']}) against the fixed budget's {pct(h['fixed'][i])}, a gap of {100 * gap:+.1f} points "
            f"({seeds_text(h['seeds'])}); target: growing, within {100 * within:.0f} point, at most {pct(share)} of the passes. "
            f"A stricter budget for comparison: the fewest tested passes run for every string that come within "
            f"{100 * within:.0f} point of the full budget's accuracy are {enough}. Each seed at {bits} bits: "
            + "; ".join(f"seed {seed}: halting {pct(r['accuracy'][i])} with {r['mean_passes'][i]:.1f} passes, the fixed "
                        f"budget {pct(r['fixed_accuracy'][i])}, early_exit {pct(r['early_exit']['accuracy'][i])} with "
                        f"{r['early_exit']['mean_passes'][i]:.1f}" for seed, r in h["per_seed"]))
    return {"status": "hit" if ok else "missed", "text": text}


# --- figures ---------------------------------------------------------------------------------------

def accuracy_figure(exps: dict, keys: tuple, sizes: list[int], title: str) -> Figure | None:
    grids = {k: g for k in keys if k in exps and (g := grid(exps[k])) is not None}
    if not grids:
        return None
    fig = Figure(figsize=(3.2 * len(sizes), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, size in zip(axes, sizes):
        for i, (k, g) in enumerate(grids.items()):
            if size in g["sizes"]:
                ys = [100 * a for a in g["mean"][g["sizes"].index(size)]]
                ax.plot(g["passes"], ys, marker="o", markersize=3, color=f"C{i}", label=LABELS[k],
                        linestyle="--" if g["fixed_depth"] else "-")
        ax.set_xscale("log")
        ax.set_title(f"{size} bits")
        ax.set_xlabel("test-time passes")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("per-string accuracy (%)")
    axes[-1].legend(fontsize="x-small", loc="lower right")
    fig.suptitle(title)
    return fig


def halting_figure(h: dict) -> Figure:
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, size in enumerate(h["sizes"]):
        points = [(h["passes"][i], h["accuracy"][i], "o", "halting"), (h["max_passes"], h["fixed"][i], "s", "fixed budget"),
                  (h["ee_passes"][i], h["ee_accuracy"][i], "^", "early_exit")]
        for x, y, marker, what in points:
            ax.scatter([x], [100 * y], marker=marker, color=f"C{i}", label=f"{size} bits, {what}")
        curve = sorted([(s["passes"][i], s["accuracy"][i]) for s in h["sweep"]] + [(h["passes"][i], h["accuracy"][i])])
        ax.plot([p for p, _ in curve], [100 * a for _, a in curve], color=f"C{i}", linewidth=0.8, alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("mean passes used")
    ax.set_ylabel("per-string accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="xx-small", ncol=2)
    fig.suptitle("Learned halting: passes against accuracy")
    return fig


# --- the page --------------------------------------------------------------------------------------

def table_rows(exps: dict, keys: tuple = PREFIX) -> tuple[list, list]:
    """(header pass counts, rows) of an accuracy table: one row per (experiment, size); the header is
    every pass count any of them tested, a cell empty where its experiment did not test that count."""
    grids = [(key, g) for key in keys if key in exps and (g := grid(exps[key])) is not None]
    passes = sorted({p for _, g in grids for p in g["passes"]})
    rows = []
    for key, g in grids:
        for i, size in enumerate(g["sizes"]):
            value = dict(zip(g["passes"], g["mean"][i]))
            cells = [f"{100 * value[p]:.1f}" if p in value else "" for p in passes]
            rows.append({"label": LABELS[key], "size": size, "seeds": len(g["seeds"]),
                         "examples": g["examples"][i], "cells": cells})
    return passes, rows


def paper_rows(exps: dict, rows: list[dict]) -> list[dict]:
    """The papers' quoted numbers, each beside ours: our experiment's best accuracy at the same test
    size, or where it did not test that size, its largest tested size."""
    out = []
    for r in rows:
        key = r["compare"]
        g = grid(exps[key]) if key in exps else None
        ours, note = "not run yet", ""
        if g is not None:
            if r["test_size"] in g["sizes"]:
                ours = f"{pct(at(g, r['test_size']))} at {best_passes(g, r['test_size'])} passes"
            else:
                largest = max(g["sizes"])
                ours = f"not tested at {r['test_size']}; at {largest}: {pct(at(g, largest))}"
            note = f"{seeds_text(g['seeds'])}, `{config_path(key)}`"
        out.append({"model": r["model"], "task": r["task"], "train": r["train_size"], "test": r["test_size"],
                    "unit": r["unit"], "theirs": f"{r['accuracy']:.2f} ± {r['spread']:.2f} %" if "spread" in r else f"{r['accuracy']} %",
                    "iterations": r.get("iterations", "not stated"), "where": r["where"], "quote": r["quote"],
                    "ours": ours, "note": note})
    return out


def other_tables(exps: dict) -> list[dict]:
    """One accuracy table per experiment of OTHERS (its own sizes and pass counts), with its settings."""
    out = []
    for key in OTHERS:
        header, rows = table_rows(exps, (key,))
        out.append({"key": key, "label": LABELS[key], "config": config_path(key), "header": header, "rows": rows,
                    "missing": None if rows else no_result(exps, key)})
    return out


def settings_of(key: str) -> dict:
    c = config(key)
    t, train = c["model"]["thinking"], c["train"]
    return {"name": experiment_name(key), "config": config_path(key), "label": LABELS[key],
            "width": t.get("width"), "max_iters": t.get("max_iters"), "examples": f"{t.get('train_examples'):,}",
            "epochs": train["epochs"], "seeds": len(train["seeds"]), "variant": c["variants"][0]}


def context(exps: dict[str, Exp], out: Path) -> dict:
    p = papers()
    targets = p["targets"]
    c: dict = {"papers": p, "settings": p["settings"], "targets": targets,
               "labels": LABELS, "present": [k for k in CONFIGS if k in exps],
               "missing": [(experiment_name(k), produce_command(k)) for k in CONFIGS if k not in exps],
               "configs": [settings_of(k) for k in CONFIGS], "gpu": tomllib.loads(
                   (ROOT / "configs/thinking/prefix-sums-gpu.toml").read_text())}
    c["gpu_thinking"] = c["gpu"]["model"]["thinking"]
    c["issue"], c["kernel"], c["pct"] = ISSUE, KERNEL, pct
    t = targets
    c["target_text"] = {
        "target_a": f"Prefix sums, {t['bits_a']} bits: the recall + progressive model at least {pct(t['accuracy_a'])}",
        "target_b": f"Prefix sums, {t['bits_b']} bits: the recall + progressive model at least {pct(t['accuracy_b'])}",
        "fails": f"The feedforward net and the net without recall fail visibly at {t['fail_bits']} bits",
        "halting": f"Learned halting: passes grow with the size; at {t['halting_bits']} bits the fixed budget's "
                   f"accuracy within {100 * t['halting_within']:.0f} point with at most {pct(t['halting_passes_share'])} "
                   f"of its passes"}
    target = settings_of("target")
    c["halting_settings"] = settings_of("halting")
    c["scale"] = {"width": f"{p['settings']['width'] / target['width']:.1f}",
                  "epochs": f"{p['settings']['epochs'] / target['epochs']:.0f}"}
    c["pass_header"], c["rows"] = table_rows(exps)
    c["verdicts"] = [
        ("target_a", verdict_accuracy(exps, "target", targets["bits_a"], targets["accuracy_a"])),
        ("target_b", verdict_accuracy(exps, "target", targets["bits_b"], targets["accuracy_b"])),
        ("fails", verdict_fails(exps, targets["fail_bits"], targets["fail_accuracy"])),
        ("halting", verdict_halting(exps, targets["halting_bits"], targets["halting_within"],
                                    targets["halting_passes_share"])),
    ]
    sizes = next((g["sizes"] for k in PREFIX if k in exps and (g := grid(exps[k])) is not None), [])
    c["figure"] = c["overthinking_figure"] = c["halting_figure"] = None
    fig = accuracy_figure(exps, PREFIX, sizes, "Per-string accuracy against test-time passes")
    if fig is not None:
        fig.savefig(out.parent / "thinking-longer-accuracy.png", dpi=110)
        c["figure"] = "thinking-longer-accuracy.png"
    small = sizes[:2]
    fig = accuracy_figure(exps, OVERTHINKING, small, "Overthinking: accuracy as the nets run longer")
    if fig is not None:
        fig.savefig(out.parent / "thinking-longer-overthinking.png", dpi=110)
        c["overthinking_figure"] = "thinking-longer-overthinking.png"
    c["overthinking"] = []
    for key in OVERTHINKING:
        if key in exps and (g := grid(exps[key])) is not None:
            for size in small:
                row = g["mean"][g["sizes"].index(size)]
                peak = max(row)
                c["overthinking"].append({"label": LABELS[key], "size": size, "peak": pct(peak),
                                          "at": g["passes"][row.index(peak)], "last": pct(row[-1]),
                                          "last_passes": g["passes"][-1], "drop": f"{100 * (row[-1] - peak):+.1f}"})
    c["halting"] = h = halting(exps["halting"]) if "halting" in exps else None
    if h is not None:
        halting_figure(h).savefig(out.parent / "thinking-longer-halting.png", dpi=110)
        c["halting_figure"] = "thinking-longer-halting.png"
        c["halting_rows"] = [{"size": s, "passes": f"{h['passes'][i]:.1f}", "accuracy": pct(h["accuracy"][i]),
                              "fixed": pct(h["fixed"][i]), "ee_passes": f"{h['ee_passes'][i]:.1f}",
                              "ee_accuracy": pct(h["ee_accuracy"][i])} for i, s in enumerate(h["sizes"])]
        c["sweep_rows"] = [{"threshold": row["threshold"], "size": size, "passes": f"{row['passes'][i]:.1f}",
                            "accuracy": pct(row["accuracy"][i]), "fixed": pct(h["fixed"][i])}
                           for row in [*h["sweep"], {"threshold": h["threshold"], "passes": h["passes"],
                                                     "accuracy": h["accuracy"]}]
                           for i, size in enumerate(h["sizes"])]
    c["bench"] = bench = benchmark_runs()
    c["maze_verdicts"] = [(f"Mazes, {t['maze_a']} x {t['maze_a']}: at least {pct(t['maze_accuracy_a'])} solved exactly",
                           verdict_accuracy(exps, "mazes", t["maze_a"], t["maze_accuracy_a"]),
                           verdict_maze(bench, t["maze_a"], t["maze_accuracy_a"])),
                          (f"Mazes, {t['maze_b']} x {t['maze_b']}: at least {pct(t['maze_accuracy_b'])} solved exactly",
                           verdict_accuracy(exps, "mazes", t["maze_b"], t["maze_accuracy_b"]),
                           verdict_maze(bench, t["maze_b"], t["maze_accuracy_b"]))]
    c["others"] = other_tables(exps)
    c["paper_rows"] = paper_rows(exps, p["results"].get("rows", []))
    c["maze_gpu"] = tomllib.loads((ROOT / "configs/thinking/mazes-gpu.toml").read_text())
    c["walls"] = [{"config": config_path(k), "runs": len(finished(e)),
                   "train_minutes": f"{max(s['extra']['train_seconds'] for _, s in finished(e)) / 60:.1f}"
                   if finished(e) else "", "wall_minutes": f"{e.wall_minutes():.1f}", "threads": e.threads(),
                   "load": f"{max(e.loads(), default=0.0):.1f}"} for k, e in exps.items()]
    return c


def render(results_dir: Path, out: Path | None = None) -> tuple[str, set[str]]:
    """(the page, the numbers its fields printed); figures are written beside `out`."""
    out = Path(out) if out is not None else HERE / "thinking-longer.md"
    exps = load_experiments(Path(results_dir), {k: experiment_name(k) for k in CONFIGS})
    recorder = Recorder()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE), finalize=recorder, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    return env.get_template(TEMPLATE).render(**context(exps, out)), recorder.numbers


def build(results_dir: Path, out: Path) -> str:
    page = render(results_dir, out)[0]
    Path(out).write_text(page)
    return page


if __name__ == "__main__":
    page_cli(build, __doc__, HERE / "thinking-longer.md")
