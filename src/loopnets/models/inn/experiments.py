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
weights (INN: weight-space entries, as the thesis counts them, biases in extra, and
extra.trainable_parameters with the biases counted by model.inn.bias, "all" being the authors' count;
LSTM: every parameter, as Table 3.1), probes.original = validation loss and accuracy (ACC_end for sequences),
and `extra` with test-set results, ACC_seq, accuracy by anomaly position, the confusion matrix and
(classification) the accuracy at other iteration counts.
"""

from __future__ import annotations

import functools
import json
import math

import torch
from torch import nn

from loopnets.data.hershey import AnomalySplit, load_hershey
from loopnets.experiments.config import Experiment
from loopnets.experiments.schema import ConfigError
from loopnets.experiments.runs import own_run_files, own_run_record, sweep_passes
from loopnets.models import inn
from loopnets.models.inn.schema import INPUTS, SEQUENCE_DATA, INNVariant, data_shape, expand
from loopnets.training.fit import EVAL_BATCH_SIZE, History, TrainingDiverged
from loopnets.training.optim import make_optimizer

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
        raise ConfigError(f"config key data: {err}") from None


def data_facts(exp: Experiment) -> dict | None:
    """The floors of Hershey's anomaly task (thesis eqs 2.19, 2.20) on its validation sequences; None
    for Hershey's MNIST (a Split, whose facts the caller computes).

    ACC_end picks the anomaly's position among L: chance is 1/L, or the most frequent position's share.
    ACC_seq also counts the L interim flag steps: saying "no anomaly" at every one of them scores L - 1
    of them, plus the last step at ACC_end's chance, over L + 1 steps.
    """
    data = load_data(exp)
    if not isinstance(data, AnomalySplit):
        return None
    val, length = data.val, data.length
    n_val = int(val.index.shape[0])
    majority = float(val.index.bincount(minlength=length).max()) / n_val
    return {"task": "anomaly_detection", "n_train": int(data.train.index.shape[0]), "n_val": n_val,
            "length": length, "classes": length, "outputs": val.outputs, "chance_accuracy": 1 / length,
            "majority_accuracy": majority, "one_sample_accuracy": 1 / n_val,
            "acc_seq_floor": (length - 1 + max(1 / length, majority)) / (length + 1)}


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
        raise ConfigError(f"{where} cannot be built: {err} (check [model.inn] and the variant's keys)") from None


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
                                    iterations=variant.iterations, bias=g.bias, init=g.init, init_std=g.init_std,
                                    kernel=g.kernel)
    except ValueError as err:
        raise ConfigError(f"variant {variant.name!r} (model = {variant.model!r}) cannot be built: {err} "
                     f"(check [model.inn] and the variant's keys)") from None


def validate(exp: Experiment) -> list[INNVariant]:
    """Check everything but the data's contents and the random masks: keys, the data's shape, every
    variant's size (eq 3.1, LSTM sizing: undefinable variants are refused) and the optimizer.

    Cheap: no data is generated and no model built (a thesis-size weight space holds millions of
    entries), so every shipped config validates in well under a second.
    """
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
                raise ConfigError(f"variant {variant.name!r}: {err} (config key model.inn.block)") from None
        try:
            make_optimizer((exp.train.optimizer, _optimizer_args(exp, variant)), probe)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"config keys train.optimizer / train.optimizer_args: {err}") from None
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
        counted = model.trainable_parameters  # weights + biases by model.inn.bias ("all": the authors' count)
    else:
        trainable, structure, biases = sum(p.numel() for p in model.parameters()), {"hidden": model.lstm.hidden_size}, 0
        counted = trainable
    extra = {**(extra or {}), "trainable_weights": trainable, "biases": biases, "trainable_parameters": counted,
             "structure": structure}
    summary = {
        "experiment": exp.name, "variant": variant.name, "seed": seed, **variant.described(),
        "unroll": data.train.steps if sequences else variant.iterations,
        "status": status, "task": "classification",
        "loss": "multitask" if sequences else ("cross_entropy" if weights is not None else "per_iteration_cross_entropy"),
        "error": error, "probes": probes, **own_run_record(history, seed, started, model),
        "parameters": trainable,
        "extra": extra,
    }
    if sweep is not None:
        summary["unroll_sweep"] = sweep
    # weights only (IterativeNetwork / LSTMBaseline have no config()): load into build_model's network
    return own_run_files(experiment, variant, seed, summary, history, model if status == "finished" else None)


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

