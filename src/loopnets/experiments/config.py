"""Experiment configs: a typed schema, loaded from TOML, with `key=value` overrides.

Defaults live here and in each model family's schema, nowhere else: `Experiment()` with no arguments
*is* the bundled default experiment (iris, the thesis's 4-25-25-25-3 model, FFN / COMBINE x2 / COUPLE
x2 with and without a bypassing skip, five seeds). A TOML file only states what differs:

    name = "iris-x3"
    [train]
    epochs = 50
    [[variants]]
    method = "couple"
    unroll = [2, 3]        # a list expands into one variant per value
    skip = [false, true]

`[model] family` picks a model family (`loopnets.experiments.families`; default "lavik"). The
family owns the rest of `[model]` (its `[model.<table>]`, or for the default family the model keys
themselves), the keys of a `[[variants]]` table, any `[train]` keys of its own, its checks and the
variants' expansion. Here: the common sections (`[data]`, `[train]`, the experiment's name), the
loading, and the checks every family shares. A key of another family is an unknown key, and the
error says which family has it:

    [model]
    family = "gated_autoencoder"
    [model.gated]
    bottleneck = 10
    [[variants]]
    feedback = ["none", "partial"]   # -> none-t2, partial-t2
    timesteps = 2

Unknown keys, wrong types and impossible values are errors naming the key and listing the valid
keys or values (types: `loopnets.experiments.schema`); `validate(experiment)` also builds every
variant's network, so an impossible architecture fails before any training. Validation checks what
the later stages assume: seeds in [0, 2^63), names that are portable folder names, and
(`loopnets.experiments.budget`, first in `validate`) each variant's estimated training memory and
pass count, so an absurd unroll or width is refused before anything is built.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from loopnets.experiments import families
from loopnets.experiments.schema import ConfigError, at_least, check_fields, described, did_you_mean, fix, table
from loopnets.training.callbacks import LOGGERS
from loopnets.training.optim import CLIP_KINDS, OPTIMIZERS, check_clip, check_scheduler

__all__ = ["ConfigError", "DataConfig", "Experiment", "ModelConfig", "TrainConfig", "apply_override", "check_name",
           "dumps", "expand_variants", "family_of", "from_dict", "load_config", "pass_count_field",
           "scheduler_spec", "to_dict"]

# MSE for the autoencoder: Kemmerling does not state the loss (the sigmoid output allows MSE or BCE).
TASK_LOSSES = {"classification": "cross_entropy", "regression": "rmse", "autoencoding": "mse"}
TASK_OUTPUT_ACTIVATIONS = {"classification": "softmax", "regression": "linear"}

MAX_SEED = 2**63  # seeds are integers in [0, MAX_SEED): torch.manual_seed's range
MAX_NAME = 100  # characters in a name used as a folder (experiment, variant)
# Passes of a loop (unroll, timesteps, iterations, random_passes, unroll_sweep): the thesis and the
# papers use at most a few dozen; the unroll sweep evaluates 1 .. N passes, N^2 / 2 in all. The
# variants' counts are checked with their memory estimate (`loopnets.experiments.budget`).
MAX_PASSES = 1000
_PORTABLE_NAME = re.compile(r"[A-Za-z0-9._=+-]+")


def check_name(key: str, name: str) -> None:
    """Refuse a name that is not a portable file name: the experiment and variant names become
    folders (runs/<experiment>/<variant>/), on every file system the runs may be copied to.
    Letters, digits and . _ - = + only, at most MAX_NAME characters, not starting with a dot."""
    if not isinstance(name, str) or not _PORTABLE_NAME.fullmatch(name) or len(name) > MAX_NAME or name.startswith("."):
        suggestion = re.sub(r"[^A-Za-z0-9._=+-]+", "-", name if isinstance(name, str) else "").strip(".-")[:MAX_NAME]
        problem = (f"is {len(name)} characters long" if isinstance(name, str) and _PORTABLE_NAME.fullmatch(name)
                   and len(name) > MAX_NAME else "is not a portable folder name")
        raise ConfigError(
            f"config key {key} = {name!r} {problem}: names become folders, so use letters, digits and . _ - = + only, "
            f"at most {MAX_NAME} characters, not starting with a dot" + (f", e.g. {suggestion!r}" if suggestion else "")
        )


@dataclass(frozen=True)
class DataConfig:
    """Which data set, with which loader options (see `loopnets.data.DATASETS`)."""

    name: str = "iris"
    split_seed: int = 0  # one fixed split for every run, so variants compare on the same data
    options: dict = field(default_factory=dict)  # loader keyword arguments, e.g. task = "regression"



@dataclass(frozen=True)
class ModelConfig:
    """`[model]`: which family (`loopnets.experiments.families`). Each family's schema adds its own keys:
    a `[model.<table>]` of its settings, or (the default family) its settings as `[model]` keys; an
    experiment's `model` is an instance of `model_schema(family)`, a subclass of this."""

    family: str = families.DEFAULT


