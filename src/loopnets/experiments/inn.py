"""The inn family in the runner: Hershey's iterative neural networks (`loopnets.models.inn`) and the LSTM baseline.

    data.name = "hershey_random"       # hershey_mnist | hershey_uniform | hershey_random
    data.options = {length = 9, sequences = [400, 100, 100]}
    [model]
    family = "inn"
    [model.inn]                        # INNConfig: every default in one place
    structure = "random"               # layered | random | budget
    density = 0.5
    [[variants]]
    model = "inn"
    density = [0.2, 0.05]              # lists expand (product): inn-r0.2, inn-r0.05
    [[variants]]
    model = "lstm"                     # -> lstm

Tasks follow the data set (loaded with `loopnets.data.load_hershey`, layout "dense", 2,500 inputs):
- "hershey_mnist" (Fig 2.12 classification, default transform "both"): static input re-inserted
  every iteration, `fit_iterations`, cross-entropy on the last iteration (`classification_loss =
  "last"`, ordinary training; the thesis does not say how E1 was trained) or the mean over every
  iteration (`"every"`, Fig 3.22's "loss captured across each iteration"). 10 outputs.
- "hershey_uniform" / "hershey_random" (anomaly sequences of `length` images + a blank query step):
  `fit_sequences` with the multi-task loss; T = length + 1 steps, length + 1 outputs.
Output rows are linear (logits): a ReLU output could never give a flag probability below 0.5.

Structures (the weight space is depth x (2500 + depth), depth = hidden units + outputs):
- "layered": `layered_mask(2500, hidden + [outputs])`, Fig 2.4's MLP blocks; with p > 0 its
  100 x 100 blocks exchange trainability with probability p (`block_exchange`, E1).
- "random": depth = sum(hidden) + outputs, each weight trainable with probability density (E2, E3).
- "budget": depth from eq 3.1 for `trainable` weights at `density` (`weight_space`), then a random
  mask (E4 - E6). An undefinable weight space ("could no longer be defined") is a config error.
Masks are drawn from the run's seed, so each seed is another random structure.

The LSTM (`LSTMBaseline`, torch.nn.LSTM with proj_size = outputs) is sized by `lstm_hidden`, or,
unset, "to approximate the number of trainable weights" (§2.1.6): the largest hidden size whose
parameter count is at most the variant's `trainable` (set) or the expected trainable count of the
INN that [model.inn] describes. Too small a budget is a config error ("could no longer be defined").

summary.json (docs/contract-runs.md): method "inn" | "lstm", unroll = steps T, task
"classification" (the anomaly index is a classification of the position), parameters = trainable
weights (INN: weight-space entries, as the thesis counts them, biases in extra; LSTM: every
parameter, as Table 3.1), probes.original = validation loss and accuracy (ACC_end for sequences),
and `extra` with test-set results, ACC_seq, accuracy by anomaly position, the confusion matrix and
(classification) the accuracy at other iteration counts.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from loopnets.models import inn
from loopnets.experiments.provenance import environment
from loopnets.data.hershey import HERSHEY_DATASETS, SIZE, load_hershey
from loopnets.models.inn.network import ACTIVATIONS, INITS, KERNELS
from loopnets.training.fit import EVAL_BATCH_SIZE, History, TrainingDiverged

if TYPE_CHECKING:  # config.py imports this module: no import of it at run time here
    from loopnets.experiments.config import Experiment

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
    activation, bias, init, kernel: as `IterativeNetwork` (ReLU, a bias per row, nn.Linear's init
        per row's trainable fan-in, "auto" kernel).
    """

    structure: str = "random"
    hidden: list = field(default_factory=lambda: [500, 200, 100])
    density: float = 0.5
    trainable: int = 100_000
    p: float = 0.0
    block: int = 100
    iterations: int = 4
    classification_loss: str = "last"
    interim: str = "sum"
    eval_iterations: list = field(default_factory=list)
    lstm_hidden: int = 0
    activation: str = "relu"
    bias: bool = True
    init: str = "linear"
    kernel: str = "auto"


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


