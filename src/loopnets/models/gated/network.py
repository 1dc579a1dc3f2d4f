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
(the paper does not say; it plots both passes' losses, which `GatedNetwork.passes` provides).

Public: feedback_gated_relu, feedback_gain, FeedbackGatedReLU, GatedNetwork, GatedPass,
dense_autoencoder, conv_autoencoder, MODES.
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence, Union

import torch
from torch import Tensor, nn

from loopnets.builder import layers as specs
from loopnets.core.dropout import Dropout as SharedDropout
from loopnets.core.dropout import pinned_masks

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

MODES = ("gain", "threshold", "both", "constant")
DEFAULT_ALPHA = 1.0  # initial alpha of eq 8 (the paper gives none; see FeedbackGatedReLU)
DEFAULT_CONSTANT_GAIN = 10.0  # sec 4.3: "setting the gain of every ReLU in the affected layer to ... 10"

Feedback = Union[str, Sequence[tuple[int, int]]]


# ----------------------------------------------------------------------------- the activation


def _check_hyperparameters(beta_max, eta) -> None:
    """ValueError unless 0 < beta_max < 1 and eta > 0 (both finite real numbers)."""
    if isinstance(beta_max, bool) or not isinstance(beta_max, numbers.Real) or not 0.0 < beta_max < 1.0:
        raise ValueError(
            f"beta_max must be a number in the open interval (0, 1): the gain is 1 / (1 - beta) with beta "
            f"<= beta_max, so beta_max = 1 divides by zero, beta_max > 1 gives a negative gain and "
            f"beta_max <= 0 switches the gain off (Kemmerling eq 4-6); got beta_max={beta_max!r}"
        )
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0.0 < eta < math.inf:
        raise ValueError(
            f"eta must be a finite number > 0: it is the feedback mu_D at which the gain saturates "
            f"(Kemmerling eq 4; the paper uses 5); got eta={eta!r}"
        )


def _beta(mu_d: Tensor, beta_max: float, eta: float) -> Tensor:
    """beta(mu_D) = min(beta_max / eta * mu_D, beta_max) (eq 4), with slope 0 at the kink mu_D = eta."""
    # torch.where instead of torch.minimum: minimum splits the gradient 1/2 : 1/2 at a tie; here
    # mu_D >= eta takes the saturated (flat) branch, so d beta / d mu_D = 0 at mu_D = eta exactly.
    # A nan mu_D fails the comparison and stays nan.
    return torch.where(mu_d >= eta, beta_max, mu_d * (beta_max / eta))


def feedback_gain(mu_d: Tensor, beta_max: float, eta: float) -> Tensor:
    """The gain 1 / (1 - min(beta_max / eta * mu_D, beta_max)) of eqs 5-6 (the paper's sec 4.3 "gain").

    It is 1 at mu_D = 0, rises to the maximum 1 / (1 - beta_max) at mu_D = eta and stays there.
    Eq 4 has no lower clamp, so a negative mu_D gives a gain in (0, 1) that tends to 0 as mu_D -> -inf;
    we keep the formula as printed (the paper's Fig 5 text mentions "some smaller gain values").

    Args:
        mu_d: feedback, any shape.
        beta_max: in (0, 1).
        eta: > 0.
    """
    _check_hyperparameters(beta_max, eta)
    return 1.0 / (1.0 - _beta(mu_d, beta_max, eta))


def feedback_gated_relu(
    mu_s: Tensor, mu_d: Tensor, beta_max: float, eta: float, alpha: Tensor | float | None = None
) -> Tensor:
    """Feedback-gated ReLU, eq 6 (alpha None) or the feedback-controlled threshold form eq 8.

        eq 6: f = max(0, mu_S)              / (1 - min(beta_max / eta * mu_D, beta_max))
        eq 8: f = max(0, mu_S + alpha mu_D) / (1 - min(beta_max / eta * mu_D, beta_max))

    Exact formula, no approximation. The output never exceeds max(0, .) / (1 - beta_max).
    Sign convention of eq 8 (as printed, and as eq 1's "+ alpha mu_D ... - theta"): alpha * mu_D is
    added to mu_S, so with alpha > 0 feedback lowers the firing threshold; alpha is learned and may
    become negative. The gain is driven by mu_D itself, not by alpha * mu_D.

    Gradients (subgradients at the two kinks, each the flat one-sided derivative, a valid Clarke
    subgradient): at mu_S (+ alpha mu_D) = 0 the ReLU's slope is 0 (PyTorch's ReLU convention); at
    mu_D = eta, where min() switches, d beta / d mu_D = 0 (the saturated side). Elsewhere
    d f / d mu_D = max(0, .) * gain**2 * beta_max / eta for mu_D < eta and 0 above (plus
    alpha * gain for eq 8 where the numerator is positive).

    Args:
        mu_s: feedforward pre-activation W x + b, e.g. (batch, n) or (batch, C, H, W).
        mu_d: feedback, broadcastable to mu_s, e.g. (batch, n) or (batch, C, 1, 1) for one signal
            per filter. mu_D = 0 gives the plain ReLU.
        beta_max: the largest beta, in (0, 1); maximum gain 1 / (1 - beta_max). Paper: 0.95.
        eta: the feedback at which the gain saturates, > 0. Paper: 5.
        alpha: eq 8's threshold factor (a scalar tensor to learn it, or a number); None for eq 6.

    Raises:
        ValueError: beta_max outside (0, 1) or eta <= 0.
    """
    _check_hyperparameters(beta_max, eta)
    numerator = mu_s if alpha is None else mu_s + alpha * mu_d
    return torch.relu(numerator) / (1.0 - _beta(mu_d, beta_max, eta))


class FeedbackGatedReLU(nn.Module):
    """The feedback-gated ReLU as a module, in one of four modes (Kemmerling sec 3, 4.3, App 7.3).

    Modes (`mode`, one string):
      - "gain": eq 6, gain driven by mu_D, threshold unchanged.
      - "threshold": max(0, mu_S + alpha mu_D), gain 1 (App 7.3, Fig 17's "feedback-controlled
        threshold" model; eq 8 without its denominator).
      - "both": eq 8, feedback-controlled threshold and gain.
      - "constant": the sec 4.3 ablation, f = constant_gain * max(0, mu_S) in every pass, no
        feedback at all ("setting the gain of every ReLU in the affected layer to a constant value
        of 10"). Note the paper's own mismatch: its beta_max = 0.95 has maximum gain 20, not 10.

    alpha (threshold modes) is one learned scalar per module, i.e. per layer: the paper calls it "a
    parameter to be learned" and says no more (scalar vs per unit is not stated). Its initial value
    is not stated either; the default 1.0 lets feedback reach the threshold at full strength from the
    first step (eq 1 calls alpha an attenuation factor, so |alpha| <= 1 is its natural range). With
    alpha = 0 the threshold model would start as the plain network and its feedback weights would
    get no gradient until alpha moves.

    Args:
        beta_max: in (0, 1); maximum gain 1 / (1 - beta_max). Paper: 0.95.
        eta: > 0, the feedback at which the gain saturates. Paper: 5.
        mode: "gain" | "threshold" | "both" | "constant".
        alpha: initial alpha (threshold modes only; default 1.0).
        constant_gain: the fixed gain (mode "constant" only; default 10, as in sec 4.3), > 0.
    """

    def __init__(
        self,
        beta_max: float = 0.95,
        eta: float = 5.0,
        mode: str = "gain",
        *,
        alpha: float | None = None,
        constant_gain: float | None = None,
    ):
        super().__init__()
        _check_mode(mode)
        _check_hyperparameters(beta_max, eta)
        _check_mode_options(mode, alpha, constant_gain)
        self.beta_max, self.eta, self.mode = float(beta_max), float(eta), mode
        self.alpha = None
        if mode in ("threshold", "both"):
            self.alpha = nn.Parameter(torch.tensor(float(DEFAULT_ALPHA if alpha is None else alpha)))
        self.constant_gain = float(DEFAULT_CONSTANT_GAIN if constant_gain is None else constant_gain)

    @property
    def max_gain(self) -> float:
        """The largest gain this module can apply: 1 / (1 - beta_max), or the constant gain."""
        return self.constant_gain if self.mode == "constant" else 1.0 / (1.0 - self.beta_max)

    def forward(self, mu_s: Tensor, mu_d: Tensor | None = None) -> Tensor:
        """f(mu_S, mu_D); mu_d None marks a pass without feedback (pass 1): the plain ReLU.

        Args:
            mu_s: pre-activation, (batch, n) or (batch, C, *spatial).
            mu_d: feedback broadcastable to mu_s, or None. Must be None in mode "constant".
        """
        if self.mode == "constant":
            if mu_d is not None:
                raise ValueError("FeedbackGatedReLU(mode='constant') uses no feedback; call it with mu_d=None")
            return self.constant_gain * torch.relu(mu_s)
        if mu_d is None:
            return torch.relu(mu_s)
        if self.mode == "threshold":
            return torch.relu(mu_s + self.alpha * mu_d)
        return feedback_gated_relu(mu_s, mu_d, self.beta_max, self.eta, self.alpha)

    def extra_repr(self) -> str:
        if self.mode == "constant":
            return f"mode='constant', gain={self.constant_gain}"
        return f"beta_max={self.beta_max}, eta={self.eta}, mode={self.mode!r}"


def _check_mode(mode) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(repr(m) for m in MODES)}")


