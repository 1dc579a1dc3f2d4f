"""Loop and its backprop modes, each checked against the formula it claims (float64, tiny nets)."""

import copy

import pytest
import torch
from torch import nn

import loopnets as ln
from loopnets.core.loop import MERGES
from loopnets.core.modes import accumulation_weights


pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)


def mlp_body(width=4):
    return nn.Sequential(nn.Linear(width, 5), nn.Tanh(), nn.Linear(5, width), nn.Sigmoid())


# --- Tied ------------------------------------------------------------------------------------


def test_tied_unroll1_is_the_plain_body():
    body = mlp_body()
    x = torch.randn(3, 4)
    assert torch.equal(ln.Loop(body, unroll=1)(x), body(x))


def test_tied_weights_appear_once_and_forward_is_repeated_body():
    body = mlp_body()
    loop = ln.Loop(body, unroll=3)
    assert sum(p.numel() for p in loop.parameters()) == sum(p.numel() for p in body.parameters())
    x = torch.randn(3, 4)
    assert torch.allclose(loop(x), body(body(body(x))))


@pytest.mark.parametrize("merge", ["replace", "add", "mul"])
def test_tied_gradient_is_sum_of_per_pass_gradients(merge):
    body = mlp_body()
    k = 3
    loop = ln.Loop(body, unroll=k, merge=merge)
    x = torch.randn(6, 4)
    target = torch.randn(6, 4)
    loss = ((loop(x) - target) ** 2).sum()
    grads = torch.autograd.grad(loss, list(body.parameters()))

    # Untied copies holding the same values: the gradient of each copy is its pass's share.
    copies = [copy.deepcopy(body) for _ in range(k)]
    h = x
    for t, c in enumerate(copies):
        v = x if t == 0 else MERGES[merge](h, x)
        h = c(v)
    per_pass = [torch.autograd.grad(((h - target) ** 2).sum(), list(c.parameters()), retain_graph=True) for c in copies]
    for i, g in enumerate(grads):
        expected = sum(pp[i] for pp in per_pass)
        assert torch.allclose(g, expected, atol=1e-12)
        # and it is a real sum: no single pass equals it
        assert not torch.allclose(g, per_pass[-1][i])


def test_gradcheck_tied_and_couple_loops():
    for backprop in (ln.Tied(), ln.Couple()):
        loop = ln.Loop(mlp_body(3), unroll=3, backprop=backprop, merge="add")
        x = torch.randn(2, 3, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: loop(t), (x,))


# --- merge / output / feedback ---------------------------------------------------------------


@pytest.mark.parametrize(
    "merge,fn",
    [
        ("replace", lambda h, x: h),
        ("add", lambda h, x: h + x),
        ("sub", lambda h, x: h - x),
        ("mul", lambda h, x: h * x),
        ("mean", lambda h, x: (h + x) / 2),
    ],
)
def test_merge_rules(merge, fn):
    body = mlp_body()
    x = torch.randn(3, 4)
    h1 = body(x)
    h2 = body(fn(h1, x))
    h3 = body(fn(h2, x))
    assert torch.allclose(ln.Loop(body, unroll=3, merge=merge)(x), h3)


@pytest.mark.parametrize("output", ["last", "mean", "sum"])
def test_output_rules_and_passes_readout(output):
    body = mlp_body()
    x = torch.randn(3, 4)
    loop = ln.Loop(body, unroll=3, output=output)
    hs = loop.passes(x)
    assert len(hs) == 3
    assert torch.allclose(hs[1], body(body(x)))
    expected = {"last": hs[-1], "mean": sum(hs) / 3, "sum": sum(hs)}[output]
    assert torch.allclose(loop(x), expected)


def test_inference_with_another_unroll():
    body = mlp_body()
    loop = ln.Loop(body, unroll=2)
    x = torch.randn(3, 4)
    assert torch.allclose(loop(x, unroll=4), body(body(body(body(x)))))
    with ln.unrolled(loop, 3):
        assert torch.allclose(loop(x), body(body(body(x))))
    assert torch.allclose(loop(x), body(body(x)))


