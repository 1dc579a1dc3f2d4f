"""The inn family's config schema: `[model.inn]`, its variants' keys, their expansion, the data's shape.

Hershey's iterative neural networks and the LSTM baseline (`loopnets.models.inn`); how they train
and what a run records: `loopnets.models.inn.experiments`.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from loopnets.data.hershey import HERSHEY_DATASETS, SIZE
from loopnets.experiments.schema import ConfigError
from loopnets.models.inn.network import ACTIVATIONS, INITS, KERNELS
from loopnets.models.inn.options import BIASES, checked_init_std
from loopnets.models.inn.tasks import INTERIM

FAMILY = "inn"
MODELS = ("inn", "lstm")
STRUCTURES = ("layered", "random", "budget")
CLASSIFICATION_LOSSES = ("last", "every")
SEQUENCE_DATA = ("hershey_uniform", "hershey_random")
DATA = ("hershey_mnist", *SEQUENCE_DATA)
INN_VARIANT_KEYS = ("model", "density", "p", "trainable", "iterations", "lr")  # with name
INPUTS = SIZE * SIZE  # 2,500: MNIST resized to 50 x 50, layout "dense"


@dataclass(frozen=True)
class INNConfig:
    """`[model.inn]`: Hershey's iterative networks (`loopnets.models.inn`), family "inn". Variants may override
    density, p, trainable, iterations (and train.optimizer_args.lr as `lr`).

    structure: "layered" | "random" | "budget" (see the module docstring).
    hidden: hidden units per layer of the base MLP, 2500 -> 500 -> 200 -> 100 -> outputs (E1); the
        weight space of "layered" and "random" has depth sum(hidden) + outputs (810 for 10 outputs).
    density: R, the probability that a weight is trainable ("random", "budget"). 0.5: E2's Table 3.1
        average of 1,343,631 weights over the 810 x 3310 weight space implies R ~ 0.50.
    trainable: W_train for "budget" (eq 3.1).
    p: block-exchange probability for "layered" (E1: 0.2, 0.5); block: the block side (100).
    iterations: T for static input (hershey_mnist); 4 = the layered MLP's layers. Sequences run
        length + 1 steps.
    classification_loss: "last" (CE on the last iteration) or "every" (mean CE over iterations).
    interim: "sum" | "mean" of the per-step flag BCE in the multi-task loss (`multitask_loss`).
    eval_iterations: iteration counts at which a trained classifier is tested (Figs 3.21, 3.22);
        empty: 1 .. 2 T.
    lstm_hidden: the LSTM's hidden size; 0: sized to the INN's trainable weights (see above).
    activation, bias, init, init_std, kernel: as `IterativeNetwork` (ReLU; a bias per state row,
        true = "state", "all" = also count the input rows' biases as the authors' code does, false =
        "none"; nn.Linear's init per row's trainable fan-in, "linear", or the authors' "normal",
        N(0, init_std^2) with init_std 0.05 unless set; the "auto" kernel). configs/hershey use the
        authors' settings (init "normal").
    """

    structure: Literal[STRUCTURES] = "random"
    hidden: list = field(default_factory=lambda: [500, 200, 100])
    density: float = 0.5
    trainable: int = 100_000
    p: float = 0.0
    block: int = 100
    iterations: int = 4
    classification_loss: Literal[CLASSIFICATION_LOSSES] = "last"
    interim: Literal[INTERIM] = "sum"
    eval_iterations: list = field(default_factory=list)
    lstm_hidden: int = 0
    activation: Literal[ACTIVATIONS] = "relu"
    bias: Union[bool, Literal[BIASES]] = True
    init: Literal[INITS] = "linear"
    init_std: Optional[float] = None
    kernel: Literal[KERNELS] = "auto"


@dataclass(frozen=True)
class INNVariant:
    """One expanded variant of the inn family, every setting resolved."""

    name: str
    model: str  # inn | lstm
    structure: str
    density: float
    p: float
    trainable: int | None  # budget (and lstm sizing) only
    iterations: int
    lr: float | None  # None: train.optimizer_args.lr
    overrides: tuple = ()  # the variant keys set in [[variants]]

    has_skip = False
    has_loop = True

    @property
    def method(self) -> str:  # summary.json's method
        return self.model

    @property
    def unroll(self) -> int:
        return self.iterations

    def described(self) -> dict:
        """What summary.json records about this variant (feedback "none": no feedback_off probe)."""
        out = {"method": self.model, "unroll": self.iterations, "skip": False, "family": FAMILY, "model": self.model,
               "feedback": "none", "lr": self.lr}
        if self.model == "inn":
            out.update(structure=self.structure, density=self.density, p=self.p, trainable=self.trainable)
        else:
            out.update(trainable=self.trainable)
        return out

    def table(self) -> dict:
        """This variant as one [[variants]] table that expands to exactly it."""
        out = {"name": self.name, "model": self.model}
        for key in self.overrides:
            if key not in out:
                out[key] = getattr(self, key)
        return out



@dataclass(frozen=True)
class INNVariantConfig:
    """One `[[variants]]` table of the inn family; lists expand (product)."""

    model: Union[str, list[str], None] = None  # inn | lstm (unset: inn)
    density: Union[float, list[float], None] = None  # R
    p: Union[float, list[float], None] = None  # block-exchange probability (structure layered)
    trainable: Union[int, list[int], None] = None  # W_train (structure budget; sizes the LSTM)
    iterations: Union[int, list[int], None] = None  # T for static input (hershey_mnist)
    lr: Union[float, list[float], None] = None  # overrides train.optimizer_args.lr
    name: Union[str, None] = None


# ----------------------------------------------------------------------------- config checks


def _error(message: str) -> Exception:
    return ConfigError(message)


def _choose(key: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise _error(f"config key {key} = {value!r} is not one of {', '.join(map(str, valid))}")


def _positive_int(key: str, value: Any, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _error(f"config key {key} must be an integer >= {low}; got {value!r}")


def _density(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise _error(f"config key {key} must be a number in (0, 1] (R, the trainable fraction); got {value!r}")


def _probability(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise _error(f"config key {key} must be a probability in [0, 1]; got {value!r}")


def _lr(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _error(f"config key {key} must be a learning rate > 0, e.g. 1e-3; got {value!r}")


def check_values(exp: Any) -> None:
    """Check [model.inn], the data and the loss of an inn experiment (variants: `expand`); loads nothing."""
    g = exp.model.inn
    if not isinstance(g.hidden, list) or not g.hidden:
        raise _error(f"config key model.inn.hidden must be a non-empty list of layer widths, e.g. [500, 200, 100]; "
                     f"got {g.hidden!r}")
    for i, h in enumerate(g.hidden):
        _positive_int(f"model.inn.hidden[{i}]", h)
    _density("model.inn.density", g.density)
    _positive_int("model.inn.trainable", g.trainable)
    _probability("model.inn.p", g.p)
    _positive_int("model.inn.block", g.block)
    _positive_int("model.inn.iterations", g.iterations)
    if not isinstance(g.eval_iterations, list):
        raise _error(f"config key model.inn.eval_iterations must be a list of iteration counts; got {g.eval_iterations!r}")
    for i, t in enumerate(g.eval_iterations):
        _positive_int(f"model.inn.eval_iterations[{i}]", t)
    _positive_int("model.inn.lstm_hidden", g.lstm_hidden, low=0)
    try:
        checked_init_std(g.init, g.init_std)
    except ValueError as err:
        raise _error(f"config key model.inn.init_std: {err}") from None
    if exp.train.clip is not None and exp.train.clip[0] == "output":
        raise _error("config key train.clip = [\"output\", ...] clamps dLoss/dOutput, which the inn family's "
                     "sequence / iteration losses do not expose; use [\"value\", c] or [\"norm\", c]")
    if exp.train.loss not in ("auto",):
        raise _error(f"config key train.loss = {exp.train.loss!r}: family {FAMILY!r} trains with the thesis's losses "
                     f"(cross-entropy, or the multi-task loss for anomaly sequences, model.inn.interim); use \"auto\"")
    data_shape(exp)


def data_shape(exp: Any) -> tuple[int, int]:
    """(outputs, steps or 0) of the experiment's data from its name and options, without building it."""
    name, options = exp.data.name, dict(exp.data.options)
    _choose("data.name", name, DATA)
    valid = [p for p in inspect.signature(HERSHEY_DATASETS[name]).parameters if p not in ("seed", "dtype")]
    for key in options:
        if key not in valid:
            raise _error(f"config key data.options.{key}: data set {name!r} has no option {key!r}; "
                         f"its options: {', '.join(valid)}")
    if options.get("layout", "dense") != "dense":
        raise _error(f"config key data.options.layout = {options['layout']!r}: iterative networks take flat "
                     f"inputs; use \"dense\" (the default)")
    sizes = options.get("sizes", [2000, 200, 200])
    if (not isinstance(sizes, list) or len(sizes) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 10
                                                               for s in sizes) or sum(sizes) > 5000):
        raise _error(f"config key data.options.sizes must be three image counts [train, val, test], each >= 10, "
                     f"at most 5,000 in all; got {sizes!r}")
    if name == "hershey_mnist":
        return 10, 0
    sequences = options.get("sequences", [2000, 200, 200])
    if (not isinstance(sequences, list) or len(sequences) != 3
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sequences)):
        raise _error(f"config key data.options.sequences must be three sequence counts [train, val, test], each >= 1; "
                     f"got {sequences!r}")
    length = options.get("length", 9)
    _positive_int("data.options.length", length, low=3)
    if name == "hershey_random" and min(sizes) // 10 < length:
        raise _error(f"config key data.options.sizes = {sizes}: random sequences of length {length} need {length} "
                     f"images of each digit in every part, i.e. every size >= {10 * length}")
    return length + 1, length + 1


