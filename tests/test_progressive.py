"""ln.Progressive: DeepThinking's progressive loss (Bansal et al. 2022), against its formula in float64.

With m passes: n ~ U{0..m-1} passes without a graph, then k ~ U{1..m-n} with one; the step's loss
is (1 - alpha) L(output after m passes, full graph) + alpha L(output after n + k passes).
"""

from collections import Counter

import pytest
import torch
from torch import nn

import loopnets as ln

pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)


def tanh_loop(m, alpha):
    return ln.Loop(nn.Sequential(nn.Linear(3, 3), nn.Tanh()), unroll=m, backprop=ln.Progressive(alpha), merge="add")


def unroll_formula(W, b, x, passes, no_grad):
    """h_1 = f(x), h_t = f(h_{t-1} + x), f(v) = tanh(W v + b); the first `no_grad` passes without a graph."""
    h = None
    for t in range(passes):
        with torch.set_grad_enabled(t >= no_grad):
            v = x if h is None else h + x
            h = torch.tanh(v @ W.T + b)
    return h


def test_draws_cover_every_n_and_k_of_the_definition():
    m = 3
    counts = Counter(ln.Progressive.draw(m) for _ in range(2000))
    assert set(counts) == {(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (2, 1)}  # n in 0..m-1, k in 1..m-n
    n_counts = Counter(n for (n, _), c in counts.items() for _ in range(c))
    assert all(abs(n_counts[n] / 2000 - 1 / 3) < 0.05 for n in range(m))  # n uniform


def test_training_forward_is_n_graph_free_passes_then_k_with_a_graph():
    m = 5
    loop = tanh_loop(m, 1.0).train()
    W, b = loop.body[0].weight, loop.body[0].bias
    x = torch.randn(4, 3)
    G = torch.randn(4, 3)
    for seed in range(6):
        torch.manual_seed(seed)
        n, k = ln.Progressive.draw(m)
        torch.manual_seed(seed)
        out = loop(x)
        gW, gb = torch.autograd.grad((out * G).sum(), [W, b])
        want = unroll_formula(W, b, x, n + k, no_grad=n)
        wW, wb = torch.autograd.grad((want * G).sum(), [W, b])
        torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gW, wW, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gb, wb, rtol=1e-12, atol=1e-12)
        if n > 0:  # not the full-graph gradient of the same n + k passes
            fW, _ = torch.autograd.grad((unroll_formula(W, b, x, n + k, 0) * G).sum(), [W, b])
            assert not torch.allclose(gW, fW)
    loop.eval()  # inference: the plain m passes
    torch.testing.assert_close(loop(x), unroll_formula(W, b, x, m, 0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("alpha", [1.0, 0.3, 0.0])
def test_one_fit_step_follows_the_progressive_loss_formula(alpha):
    m, lr, seed = 4, 0.1, 3
    loop = tanh_loop(m, alpha)
    W0, b0 = (p.detach().clone() for p in (loop.body[0].weight, loop.body[0].bias))
    X, y = torch.randn(6, 3), torch.randn(6, 3)
    history = ln.fit(loop, (X, y), loss="mse", optimizer=("sgd", {"lr": lr}), epochs=1, batch_size=6, seed=seed,
                     progress=False)

    W, b = W0.clone().requires_grad_(), b0.clone().requires_grad_()
    torch.manual_seed(seed)  # fit seeds torch's generator before the first step: the same draws
    mse = lambda out: ((out - y) ** 2).mean()  # noqa: E731
    full = mse(unroll_formula(W, b, X, m, 0))
    loss = (1 - alpha) * full
    if alpha > 0:
        n, k = ln.Progressive.draw(m)
        loss = loss + alpha * mse(unroll_formula(W, b, X, n + k, no_grad=n))
    gW, gb = torch.autograd.grad(loss, [W, b])
    torch.testing.assert_close(loop.body[0].weight.detach(), W0 - lr * gW, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loop.body[0].bias.detach(), b0 - lr * gb, rtol=1e-10, atol=1e-12)
    if alpha < 1:  # the logged train loss is the max-passes output's, comparable with plain training
        assert history["train_loss"][0] == pytest.approx(full.item(), rel=1e-10)


def test_the_mix_reaches_a_loop_inside_a_model():
    # nn.Sequential(projection, loop, head): both outputs run through the head.
    model = nn.Sequential(nn.Linear(2, 3), tanh_loop(3, 0.5), nn.Linear(3, 1))
    X, y = torch.randn(16, 2), torch.randn(16, 1)
    before = [p.detach().clone() for p in model.parameters()]
    history = ln.fit(model, (X, y), (X, y), loss="mse", epochs=3, batch_size=8, progress=False)
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert history["val_loss"][-1] < history["val_loss"][0]


def test_bad_settings_are_refused():
    for alpha in (-0.1, 1.5, "1", True):
        with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
            ln.Progressive(alpha)
    loop = tanh_loop(3, 0.5)
    X, y = torch.randn(8, 3), torch.randn(8, 3)
    with pytest.raises(ValueError, match="Progressive does not support pass_weights: its training loss is already a mix"):
        ln.fit(loop, (X, y), loss="mse", epochs=1, progress=False, pass_weights="mean")
    with pytest.raises(ValueError, match="Loop\\(output='mean'\\) with Progressive"):
        ln.Loop(nn.Tanh(), backprop=ln.Progressive(), output="mean")
    assert ln.Progressive(0.25).config() == {"mode": "progressive", "alpha": 0.25}


def test_progressive_in_a_network_with_random_passes():
    net = ln.Network(input_shape=(3,))
    net.dense(3, activation="tanh")
    net.dense(3, activation="tanh")
    net.dense(2)
    net.loopback(outof=1, into=1, unroll=4, backprop=ln.Progressive(0.5), merge="add")
    X, y = torch.randn(32, 3), torch.randn(32, 2)
    history = ln.fit(net, (X, y), (X, y), loss="mse", epochs=3, batch_size=8, progress=False, random_passes=(2, 5),
                     optimizer=("adam", {"lr": 1e-2}))
    assert history["val_loss"][-1] < history["val_loss"][0]
