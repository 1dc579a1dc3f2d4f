"""Truncated, Implicit and OneStep loops, each against the gradient it claims (float64, tiny loops)."""

import copy
import gc
import warnings
import weakref

import pytest
import torch
from torch import nn

import loopnets as ln
from loopnets.core.modes import backprop_from_config
from loopnets.training.batched import why_not_batched

pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)

SOLVERS = ["anderson", "broyden", "fixed_point"]
TIGHT = dict(tol=1e-12, max_passes=300, backward_tol=1e-12, backward_max_passes=300)


def contractive_body(width=4, norm=0.5):
    """Linear + tanh with the weight's spectral norm set to `norm`: f(z) = tanh(W(z + x) + b)."""
    body = nn.Sequential(nn.Linear(width, width), nn.Tanh())
    with torch.no_grad():
        body[0].weight.mul_(norm / torch.linalg.matrix_norm(body[0].weight, 2))
    return body


def grads(out, inputs, weights):
    return torch.autograd.grad((out * weights).sum(), inputs)


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)


def setup(batch=3, width=4):
    body = contractive_body(width)
    x = torch.randn(batch, width, requires_grad=True)
    c = torch.randn(batch, width)  # loss = sum(c * out)
    return body, x, c


# --- Truncated ---------------------------------------------------------------------------------


@pytest.mark.parametrize("output", [None, "mean", "sum"])
@pytest.mark.parametrize("merge", ["add", "replace", "mul"])
def test_truncated_with_all_passes_is_tied(output, merge):
    body, x, c = setup()
    k = 4
    for g in (k, k + 3):
        trunc = ln.Loop(body, unroll=k, backprop=ln.Truncated(g), merge=merge, output=output)
        tied = ln.Loop(body, unroll=k, backprop=ln.Tied(), merge=merge, output=output)
        inputs = [x, *body.parameters()]
        for a, b in zip(grads(trunc(x), inputs, c), grads(tied(x), inputs, c)):
            assert torch.equal(a, b)


def test_truncated_with_feedback_module_and_dropout_is_tied_with_all_passes():
    body = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), ln.Dropout(0.3))
    fb = nn.Linear(4, 4)
    x, c = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4)
    inputs = [x, *body.parameters(), *fb.parameters()]
    out = []
    for mode in (ln.Truncated(3), ln.Tied(), ln.Truncated(1)):
        torch.manual_seed(1)  # the same dropout mask
        out.append(grads(ln.Loop(body, unroll=3, backprop=mode, feedback=fb, merge="add")(x), inputs, c))
    assert all(torch.equal(a, b) for a, b in zip(out[0], out[1]))
    assert not torch.allclose(out[2][-2], out[1][-2])  # the feedback weight: truncation drops paths


def test_truncated_one_is_the_one_pass_gradient_from_the_detached_state():
    body, x, c = setup()
    k = 4
    loop = ln.Loop(body, unroll=k, backprop=ln.Truncated(1), merge="add")
    inputs = [x, *body.parameters()]
    got = grads(loop(x), inputs, c)
    with torch.no_grad():
        h = body(x)
        for _ in range(k - 2):
            h = body(h + x)
    W, b = body[0].weight, body[0].bias
    out = torch.tanh((h + x) @ W.T + b)  # the last pass by hand, from the detached state h
    expected = grads(out, inputs, c)
    for a, e in zip(got, expected):
        assert torch.allclose(a, e, rtol=0, atol=1e-15)
    # and it is a truncation: Tied's gradient differs
    tied = grads(ln.Loop(body, unroll=k, merge="add")(x), inputs, c)
    assert not torch.allclose(got[1], tied[1])


def test_truncated_passes_readout_detaches_the_no_grad_passes():
    body, x, _ = setup()
    outs = ln.Loop(body, unroll=4, backprop=ln.Truncated(2), merge="add").passes(x)
    assert [o.requires_grad for o in outs] == [False, False, True, True]
    tied = ln.Loop(body, unroll=4, merge="add").passes(x)
    assert all(torch.equal(a, b) for a, b in zip(outs, tied))


