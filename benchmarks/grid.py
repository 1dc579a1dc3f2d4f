"""The thesis's iris comparison grid (issue 15): stacked training against one model at a time.

Two measurements, written as rows by code (`loopnets bench --suites grid`):

1. The grid: `configs/lavik/iris.toml` (FFN, COMBINE x2-x4, COUPLE x2-x4, without and with the
   skip, 5 seeds: 70 networks, batch 1, <= 100 epochs, patience 10) through the experiment runner
   (`loopnets run`, into a temporary folder, probes and unroll sweeps included), twice, side by side:
   stacked (train.group_seeds = true: every run whose network stacks in one task, `ln.fit_many`)
   and one at a time (train.group_seeds = false: one `ln.fit` per run), with the same workers.
   Wall time, CPU time of the workers, and the load average before and after each. Then both
   runs' accuracies and probe results side by side, and the largest difference per run.
2. Per model-epoch: the grid's 70 models trained the way the runner groups them, one `fit_many`
   per group for a fixed number of epochs (no early stopping), in this process; ms of wall and
   CPU time per model-epoch of each group, beside `neurons`' ms per epoch for one model.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "lavik" / "iris.toml"
# ms per training epoch of one model, `neurons` 2.6.2 medians on this machine (issue 7), iris, batch 1
NEURONS_MS = {("ffn", 1): 5.1, ("combine", 2): 5.4, ("combine", 3): 5.5, ("combine", 4): 6.1,
              ("couple", 2): 11.4, ("couple", 3): 15.7, ("couple", 4): 18.0}
NEURONS_GRID_S = 35.4  # neurons' compare-iris, whole grid, quiet machine (issue 15)
PROBES = ("original", "skip_off", "feedback_off")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def run_grid(grouped: bool, workers: int, overrides: list[str], log) -> dict:
    """One run of the grid through the runner; its timing and every run's summary."""
    from loopnets.experiments import load_config, run_experiment

    exp = load_config(CONFIG, [*overrides, f"train.group_seeds={str(grouped).lower()}"])
    load_before = _load()
    wall, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    with tempfile.TemporaryDirectory() as runs:
        folder = run_experiment(exp, runs, workers=workers, progress=False, log=lambda line: log(f"  {line}"))
        summaries = {(s["variant"], s["seed"]): s for s in
                     (json.loads(p.read_text()) for p in folder.glob("*/seed=*/summary.json"))}
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu + _children_cpu() - children
    epochs = sum(s["epochs_run"] for s in summaries.values())
    groups = sorted({s["training"].get("models_together", 1) for s in summaries.values()}, reverse=True)
    return {"grouped": grouped, "workers": workers, "wall_s": wall, "cpu_s": cpu, "load_before": load_before,
            "load_after": _load(), "runs": len(summaries), "model_epochs": epochs, "group_sizes": groups,
            "summaries": summaries}


def compare(stacked: dict, single: dict) -> dict:
    """Per variant, median [min - max] accuracy of each probe for both runs; the largest differences."""
    variants = sorted({v for v, _ in stacked["summaries"]}, key=_order)
    table, acc_diff, loss_diff, epochs_differ = [], 0.0, 0.0, 0
    for variant in variants:
        row = {"variant": variant}
        for name, run in (("stacked", stacked), ("single", single)):
            runs = [s for (v, _), s in run["summaries"].items() if v == variant and s["status"] == "finished"]
            for probe in PROBES:
                accs = [100 * s["probes"][probe]["accuracy"] for s in runs if s["probes"].get(probe)]
                row[f"{name}_{probe}"] = (statistics.median(accs), min(accs), max(accs)) if accs else None
        table.append(row)
    worst = {probe: (0.0, None) for probe in PROBES}  # the largest relative loss difference per probe, and where
    for key, a in stacked["summaries"].items():
        b = single["summaries"][key]
        epochs_differ += a["epochs_run"] != b["epochs_run"]
        for probe in PROBES:
            pa, pb = (a.get("probes") or {}).get(probe), (b.get("probes") or {}).get(probe)
            if pa and pb:
                acc_diff = max(acc_diff, abs(pa["accuracy"] - pb["accuracy"]))
                rel = abs(pa["loss"] - pb["loss"]) / max(abs(pb["loss"]), 1e-12)
                if rel > worst[probe][0]:
                    worst[probe] = (rel, f"{key[0]} seed={key[1]}: {pa['loss']:.6g} vs {pb['loss']:.6g}")
                loss_diff = max(loss_diff, rel)
    return {"table": table, "max_accuracy_diff": acc_diff, "max_loss_rel_diff": loss_diff, "worst_loss": worst,
            "epochs_differ": epochs_differ, "runs": len(stacked["summaries"])}