def test_feedback_module_on_the_loop_path_is_trained():
    body = mlp_body()
    fb = nn.Linear(4, 4)
    loop = ln.Loop(body, unroll=3, merge="add", feedback=fb)
    x = torch.randn(3, 4)
    expected = body(fb(body(fb(body(x)) + x)) + x)
    out = loop(x)
    assert torch.allclose(out, expected)
    out.sum().backward()
    assert fb.weight.grad is not None and fb.weight.grad.abs().sum() > 0


def test_body_that_changes_shape_is_a_clear_error():
    loop = ln.Loop(nn.Linear(4, 3), unroll=2)
    with pytest.raises(ValueError, match=r"keep the shape of its input.*\(3, 4\).*\(3, 3\)"):
        loop(torch.randn(3, 4))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"unroll": 0}, "unroll must be an integer >= 1"),
        ({"merge": "stack"}, "unknown merge 'stack'"),
        ({"output": "first"}, "unknown output 'first'"),
        ({"backprop": "tied"}, "backprop must be"),
    ],
)
def test_bad_loop_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ln.Loop(mlp_body(), **kwargs)


# --- dropout shared across passes ------------------------------------------------------------


def test_dropout_mask_is_shared_across_passes_and_redrawn_per_call():
    body = nn.Sequential(nn.Identity(), ln.Dropout(0.5))
    loop = ln.Loop(body, unroll=3, merge="add").train()
    x = torch.ones(4, 200)
    hs = loop.passes(x)
    zeros = [h == 0 for h in hs]
    assert 0.3 < zeros[0].double().mean() < 0.7
    assert torch.equal(zeros[0], zeros[1]) and torch.equal(zeros[0], zeros[2])
    assert not torch.equal(zeros[0], loop.passes(x)[0] == 0)  # a new mask next call


def test_dropout_mask_is_shared_by_couple_copies_and_combine_passes():
    for backprop in (ln.Couple(), ln.Combine()):
        body = nn.Sequential(nn.Linear(50, 50), nn.ReLU(), ln.Dropout(0.5))
        with torch.no_grad():
            body[0].weight.copy_(torch.eye(50))
            body[0].bias.fill_(1.0)
        loop = ln.Loop(body, unroll=3, backprop=backprop).train()
        hs = loop.passes(torch.ones(2, 50))
        assert torch.equal(hs[0] == 0, hs[2] == 0), backprop


def test_dropout_outside_a_loop_is_plain_dropout():
    d = ln.Dropout(0.5).train()
    x = torch.ones(1000)
    assert not torch.equal(d(x) == 0, d(x) == 0)
    assert torch.equal(d.eval()(x), x)


def test_nn_dropout_in_a_loop_body_is_refused():
    with pytest.raises(ValueError, match="loopnets.Dropout"):
        ln.Loop(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1)), unroll=2)


# --- COUPLE ----------------------------------------------------------------------------------


def _scalar_loop(backprop):
    body = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        body.weight.fill_(6.0)
    return ln.Loop(body, unroll=2, backprop=backprop)


def test_couple_thesis_fig_5_2_worked_example():
    """Copies at w = 6 with G1 = G2 = 2: COUPLE gives 6 - lr*2 (eq 5.5), Tied 6 - lr*4 (eq 5.4)."""
    lr = 0.01
    x = torch.ones(1, 1)
    results = {}
    for name, backprop in (("couple", ln.Couple()), ("tied", ln.Tied())):
        loop = _scalar_loop(backprop)
        opt = torch.optim.SGD(loop.parameters(), lr=lr)
        loss = loop(x).sum() / 3  # y = w2 * w1 * x, dL/dw_i = w_j / 3 = 2
        loss.backward()
        grads = [c.weight.grad.item() for c in loop.copies]
        opt.step()
        ln.tie_(loop)
        results[name] = (grads, [c.weight.item() for c in loop.copies])
    assert results["couple"][0] == [2.0, 2.0]
    assert results["couple"][1] == [pytest.approx(6 - lr * 2)] * 2
    assert results["tied"][0] == [4.0]
    assert results["tied"][1] == [pytest.approx(6 - lr * 4)]


