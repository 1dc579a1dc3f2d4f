"""Thinking longer: train on small problems, test on large ones with more passes (issue 18).

Tasks (`--task`), each per-position classification, generated from a seed (`loopnets.data.algorithmic`):
- prefix_sums: an n-bit string -> its running parity; train on `--size` bits (default 32).
- mazes: an n x n maze -> its solution path; train on `--size` x `--size` mazes (default 9).

Models (`--model`):
- conv (`loopnets.models.thinking`), variants (`--variants`):
  recall+progressive: `recurrent_conv(recall="concat", backprop=ln.Progressive(alpha))`;
  no recall: the same with recall=None (still the progressive loss);
  feedforward: `feedforward_conv` of the same depth (unroll x blocks residual blocks, untied).
- transformer (prefix_sums only): `looped_transformer` (prelude, core looped, coda; causal, no
  positional encoding), trained with `random_passes` (a pass count drawn per step) and
  `ln.Truncated(grad_passes)` (the graph of the last passes only), as Geiping et al. 2025.

It prints, and saves as JSON (`--results`/<task>-<variant>[-<tag>].json, default results/thinking/), the exact accuracy (every position of a string / maze right)
on fresh problems of each test size against the test-time pass count. One torch thread; run it
under `nice`. A feedforward net has one depth: its accuracy repeats in every pass column.

    PYTHONPATH=src nice -n 15 python benchmarks/thinking.py                      # prefix sums, conv
    PYTHONPATH=src nice -n 15 python benchmarks/thinking.py --task mazes --n-train 10000 --epochs 15 \\
        --unroll 30 --test-sizes 9 13 25 33 --passes 30 60 100 200 300
    PYTHONPATH=src nice -n 15 python benchmarks/thinking.py --model transformer --size 16 --test-sizes 16 32 64
    PYTHONPATH=src python benchmarks/thinking.py --epochs 1 --n-train 64 --test-sizes 16 --passes 2 4   # smoke

`--checkpoint PATH` saves the trained weights there (one variant), or loads them if the file exists
and only tests: more test passes without training again.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from itertools import islice
from pathlib import Path

import torch
from torch import nn

import loopnets as ln
from loopnets.data.algorithmic import mazes, prefix_sums
from loopnets.models.thinking import feedforward_conv, looped_transformer, recurrent_conv

TASKS = {  # generator, conv dimension, input channels, default train size, default test sizes
    "prefix_sums": (prefix_sums, 1, 1, 32, [32, 128, 512]),
    "mazes": (mazes, 2, 3, 9, [9, 13, 25, 33]),
}
CONV_VARIANTS = ("recall+progressive", "no recall", "feedforward")
RESULTS = Path(__file__).parent / "results" / "thinking"


def split_at_loop(model: nn.Sequential) -> tuple[nn.Module, ln.Loop | None, nn.Module]:
    """(before, loop, after) of an nn.Sequential with at most one top-level ln.Loop; loop None if it has none."""
    found = [i for i, part in enumerate(model) if isinstance(part, ln.Loop)]
    if not found:
        return model, None, nn.Identity()
    i = found[0]
    return model[:i], model[i], model[i + 1:]


@torch.no_grad()
def accuracies(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, passes: list[int],
               batch: int = 100) -> tuple[dict[int, float], dict[int, float]]:
    """({passes: fraction of samples with every position right}, {passes: fraction of positions right})
    after each test-time pass count.

    One run of max(passes) passes per batch, read by the part after the loop at each count in
    `passes`. A model without a loop (feedforward) has one depth: the same number for every count.
    """
    model.eval()
    before, loop, after = split_at_loop(model)
    right, bits = dict.fromkeys(passes, 0), dict.fromkeys(passes, 0)
    for xb, yb in zip(x.split(batch), y.split(batch)):
        outputs = [(k, model(xb)) for k in passes] if loop is None else \
            ((t, after(h)) for t, h in enumerate(islice(loop.iterate(before(xb)), max(passes)), start=1) if t in right)
        for t, out in outputs:
            hit = (out.argmax(1) == yb).flatten(1)
            right[t] += hit.all(1).sum().item()
            bits[t] += hit.float().mean(1).sum().item()
    return {k: right[k] / len(x) for k in passes}, {k: bits[k] / len(x) for k in passes}


def exact_accuracy(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, passes: list[int],
                   batch: int = 100) -> dict[int, float]:
    """{passes: fraction of samples with every position right} (see `accuracies`)."""
    return accuracies(model, x, y, passes, batch)[0]


class Progress:
    """Prints and keeps each epoch's loss and per-position validation accuracy (a long run shows it is alive)."""

    def __init__(self, name: str):
        self.name, self.start, self.epochs = name, time.perf_counter(), []

    def on_epoch_end(self, record) -> None:
        seconds = time.perf_counter() - self.start
        self.epochs.append({"epoch": record.epoch, "train_loss": record.train_loss,
                            "val_accuracy": record.val_accuracy, "seconds": round(seconds, 1)})
        print(f"  {self.name} epoch {record.epoch}: train loss {record.train_loss:.4f}, val per-position accuracy "
              f"{record.val_accuracy:.4f} ({seconds:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)


def build(args: argparse.Namespace, variant: str) -> nn.Sequential:
    """The model of one variant, from the command line's settings."""
    _, dim, channels, _, _ = TASKS[args.task]
    if args.model == "transformer":
        return looped_transformer(channels, d_model=args.d_model, nhead=args.nhead, ff=args.ff, prelude=args.prelude,
                                  coda=args.coda, unroll=args.unroll, backprop=ln.Truncated(args.grad_passes))
    if variant == "feedforward":
        return feedforward_conv(dim, channels, width=args.width, blocks=args.blocks, depth=args.unroll)
    recall = "concat" if variant == "recall+progressive" else None
    return recurrent_conv(dim, channels, width=args.width, blocks=args.blocks, recall=recall, unroll=args.unroll,
                          backprop=ln.Progressive(args.alpha))


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=tuple(TASKS), default="prefix_sums")
    ap.add_argument("--model", choices=("conv", "transformer"), default="conv")
    ap.add_argument("--variants", "--models", nargs="+", default=None, choices=CONV_VARIANTS,
                    help="conv variants to train one after the other (default: all three)")
    ap.add_argument("--size", "--bits", type=int, default=None, help="training size: bits or maze side")
    ap.add_argument("--test-sizes", "--test-bits", type=int, nargs="+", default=None)
    ap.add_argument("--passes", type=int, nargs="+", default=[10, 20, 50, 100, 200], help="test-time pass counts")
    ap.add_argument("--n-train", type=int, default=10_000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--unroll", type=int, default=20,
                    help="training passes (max_iters; the transformer: the top of its random pass count) "
                         "and the feedforward depth")
    ap.add_argument("--width", type=int, default=32, help="conv: channels of the state")
    ap.add_argument("--blocks", type=int, default=2, help="conv: residual blocks per pass")
    ap.add_argument("--alpha", type=float, default=1.0, help="conv: weight of the progressive loss term")
    ap.add_argument("--d-model", type=int, default=32, help="transformer width")
    ap.add_argument("--nhead", type=int, default=4)
    ap.add_argument("--ff", type=int, default=64)
    ap.add_argument("--prelude", type=int, default=1)
    ap.add_argument("--coda", type=int, default=1)
    ap.add_argument("--min-passes", type=int, default=1, help="transformer: bottom of the random pass count")
    ap.add_argument("--grad-passes", type=int, default=4, help="transformer: passes with a graph (ln.Truncated)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", type=Path, default=None, help="save the weights here, or load them if it exists")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON files")
    ap.add_argument("--tag", default="", help="appended to the JSON's name: results/thinking/<task>-<variant>[-tag].json")
    args = ap.parse_args(argv)
    _, _, _, size, test_sizes = TASKS[args.task]
    args.size = size if args.size is None else args.size
    args.test_sizes = test_sizes if args.test_sizes is None else args.test_sizes
    if args.model == "transformer":
        if args.task != "prefix_sums":
            ap.error("--model transformer runs on --task prefix_sums (a causal sequence model)")
        args.variants = ["transformer"]
    elif args.variants is None:
        args.variants = list(CONV_VARIANTS)
    if args.checkpoint is not None and len(args.variants) != 1:
        ap.error("--checkpoint holds one model: name one variant with --variants")
    return args