def per_model_epoch(epochs: int, log) -> list[dict]:
    """ms per model-epoch of the grid's stacking groups (fixed epochs, the first dropped as warm-up)."""
    import loopnets as ln
    from loopnets.builder.stacking import merged_keys, stack_key
    from loopnets.experiments import load_config
    from loopnets.experiments.config import expand_variants
    from loopnets.experiments.runner import build_model, load_split

    exp = load_config(CONFIG)
    split = load_split(exp)
    specs = [(v, s) for v in expand_variants(exp) for s in exp.train.seeds]

    def build(variant, seed):
        torch.manual_seed(seed)
        return build_model(exp, variant, split)

    keys = merged_keys([stack_key(build(v, 0)) for v, _ in specs])
    groups: dict = {}
    for key, spec in zip(keys, specs):
        groups.setdefault(key, []).append(spec)
    settings = {"loss": "cross_entropy", "optimizer": (exp.train.optimizer, {k: tuple(v) if isinstance(v, list) else v
                                                                          for k, v in exp.train.optimizer_args.items()}),
                "batch_size": exp.train.batch_size, "progress": False}
    rows = []
    for members in sorted(groups.values(), key=len, reverse=True):
        models = [build(v, s) for v, s in members]
        seeds = [s for _, s in members]
        ln.fit_many(models, split.train, split.val, seeds=seeds, epochs=1, **settings)  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        many = ln.fit_many(models, split.train, split.val, seeds=seeds, epochs=epochs, **settings)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        model_epochs = epochs * len(models)
        kinds = sorted({(v.method, v.unroll if v.method != "ffn" else 1) for v, _ in members}, key=lambda k: (k[0] != "ffn", k))
        neurons = min(NEURONS_MS[k] for k in kinds)  # the fastest member's figure: the strictest comparison
        row = {"group": ", ".join(_label(*k) for k in kinds) + " (with and without skip)", "models": len(models),
               "path": many.path, "wall_ms": 1000 * wall / model_epochs, "cpu_ms": 1000 * cpu / model_epochs,
               "step_ms": 1000 * wall / (epochs * len(split.train[0])), "neurons_ms": neurons, "kinds": kinds}
        row["neurons_speedup"] = neurons / row["cpu_ms"]  # one thread: CPU time is the wall time of a quiet machine
        rows.append(row)
        log(f"  {row['group']}: {len(models)} models, {row['wall_ms']:.2f} ms wall / {row['cpu_ms']:.2f} ms CPU per "
            f"model-epoch ({row['step_ms']:.2f} ms per step); neurons {neurons} ms: {row['neurons_speedup']:.2f}x")
    return rows


def run(quick: bool, workers: int, log=print) -> dict:
    """Both measurements; quick: 2 seeds, 2 epochs (checks that everything runs)."""
    overrides = ["train.seeds=[0, 1]", "train.epochs=2"] if quick else []
    log(f"iris grid, stacked (load {_load():.2f}):")
    stacked = run_grid(True, workers, overrides, log)
    log(f"  -> {stacked['wall_s']:.1f} s wall, {stacked['cpu_s']:.1f} s CPU, groups {stacked['group_sizes']}")
    log(f"iris grid, one at a time (load {_load():.2f}):")
    single = run_grid(False, workers, overrides, log)
    log(f"  -> {single['wall_s']:.1f} s wall, {single['cpu_s']:.1f} s CPU")
    fidelity = compare(stacked, single)
    log(f"  largest differences, stacked vs one at a time: accuracy {fidelity['max_accuracy_diff']:.4f}, "
        f"probe loss {fidelity['max_loss_rel_diff']:.2e} relative; epochs run differ in {fidelity['epochs_differ']} "
        f"of {fidelity['runs']} runs; per probe: {fidelity['worst_loss']}")
    log("per model-epoch, the grid's groups:")
    groups = per_model_epoch(1 if quick else 3, log)
    for r in (stacked, single):
        r.pop("summaries")
    return {"stacked": stacked, "single": single, "fidelity": fidelity, "groups": groups,
            "threads": torch.get_num_threads()}


