"""The unfold + matmul path for small-channel 1-D convolutions (loopnets.builder.conv)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import loopnets as ln
from loopnets.builder import conv, layers
from loopnets.builder.conv import Conv1d, unfold_conv1d, use_unfold


def _graph_ops(y: torch.Tensor) -> set[str]:
    """Names of the autograd nodes behind y."""
    seen, todo = set(), [y.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or type(fn).__name__ in seen:
            continue
        seen.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return seen


LENGTH = 13
CASES = [
    case for case in itertools.product(
        [(1, 1), (1, 3), (2, 1), (3, 5)],  # (C_in, C_out)
        [1, 2, 9],  # kernel
        [1, 2, 3],  # stride
        [0, 1, 4],  # padding
        [1, 2],  # dilation
        [True, False],  # bias
    )
    if LENGTH + 2 * case[3] - case[4] * (case[1] - 1) - 1 >= 0  # the kernel fits
]


@pytest.mark.parametrize("channels,kernel,stride,padding,dilation,bias", CASES)
def test_unfold_conv1d_equals_conv1d_forward_and_gradients(channels, kernel, stride, padding, dilation, bias):
    (c_in, c_out), g = channels, torch.Generator().manual_seed(0)
    x = torch.randn(4, c_in, LENGTH, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(c_out, c_in, kernel, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    inputs = [x, w] + ([b] if bias else [])
    want = F.conv1d(x, w, b, stride, padding, dilation)
    got = unfold_conv1d(x, w, b, stride, padding, dilation)
    assert got.shape == want.shape and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    with torch.no_grad():  # the path without an autograd Function (COMBINE's passes)
        torch.testing.assert_close(unfold_conv1d(x, w, b, stride, padding, dilation), want, rtol=0, atol=1e-12)
    seed = torch.randn(want.shape, dtype=torch.float64, generator=g)
    for grad_got, grad_want in zip(torch.autograd.grad(got, inputs, seed), torch.autograd.grad(want, inputs, seed)):
        torch.testing.assert_close(grad_got, grad_want, rtol=0, atol=1e-12)


def test_unfold_conv1d_unbatched_input():
    x, w = torch.randn(1, 10, dtype=torch.float64), torch.randn(2, 1, 3, dtype=torch.float64)
    torch.testing.assert_close(unfold_conv1d(x, w, None, 1, 1, 1), F.conv1d(x, w, None, 1, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("c_in,c_out,stride,padding,dilation", [  # both input-gradient branches
    (1, 2, 2, 1, 2), (2, 3, 1, 0, 1), (3, 1, 3, 2, 1), (3, 2, 1, 2, 2), (1, 1, 1, 0, 1),
])
def test_gradcheck_unfold_conv1d(c_in, c_out, stride, padding, dilation):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, c_in, 9, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(c_out, c_in, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: unfold_conv1d(x, w, b, stride, padding, dilation), (x, w, b))


def test_double_backward_raises():
    x = torch.randn(2, 1, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 1, 3, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(unfold_conv1d(x, w, None, 1, 1, 1).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|not differentiable|does not require grad"):
        gx.sum().backward()


@pytest.mark.parametrize("c_in,c_out,kernel,device,expected", [
    (1, 1, 9, "cpu", True), (1, conv.MAX_UNFOLD_OUT_CHANNELS, 9, "cpu", True), (2, 8, 9, "cpu", True),
    (6, 1, 3, "cpu", True), (1, conv.MAX_UNFOLD_OUT_CHANNELS + 1, 3, "cpu", False), (2, 1, 10, "cpu", False),
    (8, 8, 3, "cpu", False), (1, 1, 3, "meta", False),
])
def test_fast_path_taken_exactly_when_the_rule_says(c_in, c_out, kernel, device, expected):
    m = Conv1d(c_in, c_out, kernel, padding=1).to(device)
    x = torch.randn(2, c_in, 12, device=device)
    assert use_unfold(m, x) is expected
    if device == "meta":
        return
    ops = _graph_ops(m(x))
    assert ("ConvolutionBackward0" not in ops) is expected
    assert ("_UnfoldConv1dBackward" in ops) is expected


def test_fast_path_off_for_groups_and_padding_modes():
    x = torch.randn(2, 1, 8)
    for m in (Conv1d(1, 1, 3, padding="same"), Conv1d(1, 1, 3, padding=1, padding_mode="circular")):
        assert not use_unfold(m, x)
        torch.testing.assert_close(m(x), nn.Conv1d.forward(m, x))


def test_layers_build_unfold_conv_with_conv1d_parameters():
    module, shape = layers.build(layers.Conv(2, 5, stride=2, padding=1, dilation=2), (1, 20))
    c = module[0]
    assert isinstance(c, nn.Conv1d) and type(c) is Conv1d
    assert {k: tuple(v.shape) for k, v in c.state_dict().items()} == {"weight": (2, 1, 5), "bias": (2,)}
    x = torch.randn(3, 1, 20, dtype=torch.float64)
    c = c.double()
    torch.testing.assert_close(c(x), F.conv1d(x, c.weight, c.bias, 2, 1, 2), rtol=0, atol=1e-12)
    assert c(x).shape[1:] == shape
    # a plain nn.Conv1d loads its state_dict and computes the same
    plain = nn.Conv1d(1, 2, 5, 2, 1, 2).double()
    plain.load_state_dict(c.state_dict())
    torch.testing.assert_close(plain(x), c(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["combine", "couple"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv_loops_take_the_fast_path_and_fit_many_matches_fit(method, dtype):
    """A conv loop (1 -> 3 -> 1 channels, like the FTIR CNN's): stacked, each seed's convolutions
    are one grouped convolution, and fit_many's seeds equal fit within rounding."""
    from loopnets.models.lavik.architectures import loop_network

    torch.set_default_dtype(dtype)
    try:
        def build(seed):
            torch.manual_seed(seed)
            specs = [layers.Conv(3, 3, padding=1, activation="relu"), layers.Conv(1, 3, padding=1, activation="relu"),
                     layers.Dense(6, activation="relu", bias=False)]
            return loop_network((1, 12), specs, (0, 1), 3, method=method, unroll=2)

        g = torch.Generator().manual_seed(0)
        X, y = torch.randn(20, 1, 12, generator=g), torch.randint(0, 3, (20,), generator=g)
        convs = [m for m in build(0).modules() if type(m) is Conv1d]
        assert len(convs) >= 2 and all(use_unfold(m, torch.zeros(1, m.in_channels, 12)) for m in convs)
        settings = dict(loss="cross_entropy", optimizer="adam", epochs=2, batch_size=5, progress=False)
        seeds = (0, 1, 2)
        alone = [build(s) for s in seeds]
        hist_alone = [ln.fit(m, (X, y), seed=s, **settings) for m, s in zip(alone, seeds)]
        many = [build(s) for s in seeds]
        hist_many = ln.fit_many(many, (X, y), seeds=seeds, **settings)
        assert hist_many.path == "batched"
        tol = 1e-10 if dtype == torch.float64 else 1e-5
        for a, b, ha, hb in zip(alone, many, hist_alone, hist_many):
            for (name, p), q in zip(a.named_parameters(), b.parameters()):
                assert (p - q).abs().max() <= tol * p.abs().max(), name
            torch.testing.assert_close(torch.tensor(ha["train_loss"]), torch.tensor(hb["train_loss"]), rtol=tol, atol=0)
    finally:
        torch.set_default_dtype(torch.float32)
