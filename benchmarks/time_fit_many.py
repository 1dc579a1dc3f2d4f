"""Per-model-epoch training time on iris at batch size 1: 5 seeds one at a time vs ln.fit_many.

    python benchmarks/time_fit_many.py [--epochs 5] [--dtype float32] [--repeats 3]
    python benchmarks/time_fit_many.py --grid [--one-at-a-time]

--grid: the whole iris comparison grid of configs/lavik/iris.toml (FFN, COMBINE x2-x4, COUPLE
x2-x4, each without and with the bypassing skip: 14 variants x 5 seeds, patience 10, at most 100
epochs) through the experiment runner (`loopnets run`, into a temporary folder, probes and unroll
sweeps included), every run whose network stacks with another's trained in one fit_many call
(train.group_seeds, the default; --one-at-a-time: train.group_seeds = false, one `fit` per run).
`loopnets bench --suites grid` measures both side by side and writes the results.

The lavik iris setup (4-25-25-25-3, ReLU, no biases, Adam(1e-4, 0.95, 0.999, 1e-7), U(-1, 1)
weights, batch 1, 120 training and 30 validation samples), without early stopping so that every
run does the same work. Prints, per variant, the best of `repeats` interleaved measurements of
wall time and of this process's CPU time (the machine may be shared: CPU time is what the work
costs, wall time what a user waits), and the largest relative difference between the two ways'
histories and weights (equal within rounding, not bit for bit).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import loopnets as ln
from loopnets.data import load_dataset
from loopnets.models.lavik.architectures import init_uniform_, thesis_mlp

VARIANTS = {"FFN": ("ffn", 1), "COMBINE x2": ("combine", 2), "COUPLE x2": ("couple", 2), "Tied x2": ("tied", 2)}
NEURONS_MS = {"FFN": 5.1, "COMBINE x2": 5.4, "COUPLE x2": 11.4}  # the neurons iris numbers, batch 1


def build(variant: str, unroll: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = thesis_mlp(4, (25, 25, 25), 3, variant=variant, unroll=unroll)
    init_uniform_(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--grid", action="store_true", help="time the whole iris comparison grid")
    parser.add_argument("--one-at-a-time", action="store_true", help="with --grid: fit each seed in turn")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(getattr(torch, args.dtype))
    if args.grid:
        grid(args.one_at_a_time)
        return
    split = load_dataset("iris", seed=0)
    seeds = list(range(args.seeds))
    settings = {"loss": "cross_entropy", "optimizer": ("adam", {"lr": 1e-4, "betas": (0.95, 0.999), "eps": 1e-7}),
                "epochs": args.epochs, "batch_size": 1, "progress": False}
    model_epochs = args.epochs * len(seeds)
    print(f"iris, batch 1, {len(seeds)} seeds x {args.epochs} epochs, {args.dtype}, {torch.get_num_threads()} thread; "
          "ms per model-epoch (best of {}), wall / CPU".format(args.repeats))
    for name, (variant, unroll) in VARIANTS.items():
        best = {"one at a time": [float("inf")] * 2, "fit_many": [float("inf")] * 2}
        for _ in range(args.repeats):
            for way in best:
                models = [build(variant, unroll, s) for s in seeds]
                wall, cpu = time.perf_counter(), time.process_time()
                if way == "fit_many":
                    histories = ln.fit_many(models, split.train, split.val, seeds=seeds, **settings)
                    batched = models
                else:
                    reference = [ln.fit(m, split.train, split.val, seed=s, **settings) for m, s in zip(models, seeds)]
                    single = models
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                best[way] = [min(best[way][0], 1000 * wall / model_epochs), min(best[way][1], 1000 * cpu / model_epochs)]
        diff = max(((p - q).abs().max() / p.abs().max()).item()
                   for a, b in zip(single, batched) for p, q in zip(a.parameters(), b.parameters()))
        diff = max([diff] + [abs(r.val_loss - q.val_loss) / abs(r.val_loss)
                             for a, b in zip(reference, histories) for r, q in zip(a, b)])
        (w1, c1), (w2, c2) = best["one at a time"], best["fit_many"]
        neurons = f"; neurons {NEURONS_MS[name]} ms: {NEURONS_MS[name] / c2:.1f}x" if name in NEURONS_MS else ""
        print(f"{name:11s} one at a time {w1:6.2f} / {c1:6.2f}   fit_many ({histories.path}) {w2:6.2f} / {c2:6.2f}   "
              f"speedup {w1 / w2:.2f}x / {c1 / c2:.2f}x{neurons}; largest relative difference {diff:.1e}")


def grid(one_at_a_time: bool) -> None:
    import tempfile
    from pathlib import Path

    from loopnets.experiments import load_config, run_experiment

    root = Path(__file__).resolve().parents[1]
    exp = load_config(root / "configs" / "lavik" / "iris.toml", [f"train.group_seeds={str(not one_at_a_time).lower()}"])
    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as runs:
        folder = run_experiment(exp, runs, progress=False, log=lambda line: print(" ", line, flush=True))
        epochs = [json.loads(p.read_text())["epochs_run"] for p in folder.glob("*/seed=*/summary.json")]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    how = "runner, train.group_seeds = false: one fit per run" if one_at_a_time else "runner, stacked groups"
    print(f"iris grid, 14 variants x 5 seeds, batch 1 ({how}): {len(epochs)} runs, {sum(epochs)} model-epochs, "
          f"wall {wall:.1f} s, CPU {cpu:.1f} s ({1000 * cpu / sum(epochs):.2f} ms CPU per model-epoch)")


if __name__ == "__main__":
    main()
