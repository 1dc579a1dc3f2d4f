"""The gated_autoencoder family's config schema: `[model.gated]`, its variants' keys, their expansion.

Kemmerling's feedback-gated ReLU autoencoder (`loopnets.models.gated.network`), trained to
reconstruct the data set's x; settings in `[model.gated]`, variants choose feedback and timesteps
(and may override mode, beta_max, eta, constant_gain), and `[train] noise_sigmas` adds the
evaluation-time noise sweep (eq 7, sec 4.4).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal, Union

from loopnets.experiments.schema import ConfigError, at_least, choose

FAMILY = "gated_autoencoder"
GATED_ARCHITECTURES = ("dense", "conv")
GATED_FEEDBACK = ("none", "partial", "comprehensive")
GATED_MODES = ("gain", "threshold", "both", "constant")  # loopnets.models.gated.network.MODES
# train.analyses (loopnets.models.gated.experiments): mu_D / gain histograms (Fig 5), reduced-contrast
# reconstructions (Figs 20, 21), t-SNE of the bottleneck per pass (Figs 18, 19), image strips (Figs 8, 21)
GATED_ANALYSES = ("histograms", "contrast", "tsne", "strips")
GATED_VARIANT_KEYS = ("feedback", "timesteps", "mode", "beta_max", "eta", "constant_gain")


@dataclass(frozen=True)
class GatedConfig:
    """`[model.gated]`: Kemmerling's feedback-gated autoencoder (`loopnets.models.gated.network`), family "gated_autoencoder".

    Dense: inputs-hidden-bottleneck-hidden-inputs (sec 4: 784-392-10-392-784, ReLU, sigmoid output);
    conv: two conv and two transposed-conv layers of `filters` kernel x kernel filters, stride
    `stride` (sec 5.1: 16 5x5 filters). `feedback`, `timesteps`, `mode`, `beta_max`, `eta` and
    `constant_gain` are the defaults each variant may override. `alpha` (initial eq 8 threshold
    factor) is used by modes threshold / both, `constant_gain` by mode constant (sec 4.3: 10).
    """

    architecture: Literal[GATED_ARCHITECTURES] = "dense"  # dense (needs data layout "dense") | conv (layout "image")
    hidden: int = 392
    bottleneck: int = 10  # sec 4: 196 in the first experiment, 10 "in all subsequent experiments"
    filters: int = 16
    kernel: int = 5
    stride: int = 2
    feedback: str = "partial"  # none | partial (D1 -> E1, Fig 1) | comprehensive (sec 4.2)
    timesteps: int = 2
    mode: str = "gain"  # gain | threshold | both | constant
    beta_max: float = 0.95  # the paper's grid-search choice (App 7.1)
    eta: float = 5.0
    alpha: float = 1.0
    constant_gain: float = 10.0


@dataclass(frozen=True)
class GatedVariantConfig:
    """One `[[variants]]` table of the gated family; unset keys take `[model.gated]`'s values, lists expand."""

    feedback: Union[str, list[str], None] = None  # none | partial | comprehensive
    timesteps: Union[int, list[int], None] = None  # passes T >= 1
    mode: Union[str, list[str], None] = None  # gain | threshold | both | constant
    beta_max: Union[float, list[float], None] = None
    eta: Union[float, list[float], None] = None
    constant_gain: Union[float, None] = None  # mode constant
    name: Union[str, None] = None  # default: <feedback>-t<timesteps>[-<overrides>]


@dataclass(frozen=True)
class GatedTrain:
    """`[train]` keys of the gated family."""

    # After training, the validation loss with N(0, sigma^2) noise on every pre-activation in every
    # pass (Kemmerling eq 7, sec 4.4), per sigma; none: no noise sweep.
    noise_sigmas: Union[list[float], None] = None


@dataclass(frozen=True)
class GatedVariant:
    """One expanded variant of the gated_autoencoder family, every setting resolved."""

    name: str
    feedback: str
    timesteps: int
    mode: str
    beta_max: float
    eta: float
    alpha: Union[float, None]  # threshold / both only
    constant_gain: Union[float, None]  # constant only
    overrides: tuple = ()  # the variant keys set in [[variants]] (for the run's own config.toml)

    method = "gated"  # summary.json's method (class attribute, not a field)
    has_skip = False
    unroll = property(lambda self: self.timesteps)

    @property
    def has_loop(self) -> bool:
        return self.feedback != "none"  # feedback off = one timestep

    def described(self) -> dict:
        """What summary.json records about this variant."""
        return {"method": self.method, "unroll": self.timesteps, "skip": False, "family": "gated_autoencoder",
                "feedback": self.feedback, "timesteps": self.timesteps, "mode": self.mode,
                "beta_max": self.beta_max, "eta": self.eta}

    def table(self) -> dict:
        """This variant as one [[variants]] table that expands to exactly it."""
        out = {"name": self.name, "feedback": self.feedback, "timesteps": self.timesteps}
        for key in self.overrides:
            if key not in out:
                out[key] = getattr(self, key)
        return out


