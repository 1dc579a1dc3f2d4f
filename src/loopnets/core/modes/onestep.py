"""OneStep: Jacobian-free backprop (JFB), the fixed-point forward of `Implicit` with a one-pass gradient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from loopnets.core.modes.base import LoopParts
from loopnets.core.modes.implicit import FixedPoint
from loopnets.core.solvers import check_solver_args


@dataclass(frozen=True)
class OneStep(FixedPoint):
    """Jacobian-free backprop (JFB): the fixed-point forward of `Implicit`, a one-pass gradient.

    The forward solve is `Implicit`'s; the output f(z*.detach()) carries the graph of that one
    pass only, so the gradient is that of f at the fixed point with J_f(z*) dropped, i.e. the
    IFT gradient with (I - J_f^T)^{-1} replaced by I (Fung et al., "JFB: Jacobian-free
    backpropagation for implicit networks", AAAI 2022). A descent direction when f is
    contractive enough, not the true gradient. Memory: one body graph; time: the forward passes
    plus one body backward. Unroll, passes() and output as for `Implicit`.

    Args:
        solver, tol, max_passes, memory: as for `Implicit`.
    """

    solver: str = "anderson"
    tol: float = 1e-4
    max_passes: int = 50
    memory: int = 5

    name = "onestep"

    def __post_init__(self) -> None:
        check_solver_args(self.solver, self.tol, self.max_passes, self.memory, 1.0, where="OneStep")

    def output_pass(self, loop: LoopParts, x: torch.Tensor, z_star: torch.Tensor, f: Callable) -> torch.Tensor:
        loop.backward_stats = None
        return f(z_star, x)  # out = f(z*.detach()): the graph of this one pass is the whole gradient