def test_couple_update_is_mean_of_per_copy_sgd_updates_for_distinct_gradients():
    loop = ln.Loop(mlp_body(), unroll=3, backprop=ln.Couple())
    lr = 0.1
    opt = torch.optim.SGD(loop.parameters(), lr=lr)
    before = [p.detach().clone() for p in loop.body.parameters()]
    x = torch.randn(5, 4)
    (loop(x) ** 2).sum().backward()
    per_copy = [[p.grad.clone() for p in c.parameters()] for c in loop.copies]
    assert not torch.allclose(per_copy[0][0], per_copy[2][0])  # copies see different gradients
    opt.step()
    ln.tie_(loop)
    for i, w0 in enumerate(before):
        expected = w0 - lr * sum(g[i] for g in per_copy) / 3
        for c in loop.copies:
            assert torch.allclose(list(c.parameters())[i], expected)


def test_couple_weighted_retie_uses_normalised_weights():
    loop = ln.Loop(nn.Linear(1, 1, bias=False), unroll=3, backprop=ln.Couple(accumulate="weighted"))
    with torch.no_grad():
        for value, c in zip((1.0, 2.0, 4.0), loop.copies):
            c.weight.fill_(value)
    loop.retie_()
    w = accumulation_weights("weighted", 3)  # proportional to 1/3, 1/2, 1
    assert w == pytest.approx([1 / 3 / (11 / 6), 1 / 2 / (11 / 6), 1 / (11 / 6)])
    expected = w[0] * 1 + w[1] * 2 + w[2] * 4
    assert [c.weight.item() for c in loop.copies] == [pytest.approx(expected)] * 3


def test_couple_copies_have_their_own_parameters_and_optimizer_state():
    loop = ln.Loop(mlp_body(), unroll=2, backprop=ln.Couple())
    body_ids = {id(p) for p in loop.body.parameters()}
    copy_ids = {id(p) for p in loop.copies[1].parameters()}
    assert not body_ids & copy_ids
    opt = torch.optim.Adam(loop.parameters(), lr=0.1)
    (loop(torch.randn(3, 4)) ** 2).sum().backward()
    opt.step()
    m0 = opt.state[loop.body[0].weight]["exp_avg"]
    m1 = opt.state[loop.copies[1][0].weight]["exp_avg"]
    assert not torch.allclose(m0, m1)


def test_couple_compact_gives_the_same_outputs():
    loop = ln.Loop(mlp_body(), unroll=3, backprop=ln.Couple(), merge="add", output="mean")
    opt = torch.optim.Adam(loop.parameters(), lr=0.05)
    x = torch.randn(5, 4)
    for _ in range(3):
        opt.zero_grad()
        (loop(x) ** 2).sum().backward()
        opt.step()
        ln.tie_(loop)
    compact = loop.compact()
    assert isinstance(compact.backprop, ln.Tied)
    assert sum(p.numel() for p in compact.parameters()) * 3 == sum(p.numel() for p in loop.parameters())
    assert torch.allclose(compact(x), loop(x))


def test_couple_compact_refuses_untied_copies_and_training_beyond_its_copies():
    loop = ln.Loop(mlp_body(), unroll=2, backprop=ln.Couple())
    with torch.no_grad():
        loop.copies[1][0].weight.add_(1.0)
    with pytest.raises(ValueError, match="differs from copy 0"):
        loop.compact()
    with pytest.raises(ValueError, match="holds 2 copies"):
        loop.train()(torch.randn(2, 4), unroll=3)
    loop.eval()(torch.randn(2, 4), unroll=3)  # fine at inference


# --- COMBINE ---------------------------------------------------------------------------------


