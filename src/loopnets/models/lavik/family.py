"""The default family, "lavik": the thesis's networks (a hidden-layer stack with one loop), one
backprop method per variant (Lavik 2024; `loopnets.models.lavik.architectures`).

Its settings are `[model]`'s own keys (layers, loop, output_activation, output_bias, init), its
variants choose method, unroll, skip and the loop's options; the default experiment's variants are
FFN / COMBINE x2 / COUPLE x2 with and without a bypassing skip. Runs whose networks stack train
as one model (`ln.fit_many`), and every looped run records the modes comparison's memory and
solver numbers (`loopnets.experiments.modes`).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Literal, Union

from loopnets.builder import layers
from loopnets.builder.network import Network
from loopnets.core.modes import MODES
from loopnets.core.passes import PASS_WEIGHTS
from loopnets.data.split import Split
from loopnets.experiments.config import TASK_OUTPUT_ACTIVATIONS
from loopnets.experiments.families import Family, register
from loopnets.experiments.modes import loop_training
from loopnets.experiments.schema import ConfigError
from loopnets.models.lavik.architectures import METHODS, init_uniform_, loop_network


@dataclass(frozen=True)
class LavikSettings:
    """The base network: hidden layers (builder specs), the loop's span, output and init (`[model]` keys).

    `layers` are the hidden layers, each a table like {type = "dense", units = 25, activation =
    "relu", bias = false}; the output layer is added to fit the data (classes or targets).
    `loop = [into, outof]` are the indices (0-based, into `layers`) of the first and last looped
    layer: the output of layer `outof` feeds the input of layer `into` (thesis "3 to 2" is
    [1, 2]). The bypassing skip adds the input of layer `into` to the input of layer outof + 1.
    """

    layers: list[dict] = field(
        default_factory=lambda: [
            {"type": "dense", "units": 25, "activation": "relu", "bias": False},
            {"type": "dense", "units": 25, "activation": "relu", "bias": False},
            {"type": "dense", "units": 25, "activation": "relu", "bias": False},
        ]
    )
    loop: list[int] = field(default_factory=lambda: [1, 2])
    output_activation: str = "auto"  # softmax for classification, linear for regression
    output_bias: bool = False
    init: Literal["default", "uniform"] = "uniform"  # "uniform": U(-1, 1) for every weight, as `neurons` (the thesis's runs); "default": PyTorch's


@dataclass(frozen=True)
class VariantConfig:
    """One line of the `[[variants]]` list; list values expand into several variants."""

    method: Literal[METHODS] = "ffn"  # ffn | combine | couple | tied | truncated | implicit | onestep
    unroll: Union[int, list[int]] = 2  # passes through the loop ("x2"); ignored for ffn
    skip: Union[bool, list[bool]] = False  # bypassing skip over the loop (thesis Fig. 3.5)
    merge: str = "replace"
    output: Union[str, None] = None  # tied / couple only: last | mean | sum
    accumulate: Union[str, None] = None  # combine: mean | sum | weighted; couple: mean | weighted
    grad_scale: Union[float, str, None] = None  # combine only: a number or "1/k"
    # keyword arguments of the method's backprop mode, e.g. {grad_passes = 2} (truncated) or
    # {solver = "broyden", tol = 1e-4, max_passes = 40, backward = "phantom"} (implicit, onestep)
    backprop_args: Union[dict, None] = None
    # fit's deep supervision: "mean" | "linear" | "last" | a list of per-pass weights (loop methods)
    pass_weights: Union[str, list[float], None] = None
    # fit's random pass count per step, [lo, hi] (loop methods; not couple beyond its unroll)
    random_passes: Union[list[int], None] = None
    name: Union[str, None] = None  # default: method-x<unroll>[-skip]


@dataclass(frozen=True)
class Variant:
    """One expanded variant: a single method, unroll and skip."""

    name: str
    method: str
    unroll: int
    skip: bool
    merge: str = "replace"
    output: Union[str, None] = None
    accumulate: Union[str, None] = None
    grad_scale: Union[float, str, None] = None
    backprop_args: Union[dict, None] = field(default=None, hash=False)
    pass_weights: Union[str, list, None] = field(default=None, hash=False)
    random_passes: Union[list, None] = field(default=None, hash=False)

    # Every family's variants answer these, so the runner treats them alike.
    @property
    def has_skip(self) -> bool:
        return self.skip

    @property
    def has_loop(self) -> bool:
        return self.method != "ffn"

    def described(self) -> dict:
        """What summary.json records about this variant."""
        described = {"method": self.method, "unroll": self.unroll, "skip": self.skip}
        for key in ("merge", "backprop_args", "pass_weights", "random_passes"):
            if getattr(self, key) not in (None, "replace"):
                described[key] = getattr(self, key)
        return described

    def table(self) -> dict:
        """This variant as one [[variants]] table that expands to exactly it."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _check_loop_training(where: str, v: VariantConfig) -> None:
    """The lavik variant keys of issue 8: backprop_args, pass_weights, random_passes (shapes only;
    the mode and `fit` check the values against the model when it is built / trained)."""
    given = [key for key in ("backprop_args", "pass_weights", "random_passes") if getattr(v, key) is not None]
    if v.method == "ffn" and given:
        raise ConfigError(f"config key {where}.{given[0]} needs a loop; method \"ffn\" has none")
    weights = v.pass_weights
    if isinstance(weights, str) and weights not in PASS_WEIGHTS:
        raise ConfigError(f"config key {where}.pass_weights = {weights!r} is not one of {', '.join(PASS_WEIGHTS)} "
                          "or a list of per-pass weights")
    if isinstance(weights, list) and not (weights and all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights) and sum(weights) > 0):
        raise ConfigError(f"config key {where}.pass_weights must list one weight >= 0 per pass, not all 0; got {weights!r}")
    passes = v.random_passes
    if passes is not None and not (len(passes) == 2 and all(isinstance(k, int) and not isinstance(k, bool) for k in passes)
                                   and 1 <= passes[0] <= passes[1]):
        raise ConfigError(f"config key {where}.random_passes must be [lo, hi] with 1 <= lo <= hi, e.g. [1, 8]; got {passes!r}")


