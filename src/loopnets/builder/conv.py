"""Small-channel 1-D convolutions on the CPU, computed as unfold + one matrix product.

PyTorch's CPU conv1d is slow for tiny channel counts: for the thesis's FTIR CNN (1 channel,
kernel 9, length 571, batch 32) its forward + backward takes 2-3 ms, most of an epoch (issue 7).
The same convolution as im2col + matmul,

    cols = the input's K shifted (and strided, dilated) copies    # (C_in * K, B * L_out)
    out  = W.reshape(C_out, C_in * K) @ cols                       # (C_out, B * L_out)

takes 0.3-0.6 ms (`_UnfoldConv1d`, with a hand-written backward of two such products and, for
the input gradient, one more im2col copy or K strided adds).
Exact up to rounding (the sum over C_in * K runs in another order): the forward and all
gradients agree with F.conv1d to ~1e-15 in float64 (tests/test_layers_conv.py).

When (`use_unfold`): measured with torch 2.13, 1 thread, a 2-core AMD EPYC under load,
forward + backward at batch 32, length 571 (`python benchmarks/conv_paths.py micro`), the
unfold path wins 2.1-6x at C_in = 1, C_out <= 8; 1.7-3.5x at C_in = 2, C_out <= 8 (K 3, 9);
2.3-2.7x at C_in = 4, K = 3; it is about even at C_in * K = 36 (C_in 4, K 9: 1.0-1.4x) and
loses from C_in * K = 72 (C_in 8, K 9: 0.6-0.7x; 32 channels: 0.4-0.5x). Hence: CPU,
C_in * K <= 18, C_out <= 8, groups 1, zero padding given as numbers. 2-D convolutions were
measured too (F.unfold + matmul, autograd through the views) and gain nothing reliable (0.7-2.6x
at one channel, depending on kernel and image size), so they keep nn.Conv2d.

`Conv1d` is an nn.Conv1d (same parameters, state_dict and isinstance), so COMBINE (core/modes/combine.py)
and checkpoints treat it as one; fit_many (batched.py) stacks it as one grouped convolution over
the models' channels (F.conv1d: groups > 1 leave the unfold path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

MAX_UNFOLD_TAPS = 18  # C_in * K; see the module docstring (36: about even, 72: 0.6x)
MAX_UNFOLD_OUT_CHANNELS = 8  # C_out; 8 wins 1.7-2.3x, 16 only 1.2-1.4x


def use_unfold(conv: nn.Conv1d, x: Tensor) -> bool:
    """Whether `conv(x)` takes the unfold + matmul path (the rule in the module docstring)."""
    return (
        x.device.type == "cpu"
        and conv.in_channels * conv.kernel_size[0] <= MAX_UNFOLD_TAPS
        and conv.out_channels <= MAX_UNFOLD_OUT_CHANNELS
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def unfold_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int, dilation: int) -> Tensor:
    """F.conv1d(x, weight, bias, stride, padding, dilation) as unfold + one (add)mm; differentiable.

    Args:
        x: (B, C_in, L) or (C_in, L) input.
        weight: (C_out, C_in, K); bias: (C_out,) or None.
    Returns (B, C_out, L_out), contiguous (or (C_out, L_out) for an unbatched input).
    """
    if x.dim() == 2:
        return unfold_conv1d(x.unsqueeze(0), weight, bias, stride, padding, dilation).squeeze(0)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _UnfoldConv1d.apply(x, weight, bias, stride, padding, dilation)
    return _forward(x, weight, bias, stride, padding, dilation)[0]  # no graph (COMBINE's passes): no Function


def _forward(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int, dilation: int):
    """(out (B, C_out, L_out), cols (C_in * K, B * L_out)); see `_UnfoldConv1d`."""
    B, C_in, L = x.shape
    C_out, _, K = weight.shape
    L_out = (L + 2 * padding - dilation * (K - 1) - 1) // stride + 1
    xp = F.pad(x, (padding, padding)) if padding else x.contiguous()  # (B, C_in, Lp = L + 2 * padding)
    Lp = xp.shape[2]
    # taps[c, k, b, l] = xp[b, c, k * dilation + l * stride]: one strided view, one copy
    taps = xp.as_strided((C_in, K, B, L_out), (Lp, dilation, C_in * Lp, stride), xp.storage_offset())
    cols = taps.contiguous().view(C_in * K, B * L_out)
    w = weight.reshape(C_out, C_in * K)
    out = w.mm(cols) if bias is None else torch.addmm(bias.unsqueeze(1), w, cols)  # (C_out, B * L_out)
    return out.view(C_out, B, L_out).transpose(0, 1).contiguous(), cols  # (B, C_out, L_out); free for C_out 1


class _UnfoldConv1d(torch.autograd.Function):
    """conv1d as out = W (C_out, C_in * K) @ cols (C_in * K, B * L_out), with its backward.

    Row (c, k) of cols is channel c of the input shifted by k * dilation and strided by `stride`,
    so building it copies whole signal rows, where unfold + permute + reshape (B * L_out, C_in * K)
    would gather rows of K elements; and the backward's input gradient (K strided adds, or a
    second im2col product) beats autograd's unfold_backward (measured once, forward + backward:
    1.3-2x faster than autograd through unfold + permute + reshape + mm).
    Saves cols (C_in * K * B * L_out elements) for the weight gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int, dilation: int):
        out, cols = _forward(x, weight, bias, stride, padding, dilation)
        ctx.save_for_backward(weight, cols)
        ctx.shape = (x.shape[0], x.shape[1], x.shape[2], out.shape[2], stride, padding, dilation)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @once_differentiable  # a double backward (create_graph=True) raises instead of going wrong
    def backward(ctx, grad: Tensor):
        weight, cols = ctx.saved_tensors
        B, C_in, L, L_out, stride, padding, dilation = ctx.shape
        C_out, _, K = weight.shape
        # a fresh (64-byte aligned) copy: fit_many hands each seed a slice of a larger gradient,
        # and MKL may round differently for operands that are not aligned (see batched.py)
        g = grad.transpose(0, 1).clone(memory_format=torch.contiguous_format).view(C_out, B * L_out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0] and stride == 1 and C_out <= C_in:
            # the input gradient is itself a convolution, of the gradient padded by the kernel's
            # span with the flipped kernel: one copy (C_out * K rows) + one product, fewer calls
            # than the K strided adds below (C_in * K rows), which win for C_out > C_in
            # (measured at C_in 1: 1x1 kernel 9: 322 against 438 us; 1x4: 782 against 529 us)
            Lp, span = L + 2 * padding, dilation * (K - 1)
            gp = F.pad(g.view(C_out, B, L_out), (span, span))  # (C_out, B, Lp + span)
            taps = gp.as_strided((C_out, K, B, Lp), (B * (L_out + 2 * span), dilation, L_out + 2 * span, 1))
            w_flip = weight.flip(2).transpose(0, 1).reshape(C_in, C_out * K)
            gxp = w_flip.mm(taps.reshape(C_out * K, B * Lp)).view(C_in, B, Lp).transpose(0, 1)  # (B, C_in, Lp)
            grad_x = gxp[:, :, padding: padding + L] if padding else gxp
        elif ctx.needs_input_grad[0]:
            gcols = weight.reshape(C_out, C_in * K).t().mm(g).view(C_in, K, B, L_out)
            gxp = g.new_zeros(B, C_in, L + 2 * padding)
            for k in range(K):
                gxp[:, :, k * dilation: k * dilation + (L_out - 1) * stride + 1: stride].add_(gcols[:, k].transpose(0, 1))
            grad_x = gxp[:, :, padding: padding + L] if padding else gxp
        if ctx.needs_input_grad[1]:
            grad_w = g.mm(cols.t()).view_as(weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(1)
        return grad_x, grad_w, grad_b, None, None, None


class Conv1d(nn.Conv1d):
    """nn.Conv1d that computes small-channel CPU convolutions as unfold + matmul (see `use_unfold`).

    Same constructor, parameters (weight (C_out, C_in, K), bias (C_out,)) and state_dict as
    nn.Conv1d; any other convolution goes to F.conv1d unchanged.
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if use_unfold(self, input):
            return unfold_conv1d(input, weight, bias, self.stride[0], self.padding[0], self.dilation[0])
        return super()._conv_forward(input, weight, bias)
