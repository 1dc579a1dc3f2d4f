"""Small-channel 1-D convolutions: F.conv1d against loopnets.builder.conv's unfold + matmul path.

Two tables, one torch thread, contenders interleaved (timing.interleaved):
- micro: forward + backward of one convolution (batch 32, length 571) per (C_in, C_out, kernel),
  the measurements behind `loopnets.builder.conv.use_unfold`;
- ftir: ms per epoch of the FTIR CNN thesis workload (benchmarks/thesis.py) with the fast path
  forced off (before: every convolution is F.conv1d) and on (after), against `neurons`.

Run: OMP_NUM_THREADS=1 python benchmarks/conv_paths.py [micro|ftir] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

import loopnets as ln
from loopnets.builder import conv

from thesis import ADAM, NEURONS_MS, label, workloads
from timing import interleaved, median_ms

RULE = conv.use_unfold


def fast_path(on: bool) -> None:
    conv.use_unfold = RULE if on else (lambda module, x: False)


def micro(rounds: int) -> None:
    print("C_in C_out  K   conv1d us  unfold us  speed-up")
    for c_in, c_out in [(1, 1), (1, 4), (1, 8), (1, 16), (2, 1), (2, 2), (2, 4), (2, 8), (4, 1), (4, 2), (4, 4), (8, 1), (8, 8), (32, 32)]:
        for k in (3, 9):
            x = torch.randn(32, c_in, 571, requires_grad=True)
            w = torch.randn(c_out, c_in, k, requires_grad=True)
            reps = max(5, 20000 // (c_in * c_out * k + 10))

            def timed(fn):
                def run():
                    start = time.perf_counter()
                    for _ in range(reps):
                        fn(x, w, None, 1, k // 2, 1).relu().sum().backward()
                    return [(time.perf_counter() - start) / reps]
                run()
                return run

            ms = {n: median_ms(v) for n, v in interleaved(
                {"conv1d": timed(F.conv1d), "unfold": timed(conv.unfold_conv1d)}, rounds).items()}
            print(f"{c_in:4} {c_out:5} {k:2} {1e3 * ms['conv1d']:10.0f} {1e3 * ms['unfold']:10.0f} "
                  f"{ms['conv1d'] / ms['unfold']:8.2f}x", flush=True)


def ftir(rounds: int, epochs: int = 3) -> None:
    wl = next(w for w in workloads() if w.name == "ftir_cnn")
    print(f"FTIR CNN, ms per epoch (median over {rounds} rounds x {epochs - 1} epochs); "
          f"load average {os.getloadavg()}")
    print("variant       before (conv1d)  after (unfold)  speed-up  neurons  neurons/after")
    for variant, unroll in [("ffn", 1), ("combine", 2), ("combine", 3), ("couple", 2), ("couple", 3)]:
        torch.manual_seed(0)
        net = wl.loopnets_model(variant, unroll)

        def epoch_times(on: bool):
            def run():
                fast_path(on)
                try:
                    history = ln.fit(net, (wl.X, wl.y), loss="cross_entropy", optimizer=("adam", ADAM[wl.name]),
                                     epochs=epochs, batch_size=wl.batch_size, progress=False)
                except ln.TrainingDiverged as err:
                    history = err.history
                finally:
                    fast_path(True)
                return history["train_seconds"][1:]
            return run

        ms = {n: median_ms(v) for n, v in interleaved({"before": epoch_times(False), "after": epoch_times(True)},
                                                       rounds).items()}
        neurons = NEURONS_MS[("ftir_cnn", variant, unroll)]
        print(f"{label(variant, unroll):12} {ms['before']:15.2f} {ms['after']:15.2f} {ms['before'] / ms['after']:8.2f}x "
              f"{neurons:8} {neurons / ms['after']:12.2f}x", flush=True)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=["micro", "ftir"], nargs="?", default="ftir")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    (micro if args.table == "micro" else ftir)(args.rounds)
