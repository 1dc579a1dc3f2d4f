"""Memory of one training step (forward + backward) versus unroll, for each backprop mode.

Two measurements per (mode, unroll), each in a fresh subprocess so that allocations of one
configuration cannot hide those of another:
- saved: bytes of the distinct storages autograd keeps for backward (exact, from saved-tensor hooks);
- peak: growth of the process's peak resident memory during the step (ru_maxrss), which also
  counts transient buffers. On a CUDA device, torch.cuda.max_memory_allocated instead.

Run: python benchmarks/memory.py [--width 1024 --batch 1024 --unrolls 2 8 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def measure(mode: str, unroll: int, width: int, batch: int, device: str) -> dict:
    import torch
    from torch import nn

    import loopnets as ln

    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.Tanh()).to(device)
    backprop = {"combine": ln.Combine(), "tied": ln.Tied(), "couple": ln.Couple()}[mode]
    loop = ln.Loop(body, unroll=unroll, backprop=backprop)
    x = torch.randn(batch, width, device=device)
    with torch.no_grad():  # warm up kernels and allocator outside the measurement
        loop(x)
    storages: dict[int, int] = {}  # unique storages autograd keeps (weights are saved once per pass)

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = loop(x)
    out.square().mean().backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"mode": mode, "unroll": unroll, "saved_bytes": sum(storages.values()), "peak_bytes": max(peak, 0)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--unrolls", type=int, nargs="+", default=[2, 8, 32])
    p.add_argument("--modes", nargs="+", default=["combine", "tied", "couple"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one config, print JSON
    args = p.parse_args(argv)
    if args.one:
        mode, unroll = args.one.split(":")
        print(json.dumps(measure(mode, int(unroll), args.width, args.batch, args.device)))
        return []
    rows = []
    for mode in args.modes:
        for k in args.unrolls:
            cmd = [sys.executable, __file__, "--one", f"{mode}:{k}", "--width", str(args.width),
                   "--batch", str(args.batch), "--device", args.device]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    print(f"memory of one training step, body 2 x Linear({args.width}) on batch {args.batch}, {args.device}")
    print(f"{'mode':8} {'unroll':>6} {'saved MiB':>10} {'peak MiB':>9} {'peak / unroll=' + str(args.unrolls[0]):>18}")
    for r in rows:
        first = next(q for q in rows if q["mode"] == r["mode"] and q["unroll"] == args.unrolls[0])
        ratio = r["peak_bytes"] / first["peak_bytes"] if first["peak_bytes"] else float("nan")
        print(f"{r['mode']:8} {r['unroll']:>6} {r['saved_bytes'] / 2**20:>10.1f} {r['peak_bytes'] / 2**20:>9.1f} {ratio:>18.2f}")
    return rows


if __name__ == "__main__":
    main()
