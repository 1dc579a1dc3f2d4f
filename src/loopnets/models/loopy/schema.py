"""The loopy_cnn family's config schema: `[model.loopy]`, its variants' keys (model, unroll), their expansion.

Caswell, Shen and Wang's loopy CNNs (`loopnets.models.loopy.network`). A variant is one `model`
(MODELS) at one `unroll` (passes k; Vanilla always runs 1; unset, k is 2, so configs state the
paper's k = 3 explicitly). The models return logits and train with cross-entropy (the only loss
this family accepts).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal, Union

from loopnets.core.loop import MERGES
from loopnets.experiments.schema import ConfigError, choose
from loopnets.models.loopy.network import INITS

FAMILY = "loopy_cnn"
MODELS = ("vanilla", "loopy", "deep", "plus_layer", "times_layer", "mnist_loopy")
LOOPED = ("loopy", "plus_layer", "times_layer", "mnist_loopy")  # tied weights, a loop the feedback_off probe can cut
LOOPY_ANALYSES = ("guided", "merge")


@dataclass(frozen=True)
class LoopyConfig:
    """`[model.loopy]`: Caswell's loopy CNNs (`loopnets.models.loopy.network`), family "loopy_cnn". Defaults = the authors' code.

    filters: conv 1 and conv 2 filters, one number or [conv 1, conv 2] (CIFAR-10: 64, 64). The top
        conv (and the loop conv of +layer / xlayer) has the image's channel count. Not used by
        "mnist_loopy", which is Fig 4's fixed 16, 8, 1 filters.
    merge: how the fed-back value enters the next pass for "loopy", "deep" and "mnist_loopy":
        "add" (the paper's) | "mul" | "sub" | "mean" | "replace". +layer is add, xlayer mul.
    batch_norm: BN after every conv (conv with bias -> BN -> ReLU), none on the FC.
    bn_per_unroll: every pass its own BN (gamma, beta, running statistics), the conv weights tied.
    init: "glorot" (Glorot-uniform with the ReLU gain, biases 0: Lasagne's GlorotUniform('relu'))
        or "pytorch" (PyTorch's default).
    """

    filters: Union[int, list] = 64
    merge: Literal[tuple(MERGES)] = "add"
    batch_norm: bool = True
    bn_per_unroll: bool = True
    init: Literal[INITS] = "glorot"


@dataclass(frozen=True)
class LoopyVariant:
    """One expanded variant of the loopy_cnn family: a model and its passes."""

    name: str
    model: str  # one of MODELS
    unroll: int  # passes k (1 for vanilla)

    has_skip = False

    @property
    def method(self) -> str:  # summary.json's method
        return self.model

    @property
    def tied(self) -> bool:
        return self.model != "deep"

    @property
    def has_loop(self) -> bool:
        """A loop that the feedback_off probe can cut: a tied model run for more than one pass."""
        return self.model in LOOPED and self.unroll > 1

    def described(self) -> dict:
        """What summary.json records about this variant (feedback "none" marks no loop, for the report)."""
        return {"method": self.model, "unroll": self.unroll, "skip": False, "family": FAMILY, "model": self.model,
                "tied": self.tied, "feedback": "loop" if self.has_loop else "none"}

    def table(self) -> dict:
        """This variant as one [[variants]] table that expands to exactly it."""
        return {"name": self.name, "model": self.model, "unroll": self.unroll}



@dataclass(frozen=True)
class LoopyVariantConfig:
    """One `[[variants]]` table of the loopy_cnn family; lists expand (product, model first)."""

    # vanilla | loopy | deep | plus_layer | times_layer | mnist_loopy
    model: Union[str, list[str], None] = None
    unroll: Union[int, list[int]] = 2  # passes k (vanilla: 1)
    name: Union[str, None] = None  # default: "vanilla" or <model>-x<unroll>


def check(exp: Any) -> None:
    """Check [model.loopy] and the loss of a loopy_cnn experiment (variants: `expand`)."""
    g = exp.model.loopy
    filters = g.filters if isinstance(g.filters, list) else [g.filters]
    if len(filters) not in (1, 2) or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in filters):
        raise ConfigError(f"config key model.loopy.filters must be an integer >= 1 or a list [conv 1, conv 2] of "
                          f"them, e.g. 64 or [16, 8]; got {g.filters!r}")
    if exp.train.loss not in ("auto", "cross_entropy"):
        raise ConfigError(f"config key train.loss = {exp.train.loss!r}: the loopy_cnn models return logits and "
                          f"train with cross-entropy; use \"auto\" or \"cross_entropy\"")


def expand(exp: Any) -> list[LoopyVariant]:
    """Every variant, in config order; lists in model and unroll expand (product, model first).

    Vanilla has no loop: it always runs one pass and appears once however many unrolls are listed.
    Names: "vanilla", "<model>-x<unroll>" (loopy-x3), or the variant's `name`.
    """
    out = []
    for i, v in enumerate(exp.variants):
        where = f"variants[{i}]."
        models = v.model if isinstance(v.model, list) else [v.model]
        unrolls = v.unroll if isinstance(v.unroll, list) else [v.unroll]
        if v.model is None or not models:
            raise ConfigError(f"config key {where}model is required for family {FAMILY!r}: one of "
                          f"{', '.join(MODELS)} or a list of them")
        for model in models:
            choose(f"{where}model", model, MODELS)
        if not unrolls or not all(isinstance(u, int) and not isinstance(u, bool) and u >= 1 for u in unrolls):
            raise ConfigError(f"config key {where}unroll must be an integer >= 1 or a list of them; got {v.unroll!r}")
        combos = list(dict.fromkeys((m, 1 if m == "vanilla" else u) for m, u in itertools.product(models, unrolls)))
        if v.name is not None and len(combos) > 1:
            raise ConfigError(f"variants[{i}].name = {v.name!r} names one variant, but model / unroll lists expand to several")
        for model, unroll in combos:
            out.append(LoopyVariant(v.name or (model if model == "vanilla" else f"{model}-x{unroll}"), model, unroll))
    return out