# ----------------------------------------------------------------------------- config checks


def _config():
    from loopnets.experiments import (
        config,  # imported here: config.py imports this module
    )

    return config


def _error(message: str) -> Exception:
    return _config().ConfigError(message)


def check_family_keys(family: str, raw: dict) -> None:
    """Refuse this family's keys in the other families, and theirs in this one (raw tables: keys actually set)."""
    c = _config()
    model, train, variants = c.raw_sections(raw)
    tables = [(i, t) for i, t in enumerate(variants) if isinstance(t, dict)]
    if family != FAMILY:
        if "inn" in model:
            raise _error(f"config key model.inn applies only to model.family = {FAMILY!r}; "
                         f"this experiment's family is {family!r}")
        for i, table in tables:
            for key in INN_VARIANT_KEYS:
                if key != "model" and key in table:  # `model` is loopy_cnn's too: its own check decides
                    raise _error(f"config key variants[{i}].{key} applies only to model.family = {FAMILY!r}; "
                                 f"this experiment's family is {family!r}")
        return
    owners = {**dict.fromkeys(c.LAVIK_MODEL_KEYS, "lavik"), "gated": "gated_autoencoder", "loopy": "loopy_cnn"}
    for key in model:
        if key in owners:
            hint = f"; set model.inn.{key} instead" if key == "init" else ""
            raise _error(f"config key model.{key} applies only to model.family = {owners[key]!r}; "
                         f"this experiment's family is {FAMILY!r}{hint}")
    for key in ("noise_sigmas", "analyses"):
        if train.get(key):
            raise _error(f"config key train.{key} does not apply to model.family = {FAMILY!r}")
    valid = (*INN_VARIANT_KEYS, "name")
    for i, table in tables:
        for key in table:
            if key not in valid:
                raise _error(f"config key variants[{i}].{key} does not apply to model.family = {FAMILY!r}; "
                             f"variant keys for family {FAMILY!r}: {', '.join(valid)}")
    if "variants" not in raw:
        raise _error(f"model.family = {FAMILY!r} needs its own [[variants]] (the default variants are lavik "
                     f"methods), e.g. [[variants]] model = \"inn\", density = [0.2, 0.05]")


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


def check_values(exp: Experiment) -> None:
    """Check [model.inn], the data and the loss of an inn experiment (variants: `expand`); loads nothing."""
    g = exp.model.inn
    _choose("model.inn.structure", g.structure, STRUCTURES)
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
    _choose("model.inn.classification_loss", g.classification_loss, CLASSIFICATION_LOSSES)
    _choose("model.inn.interim", g.interim, inn.tasks.INTERIM)
    if not isinstance(g.eval_iterations, list):
        raise _error(f"config key model.inn.eval_iterations must be a list of iteration counts; got {g.eval_iterations!r}")
    for i, t in enumerate(g.eval_iterations):
        _positive_int(f"model.inn.eval_iterations[{i}]", t)
    _positive_int("model.inn.lstm_hidden", g.lstm_hidden, low=0)
    _choose("model.inn.activation", g.activation, ACTIVATIONS)
    _choose("model.inn.init", g.init, INITS)
    _choose("model.inn.kernel", g.kernel, KERNELS)
    if exp.train.loss not in ("auto",):
        raise _error(f"config key train.loss = {exp.train.loss!r}: family {FAMILY!r} trains with the thesis's losses "
                     f"(cross-entropy, or the multi-task loss for anomaly sequences, model.inn.interim); use \"auto\"")
    data_shape(exp)


def data_shape(exp: Experiment) -> tuple[int, int]:
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


def expand(exp: Experiment) -> list[INNVariant]:
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


def resolved(data: dict) -> dict:
    """`dataclasses.asdict(experiment)` of an inn experiment with only this family's keys."""
    c = _config()
    for key in (*c.LAVIK_MODEL_KEYS, "gated", "loopy"):
        data["model"].pop(key, None)
    keep = (*INN_VARIANT_KEYS, "name")
    data["variants"] = [{k: v for k, v in table.items() if k in keep} for table in data["variants"]]
    return data


