"""Where loopnets deliberately differs from `neurons` (Lavik's Rust framework), pinned in float64.

Each test states loopnets' value and, in its docstring, what neurons computes according to its own
unit tests (see ../shared/reference/neurons-semantics.md, "Differences confirmed against neurons'
own unit tests"). The README's "Where we differ from neurons" links here, one test per item.
"""

from __future__ import annotations

import torch
from torch import nn

import loopnets as ln
from loopnets.training.losses import get_loss

def setup_module():
    torch.set_default_dtype(torch.float64)


def teardown_module():
    torch.set_default_dtype(torch.float32)


def _grad(loss_name: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = pred.clone().requires_grad_(True)
    get_loss(loss_name)(pred, target).backward()
    return pred.grad


def test_binary_cross_entropy_is_a_mean_over_outputs():
    """neurons: the BCE loss is the SUM over a sample's outputs; loopnets: the mean over every output."""
    p = torch.tensor([[0.9, 0.2, 0.6], [0.3, 0.7, 0.5]])
    t = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    terms = -(t * p.log() + (1 - t) * (1 - p).log())
    got = get_loss("binary_cross_entropy")(p, t)
    torch.testing.assert_close(got, terms.mean(), rtol=1e-12, atol=0)
    assert not torch.isclose(got, terms.sum(dim=1).mean())  # neurons' per-sample sum


def test_mae_gradient_keeps_the_one_over_n():
    """neurons: d MAE / d p = sign(p - t), the 1/n dropped; loopnets: sign(p - t) / n (n = all outputs)."""
    p = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    t = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(_grad("mae", p, t), torch.sign(p - t) / p.numel(), rtol=1e-12, atol=0)


def test_rmse_gradient_is_the_true_derivative():
    """neurons: d RMSE / d p = sign(p - t) / n; loopnets: (p - t) / (n * RMSE), the derivative of sqrt(mean sq)."""
    p = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    t = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    n = p.numel()
    rmse = ((p - t) ** 2).mean().sqrt()
    got = _grad("rmse", p, t)
    torch.testing.assert_close(got, (p - t) / (n * rmse), rtol=1e-12, atol=0)
    assert not torch.allclose(got, torch.sign(p - t) / n)


def test_cross_entropy_gradient_when_targets_do_not_sum_to_one():
    """neurons: d CE / d z = p - t always; loopnets: (p * sum(t) - t) / B, the derivative of
    -sum(t * log softmax(z)) averaged over the batch; equal to (p - t) / B only when sum(t) = 1."""
    z = torch.tensor([[1.0, 0.5, -0.5], [0.2, 0.1, 0.0]])
    t = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.0, 0.5]])  # rows sum to 1.5 and 0.5
    z_ = z.clone().requires_grad_(True)
    get_loss("cross_entropy")(z_, t, from_logits=True).backward()
    p = z.softmax(dim=1)
    expected = (p * t.sum(dim=1, keepdim=True) - t) / z.shape[0]
    torch.testing.assert_close(z_.grad, expected, rtol=1e-12, atol=1e-15)
    assert not torch.allclose(z_.grad, (p - t) / z.shape[0])


def test_softmax_backward_is_the_jacobian_not_a_constant():
    """neurons: the softmax "derivative" multiplies the incoming gradient by the constant
    (n - 2) * sum(p^2); loopnets: the Jacobian, dz = p * (g - sum(p * g))."""
    torch.manual_seed(0)
    net = ln.Network(input_shape=(3,))
    net.dense(4, activation="softmax")
    x = torch.randn(2, 3)
    g = torch.randn(2, 4)
    captured = {}

    def keep_pre_activation(module, inputs, output):
        output.retain_grad()
        captured["z"] = output

    linear = next(m for m in net.modules() if isinstance(m, nn.Linear))
    linear.register_forward_hook(keep_pre_activation)
    p = net(x)
    (p * g).sum().backward()
    p = p.detach()
    jacobian = p * (g - (p * g).sum(dim=1, keepdim=True))
    torch.testing.assert_close(captured["z"].grad, jacobian, rtol=1e-12, atol=1e-15)
    neurons = g * (4 - 2) * (p ** 2).sum(dim=1, keepdim=True)
    assert not torch.allclose(captured["z"].grad, neurons)


def _loop_net(grad_scale: float) -> ln.Network:
    torch.manual_seed(1)
    net = ln.Network(input_shape=(3,))
    net.dense(4, activation="tanh")  # layer 0: before the loop
    net.dense(4, activation="tanh")  # 1
    net.dense(4, activation="tanh")  # 2
    net.dense(2)                     # 3
    net.loopback(outof=2, into=1, unroll=2, backprop=ln.Combine(grad_scale=grad_scale))
    return net


def test_grad_scale_scales_the_loop_parameters_only():
    """neurons: the loopback's scale also scales the delta passed to earlier layers, so it compounds
    into every layer before the loop; loopnets: only the loop parameters' gradients are scaled."""
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    grads, looped = {}, set()
    for scale in (1.0, 0.25):
        net = _loop_net(scale)
        net(x).square().sum().backward()
        grads[scale] = {name: p.grad.clone() for name, p in net.named_parameters()}
        in_loop = {id(q) for q in net.loops()[0].parameters()}
        looped = {name for name, p in net.named_parameters() if id(p) in in_loop}
    assert looped and set(grads[1.0]) - looped  # parameters inside and outside the loop
    for name, g in grads[1.0].items():
        ratio = 0.25 if name in looped else 1.0
        torch.testing.assert_close(grads[0.25][name], ratio * g, rtol=1e-12, atol=1e-15, msg=name)


def test_skip_value_reaches_the_receiving_layers_weight_gradient():
    """neurons' skip bug: the forward pass adds a bypassing skip into a local copy, and the backward
    pass uses the stored input without it, so the receiving layer's weight gradient is
    delta^T h (skip left out); loopnets: delta^T (h + skip), the gradient of what the layer computed."""
    torch.manual_seed(3)
    net = ln.Network(input_shape=(3,))
    net.dense(4, activation="tanh")  # 0
    first = net.dense(4, activation="tanh")  # 1
    net.dense(4, activation="tanh")  # 2
    out = net.dense(2)  # 3: receives the skip from layer 1's input
    net.connect(first, out)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    seen = {}

    def keep(index):
        def hook(module, inputs, output):
            seen[index] = inputs[0]
            output.retain_grad()
            seen[f"z{index}"] = output
        return hook

    for i, linear in enumerate(linears):
        linear.register_forward_hook(keep(i))
    x = torch.randn(6, 3)
    net(x).square().sum().backward()
    skip = seen[1]  # the input of layer 1
    h = torch.tanh(seen["z2"]).detach()  # layer 2's output
    torch.testing.assert_close(seen[3], h + skip)  # the receiving layer sees h + skip
    delta = seen["z3"].grad
    torch.testing.assert_close(linears[3].weight.grad, delta.T @ (h + skip.detach()), rtol=1e-12, atol=1e-14)
    assert not torch.allclose(linears[3].weight.grad, delta.T @ h)  # neurons' value