def expand(exp: Any) -> list[INNVariant]:
    """Every variant, in config order; lists in model, density, p, trainable, iterations, lr expand (product).

    Names: "inn" or "lstm", then a suffix per key set in the variant: -r<density>, -p<p>,
    -w<trainable>, -t<iterations>, -lr<lr> (e.g. inn-r0.2, lstm-w100000), or the variant's `name`.
    """
    g = exp.model.inn
    _, steps = data_shape(exp)
    out = []
    for i, v in enumerate(exp.variants):
        where = f"variants[{i}]."
        set_keys = tuple(k for k in INN_VARIANT_KEYS[1:] if getattr(v, k) is not None)
        models = v.model if isinstance(v.model, list) else ["inn" if v.model is None else v.model]
        axes = {"model": models}
        for key in INN_VARIANT_KEYS[1:]:
            value = getattr(v, key)
            default = None if key == "lr" else getattr(g, key)
            axes[key] = value if isinstance(value, list) else [default if value is None else value]
            if not axes[key]:
                raise _error(f"config key {where}{key} is an empty list; give at least one value")
        for model in models:
            _choose(f"{where}model", model, MODELS)
            bad = [k for k in ("density", "p") if k in set_keys]
            if model == "lstm" and bad:
                raise _error(f"config key {where}{bad[0]} does not apply to model = 'lstm'; put the LSTM in its own "
                             f"[[variants]] table (it may set trainable, lr and, on hershey_mnist, iterations)")
        if steps and "iterations" in set_keys:
            raise _error(f"config key {where}iterations applies to hershey_mnist only: a sequence runs one step per "
                         f"element ({steps} steps: {steps - 1} images and the query)")
        combos = list(itertools.product(*axes.values()))
        if v.name is not None and len(combos) > 1:
            raise _error(f"variants[{i}].name = {v.name!r} names one variant, but its lists expand to several")
        for model, density, p, trainable, iterations, lr in combos:
            _density(f"{where}density", density)
            _probability(f"{where}p", p)
            _positive_int(f"{where}trainable", trainable)
            _positive_int(f"{where}iterations", iterations)
            if lr is not None:
                _lr(f"{where}lr", lr)
            if model == "inn" and p > 0 and g.structure != "layered":
                raise _error(f"config key {where}p = {p} exchanges the blocks of the layered structure; "
                             f"model.inn.structure is {g.structure!r}: set it to \"layered\" or drop p")
            if model == "inn" and "trainable" in set_keys and g.structure != "budget":
                raise _error(f"config key {where}trainable sizes the weight space by eq 3.1 for structure "
                             f"\"budget\"; model.inn.structure is {g.structure!r}")
            keys = set_keys if model == "inn" else tuple(k for k in set_keys if k in ("trainable", "lr", "iterations"))
            name = v.name or model + "".join(f"-{_SHORT[k]}{_num(value)}" for k, value in (
                ("density", density), ("p", p), ("trainable", trainable), ("iterations", iterations), ("lr", lr))
                if k in keys)
            budget = trainable if (g.structure == "budget" or "trainable" in set_keys) else None
            out.append(INNVariant(name, model, g.structure, float(density), float(p), budget,
                                  steps or int(iterations), None if lr is None else float(lr), keys))
    return out


_SHORT = {"density": "r", "p": "p", "trainable": "w", "iterations": "t", "lr": "lr"}


def _num(value: float) -> str:
    return f"{value:g}"