# --- Implicit / OneStep gradients ---------------------------------------------------------------


def long_unroll_grads(body, x, c, k=200):
    return grads(ln.Loop(body, unroll=k, merge="add")(x), [x, *body.parameters()], c)


@pytest.mark.parametrize("solver", SOLVERS)
def test_implicit_ift_gradient_matches_a_long_tied_unroll(solver):
    body, x, c = setup()
    loop = ln.Loop(body, unroll=2, merge="add", backprop=ln.Implicit(solver=solver, **TIGHT))
    got = grads(loop(x), [x, *body.parameters()], c)
    expected = long_unroll_grads(body, x, c)
    for a, e in zip(got, expected):
        assert cosine(a, e) > 0.999
        assert torch.allclose(a, e, atol=1e-9)
    assert loop.solver_stats.converged and loop.backward_stats.converged
    assert loop.backward_stats.passes > 1 and loop.backward_stats.residual < 1e-12
    # the backward solve is needed: the one-pass gradient differs
    onestep = grads(ln.Loop(body, merge="add", backprop=ln.OneStep(solver=solver, tol=1e-12, max_passes=300))(x),
                    [x, *body.parameters()], c)
    assert not torch.allclose(onestep[1], expected[1], atol=1e-3)


def test_implicit_trains_a_feedback_module_like_a_long_unroll():
    body, x, c = setup()
    fb = nn.Linear(4, 4)
    with torch.no_grad():
        fb.weight.mul_(0.9 / torch.linalg.matrix_norm(fb.weight, 2))
    inputs = [x, *body.parameters(), *fb.parameters()]
    got = grads(ln.Loop(body, merge="add", feedback=fb, backprop=ln.Implicit(**TIGHT))(x), inputs, c)
    expected = grads(ln.Loop(body, unroll=200, merge="add", feedback=fb)(x), inputs, c)
    for a, e in zip(got, expected):
        assert torch.allclose(a, e, atol=1e-9)


def test_implicit_phantom_with_many_undamped_steps_matches_the_long_unroll():
    body, x, c = setup()
    expected = long_unroll_grads(body, x, c)
    for damping, steps in ((1.0, 60), (0.5, 150)):
        mode = ln.Implicit(solver="anderson", tol=1e-12, max_passes=300, backward="phantom",
                           phantom_steps=steps, damping=damping)
        loop = ln.Loop(body, merge="add", backprop=mode)
        got = grads(loop(x), [x, *body.parameters()], c)
        for a, e in zip(got, expected):
            assert cosine(a, e) > 0.999 and torch.allclose(a, e, atol=1e-9)
        assert loop.backward_stats is None
    # few steps are an approximation
    few = ln.Loop(body, merge="add", backprop=ln.Implicit(tol=1e-12, max_passes=300, backward="phantom", phantom_steps=1))
    assert not torch.allclose(grads(few(x), [x, *body.parameters()], c)[1], expected[1], atol=1e-3)


def test_onestep_equals_the_analytic_one_step_gradient():
    body, x, c = setup()
    W, b = body[0].weight, body[0].bias
    loop = ln.Loop(body, merge="add", backprop=ln.OneStep(solver="fixed_point", tol=1e-14, max_passes=500))
    out = loop(x)
    gx, gW, gb = grads(out, [x, W, b], c)
    with torch.no_grad():  # the fixed point by plain iteration, then the closed form
        z = torch.zeros_like(x)
        for _ in range(200):
            z = torch.tanh((z + x) @ W.T + b)
        y = torch.tanh((z + x) @ W.T + b)
        delta = c * (1 - y**2)  # dL/d(pre-activation)
        assert torch.allclose(out, y, atol=1e-13)
        assert torch.allclose(gW, delta.T @ (z + x), atol=1e-12)
        assert torch.allclose(gb, delta.sum(0), atol=1e-12)
        assert torch.allclose(gx, delta @ W, atol=1e-12)  # J_f dropped: only the direct path to x