# ----------------------------------------------------------------------------- data and models


@functools.lru_cache(maxsize=2)
def _load(name: str, seed: int, options: str):
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(options).items()}
    return load_hershey(name, seed=seed, **kwargs)


def load_data(exp: Experiment):
    """The experiment's HersheySplit or AnomalySplit (cached per process: every run of a sweep shares it)."""
    data_shape(exp)
    try:
        return _load(exp.data.name, exp.data.split_seed, json.dumps(exp.data.options, sort_keys=True))
    except (ValueError, TypeError) as err:
        raise _error(f"config key data: {err}") from None


def expected_trainable(exp: Experiment, variant: INNVariant, outputs: int) -> int:
    """The INN's expected trainable weights (the LSTM is sized to it): exact for layered without
    exchange (block exchange keeps it "largely unchanged"), R x the weight space for random masks."""
    g = exp.model.inn
    if variant.trainable is not None:
        return variant.trainable
    sizes = [*g.hidden, outputs]
    if g.structure == "layered":
        return sum(a * b for a, b in zip([INPUTS, *sizes], sizes))
    depth = sum(sizes)
    return round(variant.density * depth * (INPUTS + depth))


def sizes(exp: Experiment, variant: INNVariant, outputs: int) -> int:
    """The variant's weight-space depth (INN) or hidden size (LSTM), without building anything.

    Raises ConfigError for an undefinable variant: eq 3.1 leaves no hidden unit, or no LSTM fits the budget.
    """
    g = exp.model.inn
    where = f"variant {variant.name!r} (model = {variant.model!r})"
    try:
        if variant.model == "lstm":
            if g.lstm_hidden and variant.trainable is None:
                if g.lstm_hidden <= outputs:
                    raise ValueError(f"model.inn.lstm_hidden = {g.lstm_hidden} must exceed the {outputs} outputs "
                                     f"(PyTorch's proj_size rule)")
                return g.lstm_hidden
            return inn.lstm_hidden_for(expected_trainable(exp, variant, outputs), INPUTS, outputs)
        if g.structure == "budget":
            return inn.weight_space(variant.trainable, variant.density, INPUTS, outputs)[1]
        return sum(g.hidden) + outputs
    except ValueError as err:
        raise _error(f"{where} cannot be built: {err} (check [model.inn] and the variant's keys)") from None


def build_model(exp: Experiment, variant: INNVariant, outputs: int, seed: int) -> nn.Module:
    """The variant's IterativeNetwork (mask drawn from `seed`) or LSTMBaseline; errors name the config key."""
    g = exp.model.inn
    size = sizes(exp, variant, outputs)
    try:
        if variant.model == "lstm":
            return inn.LSTMBaseline(INPUTS, size, outputs)
        generator = torch.Generator().manual_seed(seed)
        if g.structure == "layered":
            mask = inn.layered_mask(INPUTS, [*g.hidden, outputs])
            if variant.p > 0:
                mask = inn.block_exchange(mask, variant.p, block=g.block, seed=generator)
        else:
            mask = inn.random_mask(INPUTS, size, variant.density, seed=generator)
        return inn.IterativeNetwork(INPUTS, mask.shape[0], outputs, mask, g.activation, output_activation="linear",
                                    iterations=variant.iterations, bias=g.bias, init=g.init, kernel=g.kernel)
    except ValueError as err:
        raise _error(f"variant {variant.name!r} (model = {variant.model!r}) cannot be built: {err} "
                     f"(check [model.inn] and the variant's keys)") from None


