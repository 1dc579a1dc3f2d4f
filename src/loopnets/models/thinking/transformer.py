"""A looped transformer: prelude, one core block looped k times, coda (a recurrent-depth transformer).

Geiping et al. 2025 ("Scaling up test-time compute with latent reasoning: a recurrent depth
approach") loop a core block between a prelude and a coda, re-inject the prelude's output into
every pass, train with a random pass count and truncated backprop, and run more passes at test.
Here every part is a `torch.nn.TransformerEncoderLayer` (pre-norm), the loop is an `ln.Loop`:

    tokens: (B, in_channels, L) -> (B, L, d_model), a linear map of each position's channels
    prelude: `prelude` encoder layers
    core: one encoder layer, looped `unroll` times; recall by addition, h_t = core(h_{t-1} + e)
    coda: `coda` encoder layers, then a linear map to `classes` scores: (B, classes, L)

Train it with `ln.fit(..., random_passes=(lo, hi))` and `backprop=ln.Truncated(grad_passes)`
(Geiping et al.'s scheme), evaluate with more passes under `ln.unrolled(model, k)`.

There is no positional encoding by default (causal attention carries the order, "NoPE"), so the
model runs on strings of any length; `causal=False` gives bidirectional attention (then order is
invisible: use it only for order-free tasks). `window=w` makes every layer's attention local and
causal, a sliding window (position i sees i-w+1..i) with a learned bias per offset (T5's relative
position bias, cut to the window): each pass then moves information at most w-1 positions, like a
convolution, and what a layer computes no longer depends on the string's length, the condition
for a recurrence learned on short strings to run on long ones. Dropout inside the loop uses `ln.Dropout`, one mask
for all passes of a forward call (an `nn.Dropout` would draw a new one every pass).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from loopnets.core.dropout import Dropout
from loopnets.core.loop import Loop
from loopnets.core.modes import Backprop
from loopnets.models.thinking.recurrent import check_positive


def encoder_layer(d_model: int, nhead: int, ff: int, dropout: float) -> nn.TransformerEncoderLayer:
    """A pre-norm `nn.TransformerEncoderLayer` (batch first) whose dropouts are `ln.Dropout`s."""
    layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=ff, dropout=dropout, batch_first=True,
                                       norm_first=True)
    for name in ("dropout", "dropout1", "dropout2"):  # its forward calls these attributes
        setattr(layer, name, Dropout(dropout) if dropout > 0 else nn.Identity())
    return layer


def pre_norm_layer(layer: nn.TransformerEncoderLayer, h: Tensor, mask: Tensor) -> Tensor:
    """`layer`'s pre-norm forward with an additive float attention mask, from its own submodules.

    Not `layer(h, src_mask=mask)`: in eval mode without grad, torch's fused encoder path (torch
    2.13) reads a float mask as a boolean one (every nonzero entry masked), so a learned bias on the
    window's offsets turned into masked keys and NaN rows; the same weights, this way, give the
    training path's numbers in every mode (tests/test_thinking_models.py)."""
    a = layer.norm1(h)
    h = h + layer.dropout1(layer.self_attn(a, a, a, attn_mask=mask, need_weights=False)[0])
    b = layer.norm2(h)
    return h + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(b)))))


class Encoder(nn.Module):
    """Encoder layers on (B, L, d_model), with a causal mask when `causal`, or a sliding causal
    window of `window` positions with a learned bias per offset (one per layer, shared by the heads)."""

    def __init__(self, layers: list[nn.TransformerEncoderLayer], causal: bool, window: int | None = None):
        super().__init__()
        self.layers, self.causal, self.window = nn.ModuleList(layers), causal, window
        self.offset_bias = nn.Parameter(torch.zeros(len(layers), window)) if window else None

    def band(self, length: int, i: int, like: Tensor) -> Tensor:
        """(L, L) additive mask of layer i: bias[i, q - k] for 0 <= q - k < window, -inf elsewhere."""
        pos = torch.arange(length, device=like.device)
        offset = pos[:, None] - pos[None, :]  # query - key
        inside = (offset >= 0) & (offset < self.window)
        bias = self.offset_bias[i].to(like.dtype)[offset.clamp(0, self.window - 1)]
        return bias.masked_fill(~inside, float("-inf"))

    def forward(self, h: Tensor) -> Tensor:
        if self.window:
            for i, layer in enumerate(self.layers):
                h = pre_norm_layer(layer, h, self.band(h.shape[1], i, h))
            return h
        mask = nn.Transformer.generate_square_subsequent_mask(h.shape[1], device=h.device, dtype=h.dtype) \
            if self.causal else None
        for layer in self.layers:
            h = layer(h, src_mask=mask, is_causal=self.causal)
        return h


