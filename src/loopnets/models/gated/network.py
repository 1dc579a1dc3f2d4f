"""Feedback-gated ReLU networks (Kemmerling, "Feedback-Gated Rectified Linear Units", draft).

A feedback-gated ReLU raises the gain (slope) of a ReLU by a top-down signal mu_D computed from
higher layers' activations of the previous pass (eq 6, after Larkum 2004's pyramidal-neuron model):

    f = max(0, mu_S) / (1 - min(beta_max / eta * mu_D, beta_max))          (eq 6)

mu_S is the usual pre-activation W x + b; the gain 1 / (1 - beta(mu_D)) rises with mu_D (beta
linearly, the gain hyperbolically) until mu_D = eta, where it saturates at the maximum gain
1 / (1 - beta_max) (20 for the paper's beta_max = 0.95). Appendix 7.3 adds a feedback-controlled
threshold (eq 8):

    f = max(0, mu_S + alpha * mu_D) / (1 - min(beta_max / eta * mu_D, beta_max))   (eq 8)

`GatedNetwork` runs a stack of layers T >= 1 times on the same input: pass 1 is the plain network
(mu_D = 0, f = ReLU), pass t >= 2 gates each feedback-receiving layer with the activations of
higher layers from pass t - 1, through one learned projection per (source, target) pair (sec 3.1).
Training backpropagates exactly through all passes (the weights are tied across passes, as in
`loopnets.Tied`); memory and time grow linearly with T. The loss sees the last pass's output
(the paper does not say; it plots both passes' losses, which `GatedNetwork.passes` provides;
`GatedNetwork.records` adds every pass's activations, mu_D and gains).

Public: feedback_gated_relu, feedback_gain, FeedbackGatedReLU, GatedNetwork, GatedPass,
dense_autoencoder, conv_autoencoder, MODES.
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generator, Iterator, Sequence

import torch
from torch import Tensor, nn

from loopnets.builder import layers as specs
from loopnets.core.dropout import Dropout as SharedDropout
from loopnets.core.dropout import pinned_masks
from loopnets.core.protocol import first, planned
from loopnets.models.gated.activation import (
    MODES,
    FeedbackGatedReLU,
    check_hyperparameters,
    check_mode,
    check_mode_options,
    feedback_gain,
    feedback_gated_relu,
)
from loopnets.models.gated.feedback import Feedback, check_input_shape, check_timesteps, resolve_feedback

__all__ = [
    "MODES",
    "feedback_gated_relu",
    "feedback_gain",
    "FeedbackGatedReLU",
    "GatedNetwork",
    "GatedPass",
    "dense_autoencoder",
    "conv_autoencoder",
]


# ----------------------------------------------------------------------------- gated networks


@dataclass
class GatedPass:
    """What one pass of a GatedNetwork computed (`GatedNetwork.records`).

    Attributes:
        output: the network output of this pass, (batch, *output_shape).
        activations: every layer's output h_i (after its activation and dropout), in layer order.
        mu_d: feedback mu_D of each layer that received feedback in this pass, by layer index:
            (batch, n) for a dense layer of n units, (batch, C) for a conv layer of C filters (one
            signal per filter). Empty in pass 1 and in mode "constant".
        gain: gain 1 / (1 - beta(mu_D)) of each gated layer with a gain in this pass, same shapes as
            mu_d; in mode "constant" the constant for every affected layer in every pass; absent
            for mode "threshold" (its gain is 1).
    """

    output: Tensor
    activations: list[Tensor] = field(default_factory=list)
    mu_d: dict[int, Tensor] = field(default_factory=dict)
    gain: dict[int, Tensor] = field(default_factory=dict)


class _GatedLayer(nn.Module):
    """One layer split where the gate acts: pre (reshape + affine or pool) -> activation -> dropout."""

    def __init__(self, pre: nn.Sequential, activation: nn.Module | None, dropout: SharedDropout | None):
        super().__init__()
        self.pre, self.activation, self.dropout = pre, activation, dropout


class GatedNetwork(nn.Module):
    """A stack of layers run for T passes, with feedback-gated ReLUs (Kemmerling sec 3.1).

    Pass 1 is the plain feedforward network (mu_D = 0: every gate is a ReLU). In pass t >= 2 a
    layer i receiving feedback from higher layers j computes

        mu_D_i = sum_j P_ij h_j^(t-1)       P_ij: (n_i, m_j), no bias

    from the sources' outputs of pass t - 1 (flattened; m_j = all units of layer j), and applies the
    gated ReLU of `mode`. A dense target has n_i = units (one signal per unit, sec 3.1: "n x m
    additional parameters"); a conv / deconv target has n_i = filters, one signal per filter broadcast
    over its spatial positions (sec 3.1, "filter-wise"). Summing over several sources is our choice
    (the paper's comprehensive feedback implies it without saying). Projections use nn.Linear's
    default initialisation (the paper states none).

    Dropout (`dropout=` on a layer spec, or a Dropout spec) drops the same units in every pass of one
    forward call ("dropping out the same units in all passes", sec 3.1); feedback reads the sources'
    outputs after dropout, so dropped units send no feedback.

    Noise (eq 7, sec 4.4): with `noise_std` = sigma > 0, every affine layer's pre-activation mu_S
    (W x + b, the output layer's included) gets fresh N(0, sigma^2) noise in every pass, in eval()
    mode only: "The networks are only evaluated with added noise, training is performed without
    noise", and "noise is added to the activations in both passes". mu_D gets no noise of its own.

    Mode "constant" (sec 4.3 ablation): the feedback targets' gates multiply by `constant_gain` in
    every pass and no projections exist; the output is the same for every T.

    Args:
        input_shape: per-sample input shape, e.g. (784,) or (3, 32, 32).
        layers: `loopnets.builder.layers` specs (Dense, Conv, Deconv, MaxPool, Dropout), numbered from 0.
            A layer receiving feedback must be a Dense / Conv / Deconv with activation "relu".
        feedback: (source, target) pairs with source > target (a higher layer into a lower one);
            "comprehensive": every (higher, lower) pair of affine (dense / conv / deconv) layers whose
            lower layer is a ReLU layer ("each layer receives feedback from every layer above it",
            sec 4.2; a sigmoid output layer is a source too); "none" (or []): no feedback.
        timesteps: T >= 1 passes (default 2, the paper's main setting).
        beta_max, eta: the gate's hyperparameters (defaults: the paper's 0.95 and 5).
        mode: "gain" | "threshold" | "both" | "constant"; see `FeedbackGatedReLU`.
        alpha: initial alpha for the threshold modes (default 1.0).
        constant_gain: the fixed gain of mode "constant" (default 10).
        noise_std: evaluation-time noise sigma >= 0 (settable later: `net.noise_std = 2.0`).
    """

    def __init__(
        self,
        input_shape: int | Sequence[int],
        layers: Sequence[specs.Spec],
        feedback: Feedback = "none",
        *,
        timesteps: int = 2,
        beta_max: float = 0.95,
        eta: float = 5.0,
        mode: str = "gain",
        alpha: float | None = None,
        constant_gain: float | None = None,
        noise_std: float = 0.0,
    ):
        super().__init__()
        check_mode(mode)
        check_hyperparameters(beta_max, eta)
        check_mode_options(mode, alpha, constant_gain)
        self.input_shape = check_input_shape(input_shape)
        self.layer_specs = list(layers)
        if not self.layer_specs:
            raise ValueError("GatedNetwork needs at least one layer spec, e.g. [loopnets.builder.layers.Dense(10, 'relu')]")
        self.timesteps = timesteps
        self.probe_unroll: int | None = None  # set by ln.unrolled / ln.severed(loops=True)
        self.mode, self.beta_max, self.eta = mode, float(beta_max), float(eta)
        self.noise_std = noise_std

        shape = self.input_shape
        self.shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []  # (input, output) per layer
        built = []
        for i, spec in enumerate(self.layer_specs):
            if not isinstance(spec, specs.SPEC_TYPES):
                raise ValueError(
                    f"layer {i}: expected a loopnets.builder.layers spec (Dense, Conv, Deconv, MaxPool, Dropout); "
                    f"got {type(spec).__name__}"
                )
            module, out = specs.build(spec, shape, where=f"layer {i}")
            self.shapes.append((shape, out))
            built.append(module)
            shape = out

        self.feedback_pairs = resolve_feedback(self.layer_specs, feedback)
        targets = {t for _, t in self.feedback_pairs}
        gated = []
        for i, (spec, module) in enumerate(zip(self.layer_specs, built)):
            parts = list(module)
            dropout = parts.pop() if parts and isinstance(parts[-1], SharedDropout) else None
            activation = parts.pop() if isinstance(spec, (specs.Dense, specs.Conv, specs.Deconv)) else None
            if i in targets:
                activation = FeedbackGatedReLU(beta_max, eta, mode, alpha=alpha, constant_gain=constant_gain)
            gated.append(_GatedLayer(nn.Sequential(*parts), activation, dropout))
        self.layers = nn.ModuleList(gated)

        # One projection per pair; "s_to_t" keys (ModuleDict keys cannot hold dots).
        self.projections = nn.ModuleDict()
        if mode != "constant":
            for s, t in self.feedback_pairs:
                m, n = math.prod(self.shapes[s][1]), self.shapes[t][1][0]  # n: units or filters
                self.projections[f"{s}_to_{t}"] = nn.Linear(m, n, bias=False)

    # -- configuration ----------------------------------------------------------------------

    @property
    def timesteps(self) -> int:
        """Passes T >= 1 per forward call (a call can override it: `net(x, timesteps=4)`)."""
        return self._timesteps

    @timesteps.setter
    def timesteps(self, value: int) -> None:
        self._timesteps = check_timesteps(value)

    @property
    def noise_std(self) -> float:
        """Evaluation-time noise sigma (eq 7); 0 switches it off. Used in eval() mode only."""
        return self._noise_std

    @noise_std.setter
    def noise_std(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
            raise ValueError(f"noise_std must be a finite number >= 0 (the noise sigma of eq 7); got {value!r}")
        self._noise_std = float(value)

    @contextmanager
    def noisy(self, sigma: float) -> Iterator[GatedNetwork]:
        """Within the block, evaluation adds N(0, sigma^2) to every pre-activation in every pass."""
        before = self.noise_std
        self.noise_std = sigma
        try:
            yield self
        finally:
            self.noise_std = before

    @property
    def max_gain(self) -> float:
        """The largest gain a gated layer can apply: 1 / (1 - beta_max), or the constant gain."""
        gates = [layer.activation for layer in self.layers if isinstance(layer.activation, FeedbackGatedReLU)]
        return gates[0].max_gain if gates else 1.0

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[-1][1]

    @property
    def output_activation(self) -> str:
        """The last layer's activation name; `fit` uses `logits` when a loss has a stable form for it."""
        spec = self.layer_specs[-1]
        return spec.activation if isinstance(spec, (specs.Dense, specs.Conv, specs.Deconv)) else "linear"

    # -- running ----------------------------------------------------------------------------

    def forward(self, x: Tensor, timesteps: int | None = None) -> Tensor:
        """(batch, *input_shape) -> the last pass's output, (batch, *output_shape)."""
        return self._last(x, timesteps, logits=False)

    def logits(self, x: Tensor, timesteps: int | None = None) -> Tensor:
        """The last pass's output before the final layer's activation (exact: the output layer is
        never gated, nothing is above it)."""
        return self._last(x, timesteps, logits=True)

    def passes(self, x: Tensor, timesteps: int | None = None) -> list[Tensor]:
        """The network output of every pass 1..T, each (batch, *output_shape) (the loop protocol)."""
        return [p.output for p in self.records(x, timesteps, details=False)]

    def records(self, x: Tensor, timesteps: int | None = None, details: bool = True) -> list[GatedPass]:
        """Every pass's output, layer activations, mu_D and gains (for analysis; see GatedPass).

        details=False records the outputs only (activations, mu_d and gain left empty).
        """
        T = check_timesteps(planned(self, timesteps))
        return first(self._run(x, details, logits_at=None), T)

    @property
    def planned_passes(self) -> int:
        """Passes a call without `timesteps` runs: probe_unroll (ln.unrolled / ln.severed), else timesteps."""
        return self.timesteps if self.probe_unroll is None else self.probe_unroll

    def iterate(self, x: Tensor) -> Iterator[Tensor]:
        """The network output of pass 1, 2, ... one at a time, without end (the loop protocol)."""
        return (p.output for p in self._run(x, record=False, logits_at=None))

    def output_after(self, outputs: Sequence[Tensor]) -> Tensor:
        """The network's output after len(outputs) passes: the last pass's output."""
        if not outputs:
            raise ValueError("output_after needs the outputs of at least one pass; got none")
        return outputs[-1]

    def _last(self, x: Tensor, timesteps: int | None, logits: bool) -> Tensor:
        T = check_timesteps(planned(self, timesteps))
        return first(self._run(x, record=False, logits_at=T - 1 if logits else None), T)[-1].output

    def _run(self, x: Tensor, record: bool, logits_at: int | None) -> Generator[GatedPass, None, None]:
        """Pass 1, 2, ... one GatedPass each, without end; pass `logits_at` (0-based) leaves the
        output layer's activation out (`logits`)."""
        self._check_input(x)
        sigma = 0.0 if self.training else self.noise_std
        last = len(self.layers) - 1
        previous: list[Tensor] | None = None  # every layer's output in pass t - 1
        with pinned_masks([self]):  # one dropout mask per layer for all passes of the call
            t = 0
            while True:
                h, outputs, mu_ds, gains = x, [], {}, {}
                for i, layer in enumerate(self.layers):
                    h = layer.pre(h)  # mu_S for affine layers: (batch, n) or (batch, C, *spatial)
                    gate = layer.activation
                    if gate is not None and sigma > 0:
                        h = h + sigma * torch.randn_like(h)  # eq 7
                    if isinstance(gate, FeedbackGatedReLU):
                        mu_d = None
                        if previous is not None and self.mode != "constant":
                            mu_d = self._feedback(i, previous)  # (batch, n_signals)
                            mu_ds[i] = mu_d
                        if record and mu_d is not None and self.mode != "threshold":
                            gains[i] = feedback_gain(mu_d, self.beta_max, self.eta)
                        elif record and self.mode == "constant":
                            gains[i] = torch.full(h.shape[:2], gate.constant_gain, dtype=h.dtype, device=h.device)
                        h = gate(h, None if mu_d is None else mu_d.reshape(*mu_d.shape, *[1] * (h.dim() - 2)))
                    elif gate is not None and not (t == logits_at and i == last):
                        h = gate(h)
                    if layer.dropout is not None:
                        h = layer.dropout(h)
                    outputs.append(h)
                previous = outputs
                yield GatedPass(h, outputs if record else [], mu_ds if record else {}, gains)
                t += 1

    def _feedback(self, target: int, previous: list[Tensor]) -> Tensor:
        """mu_D of layer `target`: the sum of its projections of the sources' previous outputs."""
        total = None
        for s, t in self.feedback_pairs:
            if t == target:
                term = self.projections[f"{s}_to_{t}"](previous[s].flatten(1))  # (batch, n_signals)
                total = term if total is None else total + term
        return total

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"GatedNetwork expects a torch.Tensor; got {type(x).__name__}")
        if x.dim() != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            expected = ", ".join(["batch", *map(str, self.input_shape)])
            raise ValueError(f"GatedNetwork expects input of shape ({expected}); got {tuple(x.shape)}")

    def extra_repr(self) -> str:
        pairs = ", ".join(f"{s}->{t}" for s, t in self.feedback_pairs) or "none"
        noise = f", noise_std={self.noise_std}" if self.noise_std else ""
        head = f"input_shape={self.input_shape}, timesteps={self.timesteps}, mode={self.mode!r}"
        return f"{head}, feedback=[{pairs}]{noise}"


# ----------------------------------------------------------------------------- builders


def dense_autoencoder(
    feedback: Feedback = "partial",
    *,
    inputs: int = 784,
    hidden: int = 392,
    bottleneck: int = 10,
    timesteps: int = 2,
    beta_max: float = 0.95,
    eta: float = 5.0,
    mode: str = "gain",
    alpha: float | None = None,
    constant_gain: float | None = None,
    noise_std: float = 0.0,
) -> GatedNetwork:
    """The MNIST autoencoder of sec 4: inputs-hidden-bottleneck-hidden-inputs, ReLU, sigmoid output.

    Layers 0..3 are E1 (392), E2 (10; 196 in the paper's first experiment, then 10 "in all
    subsequent experiments"), D1 (392), D2 (784, sigmoid).

    Args:
        feedback: "partial": the single connection D1 -> E1 (layer 2 -> 0, Fig 1; 392 x 392 weights);
            "comprehensive": every layer from every layer above (sec 4.2): E1 <- E2, D1, D2;
            E2 <- D1, D2; D1 <- D2 (the sigmoid output D2 sends feedback, receives none);
            "none": the standard autoencoder; or explicit (source, target) pairs.
        inputs, hidden, bottleneck: layer widths (784, 392, 10).
        timesteps, beta_max, eta, mode, alpha, constant_gain, noise_std: see GatedNetwork.
    """
    feedback = _autoencoder_feedback(feedback)
    layers = [
        specs.Dense(hidden, "relu"),
        specs.Dense(bottleneck, "relu"),
        specs.Dense(hidden, "relu"),
        specs.Dense(inputs, "sigmoid"),
    ]
    return GatedNetwork(
        (inputs,), layers, feedback, timesteps=timesteps, beta_max=beta_max, eta=eta, mode=mode,
        alpha=alpha, constant_gain=constant_gain, noise_std=noise_std,
    )


def conv_autoencoder(
    feedback: Feedback = "partial",
    *,
    input_shape: Sequence[int] = (3, 32, 32),
    filters: int = 16,
    kernel: int = 5,
    stride: int = 2,
    timesteps: int = 2,
    beta_max: float = 0.95,
    eta: float = 5.0,
    mode: str = "gain",
    alpha: float | None = None,
    constant_gain: float | None = None,
    noise_std: float = 0.0,
) -> GatedNetwork:
    """The CIFAR-10 convolutional autoencoder of sec 5.1: two conv and two transposed-conv layers.

    "convolutional/transposed convolutional layers with 16 5 x 5 filters". The paper states no
    stride, padding, output channels or output activation; our choices: padding kernel // 2,
    stride 2 (so 32 -> 16 -> 8 -> 16 -> 32 and the code, 16 x 8 x 8 = 1024 values, is smaller than
    the 3072-value input; stride=1 keeps the size, an overcomplete code), output_padding stride - 1
    on the transposed convs, the last layer with as many filters as the input has channels and a
    sigmoid (pixels in [0, 1], as in the MNIST model). Feedback is filter-wise (one signal per filter).

    Layers: E1 conv (filters), E2 conv (filters), D1 deconv (filters), D2 deconv (input channels,
    sigmoid).

    Args:
        feedback: "partial" (D1 -> E1, the MNIST model's edge; the paper does not say which edge
            its CIFAR model used), "comprehensive", "none" or (source, target) pairs.
        input_shape: (channels, height, width); (3, 32, 32) for CIFAR-10, (1, 28, 28) for MNIST.
        filters, kernel, stride: of every layer (16, 5, 2).
        timesteps, beta_max, eta, mode, alpha, constant_gain, noise_std: see GatedNetwork.
    """
    feedback = _autoencoder_feedback(feedback)
    input_shape = check_input_shape(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"conv_autoencoder needs input_shape (channels, height, width); got {input_shape}")
    padding, output_padding = kernel // 2, stride - 1
    layers = [
        specs.Conv(filters, kernel, stride=stride, padding=padding, activation="relu"),
        specs.Conv(filters, kernel, stride=stride, padding=padding, activation="relu"),
        specs.Deconv(filters, kernel, stride=stride, padding=padding, output_padding=output_padding, activation="relu"),
        specs.Deconv(input_shape[0], kernel, stride=stride, padding=padding, output_padding=output_padding,
                     activation="sigmoid"),
    ]
    net = GatedNetwork(
        input_shape, layers, feedback, timesteps=timesteps, beta_max=beta_max, eta=eta, mode=mode,
        alpha=alpha, constant_gain=constant_gain, noise_std=noise_std,
    )
    if net.output_shape != input_shape:
        side = stride**2
        raise ValueError(
            f"conv_autoencoder: input {input_shape} comes back as {net.output_shape} with stride {stride}; "
            f"use height and width divisible by {side} (e.g. 28 or 32 with stride 2), or stride=1"
        )
    return net


def _autoencoder_feedback(feedback: Feedback) -> Feedback:
    """The builders' "partial" is D1 -> E1, i.e. layer 2 -> layer 0 (Fig 1)."""
    if isinstance(feedback, str) and feedback == "partial":
        return [(2, 0)]
    if isinstance(feedback, str) and feedback not in ("comprehensive", "none"):
        raise ValueError(
            f"feedback must be 'partial', 'comprehensive', 'none' or (source, target) pairs; got {feedback!r}"
        )
    return feedback