@pytest.mark.parametrize("solver", SOLVERS)
def test_gradcheck_implicit_loop_output_in_x_and_weight(solver):
    body, x, _ = setup(batch=2, width=3)
    loop = ln.Loop(body, merge="add", backprop=ln.Implicit(solver=solver, **TIGHT))
    W = body[0].weight

    def fn(x, weight):
        return torch.func.functional_call(loop, {"body.0.weight": weight}, (x,))

    assert torch.autograd.gradcheck(fn, (x.detach().requires_grad_(), W.detach().clone().requires_grad_()),
                                     eps=1e-6, atol=1e-8, rtol=1e-6)


def test_implicit_output_is_the_fixed_point_and_one_pass_with_a_graph():
    body, x, _ = setup()
    loop = ln.Loop(body, merge="add", backprop=ln.Implicit(tol=1e-12, max_passes=300))
    out = loop(x)
    assert torch.allclose(body(out + x), out, atol=1e-11)
    calls = []
    body.register_forward_hook(lambda *a: calls.append(1))
    loop(x)
    # initial guess + solver passes + the output pass + the VJP pass
    assert len(calls) == 1 + loop.solver_stats.passes + 2
    with torch.no_grad():
        calls.clear()
        loop(x)
        assert len(calls) == 1 + loop.solver_stats.passes + 1


def test_repeated_backward_and_two_forwards_in_one_step():
    body, x, c = setup()
    loop = ln.Loop(body, merge="add", backprop=ln.Implicit(**TIGHT))
    out = loop(x)
    (g1,) = torch.autograd.grad((out * c).sum(), [x], retain_graph=True)
    (g2,) = torch.autograd.grad((out * c).sum(), [x])
    assert torch.equal(g1, g2)
    # two forward calls, one backward: each output's hook solves for its own gradient
    loss = (loop(x) * c).sum() + (loop(2 * x) * c).sum()
    (g,) = torch.autograd.grad(loss, [x])
    (single2,) = torch.autograd.grad((loop(2 * x) * c).sum(), [x])
    assert torch.allclose(g, g1 + single2, atol=1e-12)


def test_the_vjp_graph_lives_only_as_long_as_the_output():
    body, x, _ = setup()
    loop = ln.Loop(body, merge="add", backprop=ln.Implicit())
    out = loop(x)
    (hook,) = out._backward_hooks.values()
    tensors = [cell.cell_contents for cell in hook.__closure__ if isinstance(cell.cell_contents, torch.Tensor)]
    assert tensors  # z0 and f0, the second pass's graph
    refs = [weakref.ref(t) for t in tensors]
    del hook, tensors, out
    gc.collect()
    assert all(r() is None for r in refs)
    assert not any(isinstance(v, torch.Tensor) for v in vars(loop).values())  # nothing kept on the loop


def test_backward_solve_that_does_not_converge_warns():
    body, x, c = setup()
    loop = ln.Loop(body, merge="add", backprop=ln.Implicit(tol=1e-10, max_passes=200, backward_max_passes=1))
    out = loop(x)
    with pytest.warns(ln.NotConvergedWarning, match="backward"):
        torch.autograd.grad((out * c).sum(), [x])
    assert loop.backward_stats.converged is False and loop.backward_stats.passes >= 1


# --- unroll, passes, arguments, config ---------------------------------------------------------


@pytest.mark.parametrize("mode", [ln.Implicit(), ln.OneStep()])
def test_explicit_unroll_runs_plain_passes(mode):
    body, x, _ = setup()
    loop = ln.Loop(body, unroll=2, merge="add", backprop=mode)
    expected = body(body(body(x) + x) + x)
    assert torch.equal(loop(x, unroll=3), expected)
    with ln.unrolled(loop, 3):
        assert torch.equal(loop(x), expected)
    with ln.severed(loop, loops=True):
        assert torch.equal(loop(x), body(x))