@dataclass(frozen=True)
class TrainConfig:
    """How each run trains (arguments of `ln.fit`)."""

    loss: str = "auto"  # cross_entropy for classification, rmse for regression
    optimizer: str = "adam"
    optimizer_args: dict = field(default_factory=lambda: {"lr": 1e-3, "betas": [0.95, 0.999], "eps": 1e-7})
    epochs: int = 150
    batch_size: int = 8
    early_stopping: Union[int, None] = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    # Analyses of each trained network on the validation split, written into the run folder (numbers in
    # summary.json extra, PNGs beside it) and gathered by the report: names from the family's `analyses`.
    analyses: list[str] = field(default_factory=list)
    # Train unfinished runs whose networks stack as one model, one `ln.fit_many` call (families that stack;
    # the results of one at a time within rounding; false trains one run at a time).
    group_seeds: bool = True
    # After training, validation loss / accuracy with every loop run for 1 .. N passes (summary.json
    # unroll_sweep; Hershey Fig. 3.22); unset: max(8, 2 x the variant's unroll); 0: no sweep.
    unroll_sweep: Union[int, None] = None
    # The most memory (GiB) one variant's training may need (`loopnets.experiments.budget`): an
    # experiment estimated above it is refused before anything is built. Unset: half this machine's memory.
    max_memory_gb: Union[float, None] = None
    # Where and how each run trains (`ln.fit`'s device / precision): cpu, cuda, cuda:N, mps or auto;
    # precision bf16 / fp16 (CUDA only). `loopnets run --device` sets device. Unset: the CPU, the model's dtype.
    device: Union[str, None] = None
    precision: Union[str, None] = None
    # Loggers writing into each run's folder: "csv" is metrics.csv (always written: the report reads
    # it), "tensorboard" adds seed=<n>/tensorboard/ (needs the tensorboard extra).
    loggers: list[str] = field(default_factory=lambda: ["csv"])
    # A torch.optim.lr_scheduler by name, stepped per epoch: "ExponentialLR" needs arguments, so a table
    # { name = "StepLR", step_size = 10, gamma = 0.5 } (the name and the scheduler's own arguments).
    scheduler: Union[str, dict, None] = None
    # Gradient clipping: ["norm", max_norm] / ["value", max_value] on the parameters' gradients, or
    # ["output", max_value] on dLoss/dOutput (the thesis's loss-gradient clamp; `ln.fit`'s clip=).
    clip: Union[list, None] = None




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
    model: ModelConfig = field(default_factory=lambda: model_schema(families.DEFAULT)())
    train: TrainConfig = field(default_factory=TrainConfig)
    variants: list = field(default_factory=lambda: families.get(families.DEFAULT).default_variants())


def family_of(exp_or_model: Any) -> families.Family:
    """The `Family` of an experiment (or of its `model`)."""
    model = exp_or_model.model if isinstance(exp_or_model, Experiment) else exp_or_model
    return families.get(model.family)