def settings(args: argparse.Namespace) -> dict:
    keys = ["task", "model", "size", "n_train", "n_test", "epochs", "batch_size", "lr", "unroll", "seed"]
    keys += (["d_model", "nhead", "ff", "prelude", "coda", "min_passes", "grad_passes"] if args.model == "transformer"
             else ["width", "blocks", "alpha"])
    return {k: getattr(args, k) for k in keys}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    torch.set_num_threads(1)
    make, *_ = TASKS[args.task]
    x, y = make(args.n_train, args.size, seed=args.seed)
    val = make(min(200, args.n_test), args.size, seed=args.seed + 999)
    tests = {s: make(args.n_test, s, seed=args.seed + 1000 + s) for s in args.test_sizes}
    rows = []
    for variant in args.variants:
        torch.manual_seed(args.seed)
        model = build(args, variant)
        progress, load = Progress(variant), os.getloadavg()[0]
        start = time.perf_counter()
        if args.checkpoint is not None and args.checkpoint.exists():
            model.load_state_dict(torch.load(args.checkpoint))
            trained = None
        else:
            extra = {"random_passes": (args.min_passes, args.unroll)} if args.model == "transformer" else {}
            ln.fit(model, (x, y), val, loss="cross_entropy", callbacks=[progress], epochs=args.epochs,
                   optimizer=("adamw", {"lr": args.lr, "weight_decay": 2e-4}), batch_size=args.batch_size,
                   seed=args.seed, progress=False, clip=("norm", 1.0), **extra)
            trained = time.perf_counter() - start
            if args.checkpoint is not None:
                args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), args.checkpoint)
        results = []
        for size, (xt, yt) in tests.items():
            start = time.perf_counter()
            acc, per_position = accuracies(model, xt, yt, args.passes)
            results.append({"size": size, "n": len(xt), "accuracy": {str(k): a for k, a in acc.items()},
                            "position_accuracy": {str(k): round(a, 5) for k, a in per_position.items()},
                            "test_s": round(time.perf_counter() - start, 1)})
            print(f"{variant:20s} size {size:4d}  " + "  ".join(f"{k:4d}: {100 * a:5.1f}%" for k, a in acc.items())
                  + "   per position: " + " ".join(f"{100 * a:.1f}" for a in per_position.values()), flush=True)
        row = {"variant": variant, "settings": settings(args), "passes": args.passes, "results": results,
               "train_s": None if trained is None else round(trained, 1), "epochs_log": progress.epochs,
               "load_at_start": round(load, 2), "load_at_end": round(os.getloadavg()[0], 2), "torch_threads": 1,
               "parameters": sum(p.numel() for p in model.parameters())}
        rows.append(row)
        slug = variant.replace(" ", "-").replace("+", "-")
        out = args.results / f"{args.task}-{slug}{'-' + args.tag if args.tag else ''}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(row, indent=1) + "\n")
        print(f"  wrote {out}", flush=True)
    print_table(args, rows)
    return rows


def print_table(args: argparse.Namespace, rows: list[dict]) -> None:
    print(f"\nexact accuracy (%) vs test-time passes; {args.task}, trained on {args.n_train} of size {args.size}, "
          f"{args.epochs} epochs, settings {settings(args)}, torch threads 1")
    print("| model | size | " + " | ".join(f"{k} passes" for k in args.passes) + " | train s |")
    print("|---|---|" + "---|" * (len(args.passes) + 1))
    for row in rows:
        for r in row["results"]:
            print(f"| {row['variant']} | {r['size']} | " + " | ".join(f"{100 * r['accuracy'][str(k)]:.1f}"
                                                                   for k in args.passes) + f" | {row['train_s']} |")


if __name__ == "__main__":
    main()
