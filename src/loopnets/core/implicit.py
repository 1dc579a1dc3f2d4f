"""The fixed-point forward and backward of `Implicit` and `OneStep` loops.

Forward: z1 = body(x) (pass 1), then `loopnets.core.solvers.solve` for z* = f(z*) with
f(z) = body(merge(feedback(z), x)), under torch.no_grad; `Loop.solver_stats` records it.
The output pass with a graph depends on the mode:

- Implicit(backward="ift"): out = f(z*) with a graph to x and the parameters, and a hook on out
  that replaces the incoming gradient by the solution of g = grad + J_f(z*)^T g, the implicit
  function theorem (Bai et al. 2019). The VJPs with J_f(z*) come from a second pass f(z0) on a
  detached copy z0 of z*, whose graph lives as long as `out` does (the hook holds it; nothing is
  stored on the loop, so a second forward or a repeated backward builds or reuses its own).
- Implicit(backward="phantom"): damped steps from the detached z* with a graph (Geng et al. 2021).
- OneStep: out = f(z*) with a graph of that pass only (Fung et al. 2022).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from loopnets.core.modes import Implicit, OneStep
from loopnets.core.solvers import solve

if TYPE_CHECKING:
    from loopnets.core.loop import Loop


def implicit_forward(loop: "Loop", x: torch.Tensor) -> torch.Tensor:
    """The loop's output at its fixed point, with the mode's gradient. x: (batch, *shape)."""
    mode: Implicit | OneStep = loop.backprop

    def f(z: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        h = loop.body(loop._merge(loop._feed(z), inp))
        loop._check_shape(inp, h, "body output")
        return h

    x0 = x.detach()
    with torch.no_grad():
        z1 = loop.body(x0)  # pass 1, the initial guess  # (batch, *shape)
        loop._check_shape(x0, z1, "body output")
        z_star, stats = solve(lambda z: f(z, x0), z1, solver=mode.solver, tol=mode.tol,
                              max_passes=mode.max_passes, memory=mode.memory, what="forward")
    loop.solver_stats = stats
    z_star = z_star.detach()

    if isinstance(mode, Implicit) and mode.backward == "phantom":
        loop.backward_stats = None
        h = z_star
        for _ in range(mode.phantom_steps):
            fh = f(h, x)
            h = fh if mode.damping == 1.0 else torch.lerp(h, fh, mode.damping)
        return h

    out = f(z_star, x)  # one pass with a graph (OneStep: this is the whole gradient)
    if isinstance(mode, OneStep):
        loop.backward_stats = None
        return out
    if out.requires_grad:
        z0 = z_star.clone().requires_grad_(True)
        f0 = f(z0, x0)  # a graph for the vector-Jacobian products v -> J_f(z*)^T v
        out.register_hook(_ift_hook(loop, mode, z0, f0))
    return out


def _ift_hook(loop: "Loop", mode: Implicit, z0: torch.Tensor, f0: torch.Tensor):
    tol = mode.tol if mode.backward_tol is None else mode.backward_tol
    max_passes = mode.max_passes if mode.backward_max_passes is None else mode.backward_max_passes

    def hook(grad: torch.Tensor | None) -> torch.Tensor | None:
        if grad is None:  # an undefined gradient stays undefined
            return None
        # g = grad + J^T g, iterated as a fixed point of g -> J^T g + grad from g = grad.
        def step(g: torch.Tensor) -> torch.Tensor:
            (vjp,) = torch.autograd.grad(f0, z0, g, retain_graph=True)
            return vjp + grad

        g, stats = solve(step, grad.detach(), solver=mode.solver, tol=tol, max_passes=max_passes,
                         memory=mode.memory, what="backward (implicit function theorem)")
        loop.backward_stats = stats
        return g

    return hook