def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _copied(cls: type) -> list:
    """`cls`'s fields as make_dataclass entries (resolved types, the same defaults)."""
    hints, out = _hints(cls), []
    for f in dataclasses.fields(cls):
        default = (field(default_factory=f.default_factory) if f.default_factory is not dataclasses.MISSING
                   else field(default=f.default))
        out.append((f.name, hints[f.name], default))
    return out


@functools.lru_cache(maxsize=None)
def _model_schema(family: families.Family) -> type:
    entries = [("family", str, field(default=family.name))]
    if family.table:
        entries.append((family.table, family.settings, field(default_factory=family.settings)))
    else:
        entries += _copied(family.settings)
    cls = dataclasses.make_dataclass(f"ModelConfig_{family.name}", entries, bases=(ModelConfig,), frozen=True)
    cls.__module__ = __name__
    return cls


def model_schema(name: str) -> type:
    """The `[model]` dataclass of family `name`: `family` and the family's settings."""
    return _model_schema(families.get(name))


@functools.lru_cache(maxsize=None)
def _train_schema(family: families.Family) -> type:
    if family.train_keys is None:
        return TrainConfig
    cls = dataclasses.make_dataclass(f"TrainConfig_{family.name}", _copied(family.train_keys), bases=(TrainConfig,),
                                     frozen=True)
    cls.__module__ = __name__
    return cls



# --- loading -------------------------------------------------------------------------------

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
    family = _family(raw)
    hint = functools.partial(_unknown_hint, family)
    kwargs = check_fields(Experiment, raw, "", passthrough=("data", "model", "train", "variants"), unknown_hint=hint)
    schemas = {"data": DataConfig, "model": _model_schema(family), "train": _train_schema(family)}
    for key, cls in schemas.items():
        if key in kwargs:
            kwargs[key] = cls(**check_fields(cls, table(kwargs[key], key), key + ".", unknown_hint=hint))
        elif key != "data":
            kwargs[key] = cls()
    if "variants" in kwargs:
        variants = kwargs["variants"]
        if not isinstance(variants, list) or not variants:
            raise ConfigError("variants must be a non-empty list of [[variants]] tables")
        kwargs["variants"] = [
            family.variant_keys(**check_fields(family.variant_keys, table(v, f"variants[{i}]"), f"variants[{i}].",
                                               unknown_hint=hint))
            for i, v in enumerate(variants)
        ]
    else:
        kwargs["variants"] = family.default_variants()
        if kwargs["variants"] is None:
            raise ConfigError(f"model.family = {family.name!r} needs its own [[variants]] (the default variants "
                              f"belong to family {families.DEFAULT!r}), e.g. [[variants]] {family.variants_example}")
    experiment = Experiment(**kwargs)
    _check_values(experiment)
    return experiment


def _family(raw: dict) -> families.Family:
    """The family a raw config names (`[model] family`), the default where it names none."""
    model = raw.get("model")
    name = model.get("family", families.DEFAULT) if isinstance(model, dict) else families.DEFAULT
    if not isinstance(name, str):
        raise ConfigError(f"config key model.family must be str; got {described(name)}")
    try:
        return families.get(name)
    except families.UnknownFamily as err:
        raise ConfigError(f"config key model.family = {err}") from None


def _unknown_hint(family: families.Family, prefix: str, key: str) -> str:
    """Where an unknown key belongs: another family's key, or this family's in its own table."""
    section = "variants" if prefix.startswith("variants[") else prefix.rstrip(".")
    if section not in ("model", "train", "variants"):
        return ""
    owners = [name for name in families.owners(section, key) if name != family.name]
    words = ""
    if owners:
        words = (f"; {prefix}{key} applies only to model.family = {' or '.join(map(repr, owners))}; "
                 f"this experiment's family is {family.name!r}")
    if family.table and key in {f.name for f in dataclasses.fields(family.settings)} and section != "train":
        words += f"; set model.{family.table}.{key} instead"
    return words


# --- checks --------------------------------------------------------------------------------


