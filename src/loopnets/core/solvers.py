"""Fixed-point solvers for implicit loops: plain iteration, Anderson acceleration, Broyden.

`solve(f, z0, ...)` looks for z with f(z) = z, one batch of samples at a time. Every evaluation
of f is one pass (for a loop, one run of its body). A sample has converged when its relative
residual ||f(z) - z|| / (||f(z)|| + eps), over the flattened sample, is below `tol`; the solve
has converged when every sample has. Samples that converged early keep being iterated (their
best iterate is kept), so every pass costs the whole batch.

Non-convergence is never silent: if Anderson or Broyden fails (a non-finite value, a singular
linear system) or does not converge within `max_passes`, plain fixed-point iteration takes over
from the best iterate for at most `max_passes` more passes, and if the result has still not
converged a `NotConvergedWarning` says so. The result is, per sample, the iterate with the
lowest residual seen, and `SolverStats` records what happened.

References: Anderson, "Iterative procedures for nonlinear integral equations" (1965); Walker &
Ni, "Anderson acceleration for fixed-point iterations" (2011); Broyden, "A class of methods for
solving nonlinear simultaneous equations" (1965); Bai, Kolter & Koltun, "Deep equilibrium
models" (NeurIPS 2019), whose batched Anderson (with lam = 1e-4) and limited-memory Broyden
these follow.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

SOLVERS = ("anderson", "broyden", "fixed_point")
EPS = 1e-12  # keeps the relative residual finite where f(z) = 0
ANDERSON_LAM = 1e-4  # Tikhonov regularisation of Anderson's least squares, relative to its scale


class NotConvergedWarning(UserWarning):
    """A fixed-point solve stopped above its tolerance; `.stats` is its `SolverStats`.

    `ln.fit` gathers the ones raised while training into one warning per epoch."""

    def __init__(self, message: str, stats: "SolverStats | None" = None):
        super().__init__(message)
        self.stats = stats


@dataclass(frozen=True)
class SolverStats:
    """What one fixed-point solve did.

    Attributes:
        solver: the solver that produced the result ("fixed_point" when the fallback improved on
            the solver that was asked for).
        passes: evaluations of f (loop body passes), fallback included.
        residuals: the relative residual after each pass, max over the samples, of the iterate
            f was evaluated at.
        converged: whether every sample's best iterate reached `tol`.
        tol: the tolerance asked for.
        fallback: None, or the solver that took over ("fixed_point") after a failure.
        residual: the residual reached, max over the samples of each sample's best residual
            (the result is each sample's best iterate, so this can be below residuals[-1]).
    """

    solver: str
    passes: int
    residuals: list[float] = field(default_factory=list)
    converged: bool = False
    tol: float = 0.0
    fallback: str | None = None
    residual: float = math.inf


class _Failed(Exception):
    """Anderson or Broyden cannot go on (non-finite values, a singular system)."""


class _Tracker:
    """Counts passes, keeps the residual trace and each sample's best iterate. z: (B, d)."""

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor], tol: float, budget: int):
        self.f, self.tol, self.budget = f, tol, budget
        self.passes = 0
        self.residuals: list[float] = []
        self.best_z: torch.Tensor | None = None
        self.best_r: torch.Tensor | None = None  # (B,)

    def evaluate(self, z: torch.Tensor) -> torch.Tensor:
        """f(z), recording the residual of z; raises _Failed if f(z) is not finite."""
        fz = self.f(z)
        self.passes += 1
        r = (fz - z).norm(dim=1) / (fz.norm(dim=1) + EPS)  # (B,)
        r = torch.where(torch.isfinite(r), r, torch.full_like(r, math.inf))
        self.residuals.append(float(r.max()))
        if self.best_r is None:
            self.best_z, self.best_r = z.clone(), r
        else:
            better = r < self.best_r
            self.best_z = torch.where(better[:, None], z, self.best_z)
            self.best_r = torch.where(better, r, self.best_r)
        if not torch.isfinite(fz).all():
            raise _Failed("f returned non-finite values")
        return fz

    @property
    def worst(self) -> float:
        return math.inf if self.best_r is None else float(self.best_r.max())

    @property
    def converged(self) -> bool:
        return self.worst < self.tol

    @property
    def done(self) -> bool:
        return self.converged or self.passes >= self.budget


