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

Four model families: "lavik" (the default: a hidden-layer stack with one loop, trained by the
variants' backprop methods), "gated_autoencoder" (Kemmerling's feedback-gated ReLU autoencoder,
`loopnets.models.gated.network`, trained to reconstruct the data set's x; settings in `[model.gated]`, variants
choose feedback and timesteps), "loopy_cnn" (Caswell et al.'s loopy CNNs, `loopnets.models.loopy.network`;
`[model.loopy]`, `loopnets.experiments.loopy`) and "inn" (Hershey's iterative networks and the
LSTM baseline, `loopnets.models.inn`; `[model.inn]`, `loopnets.experiments.inn`). Each family's variants
accept only their own keys:

    [model]
    family = "gated_autoencoder"
    [model.gated]
    bottleneck = 10
    [[variants]]
    feedback = ["none", "partial"]   # -> none-t2, partial-t2
    timesteps = 2

Unknown keys, wrong types and impossible values are errors naming the key and listing the valid
keys or values; `validate(experiment)` also builds every variant's network, so an impossible
architecture fails before any training. Validation checks what the later stages assume: types at
one place (`_coerce`: true / false are never numbers, integers fit in 64 bits, floats are finite,
list elements have their type), seeds in [0, 2^63), names that are portable folder names, and
(`loopnets.experiments.budget`, first in `validate`) each variant's estimated training memory and
pass count, so an absurd unroll or width is refused before anything is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import itertools
import math
import re
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

# family loopy_cnn (Caswell): its [model.loopy] table, variants and checks live in experiments/loopy.py
from loopnets.experiments import loopy as _loopy
from loopnets.training.optim import CLIP_KINDS, OPTIMIZERS, check_clip, check_scheduler
from loopnets.training.callbacks import LOGGERS
from loopnets.core.passes import PASS_WEIGHTS
from loopnets.experiments.loopy import LoopyConfig

# family inn (Hershey): its [model.inn] table, variants and checks live in experiments/inn.py
from loopnets.experiments import inn as _inn
from loopnets.experiments.inn import INNConfig

