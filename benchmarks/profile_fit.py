"""Where the time of one `ln.fit` epoch goes: cProfile (Python) and torch.profiler (ATen ops).

The workload is the thesis's iris model at batch size 1 (150 optimizer steps per epoch), where
per-step overhead dominates: every number here is per optimizer step.

Run: python benchmarks/profile_fit.py [--variant ffn|combine|couple|tied] [--unroll 2] [--top 25] [--counts]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

import loopnets as ln
from loopnets.models.lavik.architectures import init_uniform_, thesis_mlp

ADAM = ("adam", {"lr": 1e-4, "betas": (0.95, 0.999), "eps": 1e-7})  # thesis Table 4.2, iris


def iris_like(n: int = 150, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Iris-shaped random data: (150, 4) features, 3 classes (the values do not matter for timing)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def model(variant: str, unroll: int) -> torch.nn.Module:
    torch.manual_seed(0)
    net = thesis_mlp(4, (25, 25, 25), 3, variant=variant, unroll=unroll)
    init_uniform_(net)
    return net


def profile(variant: str = "ffn", unroll: int = 2, top: int = 25, epochs: int = 3) -> str:
    """A text report: ms per epoch, the cProfile table and the torch.profiler op table."""
    torch.set_num_threads(1)
    X, y = iris_like()
    net = model(variant, unroll)
    kwargs = dict(loss="cross_entropy", optimizer=ADAM, batch_size=1, progress=False)
    ln.fit(net, (X, y), epochs=1, **kwargs)  # warm-up
    start = time.perf_counter()
    ln.fit(net, (X, y), epochs=epochs, **kwargs)
    ms = (time.perf_counter() - start) / epochs * 1e3
    out = io.StringIO()
    steps = epochs * len(X)
    print(f"iris {variant} unroll {unroll}, batch 1: {ms:.1f} ms per epoch, {ms / len(X) * 1e3:.0f} us per step "
          f"(torch {torch.__version__}, {torch.get_num_threads()} thread)", file=out)

    prof = cProfile.Profile()
    prof.enable()
    ln.fit(net, (X, y), epochs=epochs, **kwargs)
    prof.disable()
    print(f"\ncProfile, {steps} steps (tottime = time in the function itself):", file=out)
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as tp:
        ln.fit(net, (X, y), epochs=1, **kwargs)
    print(f"\ntorch.profiler, {len(X)} steps (one epoch), ATen ops by self CPU time:", file=out)
    print(tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=top), file=out)
    return out.getvalue()


def counts(variant: str = "ffn", unroll: int = 2) -> dict:
    """Per optimizer step: Python function calls (cProfile) and ATen op calls (torch.profiler).

    Unlike times, these do not depend on the machine's load, so they compare two versions of
    loopnets exactly (run this file with each version on the path).
    """
    torch.set_num_threads(1)
    X, y = iris_like()
    net = model(variant, unroll)
    kwargs = dict(loss="cross_entropy", optimizer=ADAM, batch_size=1, progress=False)
    ln.fit(net, (X, y), epochs=1, **kwargs)  # warm-up
    prof = cProfile.Profile()
    prof.enable()
    ln.fit(net, (X, y), epochs=1, **kwargs)
    prof.disable()
    python_calls = pstats.Stats(prof).total_calls
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as tp:
        ln.fit(net, (X, y), epochs=1, **kwargs)
    aten = sum(e.count for e in tp.key_averages() if e.key.startswith("aten::"))
    steps = len(X)
    return {"variant": variant, "unroll": unroll, "python_calls_per_step": python_calls / steps,
            "aten_calls_per_step": aten / steps}


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="ffn", choices=["ffn", "combine", "couple", "tied"])
    p.add_argument("--unroll", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--counts", action="store_true", help="only the calls per step (load-independent)")
    args = p.parse_args(argv)
    if args.counts:
        c = counts(args.variant, args.unroll)
        report = (f"iris {args.variant} unroll {args.unroll}: {c['python_calls_per_step']:.0f} Python function calls "
                  f"and {c['aten_calls_per_step']:.0f} ATen op calls per optimizer step")
        print(report)
        return report
    report = profile(args.variant, args.unroll, args.top, args.epochs)
    print(report)
    return report


if __name__ == "__main__":
    main()