def solve(
    f: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    *,
    solver: str = "anderson",
    tol: float = 1e-4,
    max_passes: int = 50,
    memory: int = 5,
    damping: float = 1.0,
    what: str = "fixed-point",
) -> tuple[torch.Tensor, SolverStats]:
    """Find z with f(z) = z, starting from z0; returns (z, stats). Runs under torch.no_grad.

    Args:
        f: maps (batch, *shape) to (batch, *shape), acting on each sample independently.
        z0: the initial guess, (batch, *shape).
        solver: "anderson" | "broyden" | "fixed_point".
        tol: relative residual per sample, ||f(z) - z|| / (||f(z)|| + 1e-12), to stop at.
        max_passes: evaluations of f allowed (and as many again for the fixed-point fallback).
        memory: past iterates Anderson mixes / rank-one updates Broyden keeps.
        damping: fixed-point step z <- (1 - damping) z + damping f(z), in (0, 1].
        what: names the solve in the warning ("forward", "backward").
    """
    check_solver_args(solver, tol, max_passes, memory, damping, where="solve")
    shape, batch = z0.shape, z0.shape[0]

    def flat_f(z: torch.Tensor) -> torch.Tensor:  # (B, d) -> (B, d)
        return f(z.reshape(shape)).reshape(batch, -1)

    with torch.no_grad():
        z = z0.detach().reshape(batch, -1).clone()  # (B, d)
        track = _Tracker(flat_f, tol, max_passes)
        used, fallback = solver, None
        try:
            {"anderson": _anderson, "broyden": _broyden, "fixed_point": _fixed_point}[solver](
                track, z, memory, damping
            )
        except (_Failed, torch.linalg.LinAlgError):
            pass
        if not track.converged and solver != "fixed_point" and track.best_z is not None:
            before = track.worst
            fallback = "fixed_point"
            track.budget = track.passes + max_passes
            try:
                _fixed_point(track, track.best_z, memory, damping)
            except _Failed:
                pass
            if track.worst < before:
                used = "fixed_point"
        stats = SolverStats(
            solver=used, passes=track.passes, residuals=track.residuals, converged=track.converged,
            tol=tol, fallback=fallback, residual=track.worst,
        )
        if not stats.converged:
            warnings.warn(NotConvergedWarning(
                f"{what} solve did not converge: {solver} reached relative residual {stats.residual:.3g} > tol={tol:g} "
                f"after {stats.passes} passes (max_passes={max_passes}"
                + (f", then {fallback} from the best iterate" if fallback else "")
                + "); raise max_passes, loosen tol, or make the loop contractive (e.g. smaller weights)",
                stats), stacklevel=3,
            )
        out = track.best_z if track.best_z is not None else z
    return out.reshape(shape), stats


def _fixed_point(track: _Tracker, z: torch.Tensor, memory: int, damping: float) -> None:
    """z <- (1 - damping) z + damping f(z) until converged or out of passes."""
    while not track.done:
        fz = track.evaluate(z)
        z = fz if damping == 1.0 else torch.lerp(z, fz, damping)


def _anderson(track: _Tracker, z: torch.Tensor, memory: int, damping: float) -> None:
    """Anderson acceleration (type II, Walker & Ni 2011, batched as in Bai et al. 2019).

    Keeps the last m iterates X and their images F; the next iterate mixes the images with
    coefficients alpha (sum 1) minimising ||sum_i alpha_i (F_i - X_i)||, solved per sample as a
    small bordered linear system with Tikhonov term lam * mean(diag(G G^T)).
    """
    B, d = z.shape
    m = max(memory, 1)
    X = z.new_zeros(B, m, d)
    F = z.new_zeros(B, m, d)
    X[:, 0], F[:, 0] = z, track.evaluate(z)
    if track.done:
        return
    X[:, 1], F[:, 1] = F[:, 0], track.evaluate(F[:, 0].clone())
    k = 2
    H = z.new_zeros(B, m + 1, m + 1)
    H[:, 0, 1:] = H[:, 1:, 0] = 1
    y = z.new_zeros(B, m + 1, 1)
    y[:, 0] = 1
    while not track.done:
        n = min(k, m)
        G = F[:, :n] - X[:, :n]  # (B, n, d)
        GG = torch.bmm(G, G.transpose(1, 2))  # (B, n, n)
        scale = GG.diagonal(dim1=1, dim2=2).mean(1).clamp_min(torch.finfo(z.dtype).tiny)  # (B,)
        H[:, 1 : n + 1, 1 : n + 1] = GG + ANDERSON_LAM * scale[:, None, None] * torch.eye(n, dtype=z.dtype, device=z.device)
        alpha = torch.linalg.solve(H[:, : n + 1, : n + 1], y[:, : n + 1])[:, 1 : n + 1, 0]  # (B, n)
        if not torch.isfinite(alpha).all():
            raise _Failed("Anderson's mixing coefficients are not finite")
        new = torch.bmm(alpha[:, None], F[:, :n])[:, 0]
        if damping != 1.0:
            new = damping * new + (1 - damping) * torch.bmm(alpha[:, None], X[:, :n])[:, 0]
        if not torch.isfinite(new).all():
            raise _Failed("Anderson's iterate is not finite")
        X[:, k % m] = new
        F[:, k % m] = track.evaluate(new)
        k += 1


