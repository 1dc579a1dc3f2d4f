"""A new backprop mode is one new class: a toy mode defined here runs in ln.Loop, ln.Network and ln.fit.

The toy, `PassMean`: the loop's output is the mean of its k pass outputs, and every pass starts
from the detached previous one, so no gradient flows from one pass into the next:

    h_0 = f(x),  h_t = f(merge(h_{t-1}.detach(), x)),  out = (1/k) sum_t h_t.

With f(v) = tanh(W v + b), merge "add" and a loss L = sum(G * out), delta_t = G * (1 - h_t^2) / k:
    dL/dW = sum_t delta_t^T v_t,  dL/db = sum_t sum_rows delta_t,  dL/dx = sum_t delta_t W
(v_0 = x, v_t = h_{t-1} + x: each pass's input depends on x only through the re-injected x).
"""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import loopnets as ln
from loopnets.core.modes import Backprop

pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)


@dataclass(frozen=True)
class PassMean(Backprop):
    """Mean of the per-pass outputs, each pass from the detached previous one (a toy)."""

    name = "passmean"
    outputs = ("last",)  # output=None or "last": the mode decides (the mean); "mean" / "sum" are refused
    pass_readout = False
    batched = False
    parameterised_feedback = False
    unsupported = {
        "pass_readout": "its output is already a mean over passes; train it with the plain loss",
        "batched": "this toy mode is not written for stacked models",
        "parameterised_feedback": "no gradient flows through the fed-back value, so feedback weights would not train",
    }

    def run(self, loop, x, passes, readout):
        outs = []
        h = x
        for t in range(passes):
            h = loop.run_pass(h.detach(), x, t)
            loop.check_shape(x, h, "body output")
            outs.append(h)
            if readout is not None:
                readout.append(h)
        return torch.stack(outs).mean(0)


def tanh_body():
    return nn.Sequential(nn.Linear(3, 3), nn.Tanh())


def test_toy_mode_forward_and_gradient_match_the_formula_on_a_loop():
    k = 3
    loop = ln.Loop(tanh_body(), unroll=k, backprop=PassMean(), merge="add")
    W, b = loop.body[0].weight, loop.body[0].bias
    x = torch.randn(4, 3, requires_grad=True)
    G = torch.randn(4, 3)
    out = loop(x)
    (out * G).sum().backward()

    with torch.no_grad():
        v, hs, vs = x, [], []
        for t in range(k):
            vs.append(v)
            hs.append(torch.tanh(v @ W.T + b))
            v = hs[-1] + x
        expected = sum(hs) / k
        deltas = [G * (1 - h**2) / k for h in hs]
        dW = sum(d.T @ v for d, v in zip(deltas, vs))
        db = sum(d.sum(0) for d in deltas)
        dx = sum(d @ W for d in deltas)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(W.grad, dW, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.grad, db, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, dx, rtol=1e-12, atol=1e-12)
    # Not Tied with output "mean": there the gradient also flows through the fed-back values.
    tied = ln.Loop(loop.body, unroll=k, backprop=ln.Tied(), merge="add", output="mean")
    (W_tied,) = torch.autograd.grad((tied(x) * G).sum(), [W])
    assert not torch.allclose(W_tied, dW)


def test_toy_mode_passes_and_unroll_override():
    loop = ln.Loop(tanh_body(), unroll=2, backprop=PassMean(), merge="add")
    x = torch.randn(5, 3)
    raw = loop.passes(x, unroll=4)
    assert len(raw) == 4
    torch.testing.assert_close(loop(x, unroll=4), torch.stack(raw).mean(0))
    torch.testing.assert_close(loop(x), torch.stack(raw[:2]).mean(0))


def network():
    net = ln.Network(input_shape=(3,))
    net.dense(3, activation="tanh")  # layer 0
    net.dense(3, activation="tanh")  # layer 1: the loop
    net.dense(2)  # layer 2
    net.loopback(outof=1, into=1, unroll=3, backprop=PassMean(), merge="add")
    return net


def test_toy_mode_in_a_network_matches_the_formula():
    net = network()
    (loop,) = net.loops()
    assert isinstance(loop.backprop, PassMean)
    lin = [m for m in net.modules() if isinstance(m, nn.Linear)]  # layers 0, 1 (in the loop), 2
    assert len(lin) == 3 and any(m is lin[1] for m in loop.body.modules())
    x = torch.randn(4, 3)
    G = torch.randn(4, 2)
    (net(x) * G).sum().backward()

    # The formula, on independent copies of the parameters.
    params = [(m.weight.detach().clone().requires_grad_(), m.bias.detach().clone().requires_grad_()) for m in lin]
    (W0, b0), (W1, b1), (W2, b2) = params
    a = torch.tanh(x @ W0.T + b0)
    v, hs = a, []
    for _ in range(3):
        hs.append(torch.tanh(v @ W1.T + b1))
        v = hs[-1].detach() + a
    expected = (sum(hs) / 3) @ W2.T + b2
    (expected * G).sum().backward()
    torch.testing.assert_close(net(x), expected, rtol=1e-12, atol=1e-12)
    for m, (W, b) in zip(lin, params):
        torch.testing.assert_close(m.weight.grad, W.grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(m.bias.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_toy_mode_trains_with_fit():
    net = network()
    X = torch.randn(32, 3)
    y = X[:, :2].sin()
    before = [p.detach().clone() for p in net.parameters()]
    history = ln.fit(net, (X, y), (X, y), loss="mse", optimizer=("adam", {"lr": 1e-2}), epochs=2, batch_size=8,
                     progress=False)
    assert len(history) == 2
    losses = history["val_loss"]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[1] < losses[0]
    assert all(not torch.equal(a, p) for a, p in zip(before, net.parameters()))


def test_toy_mode_refuses_what_it_declares_unsupported():
    with pytest.raises(ValueError, match="PassMean does not support a feedback module with parameters: no gradient"):
        ln.Loop(tanh_body(), backprop=PassMean(), feedback=nn.Linear(3, 3))
    ln.Loop(tanh_body(), backprop=PassMean(), feedback=nn.Tanh())  # parameter-free feedback is fine
    with pytest.raises(ValueError, match=r"Loop\(output='mean'\) with PassMean: it supports output last or None"):
        ln.Loop(tanh_body(), backprop=PassMean(), output="mean")
    loop = ln.Loop(tanh_body(), unroll=2, backprop=PassMean())
    X, y = torch.randn(8, 3), torch.randn(8, 3)
    with pytest.raises(ValueError, match="PassMean does not support pass_weights: its output is already a mean"):
        ln.fit(loop, (X, y), loss="mse", epochs=1, progress=False, pass_weights="mean")
    models = [ln.Loop(tanh_body(), unroll=2, backprop=PassMean()) for _ in range(2)]
    with pytest.raises(ValueError, match="PassMean backprop, which cannot be stacked: this toy mode is not written"):
        ln.fit_many(models, (X, y), seeds=[0, 1], loss="mse", epochs=1, progress=False, batched=True)
    with pytest.raises(ValueError, match="unknown backprop capability 'flying'; choose one of pass_readout"):
        PassMean().why_not("flying")
    assert PassMean().why_not("random_passes") is None  # declared supported: random pass counts work
    ln.fit(loop, (X, y), loss="mse", epochs=1, progress=False, random_passes=(1, 3))
