"""Would `torch.compile` make `ln.fit` faster? Compile time against time per epoch (not in `run.py`: minutes).

Two ways, each beside eager `ln.fit` on the same model and data, interleaved:
- forward: `torch.compile` of the model's forward (its logits) inside `ln.fit`, which is what a
  `fit(..., compile=True)` option would do; autograd and the optimizer stay eager;
- step (iris FFN only): the whole training step (forward, backward, Adam) as one compiled function
  of the parameters (torch.func.grad_and_value and Adam written out), the most a compiler can
  fuse. Its Adam is not torch.optim's, so it is a measurement, not a candidate for fit.

Run: python benchmarks/compile_step.py [--cases iris-ffn iris-couple ftir-ffn ftir-combine] [--no-step]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

import loopnets as ln
import loopnets.training.fit as train
from loopnets.models.lavik.architectures import thesis_mlp

CASES = {  # name -> (model builder, inputs, classes, samples, batch size, learning rate)
    "iris-ffn": (lambda: thesis_mlp(4, (25, 25, 25), 3), 4, 3, 150, 1, 1e-4),
    "iris-couple": (lambda: thesis_mlp(4, (25, 25, 25), 3, variant="couple"), 4, 3, 150, 1, 1e-4),
    "ftir-ffn": (lambda: thesis_mlp(571, (128, 256, 128), 28), 571, 28, 529, 32, 1e-3),
    "ftir-combine": (lambda: thesis_mlp(571, (128, 256, 128), 28, variant="combine"), 571, 28, 529, 32, 1e-3),
}


def compiled_forward(name: str, rounds: int = 4) -> dict:
    build, inputs, classes, n, batch, lr = CASES[name]
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(n, inputs, generator=g), torch.randint(0, classes, (n,), generator=g)
    torch.manual_seed(0)
    eager = build()
    comp = copy.deepcopy(eager)
    real, cache = train.predictor, {}

    def predictor(model, loss):  # fit's forward, compiled once for `comp`
        forward, from_logits = real(model, loss)
        if model is comp:
            forward = cache.setdefault("forward", torch.compile(forward))
        return forward, from_logits

    kwargs = dict(loss="cross_entropy", optimizer=("adam", {"lr": lr}), batch_size=batch, progress=False)
    train.predictor = predictor
    try:
        start = time.perf_counter()
        ln.fit(comp, (X, y), epochs=1, **kwargs)
        first = time.perf_counter() - start
        samples = {"eager": [], "compiled": []}
        for _ in range(rounds):
            samples["eager"] += ln.fit(eager, (X, y), epochs=2, **kwargs)["train_seconds"][1:]
            samples["compiled"] += ln.fit(comp, (X, y), epochs=2, **kwargs)["train_seconds"][1:]
    finally:
        train.predictor = real
    return {"case": name, "how": "compiled forward in ln.fit", "first_epoch_s": first,
            **{f"{k}_ms": 1e3 * statistics.median(v) for k, v in samples.items()}}


def compiled_step(rounds: int = 4) -> dict:
    """The iris FFN's whole step compiled, against eager ln.fit."""
    from torch.func import functional_call, grad_and_value

    build, inputs, classes, n, _, lr = CASES["iris-ffn"]
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(n, inputs, generator=g), torch.randint(0, classes, (n,), generator=g)
    torch.manual_seed(0)
    net = build()
    names = [k for k, _ in net.named_parameters()]
    params = [p.detach().clone() for p in net.parameters()]
    m, v, t = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params], torch.zeros(())

    def step(params, m, v, t, xb, yb):
        def loss(ps):
            return F.cross_entropy(functional_call(net, dict(zip(names, ps)), (xb,), strict=True), yb)

        grads, value = grad_and_value(loss)(params)
        t.add_(1)
        b1, b2, eps = 0.9, 0.999, 1e-8
        for p, mi, vi, gi in zip(params, m, v, grads):
            mi.lerp_(gi, 1 - b1)
            vi.mul_(b2).addcmul_(gi, gi, value=1 - b2)
            p.sub_(lr / (1 - b1**t) * mi / ((vi / (1 - b2**t)).sqrt() + eps))
        return value

    compiled = torch.compile(step, fullgraph=True, dynamic=False)

    def epoch() -> float:
        start = time.perf_counter()
        order = torch.randperm(n)
        total = torch.zeros(())
        for i in order.split(1):
            total += compiled(params, m, v, t, X[i], y[i]).detach()
        float(total)
        return time.perf_counter() - start

    start = time.perf_counter()
    epoch()
    first = time.perf_counter() - start
    eager = build()
    kwargs = dict(loss="cross_entropy", optimizer=("adam", {"lr": lr}), batch_size=1, progress=False)
    samples = {"eager": [], "compiled": []}
    for _ in range(rounds):
        samples["eager"] += ln.fit(eager, (X, y), epochs=2, **kwargs)["train_seconds"][1:]
        samples["compiled"] += [epoch()]
    return {"case": "iris-ffn", "how": "whole step compiled (functional)", "first_epoch_s": first,
            **{f"{k}_ms": 1e3 * statistics.median(v) for k, v in samples.items()}}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--no-step", action="store_true", help="skip the whole-step compilation")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [compiled_forward(c) for c in args.cases] + ([] if args.no_step else [compiled_step()])
    for r in rows:
        print(f"{r['case']:13} {r['how']:33} compile (first epoch) {r['first_epoch_s']:6.1f} s   eager "
              f"{r['eager_ms']:7.1f} ms/epoch   compiled {r['compiled_ms']:7.1f} ms/epoch   compiled / eager "
              f"{r['compiled_ms'] / r['eager_ms']:.2f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