METHODS = ("ffn", "combine", "couple", "tied", "truncated", "implicit", "onestep")
FAMILIES = ("lavik", "gated_autoencoder", "loopy_cnn", "inn")
GATED_ARCHITECTURES = ("dense", "conv")
GATED_FEEDBACK = ("none", "partial", "comprehensive")
GATED_MODES = ("gain", "threshold", "both", "constant")  # loopnets.models.gated.network.MODES
# train.analyses (loopnets.experiments.gated): mu_D / gain histograms (Fig 5), reduced-contrast
# reconstructions (Figs 20, 21), t-SNE of the bottleneck per pass (Figs 18, 19), image strips (Figs 8, 21)
GATED_ANALYSES = ("histograms", "contrast", "tsne", "strips")
# MSE for the autoencoder: Kemmerling does not state the loss (the sigmoid output allows MSE or BCE).
TASK_LOSSES = {"classification": "cross_entropy", "regression": "rmse", "autoencoding": "mse"}
TASK_OUTPUT_ACTIVATIONS = {"classification": "softmax", "regression": "linear"}


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type or an impossible value; says how to fix it."""


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
class GatedConfig:
    """`[model.gated]`: Kemmerling's feedback-gated autoencoder (`loopnets.models.gated.network`), family "gated_autoencoder".

    Dense: inputs-hidden-bottleneck-hidden-inputs (sec 4: 784-392-10-392-784, ReLU, sigmoid output);
    conv: two conv and two transposed-conv layers of `filters` kernel x kernel filters, stride
    `stride` (sec 5.1: 16 5x5 filters). `feedback`, `timesteps`, `mode`, `beta_max`, `eta` and
    `constant_gain` are the defaults each variant may override. `alpha` (initial eq 8 threshold
    factor) is used by modes threshold / both, `constant_gain` by mode constant (sec 4.3: 10).
    """

    architecture: str = "dense"  # dense (needs data layout "dense") | conv (layout "image")
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
class ModelConfig:
    """The base network: hidden layers (builder specs), the loop's span, output and init.

    `family = "gated_autoencoder"` replaces all of this by the `[model.gated]` table (the keys
    below are then refused).

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
    init: str = "uniform"  # "uniform": U(-1, 1) for every weight, as `neurons` (the thesis's runs); "default": PyTorch's
    family: str = "lavik"  # lavik | gated_autoencoder | loopy_cnn | inn
    gated: GatedConfig = field(default_factory=GatedConfig)  # family gated_autoencoder only
    loopy: LoopyConfig = field(default_factory=LoopyConfig)  # family loopy_cnn only
    inn: INNConfig = field(default_factory=INNConfig)  # family inn only


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
    # gated_autoencoder only: after training, the validation loss with N(0, sigma^2) noise on every
    # pre-activation in every pass (Kemmerling eq 7, sec 4.4), per sigma; none: no noise sweep.
    noise_sigmas: Union[list[float], None] = None
    # gated_autoencoder only: analyses of each trained network on the validation split, written into
    # the run folder (numbers in summary.json extra, PNGs beside it) and gathered by the report.
    # Any of GATED_ANALYSES; "tsne" runs for the experiment's first seed only (seconds per pass).
    analyses: list[str] = field(default_factory=list)
    # Train unfinished runs whose networks stack as one model, one `ln.fit_many` call (family lavik;
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
class VariantConfig:
    """One line of the `[[variants]]` list; list values expand into several variants.

    Family lavik uses method ... name; family gated_autoencoder uses feedback ... constant_gain
    and name (unset ones take `[model.gated]`'s values). A key of the other family is an error.
    """

    method: str = "ffn"  # ffn | combine | couple | tied
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
    name: Union[str, None] = None  # default: method-x<unroll>[-skip]; gated: <feedback>-t<timesteps>[-<overrides>]
    feedback: Union[str, list[str], None] = None  # gated: none | partial | comprehensive
    timesteps: Union[int, list[int], None] = None  # gated: passes T >= 1
    mode: Union[str, list[str], None] = None  # gated: gain | threshold | both | constant
    beta_max: Union[float, list[float], None] = None  # gated
    eta: Union[float, list[float], None] = None  # gated
    constant_gain: Union[float, None] = None  # gated, mode constant
    model: Union[str, list[str], None] = None  # loopy_cnn (with unroll): vanilla | loopy | deep | plus_layer | times_layer | mnist_loopy; inn: inn | lstm
    density: Union[float, list[float], None] = None  # inn: R
    p: Union[float, list[float], None] = None  # inn: block-exchange probability (structure layered)
    trainable: Union[int, list[int], None] = None  # inn: W_train (structure budget; sizes the LSTM)
    iterations: Union[int, list[int], None] = None  # inn: T for static input (hershey_mnist)
    lr: Union[float, list[float], None] = None  # inn: overrides train.optimizer_args.lr


LAVIK_VARIANT_KEYS = ("method", "unroll", "skip", "merge", "output", "accumulate", "grad_scale", "backprop_args",
                      "pass_weights", "random_passes")
GATED_VARIANT_KEYS = ("feedback", "timesteps", "mode", "beta_max", "eta", "constant_gain")
LAVIK_MODEL_KEYS = ("layers", "loop", "output_activation", "output_bias", "init")


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
    backprop_args: Union[dict, None] = field(default=None, hash=False)
    pass_weights: Union[str, list, None] = field(default=None, hash=False)
    random_passes: Union[list, None] = field(default=None, hash=False)

    # Both variant kinds answer these, so the runner treats them alike.
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
    family = kwargs["model"].family if "model" in kwargs else ModelConfig.family
    if family not in FAMILIES:
        raise ConfigError(f"config key model.family = {family!r} is not one of {', '.join(FAMILIES)}")
    _check_family_keys(family, raw)
    if "variants" in kwargs:
        variants = kwargs["variants"]
        if not isinstance(variants, list) or not variants:
            raise ConfigError("variants must be a non-empty list of [[variants]] tables")
        kwargs["variants"] = [
            VariantConfig(**_check_fields(VariantConfig, _table(v, f"variants[{i}]"), f"variants[{i}]."))
            for i, v in enumerate(variants)
        ]
    elif family == "gated_autoencoder":
        raise ConfigError("model.family = 'gated_autoencoder' needs its own [[variants]] (the default variants "
                          "are lavik methods), e.g. [[variants]] feedback = [\"none\", \"partial\"]")
    experiment = Experiment(**kwargs)
    _check_values(experiment)
    return experiment