def _broyden(track: _Tracker, z: torch.Tensor, memory: int, damping: float) -> None:
    """Limited-memory good Broyden on g(z) = f(z) - z (Broyden 1965; Bai et al. 2019).

    H approximates the inverse Jacobian (J_f - I)^{-1}, starting from -I (so the first step is a
    plain fixed-point step), as -I + sum_i u_i v_i^T with at most `memory` rank-one terms; when
    full, it restarts from -I (overwriting the oldest term instead, as some DEQ code does, breaks
    the Sherman-Morrison chain and stalls). The update is the Sherman-Morrison form
    H += (dz - H dg) (dz^T H) / (dz^T H dg); samples with a vanishing denominator skip it.
    """
    B, d = z.shape
    m = max(memory, 1)
    U = z.new_zeros(B, m, d)
    V = z.new_zeros(B, m, d)
    g = track.evaluate(z) - z
    k = 0
    while not track.done:
        step = g - torch.bmm(U.transpose(1, 2), torch.bmm(V, g[:, :, None]))[:, :, 0]  # -H g
        z_new = z + step
        if not torch.isfinite(z_new).all():
            raise _Failed("Broyden's iterate is not finite")
        g_new = track.evaluate(z_new) - z_new
        if track.done:
            return
        dz, dg = z_new - z, g_new - g
        if k == m:  # memory full: restart from H = -I
            U.zero_()
            V.zero_()
            k = 0
        # v = H^T dz = -dz + sum_i (u_i . dz) v_i;  H dg = -dg + sum_i u_i (v_i . dg)
        vT = -dz + torch.bmm(torch.bmm(dz[:, None], U.transpose(1, 2)), V)[:, 0]
        Hdg = -dg + torch.bmm(U.transpose(1, 2), torch.bmm(V, dg[:, :, None]))[:, :, 0]
        den = (vT * dg).sum(1)  # (B,)
        ok = den.abs() > 1e-30 * (dz.norm(dim=1) * dg.norm(dim=1)).clamp_min(torch.finfo(z.dtype).tiny)
        u = torch.where(ok[:, None], (dz - Hdg) / torch.where(ok, den, torch.ones_like(den))[:, None], torch.zeros_like(dz))
        U[:, k] = u
        V[:, k] = torch.where(ok[:, None], vT, torch.zeros_like(vT))
        if not (torch.isfinite(u).all() and torch.isfinite(vT).all()):
            raise _Failed("Broyden's update is not finite")
        z, g = z_new, g_new
        k += 1


def check_solver_args(solver, tol, max_passes, memory, damping, *, where: str) -> None:
    """Raise ValueError naming the fix for a bad solver setting."""
    if solver not in SOLVERS:
        raise ValueError(f"{where}: unknown solver {solver!r}; choose one of {', '.join(map(repr, SOLVERS))}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (0 < tol < math.inf):
        raise ValueError(f"{where}: tol must be a positive number (relative residual, e.g. 1e-4); got {tol!r}")
    _check_count(max_passes, "max_passes", where, "e.g. 50")
    _check_count(memory, "memory", where, "e.g. 5")
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not 0 < damping <= 1:
        raise ValueError(f"{where}: damping must be in (0, 1] (1 is an undamped step); got {damping!r}")


def _check_count(value, name: str, where: str, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {name} must be an integer >= 1 ({example}); got {value!r}")