def _combine_by_hand(body, x, k, weights, target_weights, scale=1.0):
    """COMBINE written out for a 2-layer body: combined in / pre / post per layer, then backprop."""
    lin1, act1, lin2, act2 = body
    ins1, pres1, outs1, pres2, outs2 = [], [], [], [], []
    h = None
    with torch.no_grad():
        for t in range(k):
            v = x if t == 0 else h
            z1 = lin1(v); a1 = act1(z1); z2 = lin2(a1); a2 = act2(z2)
            ins1.append(v); pres1.append(z1); outs1.append(a1); pres2.append(z2); outs2.append(a2)
            h = a2
    comb = lambda vs: sum(w * v for w, v in zip(weights, vs))
    c_in1, c_pre1, c_out1, c_pre2, c_out2 = map(comb, (ins1, pres1, outs1, pres2, outs2))
    # loss = sum(output * target_weights): dL/d(output) = target_weights
    d2 = target_weights * torch.sigmoid(c_pre2) * (1 - torch.sigmoid(c_pre2))  # sigmoid' at combined pre
    gW2 = d2.T @ c_out1  # combined input of layer 2 = combined output of layer 1
    gb2 = d2.sum(0)
    d1 = (d2 @ lin2.weight) * (1 - torch.tanh(c_pre1) ** 2)  # tanh' at combined pre
    gW1 = d1.T @ c_in1
    gb1 = d1.sum(0)
    gx = d1 @ lin1.weight
    return c_out2, [scale * g for g in (gW1, gb1, gW2, gb2)], gx


@pytest.mark.parametrize("accumulate", ["mean", "sum", "weighted"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_combine_output_and_gradients_equal_the_hand_formula(accumulate, k):
    body = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3), nn.Sigmoid())
    x = torch.randn(5, 3, requires_grad=True)
    r = torch.randn(5, 3)
    loop = ln.Loop(body, unroll=k, backprop=ln.Combine(accumulate=accumulate))
    out = loop(x)
    (out * r).sum().backward()
    expected_out, expected_grads, expected_gx = _combine_by_hand(
        body, x.detach(), k, accumulation_weights(accumulate, k), r
    )
    assert torch.allclose(out, expected_out, atol=1e-12)
    for p, g in zip(body.parameters(), expected_grads):
        assert torch.allclose(p.grad, g, atol=1e-12)
    assert torch.allclose(x.grad, expected_gx, atol=1e-12)


@pytest.mark.parametrize("grad_scale,factor", [(0.25, 0.25), ("1/k", 1 / 3), (lambda k: 2.0 * k, 6.0)])
def test_combine_grad_scale_scales_parameter_gradients_only(grad_scale, factor):
    body = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3), nn.Sigmoid())
    x = torch.randn(5, 3, requires_grad=True)
    r = torch.randn(5, 3)
    loop = ln.Loop(body, unroll=3, backprop=ln.Combine(grad_scale=grad_scale))
    (loop(x) * r).sum().backward()
    _, grads, gx = _combine_by_hand(body, x.detach(), 3, [1 / 3] * 3, r, scale=factor)
    for p, g in zip(body.parameters(), grads):
        assert torch.allclose(p.grad, g, atol=1e-12)
    assert torch.allclose(x.grad, gx, atol=1e-12)


def test_combine_is_not_tied_backprop():
    """COMBINE's gradient is the thesis's approximation, not the gradient of the unrolled net."""
    torch.manual_seed(1)
    body = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    x = torch.randn(4, 3)
    combine = ln.Loop(body, unroll=3, backprop=ln.Combine())
    tied = ln.Loop(body, unroll=3, output="mean")  # same forward value as COMBINE's mean output...
    assert torch.allclose(combine(x), torch.stack(tied.passes(x)).mean(0))
    g_combine = torch.autograd.grad(combine(x).sum(), body[0].weight)[0]
    g_tied = torch.autograd.grad(tied(x).sum(), body[0].weight)[0]
    assert not torch.allclose(g_combine, g_tied)  # ...but another gradient


def test_combine_unroll1_is_exact_gradcheck():
    body = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3))
    loop = ln.Loop(body, unroll=1, backprop=ln.Combine())
    x = torch.randn(2, 3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: loop(t), (x,))


def test_combine_conv_body_with_pool_and_reshape_runs_and_matches_its_forward():
    body = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(2 * 4 * 4, 64), nn.Sigmoid(), ln.layers.Reshape((1, 8, 8)),
    )
    loop = ln.Loop(body, unroll=3, backprop=ln.Combine(), merge="add")
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    out = loop(x)
    with torch.no_grad():
        hs = loop.passes(x)
    assert torch.allclose(out, sum(hs) / 3)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in body.parameters())
    assert x.grad is not None


