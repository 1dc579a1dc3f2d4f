"""Backprop modes for loops: Tied, COUPLE, COMBINE, Truncated, Implicit, OneStep and Progressive.

A mode is a small frozen object chosen once, `Loop(body, unroll=3, backprop=Couple())`. Each
mode documents what it computes exactly, what it approximates, and what it costs. The loop
(`loopnets.core.loop.Loop`) owns the modules; a mode owns the algorithm that runs them
(`Backprop.run`, see `loopnets.core.modes.base`) and declares what it supports. One module per
mode; a new mode is one new file (a `Backprop` subclass), see tests/test_mode_plugin.py.

References: H. H. Lavik, "Feedback connections in neural networks for layer reuse" (thesis,
2024), sections 3.1-3.2 and 5.1-5.5; Caswell, Shen & Wang, "Loopy neural nets" (2016); for the
fixed-point modes Bai, Kolter & Koltun, "Deep equilibrium models" (2019), Geng et al., "On
training implicit models" (2021), Fung et al., "JFB: Jacobian-free backpropagation" (2022).
"""

from __future__ import annotations

from loopnets.core.modes.base import (
    ACCUMULATIONS,
    CAPABILITIES,
    OUTPUTS,
    Backprop,
    accumulation_weights,
    run_passes,
    weighted_passes,
)
from loopnets.core.modes.combine import (
    AFFINE,
    ELEMENTWISE,
    STRUCTURAL,
    Combine,
    GradScale,
    Stage,
    activation_slope,
    combine_forward,
    combine_stages,
)
from loopnets.core.modes.couple import Couple
from loopnets.core.modes.implicit import BACKWARDS, FixedPoint, Implicit
from loopnets.core.modes.onestep import OneStep
from loopnets.core.modes.progressive import Progressive
from loopnets.core.modes.tied import Tied
from loopnets.core.modes.truncated import Truncated

_activation_slope = activation_slope  # the name tests/test_loop.py imports

MODES: dict[str, type[Backprop]] = {
    "tied": Tied, "couple": Couple, "combine": Combine, "truncated": Truncated, "implicit": Implicit, "onestep": OneStep,
    "progressive": Progressive,
}


def backprop_from_config(cfg: dict) -> Backprop:
    """Rebuild a mode from `mode.config()`."""
    cfg = dict(cfg)
    name = cfg.pop("mode", None)
    if name not in MODES:
        raise ValueError(f"unknown backprop mode {name!r}; choose one of {', '.join(MODES)}")
    try:
        return MODES[name](**cfg)
    except TypeError as err:
        raise ValueError(f"bad settings for backprop mode {name!r}: {cfg}: {err}") from None


__all__ = [
    "ACCUMULATIONS", "AFFINE", "BACKWARDS", "CAPABILITIES", "ELEMENTWISE", "MODES", "OUTPUTS", "STRUCTURAL",
    "Backprop", "Combine", "Couple", "FixedPoint", "GradScale", "Implicit", "OneStep", "Progressive", "Stage", "Tied", "Truncated",
    "accumulation_weights", "activation_slope", "backprop_from_config", "combine_forward", "combine_stages",
    "run_passes", "weighted_passes",
]
