"""How to stack S small models: batched matrix products (bmm) against torch.func (vmap), per step.

    python benchmarks/stacking.py [--models 5 40] [--steps 300] [--rounds 3] [--docs docs/performance.md]

The iris network (4-25-25-25-3, ReLU, no biases), batch 1 per model, cross-entropy, one Adam step
(foreach) over the stacked parameters, as `loopnets.training.batched` takes it; two ways to run the S
forwards and backwards as one:
- bmm: each layer one `torch.bmm` over the weights stacked (S, out, in) (`loopnets.training.batched.StackedLinear`);
- vmap: `torch.func.stack_module_state` + `vmap(functional_call)` over the S models;
- bmm compiled: the bmm model's forward through `torch.compile` (its compile time is the first
  steps' wall time; backward and Adam stay eager).
Interleaved rounds, 1 thread; ms of CPU time per step, best round. With --docs, the table is
written into that page's `<!-- bench:stacking:start/end -->` block.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state


def iris_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 25, bias=False), nn.ReLU(), nn.Linear(25, 25, bias=False), nn.ReLU(),
                         nn.Linear(25, 25, bias=False), nn.ReLU(), nn.Linear(25, 3, bias=False))


def bmm_step(S: int, compiled: bool = False):
    from loopnets.builder.stacking import Stack

    stack = Stack([iris_net() for _ in range(S)])
    opt = torch.optim.Adam(stack.params, lr=1e-4, foreach=True)
    x, y = torch.randn(S, 4), torch.randint(0, 3, (S,))
    forward = torch.compile(stack.model) if compiled else stack.model

    def step():
        for p in stack.params:
            p.grad = None
        F.cross_entropy(forward(x), y, reduction="none").sum().backward()
        opt.step()

    return step


def vmap_step(S: int):
    models = [iris_net() for _ in range(S)]
    params, _ = stack_module_state(models)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    base = copy.deepcopy(models[0]).to("meta")
    opt = torch.optim.Adam(list(params.values()), lr=1e-4, foreach=True)
    x, y = torch.randn(S, 1, 4), torch.randint(0, 3, (S, 1))
    forward = torch.vmap(lambda p, xb: functional_call(base, p, (xb,)))

    def step():
        for p in params.values():
            p.grad = None
        out = forward(params, x)  # (S, 1, 3)
        F.cross_entropy(out.reshape(S, 3), y.reshape(S), reduction="none").sum().backward()
        opt.step()

    return step


def measure(models: list[int], steps: int, rounds: int, log=print) -> list[dict]:
    rows = []
    for S in models:
        makers = {"bmm": lambda: bmm_step(S), "vmap": lambda: vmap_step(S), "bmm compiled": lambda: bmm_step(S, True)}
        contenders, warmup = {}, {}
        for name, make in makers.items():
            contenders[name] = make()
            start = time.perf_counter()
            for _ in range(10):
                contenders[name]()
            warmup[name] = time.perf_counter() - start
        best = {name: float("inf") for name in contenders}
        for r in range(rounds):
            for name in (list(contenders) if r % 2 == 0 else list(contenders)[::-1]):
                step = contenders[name]
                start = time.process_time()
                for _ in range(steps):
                    step()
                best[name] = min(best[name], 1000 * (time.process_time() - start) / steps)
        row = {"models": S, **{f"{k}_ms": v for k, v in best.items()}, "compile_s": warmup["bmm compiled"]}
        rows.append(row)
        log(f"{S} models: bmm {best['bmm']:.3f} ms, vmap {best['vmap']:.3f} ms, bmm compiled {best['bmm compiled']:.3f} ms "
            f"CPU per step (vmap / bmm {best['vmap'] / best['bmm']:.2f}; compiling took {warmup['bmm compiled']:.1f} s)")
    return rows


def block(rows: list[dict], steps: int) -> str:
    import os

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [f"From `python benchmarks/stacking.py` (torch {torch.__version__}, 1 thread, {steps} steps per round, "
             f"load average {load} at the end): ms of CPU time per training step of S stacked iris networks.", "",
             "| models | bmm | vmap | vmap / bmm | bmm, compiled forward | compiled / bmm | compile s |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['models']} | {r['bmm_ms']:.3f} | {r['vmap_ms']:.3f} | {r['vmap_ms'] / r['bmm_ms']:.2f} | "
                     f"{r['bmm compiled_ms']:.3f} | {r['bmm compiled_ms'] / r['bmm_ms']:.2f} | {r['compile_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[5, 40])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--docs", help="refresh this page's stacking block")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = measure(args.models, args.steps, args.rounds)
    if args.docs:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import refresh_blocks

        page = Path(args.docs)
        page.write_text(refresh_blocks(page.read_text(), {"stacking": block(rows, args.steps)}))
        print(f"refreshed the stacking block of {args.docs}")


if __name__ == "__main__":
    main()
