"""How to stack S small models: batched matrix products (bmm) against torch.func (vmap), per step.

    python benchmarks/stacking.py [--models 5 40] [--steps 300] [--rounds 3]

The iris network (4-25-25-25-3, ReLU, no biases), batch 1 per model, cross-entropy, one Adam step
(foreach) over the stacked parameters, as `loopnets.batched` takes it; two ways to run the S
forwards and backwards as one:
- bmm: each layer one `torch.bmm` over the weights stacked (S, out, in) (`loopnets.batched.StackedLinear`);
- vmap: `torch.func.stack_module_state` + `vmap(functional_call)` over the S models.
Interleaved rounds, 1 thread; ms of CPU time per step, best round.
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


def bmm_step(S: int):
    from loopnets.batched import Stack

    stack = Stack([iris_net() for _ in range(S)])
    opt = torch.optim.Adam(stack.params, lr=1e-4, foreach=True)
    x, y = torch.randn(S, 4), torch.randint(0, 3, (S,))

    def step():
        for p in stack.params:
            p.grad = None
        F.cross_entropy(stack.model(x), y, reduction="none").sum().backward()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[5, 40])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for S in args.models:
        steps = {"bmm": bmm_step(S), "vmap": vmap_step(S)}
        best = {name: float("inf") for name in steps}
        for r in range(args.rounds):
            for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
                step = steps[name]
                for _ in range(10):
                    step()
                start = time.process_time()
                for _ in range(args.steps):
                    step()
                best[name] = min(best[name], 1000 * (time.process_time() - start) / args.steps)
        print(f"{S} models: bmm {best['bmm']:.3f} ms, vmap {best['vmap']:.3f} ms CPU per step "
              f"(vmap / bmm {best['vmap'] / best['bmm']:.2f})", flush=True)


if __name__ == "__main__":
    main()
