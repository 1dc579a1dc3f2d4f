"""The feedback-gated ReLU (Kemmerling, "Feedback-Gated Rectified Linear Units", eqs 4-8).

A feedback-gated ReLU raises the gain (slope) of a ReLU by a top-down signal mu_D (eq 6):

    f = max(0, mu_S) / (1 - min(beta_max / eta * mu_D, beta_max))                  (eq 6)
    f = max(0, mu_S + alpha * mu_D) / (1 - min(beta_max / eta * mu_D, beta_max))   (eq 8)

`loopnets.models.gated.network` builds networks whose layers use it.

Public: MODES, feedback_gated_relu, feedback_gain, FeedbackGatedReLU, and the argument checks the
network shares (check_hyperparameters, check_mode, check_mode_options).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

__all__ = [
    "MODES",
    "feedback_gated_relu",
    "feedback_gain",
    "FeedbackGatedReLU",
    "check_hyperparameters",
    "check_mode",
    "check_mode_options",
]

MODES = ("gain", "threshold", "both", "constant")
DEFAULT_ALPHA = 1.0  # initial alpha of eq 8 (the paper gives none; see FeedbackGatedReLU)
DEFAULT_CONSTANT_GAIN = 10.0  # sec 4.3: "setting the gain of every ReLU in the affected layer to ... 10"



def check_hyperparameters(beta_max, eta) -> None:
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
    check_hyperparameters(beta_max, eta)
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
    check_hyperparameters(beta_max, eta)
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
        check_mode(mode)
        check_hyperparameters(beta_max, eta)
        check_mode_options(mode, alpha, constant_gain)
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


def check_mode(mode) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(repr(m) for m in MODES)}")


def check_mode_options(mode: str, alpha, constant_gain) -> None:
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