def _check_values(exp: Experiment) -> None:
    check_name("name", exp.name)
    _check_optimizer_arg_types(exp.train.optimizer, exp.train.optimizer_args)
    if not 0 <= exp.data.split_seed < 2**32:  # scikit-learn's random_state (the splits)
        raise ConfigError(f"config key data.split_seed = {exp.data.split_seed} is out of range: the data split takes a "
                          f"seed in [0, 2^32), e.g. 0")
    at_least("train.epochs", exp.train.epochs, 1)
    at_least("train.batch_size", exp.train.batch_size, 1)
    if exp.train.early_stopping is not None:
        at_least("train.early_stopping", exp.train.early_stopping, 1)
    if exp.train.unroll_sweep is not None:
        at_least("train.unroll_sweep", exp.train.unroll_sweep, 0)
    if exp.train.max_memory_gb is not None and not exp.train.max_memory_gb > 0:
        raise ConfigError(f"config key train.max_memory_gb must be > 0 (GiB); got {exp.train.max_memory_gb}; "
                          f"leave it out for half this machine's memory")
    seeds = exp.train.seeds
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"config key train.seeds must be a non-empty list of distinct integers; got {seeds!r}")
    for i, seed in enumerate(seeds):
        if not 0 <= seed < MAX_SEED:
            raise ConfigError(f"config key train.seeds[{i}] = {seed} is out of range: a seed is an integer in [0, 2^63) "
                              f"(torch.manual_seed's range; run folders are seed=<n> with n >= 0), e.g. {abs(seed) % 1000}")
    _check_engine_settings(exp.train)
    family = family_of(exp)
    _check_analyses(family, exp.train.analyses)
    family.check(exp)
    if exp.train.unroll_sweep is not None and exp.train.unroll_sweep > MAX_PASSES:
        raise ConfigError(f"config key train.unroll_sweep = {exp.train.unroll_sweep} is more than {MAX_PASSES} passes "
                          f"(the sweep evaluates every count from 1, about N^2 / 2 passes); e.g. 16")
    expanded = expand_variants(exp)
    names = [v.name for v in expanded]
    given = {v.name: i for i, v in reversed(list(enumerate(exp.variants))) if isinstance(v.name, str)}
    for name in names:  # given (name = ...) or made from the variant's settings (method-x<unroll>, ...)
        check_name(f"variants[{given[name]}].name" if name in given else "variant name (made from the variant's settings)", name)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"two variants are both named {duplicates[0]!r}; give one a different name = ...")


def _check_analyses(family: families.Family, analyses: list) -> None:
    if analyses and not family.analyses:
        having = ", ".join(f"{name!r} ({', '.join(families.get(name).analyses)})" for name in families.names()
                           if families.get(name).analyses)
        raise ConfigError(f"config key train.analyses applies only to model.family = {having}; "
                          f"this experiment's family is {family.name!r}")
    if any(a not in family.analyses for a in analyses):
        raise ConfigError(f"config key train.analyses must be a list of analyses from {', '.join(family.analyses)} "
                          f"(family {family.name!r}; e.g. {list(family.analyses[:2])!r}); got {analyses!r}")
    if len(set(analyses)) != len(analyses):
        raise ConfigError(f"config key train.analyses names an analysis twice: {analyses!r}")


DEVICE_FORMS = ("cpu", "cuda", "cuda:N", "mps", "auto")
PRECISIONS = ("bf16", "fp16")
_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps|auto")


def scheduler_spec(scheduler: str | dict | None) -> tuple[str, dict] | None:
    """`[train] scheduler` as fit's (name, kwargs): a name, or a table of `name` and the scheduler's arguments."""
    if scheduler is None:
        return None
    if isinstance(scheduler, str):
        return scheduler, {}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in scheduler.items() if k != "name"}
    return scheduler["name"], kwargs


