"""Fixed-point solvers: pass counts, residual traces, fallback and warnings (float64)."""

import dataclasses
import math

import pytest
import torch
from torch import nn

import loopnets as ln
from loopnets.core.solvers import EPS, solve

pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)

SOLVERS = ["anderson", "broyden", "fixed_point"]


def linear_residuals(a: float, b: float, z0: float, n: int) -> list[float]:
    """Relative residuals of plain iteration z <- a z + b from z0: e_t = a^t e_0, z* = b / (1 - a)."""
    star = b / (1 - a)
    out = []
    for t in range(n):
        z = star + a**t * (z0 - star)
        fz = star + a ** (t + 1) * (z0 - star)
        out.append(abs(fz - z) / (abs(fz) + EPS))
    return out


def predicted_passes(a, b, z0, tol):
    trace = linear_residuals(a, b, z0, 10_000)
    return next(t for t, r in enumerate(trace) if r < tol) + 1, trace


@pytest.mark.parametrize("a, tol", [(0.5, 1e-4), (0.9, 1e-8), (-0.7, 1e-10)])
def test_fixed_point_passes_and_trace_on_a_linear_map(a, tol):
    b, z0 = 1.0, 0.0
    z, stats = solve(lambda z: a * z + b, torch.full((1, 1), z0), solver="fixed_point", tol=tol, max_passes=1000)
    passes, trace = predicted_passes(a, b, z0, tol)
    assert stats.passes == passes and stats.converged and stats.solver == "fixed_point" and stats.fallback is None
    assert stats.residuals == pytest.approx(trace[:passes], rel=1e-9, abs=1e-15)
    assert stats.tol == tol and stats.residual == pytest.approx(trace[passes - 1], rel=1e-9)
    # error = residual * |f(z)| / |1 - a|
    assert abs(z.item() - b / (1 - a)) / abs(b / (1 - a)) < 2 * tol / abs(1 - a)


def test_stats_take_the_slowest_sample():
    a = torch.tensor([[0.5], [0.9]])  # two samples, one map each
    _, stats = solve(lambda z: a * z + 1, torch.zeros(2, 1), solver="fixed_point", tol=1e-6, max_passes=1000)
    slow, slow_trace = predicted_passes(0.9, 1.0, 0.0, 1e-6)
    _, fast_trace = predicted_passes(0.5, 1.0, 0.0, 1e-6)
    assert stats.passes == slow
    assert stats.residuals == pytest.approx([max(s, f) for s, f in zip(slow_trace, fast_trace)][:slow], rel=1e-9)


def test_loop_with_a_linear_body_finds_its_known_fixed_point():
    a, b = 0.8, 0.3
    body = nn.Linear(1, 1)
    with torch.no_grad():
        body.weight.fill_(a)
        body.bias.fill_(b)
    x = torch.tensor([[0.5], [2.0]])
    loop = ln.Loop(body, backprop=ln.Implicit(solver="fixed_point", tol=1e-9, max_passes=500))
    out = loop(x)
    assert torch.allclose(out, torch.full_like(out, b / (1 - a)), rtol=1e-8)
    # the solve starts from pass 1, z1 = body(x); the slower sample decides the count
    expected = max(predicted_passes(a, b, a * xi + b, 1e-9)[0] for xi in (0.5, 2.0))
    assert loop.solver_stats.passes == expected and loop.solver_stats.converged


@pytest.mark.parametrize("solver", ["anderson", "broyden"])
def test_accelerated_solvers_beat_plain_iteration_on_a_slow_contraction(solver):
    Q, _ = torch.linalg.qr(torch.randn(6, 6))
    A = Q @ torch.diag(torch.linspace(0.5, 0.99, 6)) @ Q.T  # slowest direction contracts by 0.99
    c = torch.randn(3, 6)
    f = lambda z: z @ A.T + c  # noqa: E731
    star = torch.linalg.solve(torch.eye(6) - A, c.T).T
    _, plain = solve(f, torch.zeros(3, 6), solver="fixed_point", tol=1e-10, max_passes=5000)
    z, fast = solve(f, torch.zeros(3, 6), solver=solver, tol=1e-10, max_passes=200, memory=8)
    assert fast.converged and fast.solver == solver and fast.fallback is None
    assert plain.passes > 1000 and fast.passes < plain.passes / 20
    assert torch.allclose(z, star, atol=1e-8)