@pytest.mark.parametrize("mode", [ln.Implicit(), ln.OneStep()])
def test_implicit_passes_carry_one_pass_graphs(mode):
    body, x, c = setup()
    loop = ln.Loop(body, unroll=3, merge="add", backprop=mode)
    outs = loop.passes(x)
    tied = ln.Loop(body, unroll=3, merge="add").passes(x)
    assert len(outs) == 3 and all(torch.equal(a, b) for a, b in zip(outs, tied))
    assert len(loop.passes(x, unroll=5)) == 5
    inputs = [x, *body.parameters()]
    got = grads(outs[-1], inputs, c)
    expected = grads(body(outs[-2].detach() + x), inputs, c)
    for a, e in zip(got, expected):
        assert torch.equal(a, e)


ALL_MODES = [ln.Truncated(), ln.Truncated(3), ln.Implicit(), ln.OneStep(solver="broyden", tol=1e-6, max_passes=9, memory=2),
             ln.Implicit(solver="fixed_point", tol=1e-3, max_passes=7, backward="phantom", phantom_steps=2,
                         damping=0.5, memory=3, backward_tol=1e-5, backward_max_passes=11)]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_config_round_trip(mode):
    assert backprop_from_config(mode.config()) == mode
    loop = ln.Loop(contractive_body(), backprop=mode, merge="add")
    assert backprop_from_config(loop.config()["backprop"]) == mode


@pytest.mark.parametrize("make, match", [
    (lambda: ln.Implicit(solver="newton"), "unknown solver 'newton'; choose one of 'anderson'"),
    (lambda: ln.OneStep(solver="gmres"), "unknown solver"),
    (lambda: ln.Implicit(tol=0), "tol must be a positive number"),
    (lambda: ln.OneStep(tol=-1e-3), "tol must be a positive number"),
    (lambda: ln.Implicit(max_passes=0), "max_passes must be an integer >= 1"),
    (lambda: ln.OneStep(max_passes=2.5), "max_passes must be an integer >= 1"),
    (lambda: ln.Implicit(memory=0), "memory must be an integer >= 1"),
    (lambda: ln.Truncated(0), r"grad_passes must be an integer >= 1"),
    (lambda: ln.Truncated(True), r"grad_passes must be an integer >= 1"),
    (lambda: ln.Implicit(backward="adjoint"), "unknown backward 'adjoint'; choose 'ift'"),
    (lambda: ln.Implicit(damping=0.0), r"damping must be in \(0, 1\]"),
    (lambda: ln.Implicit(damping=1.5), r"damping must be in \(0, 1\]"),
    (lambda: ln.Implicit(phantom_steps=0), "phantom_steps must be an integer >= 1"),
    (lambda: ln.Implicit(backward_tol=0.0), "tol must be a positive number"),
    (lambda: ln.Implicit(backward_max_passes=0), "max_passes must be an integer >= 1"),
    (lambda: ln.Loop(contractive_body(), backprop=ln.Implicit(), output="mean"), "leave output=None"),
    (lambda: ln.Loop(contractive_body(), backprop=ln.OneStep(), output="sum"), "leave output=None"),
    (lambda: backprop_from_config({"mode": "implicit", "tol": 0}), "tol must be a positive number"),
])
def test_bad_arguments_name_the_fix(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_implicit_accepts_output_last():
    loop = ln.Loop(contractive_body(), backprop=ln.Implicit(), output="last", merge="add")
    assert loop(torch.randn(2, 4)).shape == (2, 4)


# --- networks, training, checkpoints, batching ------------------------------------------------


def implicit_net(mode) -> ln.Network:
    net = ln.Network((4,))
    net.dense(6, activation="tanh")
    net.dense(6, activation="tanh")
    net.dense(3, activation="linear")
    net.loopback(outof=1, into=1, unroll=2, backprop=mode, merge="add")
    with torch.no_grad():  # keep the loop contractive
        for m in net.modules():
            if isinstance(m, nn.Linear) and m.weight.shape == (6, 6):
                m.weight.mul_(0.5 / torch.linalg.matrix_norm(m.weight, 2))
    return net


@pytest.mark.parametrize("mode", [ln.Truncated(1), ln.Implicit(), ln.Implicit(backward="phantom", solver="broyden"),
                                  ln.OneStep(solver="fixed_point")])
def test_network_loopback_with_new_modes_trains(mode):
    net = implicit_net(mode)
    X, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    before = copy.deepcopy(net.state_dict())
    history = ln.fit(net, (X, y), loss="cross_entropy", epochs=2, batch_size=8, progress=False)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(history["train_loss"]))) and not history.diverged
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    loop = next(m for m in net.modules() if isinstance(m, ln.Loop))
    assert loop.backprop == mode
    if isinstance(mode, (ln.Implicit, ln.OneStep)):
        assert loop.solver_stats is not None and loop.solver_stats.converged
    if isinstance(mode, ln.Truncated):  # stacked: its no-grad passes act sample by sample
        assert why_not_batched(net, "adam") is None
    else:
        assert why_not_batched(net, "adam") is not None and type(mode).__name__ in why_not_batched(net, "adam")