class ToTokens(nn.Module):
    """(B, C, L) channels-first positions -> (B, L, d_model) tokens by one linear map."""

    def __init__(self, in_channels: int, d_model: int):
        super().__init__()
        self.linear = nn.Linear(in_channels, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.transpose(1, 2))


class ToScores(nn.Module):
    """(B, L, d_model) -> (B, classes, L): class scores per position, the layout cross_entropy takes."""

    def __init__(self, d_model: int, classes: int):
        super().__init__()
        self.norm, self.linear = nn.LayerNorm(d_model), nn.Linear(d_model, classes)

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(self.norm(h)).transpose(1, 2)


def looped_transformer(in_channels: int, classes: int = 2, d_model: int = 32, nhead: int = 4, ff: int = 64,
                       prelude: int = 1, coda: int = 1, unroll: int = 4, backprop: Backprop | None = None,
                       causal: bool = True, dropout: float = 0.0, window: int | None = None) -> nn.Sequential:
    """Prelude, a core `TransformerEncoderLayer` looped `unroll` times (recall by addition), coda.

    Args:
        in_channels: channels per input position ((B, in_channels, L) inputs, e.g. prefix sums' 1).
        classes: scores per position (outputs (B, classes, L); targets (B, L)).
        d_model, nhead, ff: the encoder layers' width, heads and feedforward width.
        prelude, coda: encoder layers before / after the loop (>= 0 each).
        unroll: passes of the core in training and by default at inference.
        backprop: the loop's mode, e.g. `ln.Truncated(grad_passes)`; default `ln.Tied()`.
        causal: causal self-attention (position i sees 1..i).
        dropout: inside every encoder layer, one mask per forward call inside the loop.
        window: None (attention over all earlier positions) or w >= 2: every layer attends to its
            own and the w - 1 previous positions, with a learned bias per offset (causal only).

    Returns:
        nn.Sequential(tokens, prelude, Loop(core), coda, scores): (B, in, L) -> (B, classes, L).
    """
    for name, value in (("in_channels", in_channels), ("classes", classes), ("d_model", d_model),
                        ("nhead", nhead), ("ff", ff)):
        check_positive(name, value)
    for name, value in (("prelude", prelude), ("coda", coda)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0 (encoder layers); got {value!r}")
    if d_model % nhead:
        raise ValueError(f"d_model={d_model} must be divisible by nhead={nhead}; "
                         f"use d_model={nhead * max(1, round(d_model / nhead))}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1); got {dropout!r}")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"window must be None or an integer >= 2 (a position attends to itself and the window - 1 "
                             f"before it); got {window!r}")
        if not causal:
            raise ValueError("window is a causal sliding window: use it with causal=True")
    def make(n: int) -> Encoder:
        return Encoder([encoder_layer(d_model, nhead, ff, dropout) for _ in range(n)], causal, window)

    core = Loop(make(1), unroll=unroll, backprop=backprop, merge="add")
    parts = [ToTokens(in_channels, d_model), *([make(prelude)] if prelude else []), core,
             *([make(coda)] if coda else []), ToScores(d_model, classes)]
    return nn.Sequential(*parts)


__all__ = ["Encoder", "ToScores", "ToTokens", "encoder_layer", "looped_transformer", "pre_norm_layer"]