@pytest.mark.parametrize("solver", SOLVERS)
def test_nonlinear_solve_converges_with_every_solver(solver):
    W = torch.randn(5, 5)
    W = 0.8 * W / torch.linalg.matrix_norm(W, 2)
    c = torch.randn(4, 5)
    f = lambda z: torch.tanh(z @ W.T + c)  # noqa: E731
    z, stats = solve(f, torch.zeros(4, 5), solver=solver, tol=1e-12, max_passes=300)
    assert stats.converged and len(stats.residuals) == stats.passes
    assert (f(z) - z).norm(dim=1).max() < 1e-11


class AddOne(nn.Module):
    def forward(self, z):
        return z + 1


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_loop_without_fixed_point_warns_falls_back_and_stays_finite(solver):
    loop = ln.Loop(AddOne(), backprop=ln.Implicit(solver=solver, tol=1e-4, max_passes=20))
    with pytest.warns(ln.NotConvergedWarning, match=r"tol=0.0001 after \d+ passes \(max_passes=20") as record:
        out = loop(torch.zeros(3, 2))
    assert "relative residual" in str(record[0].message)
    stats = loop.solver_stats
    assert not stats.converged and torch.isfinite(out).all()
    if solver == "fixed_point":
        assert stats.fallback is None and stats.passes == 20
    else:
        assert stats.fallback == "fixed_point" and stats.passes == 40  # max_passes more for the fallback
    assert stats.residual == pytest.approx(min(stats.residuals)) and stats.residual > 1e-4


def test_the_result_is_the_best_iterate_seen():
    # z <- -1.5 z + 1 diverges (oscillating); the first iterate is the best one
    with pytest.warns(ln.NotConvergedWarning):
        z, stats = solve(lambda z: -1.5 * z + 1, torch.full((1, 1), 0.3), solver="fixed_point", tol=1e-6, max_passes=10)
    assert stats.residuals[0] == min(stats.residuals) < stats.residuals[-1]
    assert z.item() == 0.3 and stats.residual == stats.residuals[0]


@pytest.mark.parametrize("solver", ["anderson", "broyden"])
def test_non_finite_values_hand_over_to_fixed_point(solver):
    calls = []

    def f(z):
        calls.append(1)
        return torch.full_like(z, math.nan) if len(calls) == 2 else 0.5 * z + 1

    z, stats = solve(f, torch.zeros(2, 3), solver=solver, tol=1e-10, max_passes=100)
    assert stats.converged and stats.fallback == "fixed_point" and stats.solver == "fixed_point"
    assert math.isinf(stats.residuals[1]) and torch.allclose(z, torch.full_like(z, 2.0))


def test_a_singular_anderson_system_hands_over_to_fixed_point(monkeypatch):
    def singular(*args, **kwargs):
        raise torch.linalg.LinAlgError("singular")

    monkeypatch.setattr(torch.linalg, "solve", singular)
    z, stats = solve(lambda z: 0.5 * z + 1, torch.zeros(2, 3), solver="anderson", tol=1e-10, max_passes=100)
    assert stats.converged and stats.fallback == "fixed_point" and torch.allclose(z, torch.full_like(z, 2.0))


def test_stats_are_frozen_and_exported():
    _, stats = solve(lambda z: 0.5 * z + 1, torch.ones(1, 2), solver="fixed_point", tol=1e-3, max_passes=50)
    assert isinstance(stats, ln.SolverStats)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.passes = 3
    assert [f.name for f in dataclasses.fields(ln.SolverStats)][:6] == [
        "solver", "passes", "residuals", "converged", "tol", "fallback"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(solver="newton"), "unknown solver 'newton'"),
    (dict(tol=0.0), "tol must be a positive number"),
    (dict(tol=math.nan), "tol must be a positive number"),
    (dict(max_passes=0), "max_passes must be an integer >= 1"),
    (dict(memory=0), "memory must be an integer >= 1"),
    (dict(damping=0.0), r"damping must be in \(0, 1\]"),
])
def test_bad_solver_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve(lambda z: z, torch.zeros(1, 1), **kwargs)


def test_damped_fixed_point_steps():
    # z <- (1 - d) z + d (a z + b) contracts by 1 - d + d a
    _, stats = solve(lambda z: -0.9 * z + 1, torch.zeros(1, 1), solver="fixed_point", tol=1e-8, max_passes=1000,
                     damping=0.5)
    _, undamped = solve(lambda z: -0.9 * z + 1, torch.zeros(1, 1), solver="fixed_point", tol=1e-8, max_passes=1000)
    assert stats.converged and stats.passes < undamped.passes / 5
