"""Experiment configs: a typed schema, loaded from TOML, with `key=value` overrides.

Defaults live here and nowhere else: `Experiment()` with no arguments *is* the bundled default
experiment (iris, the thesis's 4-25-25-25-3 model, FFN / COMBINE x2 / COUPLE x2 with and without
a bypassing skip, five seeds). A TOML file only states what differs:

    name = "iris-x3"
    [train]
    epochs = 50
    [[variants]]
    method = "couple"
    unroll = [2, 3]        # a list expands into one variant per value
    skip = [false, true]

Unknown keys, wrong types and impossible values are errors naming the key and listing the valid
keys or values; `validate(experiment)` also builds every variant's network, so an impossible
architecture fails before any training.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

METHODS = ("ffn", "combine", "couple", "tied")
TASK_LOSSES = {"classification": "cross_entropy", "regression": "rmse"}
TASK_OUTPUT_ACTIVATIONS = {"classification": "softmax", "regression": "linear"}


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type or an impossible value; says how to fix it."""


@dataclass(frozen=True)
class DataConfig:
    """Which data set, with which loader options (see `loopnets.data.DATASETS`)."""

    name: str = "iris"
    split_seed: int = 0  # one fixed split for every run, so variants compare on the same data
    options: dict = field(default_factory=dict)  # loader keyword arguments, e.g. task = "regression"


@dataclass(frozen=True)
class ModelConfig:
    """The base network: hidden layers (builder specs), the loop's span, output and init.

    `layers` are the hidden layers, each a table like {type = "dense", units = 25, activation =
    "relu", bias = false}; the output layer is added to fit the data (classes or targets).
    `loop = [into, outof]` are the indices (0-based, into `layers`) of the first and last looped
    layer: the output of layer `outof` feeds the input of layer `into` (thesis "3 to 2" is
    [1, 2]). The bypassing skip adds the input of layer `into` to the input of layer outof + 1.
    """

    layers: list = field(
        default_factory=lambda: [
            {"type": "dense", "units": 25, "activation": "relu", "bias": False},
            {"type": "dense", "units": 25, "activation": "relu", "bias": False},
            {"type": "dense", "units": 25, "activation": "relu", "bias": False},
        ]
    )
    loop: list = field(default_factory=lambda: [1, 2])
    output_activation: str = "auto"  # softmax for classification, linear for regression
    output_bias: bool = False
    init: str = "uniform"  # "uniform": U(-1, 1) for every weight, as `neurons` (the thesis's runs); "default": PyTorch's


@dataclass(frozen=True)
class TrainConfig:
    """How each run trains (arguments of `ln.fit`)."""

    loss: str = "auto"  # cross_entropy for classification, rmse for regression
    optimizer: str = "adam"
    optimizer_args: dict = field(default_factory=lambda: {"lr": 1e-3, "betas": [0.95, 0.999], "eps": 1e-7})
    epochs: int = 150
    batch_size: int = 8
    early_stopping: Union[int, None] = None
    seeds: list = field(default_factory=lambda: [0, 1, 2, 3, 4])


@dataclass(frozen=True)
class VariantConfig:
    """One line of the `[[variants]]` list; list values expand into several variants."""

    method: str = "ffn"  # ffn | combine | couple | tied
    unroll: Union[int, list] = 2  # passes through the loop ("x2"); ignored for ffn
    skip: Union[bool, list] = False  # bypassing skip over the loop (thesis Fig. 3.5)
    merge: str = "replace"
    output: Union[str, None] = None  # tied / couple only: last | mean | sum
    accumulate: Union[str, None] = None  # combine: mean | sum | weighted; couple: mean | weighted
    grad_scale: Union[float, str, None] = None  # combine only: a number or "1/k"
    name: Union[str, None] = None  # default: method-x<unroll>[-skip]


