"""Thinking longer on prefix sums, a quick CPU measurement (issue 18, item 5).

Trains three 1-D nets on `--bits`-bit prefix sums (one torch thread; run it under `nice -n 19`):
- recall + progressive: `recurrent_conv(recall="concat", backprop=ln.Progressive(alpha))`
- no recall: the same with recall=None (still the progressive loss)
- feedforward: `feedforward_conv` of the same depth (unroll x blocks residual blocks, untied)
then prints per-string accuracy (every bit of a string right) on fresh strings of each test length
against the test-time pass count. The feedforward net has one depth, printed in every column.

    PYTHONPATH=src nice -n 19 python benchmarks/thinking.py                 # ~20 min per model on one busy core
    PYTHONPATH=src python benchmarks/thinking.py --epochs 1 --n-train 64 --test-bits 16 --passes 2 4   # smoke
"""

from __future__ import annotations

import argparse
import time
from itertools import islice

import torch

import loopnets as ln
from loopnets.data.algorithmic import prefix_sums
from loopnets.models.thinking import feedforward_conv, recurrent_conv


@torch.no_grad()
def string_accuracy(model, x, y, passes: list[int], batch: int = 250) -> dict[int, float]:
    """{passes: fraction of strings whose every bit is right}; for nn.Sequential(projection, loop, head)."""
    model.eval()
    right = {k: 0 for k in passes}
    for xb, yb in zip(x.split(batch), y.split(batch)):
        if not isinstance(model[1], ln.Loop):  # feedforward: one depth
            ok = (model(xb).argmax(1) == yb).all(1).sum().item()
            right = {k: right[k] + ok for k in passes}
            continue
        p = model[0](xb)
        for t, h in enumerate(islice(model[1].iterate(p), max(passes)), start=1):
            if t in right:
                right[t] += (model[2](h).argmax(1) == yb).all(1).sum().item()
    return {k: right[k] / len(x) for k in passes}


class Progress:
    """Prints each epoch's losses and per-bit validation accuracy (a long run shows it is alive)."""

    def __init__(self, name: str):
        self.name, self.start = name, time.perf_counter()

    def on_epoch_end(self, record) -> None:
        print(f"  {self.name} epoch {record.epoch}: train loss {record.train_loss:.4f}, val per-bit accuracy "
              f"{record.val_accuracy:.3f} ({time.perf_counter() - self.start:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--n-train", type=int, default=10_000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--unroll", type=int, default=20, help="training passes (max_iters) and the feedforward depth")
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--test-bits", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--passes", type=int, nargs="+", default=[10, 20, 50, 100, 200])
    ap.add_argument("--models", nargs="+", default=["recall+progressive", "no recall", "feedforward"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x, y = prefix_sums(args.n_train, args.bits, seed=args.seed)
    builders = {
        "recall+progressive": lambda: recurrent_conv(1, 1, width=args.width, recall="concat", unroll=args.unroll,
                                                     backprop=ln.Progressive(args.alpha)),
        "no recall": lambda: recurrent_conv(1, 1, width=args.width, recall=None, unroll=args.unroll,
                                            backprop=ln.Progressive(args.alpha)),
        "feedforward": lambda: feedforward_conv(1, 1, width=args.width, depth=args.unroll),
    }
    tests = {b: prefix_sums(args.n_test, b, seed=args.seed + 1000 + b) for b in args.test_bits}
    val = prefix_sums(200, args.bits, seed=args.seed + 999)
    rows = []
    for name in args.models:
        torch.manual_seed(args.seed)
        model = builders[name]()
        start = time.perf_counter()
        history = ln.fit(model, (x, y), val, loss="cross_entropy", callbacks=[Progress(name)], optimizer=("adamw", {"lr": args.lr, "weight_decay": 2e-4}),
                         epochs=args.epochs, batch_size=100, seed=args.seed, progress=False, clip=("norm", 1.0))
        seconds = time.perf_counter() - start
        for bits, (xt, yt) in tests.items():
            acc = string_accuracy(model, xt, yt, args.passes)
            rows.append({"model": name, "bits": bits, "train_s": seconds, "loss": history["train_loss"][-1], **acc})
            print(f"{name:20s} {bits:5d} bits  " + "  ".join(f"{k:4d}: {100 * a:5.1f}%" for k, a in acc.items())
                  + f"   (trained {seconds:.0f} s, final loss {history['train_loss'][-1]:.4f})", flush=True)
    print(f"\nper-string accuracy (%) vs test-time passes; trained on {args.n_train} strings of {args.bits} bits, "
          f"{args.epochs} epochs, width {args.width}, unroll {args.unroll}, alpha {args.alpha}, torch threads 1")
    print("| model | bits | " + " | ".join(f"{k} passes" for k in args.passes) + " | train s |")
    print("|---|---|" + "---|" * (len(args.passes) + 1))
    for r in rows:
        print(f"| {r['model']} | {r['bits']} | " + " | ".join(f"{100 * r[k]:.1f}" for k in args.passes)
              + f" | {r['train_s']:.0f} |")
    return rows


if __name__ == "__main__":
    main()
