"""Learned halting (PonderNet, Banino et al. 2021): the halting distribution, the loss against its
formula in float64, inference by halting probability next to ln.early_exit, bad priors refused."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import loopnets as ln
from loopnets.core.halting import (Halting, geometric_prior, halting_distribution, halting_head,
                                   halting_log_distribution, ponder_loss)

pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)


def test_halting_distribution_is_the_formula_and_sums_to_one_with_the_remainder_last():
    T, B = 5, 4
    lambdas = torch.rand(T, B)
    p = halting_distribution(lambdas)
    for b in range(B):
        lam = lambdas[:, b].tolist()
        want = [lam[t] * math.prod(1 - s for s in lam[:t]) for t in range(T - 1)]
        want.append(math.prod(1 - s for s in lam[: T - 1]))  # the remainder on the last pass
        torch.testing.assert_close(p[:, b], torch.tensor(want), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(p.sum(0), torch.ones(B), rtol=1e-12, atol=1e-12)
    prior = geometric_prior(0.3, 6)
    torch.testing.assert_close(prior, torch.tensor([0.3 * 0.7**t / (1 - 0.7**6) for t in range(6)]))
    assert prior.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_ponder_loss_matches_the_formula():
    T, B, lambda_p, beta = 4, 3, 0.25, 0.07
    losses, p = torch.rand(T, B), halting_distribution(torch.rand(T, B))
    prior = [lambda_p * (1 - lambda_p) ** t / (1 - (1 - lambda_p) ** T) for t in range(T)]  # PonderNet's truncation
    want = 0.0
    for b in range(B):
        expected = sum(p[t, b].item() * losses[t, b].item() for t in range(T))
        kl = sum(p[t, b].item() * math.log(p[t, b].item() / prior[t]) for t in range(T))
        want += (expected + beta * kl) / B
    assert ponder_loss(losses, p, lambda_p, beta).item() == pytest.approx(want, rel=1e-12)


def test_the_prior_pulls_towards_early_halting_not_to_the_last_pass():
    """With the tail lumped on the last pass, halting always at T had the smallest KL of any single
    pass (lambda_p = 0.1, T = 20), so a head trained on it never halted; renormalised, the first pass
    has the smallest and the KL grows with the pass."""
    prior = geometric_prior(0.1, 20)
    kl_at = [-math.log(prior[t].item()) for t in range(20)]  # KL of halting surely at pass t + 1
    assert kl_at == sorted(kl_at) and kl_at[-1] > kl_at[9] > kl_at[0]


def test_the_log_distribution_is_the_log_of_the_distribution():
    logits = 3 * torch.randn(6, 4)
    log_p = halting_log_distribution(logits)
    torch.testing.assert_close(log_p.exp(), halting_distribution(torch.sigmoid(logits)), rtol=1e-12, atol=1e-15)
    losses, p = torch.rand(6, 4), log_p.exp()
    torch.testing.assert_close(ponder_loss(losses, p, 0.2, 0.5, log_p=log_p), ponder_loss(losses, p, 0.2, 0.5),
                               rtol=1e-12, atol=1e-14)


def test_a_saturated_halting_head_keeps_a_finite_gradient_in_float32():
    """The divergence of the first halting run (NaN at epoch 10): once a pass's lambda rounds to 1
    in float32, every later p_t is exactly 0 and p log p's gradient there is inf * 0 = NaN. The
    log-space KL (`halting_log_distribution`) keeps it finite."""
    logits = torch.tensor([[0.5], [40.0], [3.0], [2.0]], dtype=torch.float32, requires_grad=True)
    losses = torch.rand(4, 1, dtype=torch.float32)
    p = halting_distribution(torch.sigmoid(logits))
    assert (p[2:] == 0).all()  # the underflow: sigmoid(40) == 1 in float32
    old, = torch.autograd.grad(ponder_loss(losses, p, 0.1, 0.01), logits)
    assert not torch.isfinite(old).all()  # the formula on p alone: NaN
    log_p = halting_log_distribution(logits)
    new, = torch.autograd.grad(ponder_loss(losses, log_p.exp(), 0.1, 0.01, log_p=log_p), logits)
    assert torch.isfinite(new).all() and new.abs().sum() > 0


def test_the_min_pool_head_is_the_least_ready_positions_logit():
    head = halting_head(4, dim=1, pool="min")
    h = torch.randn(3, 4, 7)
    per_position = head[2](head[1](head[0](h)))[:, 0]  # (B, L): conv 3, ReLU, 1 x 1 conv
    torch.testing.assert_close(head(h), per_position.min(1).values)
    # one unfinished position holds the sample back however long the input: the mean head's logit
    # moves by 1 / length for it, the min head's by all of it
    with torch.no_grad():
        for conv in (head[0], head[2]):
            conv.weight.zero_(), conv.bias.zero_()
        head[0].weight[0, 0, 1] = 1.0  # hidden channel 0 = the state's channel 0 at the position
        head[2].weight[0, 0, 0], head[2].bias[0] = -10.0, 5.0
    for length in (8, 512):
        h = torch.zeros(1, 4, length)
        h[0, 0, length // 2] = 1.0  # logit 5 - 10 = -5 there, 5 elsewhere
        assert head(h).item() == pytest.approx(-5.0)
    assert halting_head(4, dim=2, pool="min")(torch.randn(2, 4, 5, 5)).shape == (2,)
    with pytest.raises(ValueError, match="vector state"):
        halting_head(4, dim=0, pool="min")
    with pytest.raises(ValueError, match="pool must be one of mean, min"):
        halting_head(4, dim=1, pool="max")


def tiny_model(T=4):
    loop = ln.Loop(nn.Sequential(nn.Linear(3, 3), nn.Tanh()), unroll=T, merge="add")
    return Halting(nn.Sequential(nn.Linear(2, 3), loop, nn.Linear(3, 2)), halting_head(3, dim=0))


def test_halting_loss_on_a_tiny_net_matches_the_formula_with_its_gradient():
    model = tiny_model()
    (proj, loop, out), halt = model.model, model.halt[0]
    x, y = torch.randn(5, 2), torch.randint(0, 2, (5,))
    per_sample = lambda pred, target: F.cross_entropy(pred, target, reduction="none")  # noqa: E731
    loss = model.loss(x, y, per_sample, lambda_p=0.3, beta=0.1)
    grads = torch.autograd.grad(loss, [loop.body[0].weight, halt.weight])

    # by hand: h_1 = f(a), h_t = f(h_{t-1} + a), a = proj(x); lambda_t = sigmoid(halt(h_t))
    a = proj(x)
    h, Ls, lams = None, [], []
    for _ in range(4):
        h = loop.body(a if h is None else h + a)
        Ls.append(per_sample(out(h), y))
        lams.append(torch.sigmoid(halt(h)[:, 0]))
    survive, p = torch.ones(5), []
    for t in range(4):
        p.append(survive * (lams[t] if t < 3 else 1.0))
        survive = survive * (1 - lams[t])
    prior = torch.tensor([0.3 * 0.7**t / (1 - 0.7**4) for t in range(4)])
    want = sum(pt * L for pt, L in zip(p, Ls)) + 0.1 * sum(pt * (pt / prior[t]).log() for t, pt in enumerate(p))
    want = want.mean()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    for got, w in zip(grads, torch.autograd.grad(want, [loop.body[0].weight, halt.weight])):
        torch.testing.assert_close(got, w, rtol=1e-10, atol=1e-12)


def test_stop_exits_at_the_cumulative_threshold_and_reads_like_early_exit():
    model = tiny_model(T=6).eval()
    nn.init.normal_(model.halt[0].weight, std=3.0)  # spread the halting passes
    x = torch.randn(64, 2)
    with torch.no_grad():
        run = model.ponder(x)
    for threshold in (0.3, 0.5, 0.9):
        result = model.stop(x, threshold=threshold)
        cumulative = run.p.cumsum(0)  # (T, B)
        want = torch.where(cumulative >= threshold, torch.arange(1, 7)[:, None], 6).min(0).values
        want = torch.minimum(want, torch.tensor(6))
        assert torch.equal(result.passes, want)
        outs = torch.stack(run.outputs)  # (T, B, 2)
        torch.testing.assert_close(result.output, outs[want - 1, torch.arange(64)], rtol=1e-12, atol=1e-12)
        assert result.criterion == "halting" and result.values.shape == (int(want.max()), 64)
    assert len(set(model.stop(x).passes.tolist())) > 1  # samples stop at different passes
    # the same record as ln.early_exit: at the extremes both rules give the fixed budget's output
    fixed = ln.early_exit(model.model, x, "change", threshold=0.0, max_passes=6)
    nn.init.constant_(model.halt[0].bias, -50.0)
    nn.init.zeros_(model.halt[0].weight)  # lambda ~ 0: never halts before the last pass
    never = model.stop(x)
    assert type(never) is type(fixed) and torch.equal(never.passes, fixed.passes)
    torch.testing.assert_close(never.output, fixed.output)
    nn.init.constant_(model.halt[0].bias, 50.0)  # lambda ~ 1: halts after one pass
    proj, loop, out = model.model
    torch.testing.assert_close(model(x), out(loop(proj(x), unroll=1)))
    assert torch.equal(model.stop(x).passes, torch.ones(64, dtype=torch.long))


def test_halting_trains():
    model = tiny_model()
    x = torch.randn(64, 2)
    y = (x[:, 0] > 0).long()
    per_sample = lambda pred, target: F.cross_entropy(pred, target, reduction="none")  # noqa: E731
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model.loss(x, y, per_sample, lambda_p=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("prior", [0, 1, 0.0, 1.0, -0.2, 1.5, True, "0.2", math.nan])
def test_a_prior_outside_zero_one_is_refused(prior):
    with pytest.raises(ValueError, match=r"the halting prior lambda_p must be a number strictly between 0 and 1"):
        geometric_prior(prior, 5)
    with pytest.raises(ValueError, match=r"strictly between 0 and 1"):
        tiny_model().loss(torch.randn(2, 2), torch.zeros(2, dtype=torch.long), lambda p, t: p.sum(1), lambda_p=prior)


def test_other_bad_settings_are_refused():
    with pytest.raises(ValueError, match=r"halting threshold must be a number in \(0, 1\]"):
        tiny_model().stop(torch.randn(2, 2), threshold=0)
    with pytest.raises(ValueError, match="beta .* must be a finite number >= 0"):
        ponder_loss(torch.rand(3, 2), halting_distribution(torch.rand(3, 2)), 0.2, beta=-1)
    bad = Halting(tiny_model().model, nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"one logit per sample, shape \(2,\) or \(2, 1\); got \(2, 2\)"):
        bad.stop(torch.randn(2, 2))


def test_fit_halting_trains_a_thinking_net_and_reports_the_passes():
    torch.manual_seed(0)
    from loopnets.data.algorithmic import prefix_sums
    from loopnets.models.thinking import recurrent_conv

    x, y = prefix_sums(64, 8, seed=2)
    net = recurrent_conv(1, 1, width=6, unroll=4)
    model = Halting(net, halting_head(6, dim=1))
    history = ln.fit_halting(model, (x, y), (x, y), prior=0.3, beta=0.01, epochs=3, batch_size=16, progress=False,
                             optimizer=("adam", {"lr": 3e-3}))
    assert len(history) == 3 and history["val_loss"][-1] < history["val_loss"][0]
    assert all(1 <= p <= 4 for p in history["val_passes"])
    assert all(0 <= a <= 1 for a in history["val_accuracy"])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        ln.fit_halting(model, (x, y), prior=1.0, epochs=1, progress=False)
    with pytest.raises(TypeError, match="fit_halting trains a loopnets.Halting"):
        ln.fit_halting(net, (x, y), epochs=1, progress=False)
    with pytest.raises(ValueError, match="per-sample loss; choose one of cross_entropy, mse, mae"):
        ln.fit_halting(model, (x, y), loss="kl_divergence", epochs=1, progress=False)


def test_a_mode_without_every_pass_in_training_is_refused_by_name():
    """Progressive trains on a random number of passes, so a loss at every pass cannot be formed:
    Halting refuses it in training with the mode's reason, and runs it in eval()."""
    loop = ln.Loop(nn.Sequential(nn.Linear(3, 3), nn.Tanh()), unroll=4, backprop=ln.Progressive(alpha=1.0))
    model = Halting(loop, nn.Linear(3, 1))
    x, y = torch.randn(5, 3), torch.randn(5, 3)
    per_sample = lambda pred, target: (pred - target).square().mean(1)  # noqa: E731
    with pytest.raises(ValueError, match=r"does not support learned halting \(ln.Halting"):
        model.loss(x, y, per_sample, lambda_p=0.3)
    model.eval()
    assert model.stop(x).passes.shape == (5,)
