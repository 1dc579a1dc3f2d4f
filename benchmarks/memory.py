"""Memory of one training step (forward + backward) versus unroll, for each backprop mode.

Three measurements per (mode, unroll), each in a fresh subprocess so that allocations of one
configuration cannot hide those of another:
- saved: bytes of the distinct storages autograd keeps for backward (exact, from saved-tensor hooks);
- peak: the most memory the step holds beyond what was allocated before it (the model, the data,
  one warm-up pass): activations, transient buffers and gradients. On a CUDA device
  torch.cuda.max_memory_allocated (exact). On the CPU, the bytes malloc has handed out
  (glibc's mallinfo2), sampled after every module call and whenever autograd saves or unpacks a
  tensor, so at least once per layer in forward and per graph node in backward;
- rss: how far the resident memory rises during the step (Linux: the VmHWM high-water mark reset
  just before it). It also counts memory the C allocator keeps after frees (fragmentation), so it
  can grow where `peak` does not;
- params: bytes of the loop's parameters (COUPLE holds k copies of the body).

Run: python benchmarks/memory.py [--width 1024 --batch 1024 --unrolls 2 8 32 --modes combine tied couple]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def body(width: int):
    """The loop body of the memory and unroll benchmarks: Linear, ReLU, Linear, Tanh (width -> width)."""
    from torch import nn

    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.Tanh())


def measure(mode: str, unroll: int, width: int, batch: int, device: str, threads: int | None = None) -> dict:
    import torch

    import loopnets as ln
    from loopnets.training.memory import MallocPeak

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    backprop = {"combine": ln.Combine(), "tied": ln.Tied(), "couple": ln.Couple()}[mode]
    loop = ln.Loop(body(width).to(device), unroll=unroll, backprop=backprop)
    x = torch.randn(batch, width, device=device)
    with torch.no_grad():  # warm up kernels and allocator outside the measurement
        loop(x, unroll=1)
    storages: dict[int, int] = {}  # unique storages autograd keeps (weights are saved once per pass)

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    cuda = device.startswith("cuda")
    # step 1: saved tensors and resident memory, without the op-by-op sampling
    rss_base = _resident_reset()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = loop(x)
    out.square().mean().backward()
    rss = _resident_peak() - rss_base
    del out
    loop.zero_grad(set_to_none=True)
    # step 2: the peak of allocated memory
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with MallocPeak() as malloc:
        out = loop(x)
        malloc.sample()
        out.square().mean().backward()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = malloc.peak - malloc.base if malloc.available else rss
    params = sum(p.numel() * p.element_size() for p in loop.parameters())
    return {"mode": mode, "unroll": unroll, "saved_bytes": sum(storages.values()), "peak_bytes": max(peak, 0),
            "rss_bytes": max(rss, 0), "param_bytes": params}


def _resident_reset() -> int:
    """Reset the resident-memory high-water mark where Linux allows it; return the current level (bytes)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS
        return _status_kib("VmRSS") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _resident_peak() -> int:
    try:
        return _status_kib("VmHWM") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"no {key} in /proc/self/status")


def rows(modes: list[str], unrolls: list[int], width: int, batch: int, device: str = "cpu",
         threads: int | None = None) -> list[dict]:
    """measure() for every (mode, unroll), each in its own subprocess."""
    out = []
    for mode in modes:
        for k in unrolls:
            cmd = [sys.executable, __file__, "--one", f"{mode}:{k}", "--width", str(width),
                   "--batch", str(batch), "--device", device, *(["--threads", str(threads)] if threads else [])]
            out.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--unrolls", type=int, nargs="+", default=[2, 8, 32])
    p.add_argument("--modes", nargs="+", default=["combine", "tied", "couple"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as run.py)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one config, print JSON
    args = p.parse_args(argv)
    if args.one:
        mode, unroll = args.one.split(":")
        print(json.dumps(measure(mode, int(unroll), args.width, args.batch, args.device, args.threads)))
        return []
    table = rows(args.modes, args.unrolls, args.width, args.batch, args.device, args.threads)
    print(f"memory of one training step, body 2 x Linear({args.width}) on batch {args.batch}, {args.device}")
    print(f"{'mode':8} {'unroll':>6} {'saved MiB':>10} {'peak MiB':>9} {'rss MiB':>8} {'params MiB':>10} "
          f"{'peak / unroll=' + str(args.unrolls[0]):>18}")
    for r in table:
        first = next(q for q in table if q["mode"] == r["mode"] and q["unroll"] == args.unrolls[0])
        ratio = r["peak_bytes"] / first["peak_bytes"] if first["peak_bytes"] else float("nan")
        print(f"{r['mode']:8} {r['unroll']:>6} {r['saved_bytes'] / 2**20:>10.1f} {r['peak_bytes'] / 2**20:>9.1f} "
              f"{r['rss_bytes'] / 2**20:>8.1f} {r['param_bytes'] / 2**20:>10.2f} {ratio:>18.2f}")
    return table


if __name__ == "__main__":
    main()