def raw_sections(raw: dict) -> tuple[dict, dict, list]:
    """The [model], [train] and [[variants]] of a parsed config as written (empty where absent or
    of the wrong type: the typed schema reports those), for the families' key checks."""
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    variants = raw.get("variants") if isinstance(raw.get("variants"), list) else []
    return model, train, variants


def _check_family_keys(family: str, raw: dict) -> None:
    """Refuse keys of the other model family, naming the key (raw tables: only keys actually set)."""
    _inn.check_family_keys(family, raw)  # model.inn / inn variant keys only in family inn, which refuses the others' keys
    if family == _inn.FAMILY:
        return
    _loopy.check_family_keys(family, raw)  # model.loopy / variants' model only in loopy_cnn, which refuses the others' keys
    if family == _loopy.FAMILY:
        return
    model, train, variants = raw_sections(raw)
    if family == "lavik":
        foreign_model, foreign_variant = ("gated",), GATED_VARIANT_KEYS
        if train.get("noise_sigmas"):
            raise ConfigError("config key train.noise_sigmas applies only to model.family = 'gated_autoencoder'")
        if train.get("analyses"):
            raise ConfigError("config key train.analyses applies only to model.family = 'gated_autoencoder' "
                              "(histograms, contrast, tsne, strips) or 'loopy_cnn' (guided, merge)")
    else:
        foreign_model, foreign_variant = LAVIK_MODEL_KEYS, LAVIK_VARIANT_KEYS
    own = "gated_autoencoder" if family == "lavik" else "lavik"
    for key in foreign_model:
        if key in model:
            raise ConfigError(f"config key model.{key} applies only to model.family = {own!r}; "
                              f"this experiment's family is {family!r}")
    for i, table in enumerate(variants):
        for key in foreign_variant:
            if isinstance(table, dict) and key in table:
                valid = ", ".join((*(LAVIK_VARIANT_KEYS if family == "lavik" else GATED_VARIANT_KEYS), "name"))
                raise ConfigError(f"config key variants[{i}].{key} applies only to model.family = {own!r}; "
                                  f"variant keys for family {family!r}: {valid}")


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
        if dataclasses.is_dataclass(hints[key]):  # a sub-table, e.g. [model.gated]
            sub = hints[key]
            out[key] = sub(**_check_fields(sub, _table(value, prefix + key), f"{prefix}{key}."))
            continue
        out[key] = _coerce(value, hints[key], prefix + key)
    return out


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint (int, float, str, bool, list, list[X], dict, unions of
    these): the one place where types are checked, for every field of the schema.

    true / false are never numbers (TOML keeps them apart; Python's bool is an int, so it is
    refused explicitly), integers fit in 64 bits (TOML's own range), floats are finite, and list
    elements have their declared type. Lists and
    tables of free-form settings (optimizer_args, backprop_args, data.options, model.layers, the
    families' tables) may not mix true / false with numbers in one list, nor hold nan / inf.
    """
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    for option in options:
        ok, out = _match(value, option)
        if ok:
            return out
    for option in options:  # name the element at fault, e.g. model.loop[0]
        if typing.get_origin(option) is list and isinstance(value, list):
            (element,) = typing.get_args(option)
            for i, item in enumerate(value):
                if not _match(item, element)[0]:
                    _refuse_huge_int(f"{key}[{i}]", item, element)
                    raise ConfigError(f"config key {key}[{i}] must be {_type_name(element)}; got "
                                      f"{_described(item)}{_fix(item, element)}")
    if int in options:
        _refuse_huge_int(key, value, int)
    bad = _free_form_fault(value) if isinstance(value, (list, dict)) else None
    if bad is not None:
        where, problem = bad
        raise ConfigError(f"config key {key}{where}: {problem}")
    names = " or ".join(_type_name(o) for o in options)
    raise ConfigError(f"config key {key} must be {names}; got {_described(value)}"
                      f"{_fix(value, next((o for o in options if o in (int, float)), options[0]))}")


def _refuse_huge_int(key: str, value: Any, wanted: Any) -> None:
    if wanted is int and isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise ConfigError(f"config key {key} = {value} is out of range: TOML's integers are 64-bit "
                          f"(-2^63 .. 2^63 - 1), and no setting needs a number that large")


def _match(value: Any, option: Any) -> tuple[bool, Any]:
    """(whether `value` fits the type `option`, the value to keep)."""
    if option is type(None):
        return value is None, None
    if option is bool:
        return isinstance(value, bool), value
    if option is int:  # TOML's integers are 64-bit; torch indexes with int64 too
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63, value
    if option is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else None
    if option is str:
        return isinstance(value, str), value
    if option in (list, dict):
        return isinstance(value, option) and _free_form_fault(value) is None, value
    if typing.get_origin(option) is list:
        (element,) = typing.get_args(option)
        return isinstance(value, list) and all(_match(item, element)[0] for item in value), value
    raise TypeError(f"config schema: unsupported type hint {option!r}")  # a bug in a dataclass of this package


def _free_form_fault(value: Any, where: str = "") -> tuple[str, str] | None:
    """The first place in a free-form list / table that later stages cannot read: a list mixing
    true / false with numbers, or a nan / inf."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, f"{value} is not allowed; give a finite number"
    if isinstance(value, dict):
        items = [(f"{where}.{k}", v) for k, v in value.items()]
    elif isinstance(value, list):
        bools = [v for v in value if isinstance(v, bool)]
        numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if bools and numbers:
            return where, (f"the list {value!r} mixes true / false with numbers; true / false are not numbers "
                           f"(write 1 or 0 if a number is meant)")
        items = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    for inner, item in items:
        bad = _free_form_fault(item, inner)
        if bad is not None:
            return bad
    return None


def _type_name(option: Any) -> str:
    if option is type(None):
        return "none"
    if typing.get_origin(option) is list:
        return f"list of {_type_name(typing.get_args(option)[0])}"
    return getattr(option, "__name__", str(option))


def _described(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _fix(value: Any, wanted: Any) -> str:
    """How to fix a value of the wrong type, where there is a clear way."""
    if isinstance(value, bool) and wanted in (int, float):
        return f" (true / false are not numbers; write {int(value)} if you mean the number {int(value)})"
    if isinstance(value, float) and not math.isfinite(value):
        return " (nan and inf are not allowed; give a finite number)"
    if isinstance(value, float) and wanted is int and value.is_integer():
        return f" (write {int(value)} without the decimal point)"
    if wanted is bool and value in (0, 1) and not isinstance(value, bool):
        return f" (write {'true' if value else 'false'})"
    if isinstance(value, str) and wanted in (int, float):
        return " (write the number without quotes)"
    return ""


def _check_values(exp: Experiment) -> None:
    def choose(key: str, value: Any, valid: tuple) -> None:
        if value not in valid:
            raise ConfigError(f"config key {key} = {value!r} is not one of {', '.join(map(str, valid))}")

    def at_least(key: str, value: int, low: int) -> None:
        if value < low:
            raise ConfigError(f"config key {key} must be >= {low}; got {value}")

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
    if exp.model.family == "gated_autoencoder":
        _check_gated(exp, choose, at_least)
    elif exp.model.family == _loopy.FAMILY:
        _loopy.check_values(exp)
    elif exp.model.family == _inn.FAMILY:
        _inn.check_values(exp)
    else:
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
            _check_loop_training(f"variants[{i}]", v)
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


DEVICE_FORMS = ("cpu", "cuda", "cuda:N", "mps", "auto")
PRECISIONS = ("bf16", "fp16")
_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps|auto")


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
        raise ConfigError(f"config key train.device = {train.device!r} is not a device{_did_you_mean(train.device, DEVICE_FORMS)}; "
                          f"use one of {', '.join(DEVICE_FORMS)} (N: the GPU's index), or leave it out for the CPU")
    if train.precision is not None and train.precision not in PRECISIONS:
        raise ConfigError(f"config key train.precision = {train.precision!r} is not one of {', '.join(PRECISIONS)}"
                          f"{_did_you_mean(train.precision, PRECISIONS)}; leave it out for the model's own dtype")
    for i, name in enumerate(train.loggers):
        if name not in LOGGERS:
            raise ConfigError(f"config key train.loggers[{i}] = {name!r} is not a logger{_did_you_mean(name, LOGGERS)}; "
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
            raise ConfigError(f"config key train.clip = {train.clip!r} is not a clip{_did_you_mean(kind, CLIP_KINDS) if kind not in CLIP_KINDS else ''}: "
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
            raise ConfigError(f"config key train.optimizer_args.{key} must be true or false; got {_described(value)}")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, bool):
            raise ConfigError(f"config key train.optimizer_args.{key} must be a number (default {default}); got "
                              f"bool {value}{_fix(value, float)}")


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


def _check_gated(exp: Experiment, choose, at_least) -> None:
    g = exp.model.gated
    choose("model.gated.architecture", g.architecture, GATED_ARCHITECTURES)
    for key in ("hidden", "bottleneck", "filters", "kernel", "stride", "timesteps"):
        at_least(f"model.gated.{key}", getattr(g, key), 1)
    _check_gate_values("model.gated.", g.feedback, g.mode, g.beta_max, g.eta, choose)
    if not g.constant_gain > 0:
        raise ConfigError(f"config key model.gated.constant_gain must be > 0 (sec 4.3 uses 10); got {g.constant_gain}")
    sigmas = exp.train.noise_sigmas
    if sigmas is not None and (not sigmas or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s >= 0 for s in sigmas)):
        raise ConfigError(f"config key train.noise_sigmas must be a non-empty list of numbers >= 0, e.g. [0, 0.5, 1, 2]; "
                          f"got {sigmas!r}")
    _check_analyses(exp.train.analyses)


def _check_analyses(analyses) -> None:
    if not isinstance(analyses, list) or any(a not in GATED_ANALYSES for a in analyses):
        raise ConfigError(f"config key train.analyses must be a list of analyses from {', '.join(GATED_ANALYSES)} "
                          f"(e.g. [\"histograms\", \"contrast\"]); got {analyses!r}")
    if len(set(analyses)) != len(analyses):
        raise ConfigError(f"config key train.analyses names an analysis twice: {analyses!r}")


def _check_gate_values(where: str, feedback, mode, beta_max, eta, choose) -> None:
    choose(f"{where}feedback", feedback, GATED_FEEDBACK)
    choose(f"{where}mode", mode, GATED_MODES)
    if isinstance(beta_max, bool) or not isinstance(beta_max, (int, float)) or not 0 < beta_max < 1:
        raise ConfigError(f"config key {where}beta_max must be a number in (0, 1) (maximum gain 1 / (1 - beta_max); "
                          f"the paper uses 0.95); got {beta_max!r}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta > 0:
        raise ConfigError(f"config key {where}eta must be a number > 0 (the paper uses 5); got {eta!r}")


def expand_variants(exp: Experiment) -> list:
    """Every variant the experiment trains, in config order: `Variant`s (family lavik) or
    `GatedVariant`s (family gated_autoencoder), `LoopyVariant`s (loopy_cnn) or `INNVariant`s (inn)."""
    if exp.model.family == "gated_autoencoder":
        return _expand_gated(exp)
    if exp.model.family == _loopy.FAMILY:
        return _loopy.expand(exp)
    if exp.model.family == _inn.FAMILY:
        return _inn.expand(exp)
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


def _expand_gated(exp: Experiment) -> list[GatedVariant]:
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
            _check_gate_values(where, feedback, mode, beta_max, eta, _choose)
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


def _choose(key: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"config key {key} = {value!r} is not one of {', '.join(map(str, valid))}")


# --- writing -------------------------------------------------------------------------------


def to_dict(exp: Experiment) -> dict:
    """Plain data for `exp`, with every default filled in (the resolved config).

    Only the model family's own keys are written: a lavik experiment's resolved config has no
    family / gated / gated-variant keys (so it reads exactly as before the gated family existed),
    a gated one has no lavik model or variant keys.
    """
    data = dataclasses.asdict(exp)
    if exp.model.family == _inn.FAMILY:
        return _drop_none(_inn.resolved(data))
    del data["model"]["inn"]  # family inn's table; its variant keys are None here, dropped below
    if exp.model.family == _loopy.FAMILY:
        return _drop_none(_loopy.resolved(data))
    del data["model"]["loopy"]  # a loopy_cnn table; its variants' `model` key is None here, dropped below
    if exp.model.family == "lavik":
        for key in ("family", "gated"):
            del data["model"][key]
        drop = GATED_VARIANT_KEYS
    else:
        for key in LAVIK_MODEL_KEYS:
            del data["model"][key]
        drop = LAVIK_VARIANT_KEYS
    data["variants"] = [{k: v for k, v in table.items() if k not in drop} for table in data["variants"]]
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
