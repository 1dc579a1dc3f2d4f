"""Dense vs sparse kernel of loopnets.models.inn.IterativeNetwork: one training step (forward + backward) per density.

At the thesis scale by default (Hershey 2023: inputs 2500 = MNIST at 50 x 50, depth 810 = the
500-200-100-10 MLP's units, i.e. a 810 x 3310 weight space), static input, batch 64, 10 iterations,
random masks of density R (`random_mask`). Each cell is the median of several timed steps after one
warm-up step, the two kernels' steps interleaved; a step is zero_grad, forward, mean-square loss,
backward (no optimizer step: that costs the same for both kernels).

The table goes to stdout and, unless --no-write, to benchmarks/INN_KERNELS.md with the machine,
the date, and the crossover that `kernel="auto"` should use (`AUTO_SPARSE_DENSITY`): sparse is
chosen on the CPU when the density is at most that value.

Run: .venv/bin/python benchmarks/inn_kernels.py [--batch 64 --iterations 10 --densities 1 0.5 ...]
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import loopnets.models.inn as inn

DEFAULT_DENSITIES = [1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02]
MD_PATH = Path(__file__).resolve().parent / "INN_KERNELS.md"


def time_steps(nets: dict[str, inn.IterativeNetwork], x: torch.Tensor, repeats: int, budget_s: float) -> dict[str, float]:
    """Median seconds of one forward + backward step of each network, their steps interleaved.

    Interleaving (dense, sparse, dense, sparse, ...) exposes both kernels to the same background
    load on a shared machine. At least 3 timed steps each, at most `repeats`, stopping early once
    `budget_s` seconds have passed.
    """

    def step(net: inn.IterativeNetwork) -> float:
        t0 = time.perf_counter()
        net.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        return time.perf_counter() - t0

    for net in nets.values():
        step(net)  # warm-up: builds the sparse pattern, allocator, kernels
    times: dict[str, list[float]] = {name: [] for name in nets}
    start = time.perf_counter()
    for k in range(repeats):
        if k >= 3 and time.perf_counter() - start > budget_s:
            break
        for name, net in nets.items():
            times[name].append(step(net))
    return {name: statistics.median(t) for name, t in times.items()}


def naive_dense(net: inn.IterativeNetwork, x: torch.Tensor) -> torch.Tensor:
    """The same forward without the saving: (W * M) [x; s] with the full matrix in every iteration."""
    w = net.effective_weight()
    s = x.new_zeros(len(x), net.depth)
    for _ in range(net.iterations):
        s = torch.relu(torch.cat([x, s], 1) @ w.t() + net.bias)
    return s[:, -net.outputs :]


def time_naive(net: inn.IterativeNetwork, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one step of `naive_dense` (checked against the network's own output first)."""
    torch.testing.assert_close(naive_dense(net, x), net(x), rtol=1e-4, atol=1e-4)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        net.zero_grad(set_to_none=True)
        naive_dense(net, x).square().mean().backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def crossover(rows: list[dict]) -> float | None:
    """The density where sparse and dense take equal time: zero of a least-squares line through
    log(sparse / dense) against log(density). A line through all points, so one noisy cell moves it
    little. None when sparse wins or loses everywhere (no crossover inside the measured range).
    """
    if len(rows) < 2:
        return None
    xs = [math.log(r["density"]) for r in rows]
    ys = [math.log(r["sparse_ms"] / r["dense_ms"]) for r in rows]
    if all(y < 0 for y in ys) or all(y > 0 for y in ys):
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    if slope <= 0:  # sparse does not get relatively cheaper with falling density: no usable rule
        return None
    return math.exp(mx - my / slope)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=2500)
    p.add_argument("--depth", type=int, default=810)
    p.add_argument("--outputs", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--densities", type=float, nargs="+", default=DEFAULT_DENSITIES)
    p.add_argument("--repeats", type=int, default=9, help="timed steps per kernel and density at most (at least 3)")
    p.add_argument("--budget", type=float, default=3.0, help="seconds per density after the first 3 steps")
    p.add_argument(
        "--threads", type=int, nargs="+", default=[1], help="torch thread counts to measure, e.g. 1 4 (default: 1)"
    )
    p.add_argument("--no-write", action="store_true", help=f"do not write {MD_PATH.name}")
    args = p.parse_args(argv)
    default_threads = torch.get_num_threads()
    threads = args.threads

    rows = []
    try:
        for n in threads:
            torch.set_num_threads(n)
            torch.manual_seed(0)
            x = torch.randn(args.batch, args.inputs)
            for density in args.densities:
                mask = inn.random_mask(args.inputs, args.depth, density, seed=0)
                nets = {
                    kernel: inn.IterativeNetwork(
                        args.inputs, args.depth, args.outputs, mask, iterations=args.iterations, kernel=kernel
                    )
                    for kernel in ("dense", "sparse")
                }
                row = {"threads": n, "density": density, "trainable": int(mask.sum())}
                for kernel, seconds in time_steps(nets, x, args.repeats, args.budget).items():
                    row[f"{kernel}_ms"] = 1000 * seconds
                if density == args.densities[0]:  # the dense cost does not depend on the density
                    row["naive_ms"] = 1000 * time_naive(nets["dense"], x, min(args.repeats, 5))
                rows.append(row)
                print(
                    f"threads {n}  density {density:<5} trainable {row['trainable']:>9,}  "
                    f"dense {row['dense_ms']:8.1f} ms  sparse {row['sparse_ms']:8.1f} ms",
                    flush=True,
                )
    finally:
        torch.set_num_threads(default_threads)
    crossovers = {n: crossover([r for r in rows if r["threads"] == n]) for n in threads}
    print(f"measured crossover by threads: {crossovers}; AUTO_SPARSE_DENSITY = {inn.AUTO_SPARSE_DENSITY}")
    if not args.no_write:
        MD_PATH.write_text(report(rows, crossovers, args))
        print(f"wrote {MD_PATH}")
    return rows


def report(rows: list[dict], crossovers: dict[int, float | None], args: argparse.Namespace) -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [
        "# IterativeNetwork kernels: dense vs sparse (CPU)",
        "",
        "Written by `benchmarks/inn_kernels.py` (run: `.venv/bin/python benchmarks/inn_kernels.py`).",
        "",
        f"- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} logical CPUs; load average "
        f"(1, 5, 15 min) {load} when the run ended: a shared machine, other processes ran beside it",
        f"- torch {torch.__version__}, float32; thread counts measured: {', '.join(map(str, sorted(crossovers)))}",
        f"- Network: inputs {args.inputs}, depth {args.depth} (weight space {args.depth} x "
        f"{args.inputs + args.depth}), outputs {args.outputs}, static input, batch {args.batch}, "
        f"{args.iterations} iterations, ReLU, bias, random mask of density R (`random_mask`, seed 0)",
        "- Threads: on a machine shared with other jobs, multi-threaded steps mostly measure the scheduler "
        "(intra-op threads wait for each other's time slices), so the default is one thread; measure more "
        "with `--threads 1 4` on an idle machine",
        "- Cell: median milliseconds of one step (zero_grad, forward, mean-square loss, backward; no "
        f"optimizer step) over 3 to {args.repeats} timed steps after one warm-up, dense and sparse steps "
        "interleaved so both see the same background load",
        "",
        "| threads | density R | trainable weights | dense ms | sparse ms | sparse / dense |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['threads']} | {r['density']:g} | {r['trainable']:,} | {r['dense_ms']:.1f} | {r['sparse_ms']:.1f} | "
            f"{r['sparse_ms'] / r['dense_ms']:.2f} |"
        )
    found = "; ".join(
        f"{n} thread{'s' * (n > 1)}: " + ("none in the measured range" if c is None else f"about {c:.2g}")
        for n, c in sorted(crossovers.items())
    )
    for r in rows:
        if "naive_ms" in r:
            lines += [
                "",
                f"Reference ({r['threads']} thread{'s' * (r['threads'] > 1)}, density {r['density']:g}): the dense "
                f"kernel without the input-part saving, (W * M) [x; s] with the full matrix in every iteration, "
                f"takes {r['naive_ms']:.1f} ms per step against {r['dense_ms']:.1f} ms.",
            ]
    lines += [
        "",
        "Measured crossover (where a least-squares line through log(sparse / dense) against log(density) "
        f"crosses 0): {found}.",
        "",
        f"`kernel=\"auto\"` rule (`loopnets.models.inn.AUTO_SPARSE_DENSITY = {inn.AUTO_SPARSE_DENSITY}`): on the CPU, "
        "\"sparse\" when at most that fraction of the weight space is non-zero (trainable or fixed weights), "
        "\"dense\" otherwise; on any other device \"dense\" (not measured there). For the thesis: the layered "
        "MLP (density 0.51, E1) and R = 0.5 (E2) run dense; the sparsity sweeps at R <= 0.2 (E3, E4) run sparse.",
        "",
        "Why the dense kernel is cheap here: the input part W_x x is computed once per forward call (x is "
        "re-inserted unchanged every iteration), so each further iteration costs only a depth x depth product. "
        "The sparse kernel multiplies CSR matrices of the non-zero pattern and computes the weight gradient "
        "only at that pattern (torch.sparse.sampled_addmm); its cost falls with the density, the dense one does not.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