@dataclass(frozen=True)
class Experiment:
    """A whole experiment: data, base model, training, and the variants compared."""

    name: str = "iris"
    description: str = "Iris, thesis Table 4.1 model 4-25-25-25-3: FFN, COMBINE x2 and COUPLE x2, with and without a bypassing skip."
    notes: str = (
        "Adam betas and eps from thesis Table 4.2 (iris); the learning rate 1e-3, batch size 8 and 150 epochs "
        "are our choices (the thesis does not state batch size or epochs for iris) so the default run is quick. "
        "Weights start uniform in [-1, 1] as in the thesis's framework. Split: 120 / 30, stratified, fixed seed 0."
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    variants: list = field(
        default_factory=lambda: [
            VariantConfig(method="ffn", skip=[False, True]),
            VariantConfig(method="combine", unroll=2, skip=[False, True]),
            VariantConfig(method="couple", unroll=2, skip=[False, True]),
        ]
    )


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


# --- loading -------------------------------------------------------------------------------

_NESTED = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Experiment:
    """Read a TOML experiment (None: the default experiment) and apply `key=value` overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; give a TOML file such as configs/lavik/iris.toml")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from None
    for item in overrides:
        apply_override(raw, item)
    return from_dict(raw)


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b.c=value` in the raw dict; value parsed as TOML (strings may be left unquoted)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not key=value, e.g. train.epochs=20")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # an unquoted string, e.g. name=quick
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a table")
    node[parts[-1]] = value


def from_dict(raw: dict) -> Experiment:
    """Build and check an Experiment from plain data (parsed TOML)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"an experiment config is a table; got {type(raw).__name__}")
    kwargs = _check_fields(Experiment, raw, "")
    for key, cls in _NESTED.items():
        if key in kwargs:
            kwargs[key] = cls(**_check_fields(cls, _table(kwargs[key], key), key + "."))
    if "variants" in kwargs:
        variants = kwargs["variants"]
        if not isinstance(variants, list) or not variants:
            raise ConfigError("variants must be a non-empty list of [[variants]] tables")
        kwargs["variants"] = [
            VariantConfig(**_check_fields(VariantConfig, _table(v, f"variants[{i}]"), f"variants[{i}]."))
            for i, v in enumerate(variants)
        ]
    experiment = Experiment(**kwargs)
    _check_values(experiment)
    return experiment


def _table(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table; got {type(value).__name__} {value!r}")
    return value


def _check_fields(cls: type, raw: dict, prefix: str) -> dict:
    valid = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]}; valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: "
            f"{', '.join(valid)}"
        )
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in raw.items():
        if key in _NESTED or (cls is Experiment and key == "variants"):
            out[key] = value
            continue
        out[key] = _coerce(value, hints[key], prefix + key)
    return out


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint (int, float, str, bool, list, dict, unions of these)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option in (str, list, dict) and isinstance(value, option):
            return value
    names = " or ".join("none" if o is type(None) else o.__name__ for o in options)
    raise ConfigError(f"config key {key} must be {names}; got {type(value).__name__} {value!r}")


def _check_values(exp: Experiment) -> None:
    def choose(key: str, value: Any, valid: tuple) -> None:
        if value not in valid:
            raise ConfigError(f"config key {key} = {value!r} is not one of {', '.join(map(str, valid))}")

    def at_least(key: str, value: int, low: int) -> None:
        if value < low:
            raise ConfigError(f"config key {key} must be >= {low}; got {value}")

    if not exp.name or any(c in exp.name for c in "/\\") or exp.name.startswith("."):
        raise ConfigError(f"config key name = {exp.name!r} must be a folder name (no slashes), e.g. iris-x3")
    at_least("train.epochs", exp.train.epochs, 1)
    at_least("train.batch_size", exp.train.batch_size, 1)
    if exp.train.early_stopping is not None:
        at_least("train.early_stopping", exp.train.early_stopping, 1)
    seeds = exp.train.seeds
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"config key train.seeds must be a non-empty list of distinct integers; got {seeds!r}")
    choose("model.init", exp.model.init, ("default", "uniform"))
    loop = exp.model.loop
    n = len(exp.model.layers)
    if not (len(loop) == 2 and all(isinstance(i, int) for i in loop) and 0 <= loop[0] <= loop[1] < n):
        raise ConfigError(
            f"config key model.loop = {loop!r} must be [into, outof] with 0 <= into <= outof < {n} "
            f"(indices into model.layers, which has {n} layers)"
        )
    for i, v in enumerate(exp.variants):
        choose(f"variants[{i}].method", v.method, METHODS)
    names = [v.name for v in expand_variants(exp)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"two variants are both named {duplicates[0]!r}; give one a different name = ...")


def expand_variants(exp: Experiment) -> list[Variant]:
    """Every (method, unroll, skip) the experiment trains, in config order."""
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
            out.append(Variant(name, v.method, unroll, skip, v.merge, v.output, v.accumulate, v.grad_scale))
    return out


# --- writing -------------------------------------------------------------------------------


def to_dict(exp: Experiment) -> dict:
    """Plain data for `exp`, with every default filled in (the resolved config)."""
    return _drop_none(dataclasses.asdict(exp))


def _drop_none(value: Any) -> Any:
    # TOML has no null: a None setting is written by leaving the key out (it reads back as None).
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def dumps(data: dict) -> str:
    """TOML text of a resolved config."""
    import tomli_w

    return tomli_w.dumps(data)
