"""Implicit: deep-equilibrium backprop, the fixed-point forward and its implicit (IFT) or phantom gradient.

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

from dataclasses import dataclass
from typing import Callable

import torch

from loopnets.core.modes.base import Backprop, LoopParts, run_passes
from loopnets.core.solvers import check_solver_args, solve

FIXED_POINT_UNSUPPORTED = {
    "output": "its output is the fixed point (the last pass); leave output=None, or use backprop=ln.Tied() "
              "or ln.Truncated() for an output skip",
    "random_passes": "its solver chooses the number of passes; use ln.Tied(), ln.Truncated() or ln.Couple() "
                     "to train with random pass counts",
    "batched": "its solver and statistics are per model; only Tied, Truncated, Couple and Combine loops are stacked",
}


def fixed_point(loop: LoopParts, mode, x: torch.Tensor) -> tuple[torch.Tensor, Callable]:
    """(z*, f): the loop's fixed point z* = f(z*) (detached), solved under torch.no_grad from
    pass 1, z1 = body(x), and f(z, inp) = body(merge(feedback(z), inp)). Records
    `loop.solver_stats`. `mode` gives solver, tol, max_passes and memory. x: (batch, *shape)."""

    def f(z: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        h = loop.body(loop.next_input(z, inp))
        loop.check_shape(inp, h, "body output")
        return h

    x0 = x.detach()
    with torch.no_grad():
        z1 = loop.body(x0)  # pass 1, the initial guess  # (batch, *shape)
        loop.check_shape(x0, z1, "body output")
        z_star, stats = solve(lambda z: f(z, x0), z1, solver=mode.solver, tol=mode.tol,
                              max_passes=mode.max_passes, memory=mode.memory, what="forward")
    loop.solver_stats = stats
    return z_star.detach(), f


class FixedPoint(Backprop):
    """Base of the modes whose forward is a fixed-point solve (`Implicit`, `OneStep`).

    `run` with no pass count solves (`fixed_point`) and hands z* to `output_pass`, which builds
    the output with the mode's gradient; with a pass count (`loop(x, unroll=n)`, `Loop.passes`)
    it runs n plain passes, each read-out pass from the detached previous one (one-pass graphs).
    """

    outputs = ("last",)
    solves = True
    random_passes = False
    batched = False
    unsupported = FIXED_POINT_UNSUPPORTED

    def run(self, loop: LoopParts, x: torch.Tensor, passes: int | None, readout: list | None) -> torch.Tensor:
        if passes is not None:
            return run_passes(loop, x, passes, readout, detach=readout is not None)
        z_star, f = fixed_point(loop, self, x)
        return self.output_pass(loop, x, z_star, f)

    def output_pass(self, loop: LoopParts, x: torch.Tensor, z_star: torch.Tensor, f: Callable) -> torch.Tensor:
        """The output from the detached fixed point z*, f(z, inp) the loop's map, with the mode's graph."""
        raise NotImplementedError(f"{type(self).__name__} must implement output_pass")


BACKWARDS = ("ift", "phantom")


@dataclass(frozen=True)
class Implicit(FixedPoint):
    """Deep-equilibrium backprop: solve for the loop's fixed point, differentiate it implicitly.

    The loop is read as f(z) = body(merge(feedback(z), x)) and its output as a fixed point
    z* = f(z*) (Bai, Kolter & Koltun, "Deep equilibrium models", NeurIPS 2019). The initial guess
    is pass 1, z1 = body(x); `loopnets.core.solvers.solve` iterates from there under torch.no_grad
    until every sample's relative residual ||f(z) - z|| / ||f(z)|| is below `tol`, within
    `max_passes` body passes (then plain iteration takes over; non-convergence warns, see
    `loopnets.core.solvers`). The output is one more pass, f(z*), with a graph. Its gradient:

    - backward="ift": the implicit function theorem. The gradient g reaching the output is
      replaced by the solution of g = grad + J_f(z*)^T g (one vector-Jacobian product of the body
      per pass), solved by the same solver to `backward_tol` within `backward_max_passes`
      (`Loop.backward_stats`). Exact at an exact fixed point; the error is of the order of the
      forward and backward residuals. Memory: two body graphs (the output pass and one for the
      VJPs), independent of the passes; time: forward passes plus backward passes (each about one
      body backward).
    - backward="phantom": phantom gradients (Geng et al., "On training implicit models", NeurIPS
      2021): `phantom_steps` damped steps z <- (1 - damping) z + damping f(z) from the detached z*
      with a graph; the output is the last step (f(z*) for phantom_steps=1, damping=1; equal to it
      up to the solver residual otherwise). An approximation of the IFT gradient (a truncated
      Neumann series) that approaches it as phantom_steps grows. Memory and time grow with
      phantom_steps.

    First-order gradients only: the IFT backward solve builds no graph, so a double backward
    (create_graph=True) does not differentiate through it.

    The loop's `unroll` is not used by the solver; an explicit pass count (`loop(x, unroll=n)`,
    `ln.unrolled`, `ln.severed`) runs n plain passes as `Tied` (e.g. test-time unroll sweeps), and
    `Loop.passes` gives per-pass outputs with one-pass graphs. Only output "last" is possible.

    Args:
        solver: "anderson" | "broyden" | "fixed_point" (forward and IFT backward).
        tol: forward relative residual to stop at, > 0.
        max_passes: forward body passes allowed, >= 1 (the initial guess and the output pass are
            not counted).
        backward: "ift" | "phantom".
        phantom_steps: steps of the phantom gradient, >= 1.
        damping: phantom step size in (0, 1].
        memory: Anderson / Broyden history, >= 1.
        backward_tol: IFT backward tolerance (default: tol).
        backward_max_passes: IFT backward passes allowed (default: max_passes).
    """

    solver: str = "anderson"
    tol: float = 1e-4
    max_passes: int = 50
    backward: str = "ift"
    phantom_steps: int = 5
    damping: float = 1.0
    memory: int = 5
    backward_tol: float | None = None
    backward_max_passes: int | None = None

    name = "implicit"

    def __post_init__(self) -> None:
        where = "Implicit"
        check_solver_args(self.solver, self.tol, self.max_passes, self.memory, self.damping, where=where)
        if self.backward not in BACKWARDS:
            raise ValueError(f"{where}: unknown backward {self.backward!r}; choose 'ift' (implicit function theorem) or 'phantom'")
        if isinstance(self.phantom_steps, bool) or not isinstance(self.phantom_steps, int) or self.phantom_steps < 1:
            raise ValueError(f"{where}: phantom_steps must be an integer >= 1 (e.g. 5); got {self.phantom_steps!r}")
        if self.backward_tol is not None:
            check_solver_args(self.solver, self.backward_tol, self.max_passes, self.memory, 1.0, where=f"{where} backward_tol")
        if self.backward_max_passes is not None:
            check_solver_args(self.solver, self.tol, self.backward_max_passes, self.memory, 1.0, where=f"{where} backward_max_passes")

    def output_pass(self, loop: LoopParts, x: torch.Tensor, z_star: torch.Tensor, f: Callable) -> torch.Tensor:
        if self.backward == "phantom":
            loop.backward_stats = None
            h = z_star
            for _ in range(self.phantom_steps):
                fh = f(h, x)
                h = fh if self.damping == 1.0 else torch.lerp(h, fh, self.damping)
            return h
        out = f(z_star, x)  # one pass with a graph
        if out.requires_grad:
            z0 = z_star.clone().requires_grad_(True)
            f0 = f(z0, x.detach())  # a graph for the vector-Jacobian products v -> J_f(z*)^T v
            out.register_hook(_ift_hook(loop, self, z0, f0))
        return out



def _ift_hook(loop: LoopParts, mode: Implicit, z0: torch.Tensor, f0: torch.Tensor):
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