def _check_mode_options(mode: str, alpha, constant_gain) -> None:
    if alpha is not None:
        if mode not in ("threshold", "both"):
            raise ValueError(f"alpha is eq 8's threshold factor, used by mode 'threshold' or 'both'; mode is {mode!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha):
            raise ValueError(f"alpha (its initial value) must be a finite number; got {alpha!r}")
    if constant_gain is not None:
        if mode != "constant":
            raise ValueError(f"constant_gain is used by mode 'constant' only; mode is {mode!r}")
        if isinstance(constant_gain, bool) or not isinstance(constant_gain, numbers.Real) or not (
            0 < constant_gain < math.inf
        ):
            raise ValueError(f"constant_gain must be a finite number > 0 (sec 4.3 uses 10); got {constant_gain!r}")


# ----------------------------------------------------------------------------- gated networks


@dataclass
class GatedPass:
    """What one pass of a GatedNetwork computed (`GatedNetwork.passes`).

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
        _check_mode(mode)
        _check_hyperparameters(beta_max, eta)
        _check_mode_options(mode, alpha, constant_gain)
        self.input_shape = _check_input_shape(input_shape)
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

        self.feedback_pairs = self._resolve_feedback(feedback)
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

    def _resolve_feedback(self, feedback: Feedback) -> list[tuple[int, int]]:
        affine = [i for i, s in enumerate(self.layer_specs) if isinstance(s, (specs.Dense, specs.Conv, specs.Deconv))]
        relu = [i for i in affine if self.layer_specs[i].activation == "relu"]
        if isinstance(feedback, str):
            if feedback == "none":
                return []
            if feedback == "comprehensive":
                return [(s, t) for t in relu for s in affine if s > t]
            raise ValueError(
                f"feedback must be 'comprehensive', 'none' or a list of (source, target) layer pairs; got {feedback!r}"
            )
        pairs = []
        for pair in feedback:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(_is_int(v) for v in pair):
                raise ValueError(f"feedback: each entry must be a (source, target) pair of layer indices; got {pair!r}")
            s, t = int(pair[0]), int(pair[1])
            for name, value in (("source", s), ("target", t)):
                if not 0 <= value < len(self.layer_specs):
                    raise ValueError(
                        f"feedback ({s}, {t}): {name} {value} is out of range; the network has layers "
                        f"0..{len(self.layer_specs) - 1}"
                    )
            if s <= t:
                raise ValueError(
                    f"feedback ({s}, {t}): feedback comes from a higher layer (source > target, sec 3.1); "
                    f"did you mean ({t}, {s})?"
                )
            if t not in relu:
                spec = self.layer_specs[t]
                what = f"activation {spec.activation!r}" if t in affine else f"a {spec.kind} layer"
                raise ValueError(
                    f"feedback ({s}, {t}): layer {t} has {what}; only dense / conv / deconv layers with "
                    f"activation 'relu' can be gated (eq 6 replaces a ReLU)"
                )
            if (s, t) in pairs:
                raise ValueError(f"feedback ({s}, {t}) is listed twice")
            pairs.append((s, t))
        return sorted(pairs, key=lambda p: (p[1], p[0]))

    @property
    def timesteps(self) -> int:
        """Passes T >= 1 per forward call (a call can override it: `net(x, timesteps=4)`)."""
        return self._timesteps

    @timesteps.setter
    def timesteps(self, value: int) -> None:
        self._timesteps = _check_timesteps(value)

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
        return self._run(x, timesteps, record=False, logits=False)[-1].output

    def logits(self, x: Tensor, timesteps: int | None = None) -> Tensor:
        """The last pass's output before the final layer's activation (exact: the output layer is
        never gated, nothing is above it)."""
        return self._run(x, timesteps, record=False, logits=True)[-1].output

    def passes(self, x: Tensor, timesteps: int | None = None) -> list[GatedPass]:
        """Every pass's output, layer activations, mu_D and gains (for analysis; see GatedPass)."""
        return self._run(x, timesteps, record=True, logits=False)

    def _run(self, x: Tensor, timesteps: int | None, record: bool, logits: bool) -> list[GatedPass]:
        if timesteps is None:
            timesteps = self.timesteps if self.probe_unroll is None else self.probe_unroll
        T = _check_timesteps(timesteps)
        self._check_input(x)
        sigma = 0.0 if self.training else self.noise_std
        last = len(self.layers) - 1
        records: list[GatedPass] = []
        previous: list[Tensor] | None = None  # every layer's output in pass t - 1
        with pinned_masks([self]):  # one dropout mask per layer for all T passes
            for t in range(T):
                record_t = record or t == T - 1
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
                    elif gate is not None and not (logits and t == T - 1 and i == last):
                        h = gate(h)
                    if layer.dropout is not None:
                        h = layer.dropout(h)
                    outputs.append(h)
                previous = outputs
                if record_t:
                    records.append(GatedPass(h, outputs if record else [], mu_ds, gains))
        return records

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
    input_shape = _check_input_shape(input_shape)
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


# ----------------------------------------------------------------------------- checks


def _autoencoder_feedback(feedback: Feedback) -> Feedback:
    """The builders' "partial" is D1 -> E1, i.e. layer 2 -> layer 0 (Fig 1)."""
    if isinstance(feedback, str) and feedback == "partial":
        return [(2, 0)]
    if isinstance(feedback, str) and feedback not in ("comprehensive", "none"):
        raise ValueError(
            f"feedback must be 'partial', 'comprehensive', 'none' or (source, target) pairs; got {feedback!r}"
        )
    return feedback


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_timesteps(value) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(
            f"timesteps must be an integer >= 1 (pass 1 has no feedback, so feedback needs >= 2); got {value!r}"
        )
    return int(value)


def _check_input_shape(shape) -> tuple[int, ...]:
    shape = (shape,) if _is_int(shape) else tuple(shape)
    if not shape or not all(_is_int(s) and s >= 1 for s in shape):
        raise ValueError(f"input_shape must be a positive int or a tuple of positive ints, e.g. (784,); got {shape!r}")
    return tuple(int(s) for s in shape)
