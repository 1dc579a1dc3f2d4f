"""Time per training step and peak memory versus unroll (1 to 32) for Tied, COUPLE and COMBINE.

The model is one loop over a mid-size MLP body (`memory.body`: Linear, ReLU, Linear, Tanh at
`width`) and a linear head to 10 classes, on a random batch. Each step is timed in three
phases: forward + loss, backward, optimizer step (+ re-tie for COUPLE). loopnets (`ln.Loop`,
`ln.tie_` after each step, as a custom training loop would use them) runs beside the hand-written
for-loop (`handwritten.Looped`), both with the same Adam (fused), one step each in turn, for
`rounds` times at least 0.5 s (and 5 steps) each. Memory comes from `memory.py` (one subprocess per
configuration).
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import loopnets as ln

import memory
from handwritten import Looped
from timing import interleaved, synchronizer

MODES = ("tied", "couple", "combine")
UNROLLS = (1, 2, 4, 8, 16, 32)
BACKPROP = {"tied": ln.Tied, "couple": ln.Couple, "combine": ln.Combine}
ROUND_SECONDS = 0.5  # each contender steps for at least about this long per round


def models(mode: str, unroll: int, width: int, device: str) -> tuple[nn.Module, nn.Module]:
    """(loopnets model, hand-written model) with the same initial weights."""
    torch.manual_seed(0)
    net = nn.Sequential(ln.Loop(memory.body(width), unroll=unroll, backprop=BACKPROP[mode]()), nn.Linear(width, 10))
    torch.manual_seed(0)
    hand = Looped(nn.Identity(), memory.body(width), nn.Linear(width, 10), mode, unroll)
    return net.to(device), hand.to(device)


def step_phases(model: nn.Module, tie, opt, x, y, sync) -> tuple[float, float, float]:
    """Seconds of (forward + loss, backward, optimizer step + tie) of one training step."""
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    sync()
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sync()
    t2 = time.perf_counter()
    opt.step()
    tie()
    sync()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def run(quick: bool = False, width: int = 256, batch: int = 256, rounds: int = 3, steps: int = 5,
        device: str = "cpu", memory_rows: bool = True, log=print) -> list[dict]:
    """One row per (mode, unroll): median ms per phase for both, ratios, memory."""
    unrolls = (1, 2, 4) if quick else UNROLLS
    if quick:
        width, batch, rounds, steps = 16, 8, 1, 1
    sync = synchronizer(device)
    x = torch.randn(batch, width, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    rows = []
    for mode in MODES:
        for k in unrolls:
            net, hand = models(mode, k, width, device)
            opt_net = torch.optim.Adam(net.parameters(), lr=1e-4, fused=True)
            opt_hand = torch.optim.Adam(hand.parameters(), lr=1e-4, fused=True)
            warm = sum(step_phases(net, lambda: ln.tie_(net), opt_net, x, y, sync))
            step_phases(hand, hand.tie, opt_hand, x, y, sync)  # warm-up
            n = max(steps, math.ceil((0 if quick else ROUND_SECONDS) / max(warm, 1e-6)))  # short steps: more per round
            # step by step, alternating: neighbouring steps of the two see the same background load
            samples = interleaved({
                "loopnets": lambda: [step_phases(net, lambda: ln.tie_(net), opt_net, x, y, sync)],
                "handwritten": lambda: [step_phases(hand, hand.tie, opt_hand, x, y, sync)],
            }, rounds * n)
            row = {"mode": mode, "unroll": k, "width": width, "batch": batch, "device": device}
            for name, phases in samples.items():
                for i, phase in enumerate(("forward", "backward", "step")):
                    row[f"{name}_{phase}_ms"] = 1e3 * statistics.median([p[i] for p in phases])
                row[f"{name}_ms"] = 1e3 * statistics.median([sum(p) for p in phases])
            row["vs_handwritten"] = row["loopnets_ms"] / row["handwritten_ms"]
            rows.append(row)
            log(f"{mode:8} unroll {k:2}  loopnets {row['loopnets_ms']:8.2f} ms/step (forward "
                f"{row['loopnets_forward_ms']:.2f}, backward {row['loopnets_backward_ms']:.2f}, step "
                f"{row['loopnets_step_ms']:.2f})  hand-written {row['handwritten_ms']:8.2f} ms ({row['vs_handwritten']:.2f}x)")
    if memory_rows:
        by_key = {(r["mode"], r["unroll"]): r for r in rows}
        for m in memory.rows(list(MODES), list(unrolls), width, batch, device, torch.get_num_threads()):
            by_key[m["mode"], m["unroll"]].update({k: v for k, v in m.items() if k.endswith("_bytes")})
        for r in rows:
            log(f"{r['mode']:8} unroll {r['unroll']:2}  saved {r['saved_bytes'] / 2**20:7.1f} MiB  peak "
                f"{r['peak_bytes'] / 2**20:7.1f} MiB  rss {r['rss_bytes'] / 2**20:7.1f} MiB  params "
                f"{r['param_bytes'] / 2**20:6.2f} MiB")
    return rows


def figure(rows: list[dict], path) -> None:
    """Time per step and peak memory versus unroll, one line per mode (PNG at `path`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    colors = {"tied": "C0", "couple": "C1", "combine": "C2"}
    for mode in MODES:
        rs = [r for r in rows if r["mode"] == mode]
        ks = [r["unroll"] for r in rs]
        ax_t.plot(ks, [r["loopnets_ms"] for r in rs], "o-", color=colors[mode], label=f"{mode} (loopnets)")
        ax_t.plot(ks, [r["handwritten_ms"] for r in rs], "x--", color=colors[mode], alpha=0.6, label=f"{mode} (hand-written)")
        ax_t.plot(ks, [r["loopnets_backward_ms"] for r in rs], ":", color=colors[mode], alpha=0.8,
                  label=f"{mode} backward only")
        if "peak_bytes" in rs[0]:
            ax_m.plot(ks, [r["peak_bytes"] / 2**20 for r in rs], "o-", color=colors[mode], label=f"{mode} peak")
            ax_m.plot(ks, [r["saved_bytes"] / 2**20 for r in rs], ":", color=colors[mode], alpha=0.8,
                      label=f"{mode} saved for backward")
    r0 = rows[0]
    for ax, title, ylabel in ((ax_t, "time per training step", "ms"), (ax_m, "memory of forward + backward", "MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("unroll (passes)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"one loop over Linear-ReLU-Linear-Tanh, width {r0['width']}, batch {r0['batch']}, {r0['device']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