def test_save_load_round_trips_an_implicit_network(tmp_path):
    mode = ln.Implicit(solver="broyden", tol=1e-6, backward="phantom", phantom_steps=3)
    net = implicit_net(mode)
    ln.save(net, tmp_path / "net.lnet")
    back = ln.load(tmp_path / "net.lnet")
    loop = next(m for m in back.modules() if isinstance(m, ln.Loop))
    assert loop.backprop == mode and loop.merge == "add"
    x = torch.randn(5, 4)
    net.eval(), back.eval()
    assert torch.equal(net(x), back(x))


def test_tied_loops_are_still_batched():
    net = implicit_net(ln.Tied())
    assert why_not_batched(net, "adam") is None


def test_warning_is_an_error_in_the_suite_unless_caught():
    """Non-convergence is loud: with the suite's filterwarnings=error it raises."""
    loop = ln.Loop(contractive_body(norm=0.99), merge="add", backprop=ln.Implicit(tol=1e-14, max_passes=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ln.NotConvergedWarning, match="tol=1e-14"):
            loop(torch.randn(2, 4))


def test_fit_reports_unconverged_solves_once_per_epoch():
    """A loop without a fixed point warns at every training solve; fit turns them into one warning
    per epoch with the count and the worst residual, and other warnings still pass."""
    torch.manual_seed(0)
    body = nn.Linear(3, 3)
    with torch.no_grad():
        body.weight.copy_(torch.eye(3))
        body.bias.fill_(1.0)  # z -> z + 1: no fixed point
    loop = ln.Loop(body, unroll=2, backprop=ln.OneStep(solver="fixed_point", max_passes=3))
    loop.register_forward_pre_hook(lambda module, args: warnings.warn("another warning"))
    X, y = torch.randn(8, 3), torch.randn(8, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ln.fit(loop, (X, y), loss="mse", epochs=2, batch_size=2, progress=False,
               optimizer=("sgd", {"lr": 0.0}))
    unsolved = [w.message for w in caught if isinstance(w.message, ln.NotConvergedWarning)]
    assert [str(m).split(":")[0] for m in unsolved] == ["epoch 1", "epoch 2"]
    assert all("4 fixed-point solves in training did not converge" in str(m) for m in unsolved)
    assert all(m.stats is not None and not m.stats.converged for m in unsolved)
    assert sum(str(w.message) == "another warning" for w in caught) == 8  # 4 steps x 2 epochs, each passed on