def check(exp: Any) -> None:
    """[model.gated] and train.noise_sigmas (variants: `expand`)."""
    g = exp.model.gated
    for key in ("hidden", "bottleneck", "filters", "kernel", "stride", "timesteps"):
        at_least(f"model.gated.{key}", getattr(g, key), 1)
    _check_gate_values("model.gated.", g.feedback, g.mode, g.beta_max, g.eta)
    if not g.constant_gain > 0:
        raise ConfigError(f"config key model.gated.constant_gain must be > 0 (sec 4.3 uses 10); got {g.constant_gain}")
    sigmas = exp.train.noise_sigmas
    if sigmas is not None and (not sigmas or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s >= 0 for s in sigmas)):
        raise ConfigError(f"config key train.noise_sigmas must be a non-empty list of numbers >= 0, e.g. [0, 0.5, 1, 2]; "
                          f"got {sigmas!r}")


def _check_gate_values(where: str, feedback, mode, beta_max, eta) -> None:
    choose(f"{where}feedback", feedback, GATED_FEEDBACK)
    choose(f"{where}mode", mode, GATED_MODES)
    if isinstance(beta_max, bool) or not isinstance(beta_max, (int, float)) or not 0 < beta_max < 1:
        raise ConfigError(f"config key {where}beta_max must be a number in (0, 1) (maximum gain 1 / (1 - beta_max); "
                          f"the paper uses 0.95); got {beta_max!r}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta > 0:
        raise ConfigError(f"config key {where}eta must be a number > 0 (the paper uses 5); got {eta!r}")


def expand(exp: Any) -> list[GatedVariant]:
    """Lists in feedback / timesteps / mode / beta_max / eta expand (product, in that order).

    Feedback "none" always runs one timestep (its passes would all compute the same), so a
    timesteps list gives it one variant, e.g. none-t1.
    """
    g = exp.model.gated
    out = []
    for i, v in enumerate(exp.variants):
        where = f"variants[{i}]."
        axes = {}
        for key in ("feedback", "timesteps", "mode", "beta_max", "eta"):
            value = getattr(v, key)
            values = value if isinstance(value, list) else [getattr(g, key) if value is None else value]
            if not values:
                raise ConfigError(f"config key {where}{key} is an empty list; give at least one value")
            axes[key] = values
        for t in axes["timesteps"]:
            if not isinstance(t, int) or isinstance(t, bool) or t < 1:
                raise ConfigError(f"config key {where}timesteps must be an integer >= 1 or a list of them; got {v.timesteps!r}")
        set_keys = tuple(k for k in GATED_VARIANT_KEYS if getattr(v, k) is not None)
        combos = list(itertools.product(*axes.values()))
        if v.name is not None and len(combos) > 1:
            raise ConfigError(f"variants[{i}].name = {v.name!r} names one variant, but its lists expand to several")
        seen = set()
        for feedback, timesteps, mode, beta_max, eta in combos:
            _check_gate_values(where, feedback, mode, beta_max, eta)
            if feedback == "none":  # every pass computes the same: one pass (as ffn's unroll 1)
                timesteps = 1
                if (timesteps, mode, beta_max, eta) in seen:
                    continue
                seen.add((timesteps, mode, beta_max, eta))
            if v.constant_gain is not None and mode != "constant":
                raise ConfigError(f"config key {where}constant_gain applies only to mode = 'constant'; mode is {mode!r}")
            if v.constant_gain is not None and not v.constant_gain > 0:
                raise ConfigError(f"config key {where}constant_gain must be > 0; got {v.constant_gain}")
            name = v.name or f"{feedback}-t{timesteps}"
            if v.name is None:
                name += "".join(f"-{mode}" if k == "mode" else f"-{_SHORT[k]}{_num(value)}"
                                for k, value in (("mode", mode), ("beta_max", beta_max), ("eta", eta),
                                                 ("constant_gain", v.constant_gain)) if k in set_keys)
            out.append(GatedVariant(
                name, feedback, timesteps, mode, float(beta_max), float(eta),
                alpha=g.alpha if mode in ("threshold", "both") else None,
                constant_gain=(g.constant_gain if v.constant_gain is None else v.constant_gain) if mode == "constant" else None,
                overrides=set_keys,
            ))
    return out


_SHORT = {"beta_max": "b", "eta": "eta", "constant_gain": "g"}


def _num(value: float) -> str:
    return f"{value:g}"