def _backprop(variant: Variant, where: str):
    """The variant's backprop mode: its method's class with accumulate / grad_scale / backprop_args."""
    args = dict(variant.backprop_args or {})
    for key in ("accumulate", "grad_scale"):
        if getattr(variant, key) is not None:
            if key in args:
                raise ConfigError(f"{where}: {key} is given twice, as a variant key and in backprop_args")
            args[key] = getattr(variant, key)
    try:
        return MODES[variant.method](**args)
    except TypeError:
        valid = ", ".join(f.name for f in dataclasses.fields(MODES[variant.method])) or "none"
        raise ConfigError(f"{where}: backprop_args {variant.backprop_args!r} has a key {variant.method} does not take; "
                          f"its settings: {valid}") from None


class Lavik(Family):
    """The thesis's loop networks (the default family)."""

    name = "lavik"
    settings = LavikSettings
    variant_keys = VariantConfig

    def default_variants(self) -> list:
        return [VariantConfig(method="ffn", skip=[False, True]),
                VariantConfig(method="combine", unroll=2, skip=[False, True]),
                VariantConfig(method="couple", unroll=2, skip=[False, True])]

    def check(self, exp) -> None:
        loop = exp.model.loop
        n = len(exp.model.layers)
        if not (len(loop) == 2 and all(isinstance(i, int) for i in loop) and 0 <= loop[0] <= loop[1] < n):
            raise ConfigError(
                f"config key model.loop = {loop!r} must be [into, outof] with 0 <= into <= outof < {n} "
                f"(indices into model.layers, which has {n} layers)"
            )
        for i, v in enumerate(exp.variants):
            _check_loop_training(f"variants[{i}]", v)

    def expand(self, exp) -> list[Variant]:
        out = []
        for i, v in enumerate(exp.variants):
            unrolls = v.unroll if isinstance(v.unroll, list) else [v.unroll]
            skips = v.skip if isinstance(v.skip, list) else [v.skip]
            if not unrolls or not all(isinstance(u, int) and not isinstance(u, bool) and u >= 1 for u in unrolls):
                raise ConfigError(f"config key variants[{i}].unroll must be an integer >= 1 or a list of them; got {v.unroll!r}")
            if not skips or not all(isinstance(s, bool) for s in skips):
                raise ConfigError(f"config key variants[{i}].skip must be true, false or a list of them; got {v.skip!r}")
            if v.method == "ffn":
                unrolls = [1]
            if v.name is not None and len(unrolls) * len(skips) > 1:
                raise ConfigError(f"variants[{i}].name = {v.name!r} names one variant, but unroll / skip lists expand to several")
            for unroll, skip in itertools.product(unrolls, skips):
                name = v.name or (v.method if v.method == "ffn" else f"{v.method}-x{unroll}") + ("-skip" if skip else "")
                out.append(Variant(name, v.method, unroll, skip, v.merge, v.output, v.accumulate, v.grad_scale,
                                   v.backprop_args, v.pass_weights, v.random_passes))
        return out

    def build_model(self, exp, variant: Variant, split: Split) -> Network:
        """The variant's network for this data; errors name the config key at fault."""
        specs = []
        for i, table in enumerate(exp.model.layers):
            if not isinstance(table, dict) or "type" not in table:
                raise ConfigError(f"config key model.layers[{i}] must be a table with a type, e.g. {{type = \"dense\", units = 25}}")
            try:
                specs.append(layers.spec_from_config({"kind": table["type"], **{k: v for k, v in table.items() if k != "type"}}))
            except (ValueError, TypeError) as err:
                raise ConfigError(f"config key model.layers[{i}]: {err}") from None
        where = f"variant {variant.name!r} (config [[variants]] method = {variant.method!r})"
        backprop = None
        if variant.method not in ("combine", "couple") and (variant.accumulate is not None or variant.grad_scale is not None):
            raise ConfigError(f"{where}: accumulate and grad_scale apply only to combine / couple")
        if variant.method == "couple" and variant.grad_scale is not None:
            raise ConfigError(f"{where}: grad_scale applies only to combine")
        try:
            if variant.method != "ffn":
                backprop = _backprop(variant, where)
            output_activation = exp.model.output_activation
            if output_activation == "auto":
                output_activation = TASK_OUTPUT_ACTIVATIONS[split.task]
            net = loop_network(
                split.input_shape, specs, tuple(exp.model.loop), split.outputs,
                method=variant.method, unroll=variant.unroll, skip=variant.skip,
                output_activation=output_activation, output_bias=exp.model.output_bias,
                backprop=backprop, merge=variant.merge, output=variant.output,
            )
        except ValueError as err:
            raise ConfigError(f"{where} cannot be built: {err} (check model.layers, model.loop and the variant's options)") from None
        if exp.model.init == "uniform":
            init_uniform_(net)
        return net

    def fit_settings(self, variant: Variant) -> dict:
        """fit's deep-supervision / random-pass options."""
        random_passes = None if variant.random_passes is None else tuple(variant.random_passes)
        return {"pass_weights": variant.pass_weights, "random_passes": random_passes}

    def groupable(self, variant: Variant) -> bool:
        """A variant with pass_weights / random_passes (fit options fit_many does not take) trains alone."""
        return variant.pass_weights is None and variant.random_passes is None

    def saves_architecture(self, model) -> bool:
        return True

    def summary_extras(self, exp, variant: Variant, model, split: Split, loss: str, finished: bool) -> dict:
        """The modes comparison's memory and solver numbers (summary.json loop_training) of a finished run."""
        if not finished:
            return {}
        extra = loop_training(model, split, loss, exp.train.batch_size, variant.pass_weights)
        return {} if extra is None else {"loop_training": extra}


FAMILY = register(Lavik())