def validate(exp: Experiment) -> list[INNVariant]:
    """Check everything but the data's contents and the random masks: keys, the data's shape, every
    variant's size (eq 3.1, LSTM sizing: undefinable variants are refused) and the optimizer.

    Cheap: no data is generated and no model built (a thesis-size weight space holds millions of
    entries), so every shipped config validates in well under a second.
    """
    from loopnets.training.optim import make_optimizer

    variants = expand(exp)
    outputs, _ = data_shape(exp)
    probe = [nn.Parameter(torch.zeros(1))]  # the optimizer's arguments are checked on a stand-in parameter
    g = exp.model.inn
    for variant in variants:
        sizes(exp, variant, outputs)
        if variant.model == "inn" and variant.p > 0:  # the blocks must tile the layered mask (a bool matrix: cheap)
            try:
                inn.block_exchange(inn.layered_mask(INPUTS, [*g.hidden, outputs]), variant.p, block=g.block, seed=0)
            except ValueError as err:
                raise _error(f"variant {variant.name!r}: {err} (config key model.inn.block)") from None
        try:
            make_optimizer((exp.train.optimizer, _optimizer_args(exp, variant)), probe)
        except (ValueError, TypeError) as err:
            raise _error(f"config keys train.optimizer / train.optimizer_args: {err}") from None
    return variants


def _optimizer_args(exp: Experiment, variant: INNVariant) -> dict:
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in exp.train.optimizer_args.items()}
    if variant.lr is not None:
        args["lr"] = variant.lr
    return args


# ----------------------------------------------------------------------------- one run


def train_run(exp: Experiment, variant: INNVariant, seed: int, experiment: dict, started: float,
              engine: dict | None = None) -> dict[str, bytes]:
    """Train one (variant, seed) of an inn experiment; return its run folder's files (runner contract).
    `engine`: the trainers' device / precision / scheduler / clip / callbacks from `[train]` (the runner's)."""
    from loopnets.checkpoint import save
    from loopnets.experiments.config import dumps
    from loopnets.experiments.runner import (  # the run-folder format lives in the runner
        mean_ms,
        metrics_csv,
        sweep_passes,
    )

    g = exp.model.inn
    data = load_data(exp)
    sequences = exp.data.name in SEQUENCE_DATA
    outputs = data.outputs if sequences else len(data.classes)
    torch.manual_seed(seed)
    model = build_model(exp, variant, outputs, seed)
    options = dict(optimizer=(exp.train.optimizer, _optimizer_args(exp, variant)), epochs=exp.train.epochs,
                   batch_size=exp.train.batch_size, seed=seed, early_stopping=exp.train.early_stopping, progress=False,
                   **(engine or {}))
    weights = None
    if not sequences and g.classification_loss == "last":
        weights = torch.zeros(variant.iterations)
        weights[-1] = 1.0  # CE on the last iteration only: ordinary training of model(x)
    status, error = "finished", None
    try:
        if sequences:
            history = inn.fit_sequences(model, data.train.tensors, data.val.tensors, interim=g.interim, **options)
        else:
            history = inn.fit_iterations(model, data.train, data.val, iterations=variant.iterations, weights=weights,
                                         **options)
    except TrainingDiverged as err:
        history = err.history or History()
        status, error = "diverged", str(err)
    probes = extra = sweep = None
    if status == "finished":
        if sequences:
            val = _sequence_results(model, data.val, g.interim)
            extra = {"task": "anomaly_detection", "val": val, "test": _sequence_results(model, data.test, g.interim),
                     "val_acc_seq_per_epoch": history["val_acc_seq"]}
        else:
            val = _classification_results(model, data.val, variant.iterations, weights)
            counts = g.eval_iterations or list(range(1, 2 * variant.iterations + 1))
            by_t = {split: inn.accuracy_by_iterations(model, *part, counts)
                    for split, part in (("val", data.val), ("test", data.test))}
            extra = {"task": "classification", "val": val,
                     "test": _classification_results(model, data.test, variant.iterations, weights),
                     "accuracy_by_iterations": {"iterations": counts, "val": [by_t["val"][t] for t in counts],
                                                "test": [by_t["test"][t] for t in counts]}}
            passes = sweep_passes(exp, variant.iterations)
            if passes:  # the runner's unroll sweep (accuracy only): model(x, iterations=t) on the validation split
                more = [t for t in passes if t not in by_t["val"]]
                by_pass = {**by_t["val"], **(inn.accuracy_by_iterations(model, *data.val, more) if more else {})}
                sweep = {"passes": passes, "loss": None, "accuracy": [by_pass[t] for t in passes],
                         "training_unroll": variant.iterations}
        probes = {"original": {"loss": val["loss"], "accuracy": val["accuracy"]}, "skip_off": None, "feedback_off": None}
    if variant.model == "inn":
        trainable, structure = model.trainable_weights, {"depth": model.depth, "width": model.inputs + model.depth,
                                                         "density": model.density, "kernel": model.kernel_on(torch.device("cpu"))}
        biases = 0 if model.bias is None else model.bias.numel()
    else:
        trainable, structure, biases = sum(p.numel() for p in model.parameters()), {"hidden": model.lstm.hidden_size}, 0
    extra = {**(extra or {}), "trainable_weights": trainable, "biases": biases, "structure": structure}
    summary = {
        "experiment": exp.name, "variant": variant.name, "seed": seed, **variant.described(),
        "unroll": data.train.steps if sequences else variant.iterations,
        "status": status, "task": "classification",
        "loss": "multitask" if sequences else ("cross_entropy" if weights is not None else "per_iteration_cross_entropy"),
        "epochs_run": len(history), "best_epoch": history.best_epoch, "stopped_early": history.stopped_early,
        "error": error, "probes": probes,
        "timing": {"train_ms_per_epoch": mean_ms(history["train_seconds"]),
                   "val_ms_per_epoch": mean_ms(history["val_seconds"]),
                   "wall_seconds": time.perf_counter() - started},
        "training": {"path": "single", "seeds_together": [seed]},
        "environment": environment(started, model),
        "parameters": trainable,
        "extra": extra,
    }
    if sweep is not None:
        summary["unroll_sweep"] = sweep
    run_config = {**experiment, "train": {**experiment["train"], "seeds": [seed]}, "variants": [variant.table()]}
    files = {"config.toml": dumps(run_config).encode(), "metrics.csv": metrics_csv(history).encode(),
             "summary.json": json.dumps(summary, indent=2).encode()}
    if status == "finished":
        with tempfile.TemporaryDirectory() as tmp:
            # weights only (IterativeNetwork / LSTMBaseline have no config()): load into build_model's network
            save(model, Path(tmp) / "model.lnet", architecture=False)
            files["model.lnet"] = (Path(tmp) / "model.lnet").read_bytes()
    return files


