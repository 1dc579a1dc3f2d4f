"""Command line: `loopnets demo` trains the thesis's iris comparison and prints the probes."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from loopnets.data import load_iris
from loopnets.lavik import thesis_mlp
from loopnets.probe import severed
from loopnets.train import evaluate, fit

# Thesis Table 4.2 (iris): Adam(lr 1e-4, betas 0.95 / 0.999, eps 1e-7); batch 1 as in `neurons`'s
# iris example. The thesis gives no epoch count for iris; `neurons`'s example trains up to 100.
IRIS_OPTIMIZER = ("adam", {"lr": 1e-4, "betas": (0.95, 0.999), "eps": 1e-7})
DEMO_VARIANTS = (("FFN", "ffn", 1), ("COMBINE x2", "combine", 2), ("COUPLE x2", "couple", 2))


def demo(seeds: int, epochs: int, batch_size: int, progress: bool) -> dict[str, list[dict]]:
    """Train FFN, COMBINE x2 and COUPLE x2 on iris for each seed; print accuracy and probes."""
    results: dict[str, list[dict]] = {name: [] for name, _, _ in DEMO_VARIANTS}
    started = time.perf_counter()
    print(f"iris 4-25-25-25-3 (thesis Table 4.1), {seeds} seeds x {epochs} epochs, batch {batch_size}")
    for seed in range(seeds):
        data = load_iris(seed=seed)
        for name, variant, unroll in DEMO_VARIANTS:
            torch.manual_seed(seed)
            model = thesis_mlp(4, (25, 25, 25), 3, variant=variant, unroll=unroll)
            history = fit(model, data.train, data.val, loss="cross_entropy", optimizer=IRIS_OPTIMIZER,
                          epochs=epochs, batch_size=batch_size, seed=seed, progress=progress)
            row = {"accuracy": evaluate(model, data.val, loss="cross_entropy")["accuracy"],
                   "ms_per_epoch": 1000 * statistics.mean(history["train_seconds"])}
            if variant != "ffn":
                with severed(model, loops=True):
                    row["feedback_off"] = evaluate(model, data.val, loss="cross_entropy")["accuracy"]
            results[name].append(row)
            print(f"  seed {seed} {name:11} val acc {row['accuracy']:.4f}"
                  + (f"  feedback off {row['feedback_off']:.4f}" if "feedback_off" in row else ""))
    print(f"\nvalidation accuracy over {seeds} seeds (mean ± sd), iris, 30 validation samples")
    print(f"{'model':12} {'original':>16} {'feedback off':>16} {'train ms/epoch':>15}")
    for name, rows in results.items():
        acc = _mean_sd([r["accuracy"] for r in rows])
        off = _mean_sd([r["feedback_off"] for r in rows]) if "feedback_off" in rows[0] else "—"
        ms = _mean_sd([r["ms_per_epoch"] for r in rows], digits=1)
        print(f"{name:12} {acc:>16} {off:>16} {ms:>15}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return results


def _mean_sd(values: list[float], digits: int = 4) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loopnets", description="Neural networks with feedback connections.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train FFN / COMBINE x2 / COUPLE x2 on iris and print the probes")
    d.add_argument("--seeds", type=int, default=5, help="networks per variant (default 5, as in the thesis)")
    d.add_argument("--epochs", type=int, default=100)
    d.add_argument("--batch-size", type=int, default=1)
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.seeds < 1 or args.epochs < 1 or args.batch_size < 1:
            parser.error("--seeds, --epochs and --batch-size must be >= 1")
        demo(args.seeds, args.epochs, args.batch_size, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