def markdown(grid: dict) -> list[str]:
    """The grid's section of RESULTS.md."""
    s, o, f = grid["stacked"], grid["single"], grid["fidelity"]
    lines = [
        "## The iris grid (issue 15): stacked against one at a time",
        "",
        f"`configs/lavik/iris.toml` through the runner, {s['workers']} worker(s), {s['runs']} runs; the two ways one "
        f"after the other on the same machine. Workers' torch threads: cores // workers. CPU = this process and its "
        f"workers. neurons' compare-iris: {NEURONS_GRID_S} s on a quiet machine (issue 15).",
        "",
        "| way | wall s | CPU s | model-epochs | group sizes | load before | load after |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for name, r in (("stacked", s), ("one at a time", o)):
        lines.append(f"| {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['model_epochs']} | "
                     f"{', '.join(map(str, r['group_sizes']))} | {r['load_before']:.2f} | {r['load_after']:.2f} |")
    lines += [
        "",
        f"Speedup, one at a time / stacked: {o['wall_s'] / s['wall_s']:.2f}x wall, {o['cpu_s'] / s['cpu_s']:.2f}x CPU.",
        "",
        "Validation accuracy %, median [min - max] over the seeds, per probe (original / skip off / feedback off):",
        "",
        "| variant | stacked: original | one at a time: original | stacked: skip off | one at a time: skip off | "
        "stacked: feedback off | one at a time: feedback off |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in f["table"]:
        cells = [_cell(row[f"{way}_{probe}"]) for probe in PROBES for way in ("stacked", "single")]
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Largest difference over the {f['runs']} runs: accuracy {f['max_accuracy_diff']:.4f}, probe loss "
        f"{f['max_loss_rel_diff']:.2e} relative; the number of epochs run differs in {f['epochs_differ']} runs. "
        "Largest relative difference of the probe losses, per probe (float32; 100 epochs of batch-1 Adam carry "
        "rounding differences of ~1e-7 per step along):",
        "",
        *(f"- {probe}: {rel:.2e}" + (f" ({where})" if where else "") for probe, (rel, where) in f["worst_loss"].items()),
        "",
        f"Per model-epoch (iris, batch 1, the grid's groups as the runner stacks them, fixed epochs, "
        f"{grid['threads']} thread(s)); neurons: its ms per epoch for one model on a quiet machine, the group's "
        "fastest member; compared with loopnets' CPU time (one thread: the wall time it takes on a quiet machine; "
        "on a shared one wall time also counts the waits for a core):",
        "",
        "| group | models | ms / model-epoch (wall) | CPU | ms / step (wall) | neurons ms | neurons / loopnets CPU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in grid["groups"]:
        lines.append(f"| {r['group']} | {r['models']} | {r['wall_ms']:.2f} | {r['cpu_ms']:.2f} | {r['step_ms']:.2f} | "
                     f"{r['neurons_ms']:g} | {r['neurons_speedup']:.2f}x |")
    lines.append("")
    return lines


def _cell(value) -> str:
    return "-" if value is None else f"{value[0]:.1f} [{value[1]:.1f} - {value[2]:.1f}]"


def _label(method: str, unroll: int) -> str:
    return "FFN" if method == "ffn" else f"{method.upper()} x{unroll}"


def _order(variant: str) -> tuple:
    return (["ffn", "combine", "couple"].index(variant.split("-")[0]) if variant.split("-")[0] in ("ffn", "combine", "couple")
            else 9, variant)