@torch.no_grad()
def _passes(model: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    model.eval()
    return torch.cat([model.steps(x[i:i + EVAL_BATCH_SIZE], **kwargs) for i in range(0, len(x), EVAL_BATCH_SIZE)])


def _sequence_results(model: nn.Module, part, interim: str) -> dict:
    """loss, accuracy (= ACC_end), ACC_seq, per-position accuracy and the confusion matrix (rows true) of one part."""
    x, flags, index = part.tensors
    outputs = _passes(model, x)  # (n, T, L + 1)
    pred = inn.predict_index(outputs)
    length = part.length
    by_position = inn.accuracy_by_position(pred, index, length)
    return {"loss": float(inn.multitask_loss(outputs, flags, index, interim=interim)),
            "accuracy": inn.acc_end(outputs, index), "acc_seq": inn.acc_seq(outputs, flags, index),
            "accuracy_by_position": [None if math.isnan(a) else a for a in by_position.tolist()],
            "confusion_matrix": inn.confusion_matrix(pred, index, length).tolist()}


def _classification_results(model: nn.Module, part: tuple, iterations: int, weights) -> dict:
    """loss (as trained) and last-iteration accuracy of one (x, y) part, and the accuracy at every iteration."""
    x, y = part
    outputs = _passes(model, x, iterations=iterations)  # (n, T, 10)
    per_step = (outputs.argmax(dim=2) == y[:, None]).double().mean(dim=0)  # (T,)
    return {"loss": float(inn.per_iteration_loss(outputs, y, weights)), "accuracy": float(per_step[-1]),
            "accuracy_per_iteration": per_step.tolist()}