def _check_engine_settings(train: TrainConfig) -> None:
    """train.device / precision / loggers / scheduler / clip: forms and names (a device's availability
    is checked by the runner before any folder is written, so a config for a GPU loads anywhere)."""
    if train.device is not None and not _DEVICE.fullmatch(train.device):
        raise ConfigError(f"config key train.device = {train.device!r} is not a device{did_you_mean(train.device, DEVICE_FORMS)}; "
                          f"use one of {', '.join(DEVICE_FORMS)} (N: the GPU's index), or leave it out for the CPU")
    if train.precision is not None and train.precision not in PRECISIONS:
        raise ConfigError(f"config key train.precision = {train.precision!r} is not one of {', '.join(PRECISIONS)}"
                          f"{did_you_mean(train.precision, PRECISIONS)}; leave it out for the model's own dtype")
    for i, name in enumerate(train.loggers):
        if name not in LOGGERS:
            raise ConfigError(f"config key train.loggers[{i}] = {name!r} is not a logger{did_you_mean(name, LOGGERS)}; "
                              f"choose from {', '.join(LOGGERS)}")
    if len(set(train.loggers)) != len(train.loggers):
        raise ConfigError(f"config key train.loggers names a logger twice: {train.loggers!r}")
    if isinstance(train.scheduler, dict) and not isinstance(train.scheduler.get("name"), str):
        raise ConfigError(f"config key train.scheduler must name its scheduler: a table with name = \"...\" and the "
                          f"scheduler's arguments, e.g. {{ name = \"StepLR\", step_size = 10 }}; got {train.scheduler!r}")
    spec = scheduler_spec(train.scheduler)
    if spec is not None:
        try:
            check_scheduler(*spec)
        except ValueError as err:
            raise ConfigError(f"config key train.scheduler: {err}") from None
    if train.clip is not None:
        try:
            check_clip(train.clip)
        except ValueError:
            kind = train.clip[0] if train.clip and isinstance(train.clip[0], str) else ""
            raise ConfigError(f"config key train.clip = {train.clip!r} is not a clip{did_you_mean(kind, CLIP_KINDS) if kind not in CLIP_KINDS else ''}: "
                              f"give [\"norm\", max_norm] or [\"value\", max_value] (the parameters' gradients) or "
                              f"[\"output\", max_value] (dLoss/dOutput) with a finite number > 0, e.g. [\"value\", 5.0]"
                              ) from None


def pass_count_field(variant: Any) -> str | None:
    """The name of an expanded variant's pass count (its loops' unroll), or None."""
    names = {f.name for f in dataclasses.fields(variant)}
    return next((name for name in ("unroll", "timesteps", "iterations") if name in names), None)


def _check_optimizer_arg_types(name: str, args: dict) -> None:
    """A bool where the optimizer takes a number (lr = true), or a number where it takes a bool
    (amsgrad = 1), is refused: torch would read true as 1. The type is the argument's default's
    in the optimizer's signature; unknown names and arguments are left to make_optimizer."""
    entry = OPTIMIZERS.get(name.lower()) if isinstance(name, str) else None
    if entry is None:
        return
    params = inspect.signature(entry[0]).parameters
    for key, value in args.items():
        default = params[key].default if key in params else None
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"config key train.optimizer_args.{key} must be true or false; got {described(value)}")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, bool):
            raise ConfigError(f"config key train.optimizer_args.{key} must be a number (default {default}); got "
                              f"bool {value}{fix(value, float)}")




def expand_variants(exp: Experiment) -> list:
    """Every variant the experiment trains, in config order (the family's expanded variants)."""
    return family_of(exp).expand(exp)


# --- writing -------------------------------------------------------------------------------


def to_dict(exp: Experiment) -> dict:
    """Plain data for `exp`, with every default filled in (the resolved config).

    Only the model family's own keys are written (its schema has no other), and the default family
    does not write `model.family`, so its resolved configs read exactly as before families existed.
    """
    data = dataclasses.asdict(exp)
    if data["model"]["family"] == families.DEFAULT:
        del data["model"]["family"]
    return _drop_none(data)

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