@pytest.mark.parametrize(
    "body,match",
    [
        (nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), r"module 1 \(BatchNorm1d\)"),
        (nn.Sequential(nn.Linear(3, 3), nn.Softmax(dim=-1)), r"module 1 \(Softmax\)"),
        (nn.Linear(3, 3), "nn.Sequential body"),
    ],
)
def test_combine_refuses_bodies_it_cannot_backprop(body, match):
    with pytest.raises(ValueError, match=match):
        ln.Loop(body, unroll=2, backprop=ln.Combine())


def test_combine_refuses_output_rule_and_trainable_feedback():
    body = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="always the combined value"):
        ln.Loop(body, unroll=2, backprop=ln.Combine(), output="last")
    with pytest.raises(ValueError, match="feedback module with parameters"):
        ln.Loop(body, unroll=2, backprop=ln.Combine(), feedback=nn.Linear(3, 3))


def _saved_bytes(fn):
    """Bytes of the distinct storages autograd saves for backward while building fn()'s graph."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out


def test_combine_memory_does_not_grow_with_unroll():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh())
    x = torch.randn(256, 64)
    sizes = {}
    for mode in (ln.Combine(), ln.Tied()):
        for k in (2, 32):
            loop = ln.Loop(copy.deepcopy(body), unroll=k, backprop=mode)
            sizes[type(mode).__name__, k] = _saved_bytes(lambda: loop(x))[0]
    assert sizes["Combine", 32] <= 1.1 * sizes["Combine", 2]
    assert sizes["Tied", 32] >= 10 * sizes["Tied", 2]  # the measure does see growth


def test_severed_loops_runs_one_pass_and_restores():
    body = mlp_body()
    x = torch.randn(3, 4)
    for backprop in (ln.Tied(), ln.Couple(), ln.Combine()):
        model = nn.Sequential(ln.Loop(copy.deepcopy(body), unroll=3, backprop=backprop))
        with torch.no_grad():
            full = model(x)
            with ln.severed(model, loops=True):
                assert torch.allclose(model(x), body(x))
            assert torch.allclose(model(x), full)


def test_severed_needs_something_to_sever():
    with pytest.raises(ValueError, match="skips=True and/or loops=True"):
        with ln.severed(nn.Linear(2, 2)):
            pass


def test_combine_eval_output_equals_training_output():
    body = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    loop = ln.Loop(body, unroll=3, backprop=ln.Combine())
    x = torch.randn(4, 3)
    train_out = loop.train()(x)
    with torch.no_grad():
        eval_out = loop.eval()(x)
    assert torch.allclose(train_out, eval_out)


def test_couple_copies_are_equal_before_every_fit_step():
    """ln.fit re-ties after each optimizer step: every forward in training sees equal copies."""
    loop = ln.Loop(mlp_body(), unroll=3, backprop=ln.Couple())
    model = nn.Sequential(loop, nn.Linear(4, 2))
    seen = []

    def check(module, args):
        if module.training:
            ref = list(module.body.parameters())
            seen.append(all(torch.equal(a, b) for c in module.copies[1:] for a, b in zip(ref, c.parameters())))

    loop.register_forward_pre_hook(check)
    x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    ln.fit(model, (x, y), loss="cross_entropy", optimizer=("adam", {"lr": 0.05}), epochs=3, batch_size=8,
           progress=False)
    assert len(seen) == 15 and all(seen)
    # without re-tying, Adam's per-copy updates drift apart: the check above can fail
    opt = torch.optim.Adam(loop.parameters(), lr=0.05)
    (loop(x) ** 2).sum().backward()
    opt.step()
    assert not torch.equal(loop.copies[0][0].weight, loop.copies[2][0].weight)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.LeakyReLU(0.1), nn.ELU(), nn.Identity()])
def test_combine_activation_slopes_equal_autograd(act):
    from loopnets.core.modes import _activation_slope

    pre = torch.randn(50) * 3
    p = pre.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(act(p).sum(), p)
    slope = _activation_slope(act, pre)
    assert torch.allclose(expected, torch.ones_like(pre) if slope is None else slope)
