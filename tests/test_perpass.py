"""PerPass (loopnets.core.perpass): a module per loop pass inside ln.Loop, checked against the passes written out (float64)."""

import pytest
import torch
from torch import nn

import loopnets as ln
from loopnets.core.perpass import at_pass, pass_key

pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)


def lin(n=3):
    return nn.Linear(n, n)


def test_pass_t_runs_entry_t_and_later_passes_reuse_the_last():
    first, a, b = lin(), lin(), lin()
    loop = ln.Loop(nn.Sequential(first, ln.PerPass([a, b]), nn.Tanh()), unroll=3, merge="add")
    x = torch.randn(4, 3)
    h1 = torch.tanh(a(first(x)))
    h2 = torch.tanh(b(first(h1 + x)))
    h3 = torch.tanh(b(first(h2 + x)))  # beyond the entries: the last one
    torch.testing.assert_close(loop(x), h3, rtol=0, atol=1e-12)
    passes = loop.passes(x)
    for got, want in zip(passes, (h1, h2, h3)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    loop(x).square().sum().backward()
    assert a.weight.grad.abs().sum() > 0 and b.weight.grad.abs().sum() > 0
    with ln.severed(loop, loops=True):  # one pass: entry 0
        torch.testing.assert_close(loop(x), h1, rtol=0, atol=1e-12)


def test_a_feedback_per_loop_back_runs_entry_t_after_pass_t():
    body, f0, f1 = lin(), lin(), lin()
    loop = ln.Loop(body, unroll=4, merge="mul", feedback=ln.PerPass([f0, f1]))
    x = torch.randn(2, 3)
    h = body(x)
    h = body(f0(h) * x)  # the loop-back after pass 0
    h = body(f1(h) * x)
    h = body(f1(h) * x)
    torch.testing.assert_close(loop(x), h, rtol=0, atol=1e-12)
    outs = loop.passes(x)
    torch.testing.assert_close(outs[-1], h, rtol=0, atol=1e-12)


def test_untied_copies_equal_a_hand_unrolled_deep_net_and_train_apart():
    bodies = [nn.Sequential(lin(), nn.Tanh()) for _ in range(3)]
    loop = ln.Loop(ln.PerPass(bodies), unroll=3, merge="add")
    x = torch.randn(5, 3)
    expected = bodies[2](bodies[1](bodies[0](x) + x) + x)
    torch.testing.assert_close(loop(x), expected, rtol=0, atol=1e-12)
    grads = torch.autograd.grad(loop(x).sum(), [b[0].weight for b in bodies])
    assert all(g.abs().sum() > 0 for g in grads) and not torch.allclose(grads[0], grads[2])


def test_truncated_and_couple_run_per_pass_modules_too():
    a, b = lin(), lin()
    x = torch.randn(4, 3)
    tied = ln.Loop(nn.Sequential(ln.PerPass([a, b]), nn.Tanh()), unroll=3, merge="add")
    full = ln.Loop(nn.Sequential(ln.PerPass([a, b]), nn.Tanh()), unroll=3, merge="add", backprop=ln.Truncated(3))
    torch.testing.assert_close(full(x), tied(x), rtol=0, atol=1e-12)
    couple = ln.Loop(nn.Sequential(ln.PerPass([a, b]), nn.Tanh()), unroll=3, merge="add", backprop=ln.Couple())
    torch.testing.assert_close(couple(x), tied(x), rtol=0, atol=1e-12)  # copies start equal


def test_nested_loops_each_publish_their_own_pass():
    a, b, c, d = lin(), lin(), lin(), lin()
    inner = ln.Loop(nn.Sequential(ln.PerPass([c, d]), nn.Tanh()), unroll=2, merge="add")
    outer = ln.Loop(nn.Sequential(ln.PerPass([a, b]), inner), unroll=2, merge="add")
    x = torch.randn(3, 3)

    def inner_run(v):
        h = torch.tanh(c(v))
        return torch.tanh(d(h + v))

    h = inner_run(a(x))
    h = inner_run(b(h + x))  # outer pass 1: entry b, though the inner loop ran passes 0 and 1 in between
    torch.testing.assert_close(outer(x), h, rtol=0, atol=1e-12)


def test_perpass_outside_a_loop_is_a_clear_error():
    per = ln.PerPass([lin(), lin()])
    with pytest.raises(RuntimeError, match="outside a loop pass.*ln.Loop.*at_pass"):
        per(torch.randn(2, 3))
    with pytest.raises(ValueError, match="at least one module"):
        ln.PerPass([])
    with pytest.raises(TypeError, match="entry 1 is int"):
        ln.PerPass([lin(), 3])


@pytest.mark.parametrize("mode,match", [
    (ln.Combine(), "COMBINE does not support a PerPass module.*layer by layer"),
    (ln.Implicit(), "Implicit does not support a PerPass module.*fixed-point solve"),
    (ln.OneStep(), "OneStep does not support a PerPass module.*fixed-point solve"),
])
def test_modes_that_do_not_run_pass_by_pass_refuse_perpass(mode, match):
    with pytest.raises(ValueError, match=match):
        ln.Loop(nn.Sequential(lin(), ln.PerPass([nn.Tanh(), nn.ReLU()])), unroll=2, backprop=mode)
    with pytest.raises(ValueError, match=match):  # a parameter-free per-pass feedback too
        ln.Loop(nn.Sequential(lin(), nn.Tanh()), unroll=2, backprop=mode, feedback=ln.PerPass([nn.Tanh(), nn.ReLU()]))
    ln.Loop(nn.Sequential(lin(), nn.Tanh()), unroll=2, backprop=mode)  # without PerPass it builds


def test_body_may_change_shape_when_the_feedback_maps_it_back():
    body, fb = nn.Linear(4, 6), nn.Linear(6, 4)
    loop = ln.Loop(body, unroll=3, merge="add", feedback=fb)
    x = torch.randn(2, 4)
    expected = body(fb(body(fb(body(x)) + x)) + x)
    torch.testing.assert_close(loop(x), expected, rtol=0, atol=1e-12)
    assert [tuple(h.shape) for h in loop.passes(x)] == [(2, 6)] * 3
    bad = ln.Loop(nn.Linear(4, 6), unroll=2, merge="add", feedback=nn.Linear(6, 1))  # would broadcast in the merge
    with pytest.raises(ValueError, match=r"feeds back a tensor of shape \(2, 1\) into an input of shape \(2, 4\)"):
        bad(x)
    with pytest.raises(ValueError, match="keep the shape of its input"):  # no feedback: the body must keep it
        ln.Loop(nn.Linear(4, 6), unroll=2)(x)


def test_at_pass_views_share_weights_and_pass_key_names_the_entries():
    conv, bn0, bn1 = lin(), nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    body = nn.Sequential(conv, ln.PerPass([bn0, bn1]), nn.ReLU())
    view = at_pass(body, 1)
    assert view[0] is conv and view[1] is bn1 and body[1][1] is bn1  # the original is unchanged
    assert at_pass(body, 7)[1] is bn1 and at_pass(conv, 0) is conv
    assert pass_key(body, 1, "1.weight") == "1.1.weight" and pass_key(body, 0, "0.bias") == "0.bias"
    assert pass_key(ln.PerPass([body, body]), 1, "1.running_mean") == "1.1.1.running_mean"
    with pytest.raises(KeyError, match="no submodule 'nope'"):
        pass_key(body, 0, "nope.weight")
    with pytest.raises(ValueError, match="pass index"):
        at_pass(body, -1)
