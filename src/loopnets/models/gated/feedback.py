"""Which layers of a gated network feed which (Kemmerling sec 3.1, 4.2), and the argument checks
the network and its builders share.

Public: Feedback, resolve_feedback, is_int, check_timesteps, check_input_shape.
"""

from __future__ import annotations

import numbers
from typing import Sequence, Union

from loopnets.builder import layers as specs

__all__ = ["Feedback", "resolve_feedback", "is_int", "check_timesteps", "check_input_shape"]

Feedback = Union[str, Sequence[tuple[int, int]]]


def resolve_feedback(layer_specs: Sequence[specs.Spec], feedback: Feedback) -> list[tuple[int, int]]:
    """The (source, target) pairs of `feedback` (see GatedNetwork), checked against the layers,
    sorted by target then source."""
    affine = [i for i, s in enumerate(layer_specs) if isinstance(s, (specs.Dense, specs.Conv, specs.Deconv))]
    relu = [i for i in affine if layer_specs[i].activation == "relu"]
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
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(is_int(v) for v in pair):
            raise ValueError(f"feedback: each entry must be a (source, target) pair of layer indices; got {pair!r}")
        s, t = int(pair[0]), int(pair[1])
        for name, value in (("source", s), ("target", t)):
            if not 0 <= value < len(layer_specs):
                raise ValueError(
                    f"feedback ({s}, {t}): {name} {value} is out of range; the network has layers "
                    f"0..{len(layer_specs) - 1}"
                )
        if s <= t:
            raise ValueError(
                f"feedback ({s}, {t}): feedback comes from a higher layer (source > target, sec 3.1); "
                f"did you mean ({t}, {s})?"
            )
        if t not in relu:
            spec = layer_specs[t]
            what = f"activation {spec.activation!r}" if t in affine else f"a {spec.kind} layer"
            raise ValueError(
                f"feedback ({s}, {t}): layer {t} has {what}; only dense / conv / deconv layers with "
                f"activation 'relu' can be gated (eq 6 replaces a ReLU)"
            )
        if (s, t) in pairs:
            raise ValueError(f"feedback ({s}, {t}) is listed twice")
        pairs.append((s, t))
    return sorted(pairs, key=lambda p: (p[1], p[0]))


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_timesteps(value) -> int:
    if not is_int(value) or value < 1:
        raise ValueError(
            f"timesteps must be an integer >= 1 (pass 1 has no feedback, so feedback needs >= 2); got {value!r}"
        )
    return int(value)


def check_input_shape(shape) -> tuple[int, ...]:
    shape = (shape,) if is_int(shape) else tuple(shape)
    if not shape or not all(is_int(s) and s >= 1 for s in shape):
        raise ValueError(f"input_shape must be a positive int or a tuple of positive ints, e.g. (784,); got {shape!r}")
    return tuple(int(s) for s in shape)
