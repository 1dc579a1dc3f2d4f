"""Training pieces for iterative networks (Hershey 2023): the LSTM baseline, the multi-task loss,
the thesis's metrics, and two plain training loops.

Every model here has the per-step readout interface of `loopnets.inn.IterativeNetwork`:
`model.passes(x) -> (batch, T, outputs)`, the outputs of every step, and `model(x) = passes(x)[:, -1]`.
`x` is (batch, L, inputs) for a sequence (one step per element) or (batch, inputs) for a static
input that is re-inserted every iteration (then `iterations=T` picks the number of steps).

Anomaly-detection sequences (thesis §2.3.2, §2.1.7). A sequence of `length` images is followed by
one blank query step, so the model runs T = length + 1 steps. Targets are `flags` (n, T) or
(n, T - 1), 1 where that image is the anomaly (a final column, the blank's, is ignored), and
`index` (n,), the anomaly's position in [0, length). The model's output units are

    units 0 .. length-1 : index logits, read at the last (query) step
    unit  length (last) : the anomaly-flag logit, read at every interim step

so a task needs `sequence_outputs(length) = length + 1` units: 10 for length 9, which is the
"2500 x 10" of the thesis's Table 3.1 (which does not say which unit carries the flag).

All outputs are treated as logits (binary_cross_entropy_with_logits, cross_entropy): the stable
forms. The thesis puts a ReLU on the outputs (eq 2.13, 2.15, and the activation on the output rows
of eq 2.10); a ReLU in front of a flag logit would keep the flag probability >= 0.5, so an
iterative network trained here must read its output region before the activation.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from loopnets.loop import tie_
from loopnets.optim import OptimizerSpec, make_optimizer
from loopnets.train import EVAL_BATCH_SIZE, EpochRecord, History, TrainingDiverged

FLAG_UNIT = -1  # the output unit holding the anomaly-flag logit: the last one (see the module docstring)
INTERIM = ("sum", "mean")


# --- the LSTM baseline (thesis §2.1.6, Table 3.1) ---------------------------------------------


def lstm_parameters(hidden: int, inputs: int = 2500, outputs: int = 10) -> int:
    """Trainable parameters of `torch.nn.LSTM(inputs, hidden, proj_size=outputs)`.

    4 gates x (hidden x inputs + hidden x outputs + 2 biases of hidden) + the projection
    outputs x hidden = hidden * (4 inputs + 5 outputs + 8). LSTMBaseline() has 130 * 10,058 = 1,307,540.
    """
    return hidden * (4 * inputs + 5 * outputs + 8)


def lstm_hidden_for(trainable: int, inputs: int = 2500, outputs: int = 10) -> int:
    """The largest LSTMBaseline hidden size whose parameter count is <= `trainable`.

    The thesis sizes its LSTMs "to approximate the number of trainable weights" of the iterative
    networks (§2.1.6). PyTorch needs hidden > proj_size = outputs, so the smallest LSTM with 2500
    inputs and 10 outputs (hidden 11) has 110,638 parameters: at the thesis's 50,000 and 10,000
    weights it "could no longer be defined" (§3.4.2), and here it cannot at 100,000 either.

    Raises:
        ValueError: no hidden size > outputs fits in `trainable` (the message gives the minimum).
    """
    for name, value in (("trainable", trainable), ("inputs", inputs), ("outputs", outputs)):
        _check_int(name, value, minimum=1)
    per_unit = lstm_parameters(1, inputs, outputs)
    hidden = int(trainable) // per_unit
    if hidden <= outputs:
        smallest = lstm_parameters(outputs + 1, inputs, outputs)
        raise ValueError(
            f"no LSTM with {inputs} inputs and {outputs} outputs fits in {int(trainable):,} trainable parameters: "
            f"its projection needs hidden > {outputs}, and the smallest (hidden={outputs + 1}) has {smallest:,} "
            f"({per_unit:,} per hidden unit). Give it at least {smallest:,} parameters"
        )
    return hidden


class LSTMBaseline(nn.Module):
    """The thesis's LSTM baseline: `torch.nn.LSTM(inputs, hidden, proj_size=outputs)`, read every step.

    The outputs are the projected hidden states h_t (linear projection, no activation), used as
    logits. LSTMBaseline() has exactly 1,307,540 parameters, Table 3.1's count ("input dimension of
    2500, a hidden dimension of 130 and an output dimension of 10"); an LSTM(2500, 130) with a
    separate Linear(130, 10) head would have 1,369,950.

    Args:
        inputs: features per step (2500: MNIST resized to 50 x 50).
        hidden: LSTM cell size; must exceed `outputs` (PyTorch's rule for proj_size).
        outputs: projected output units (`sequence_outputs(length)` for an anomaly task).
    """

    def __init__(self, inputs: int = 2500, hidden: int = 130, outputs: int = 10):
        super().__init__()
        for name, value in (("inputs", inputs), ("hidden", hidden), ("outputs", outputs)):
            _check_int(name, value, minimum=1)
        if hidden <= outputs:
            raise ValueError(
                f"LSTMBaseline needs hidden > outputs (PyTorch's proj_size rule); got hidden={hidden}, "
                f"outputs={outputs}: use hidden={outputs + 1} or more"
            )
        self.lstm = nn.LSTM(inputs, hidden, proj_size=outputs, batch_first=True)

    def passes(self, x: Tensor, iterations: int | None = None) -> Tensor:
        """The output of every step, (batch, T, outputs).

        Args:
            x: (batch, L, inputs), one step per element (T = L), or (batch, inputs), fed
                `iterations` times (default 1).
            iterations: steps for a static input; not allowed with a sequence.
        """
        if x.dim() == 2:
            if iterations is not None:
                _check_int("iterations", iterations, minimum=1)
            x = x.unsqueeze(1).expand(-1, iterations or 1, -1)  # (batch, T, inputs)
        elif x.dim() != 3:
            raise ValueError(
                f"LSTMBaseline takes (batch, L, inputs) sequences or (batch, inputs) static inputs; got {tuple(x.shape)}"
            )
        elif iterations is not None:
            raise ValueError(
                f"a sequence of shape {tuple(x.shape)} runs one step per element; drop iterations={iterations!r}"
            )
        with warnings.catch_warnings():
            # On CPU, PyTorch says once that oneDNN has no projection kernel and uses its own: same results.
            warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
            out, _ = self.lstm(x)  # (batch, T, outputs)
        return out

    def forward(self, x: Tensor, iterations: int | None = None) -> Tensor:
        """The last step's output, (batch, outputs)."""
        return self.passes(x, iterations)[:, -1]


# --- losses (thesis §2.1.7, eqs 2.17 and 2.18) ------------------------------------------------


def sequence_outputs(length: int) -> int:
    """Output units an anomaly task of `length` images needs: `length` index logits + 1 flag logit."""
    _check_int("length", length, minimum=1)
    return length + 1


def multitask_loss(
    outputs: Tensor, flags: Tensor, index: Tensor, *, flag_unit: int = FLAG_UNIT, interim: str = "sum"
) -> Tensor:
    """Hershey's multi-task loss: BCE on the anomaly flag at each interim step + CE on the index at the end.

    Per sequence: sum (or mean) over the interim steps t < T-1 of
    BCE(sigmoid(outputs[t, flag_unit]), flags[t]) = -[y log p + (1 - y) log(1 - p)] (eq 2.18 with its
    sign typo fixed), plus CE(softmax(index logits at step T-1), index) (eq 2.17), with equal weights
    ("the resulting losses are then summed"). The batch loss is the mean over sequences.

    `interim="sum"` (default) is the literal reading: each interim step's BCE is one of the losses
    that are summed, so with 9 images the flag task weighs 9 terms against one CE. `interim="mean"`
    averages the BCE over the steps first, which is what PyTorch's default `BCELoss()` over a
    (batch, steps) tensor would have given; it weighs the two tasks equally. The thesis shows no code.

    Args:
        outputs: (batch, T, units) logits from `model.passes(x)`; units >= T (see `sequence_outputs`).
        flags: (batch, T) or (batch, T - 1) anomaly flags in [0, 1]; a final column is ignored.
        index: (batch,) integer anomaly positions in [0, units - 1).
        flag_unit: the output unit holding the flag logit; the other units are the index logits.
        interim: "sum" or "mean" of the BCE over the interim steps.

    Returns:
        The scalar batch loss, differentiable.
    """
    index_logits, flag_logits = _split(outputs, flags, index, flag_unit)
    if interim not in INTERIM:
        raise ValueError(f"interim must be one of {INTERIM}; got {interim!r}")
    steps = outputs.shape[1]
    bce = F.binary_cross_entropy_with_logits(
        flag_logits[:, :-1], flags[:, : steps - 1].to(outputs.dtype), reduction="none"
    )  # (batch, T - 1)
    bce = bce.sum(dim=1) if interim == "sum" else bce.mean(dim=1)
    ce = F.cross_entropy(index_logits[:, -1], index.long(), reduction="none")  # (batch,)
    return (bce + ce).mean()


def per_iteration_loss(outputs: Tensor, labels: Tensor, weights: Tensor | Sequence[float] | None = None) -> Tensor:
    """Cross-entropy at every iteration of a static-input classifier (Fig 3.22's "loss captured across each iteration").

    Loss = sum_t w_t * CE(outputs[:, t], labels), each CE the mean over the batch. Default weights
    are 1/T (the mean over iterations: the same scale as a last-iteration-only loss, whatever T);
    the thesis gives no weights, so `weights=torch.ones(T)` is the plain sum, and a one-hot weight
    on the last iteration is ordinary training of `model(x)`.

    Args:
        outputs: (batch, T, classes) logits from `model.passes(x)`.
        labels: (batch,) integer classes.
        weights: optional (T,) weight per iteration.
    """
    if outputs.dim() != 3:
        raise ValueError(
            f"per_iteration_loss needs outputs (batch, T, classes) from model.passes(x); got {tuple(outputs.shape)}"
        )
    if labels.shape != outputs.shape[:1] or labels.is_floating_point():
        raise ValueError(
            f"per_iteration_loss needs integer labels, shape ({outputs.shape[0]},); got {labels.dtype} {tuple(labels.shape)}"
        )
    steps = outputs.shape[1]
    ce = F.cross_entropy(
        outputs.transpose(1, 2), labels.long()[:, None].expand(-1, steps), reduction="none"
    ).mean(dim=0)  # (T,): the batch mean at each iteration
    if weights is None:
        return ce.mean()
    weights = torch.as_tensor(weights, dtype=outputs.dtype, device=outputs.device)
    if weights.shape != (steps,):
        raise ValueError(f"weights must have one value per iteration, shape ({steps},); got {tuple(weights.shape)}")
    return (weights * ce).sum()


# --- metrics (thesis §2.2, eqs 2.19 and 2.20; Figs 3.8, 3.11, 3.22) ---------------------------


def predict_index(outputs: Tensor, flag_unit: int = FLAG_UNIT) -> Tensor:
    """The predicted anomaly position of each sequence, (batch,): argmax of the index logits at the last step."""
    if outputs.dim() != 3 or outputs.shape[2] < 2:
        raise ValueError(f"outputs must be (batch, T, units) with units >= 2; got {tuple(outputs.shape)}")
    return _index_logits(outputs[:, -1], _unit(flag_unit, outputs.shape[2])).argmax(dim=1)


def acc_end(outputs: Tensor, index: Tensor, flag_unit: int = FLAG_UNIT) -> float:
    """ACC_end (eq 2.19): the fraction of sequences whose last-step index prediction equals `index`.

    The thesis's primary metric ("validation end sequence accuracy").
    """
    if index.shape != outputs.shape[:1] or index.is_floating_point():
        raise ValueError(
            f"index must hold integer positions, shape ({outputs.shape[0]},); got {index.dtype} {tuple(index.shape)}"
        )
    return (_end_hits(outputs, index, flag_unit) / len(index)).item()


def acc_seq(outputs: Tensor, flags: Tensor, index: Tensor, flag_unit: int = FLAG_UNIT) -> float:
    """ACC_seq (eq 2.20): accuracy over all T steps of all N sequences, hits / (N T).

    A hit at interim step t < T-1: the flag logit's sign (> 0, i.e. p > 0.5) equals flags[t] (> 0.5);
    a hit at the last step: the index prediction equals `index` (the thesis compares each step with
    its own ground truth; the per-step targets are the binary flags, §2.2).
    """
    _split(outputs, flags, index, flag_unit)
    hits = _seq_hits(outputs, flags, index, flag_unit)
    return (hits / outputs.shape[0] / outputs.shape[1]).item()


def confusion_matrix(pred: Tensor, true: Tensor, classes: int) -> Tensor:
    """Counts (classes, classes), int64: row = true class, column = predicted (sklearn's layout, Figs 3.8, 3.11)."""
    pred, true = _class_pair(pred, true, classes)
    return torch.bincount(true * classes + pred, minlength=classes * classes).reshape(classes, classes)


def accuracy_by_position(pred: Tensor, true: Tensor, classes: int) -> Tensor:
    """Accuracy per true anomaly position, (classes,) float64; nan where a position never occurs.

    The recency-bias analysis of Figs 3.8 / 3.11: an LSTM does better on late anomalies, the
    INN about equally well at every position. Same as the confusion matrix's diagonal / row sums.
    """
    counts = confusion_matrix(pred, true, classes).double()
    return counts.diagonal() / counts.sum(dim=1)  # 0 / 0 = nan for positions with no samples


def accuracy_by_iterations(
    model: nn.Module, x: Tensor, y: Tensor, iterations: Sequence[int], *, batch_size: int = EVAL_BATCH_SIZE
) -> dict[int, float]:
    """Accuracy of a static-input classifier run for each number of iterations (Figs 3.21, 3.22).

    Calls `model(x, iterations=T)` for every T (so any model with that keyword works), in eval()
    mode without gradients (modes restored afterwards). A model trained with a loss at every
    iteration stays at a fixed point: about the same accuracy beyond the trained T (§3.4.4).

    Args:
        model: maps (batch, inputs) and `iterations=T` to (batch, classes) logits.
        x: (n, inputs) inputs; y: (n,) integer classes.
        iterations: the iteration counts to evaluate, e.g. range(1, 11).
        batch_size: samples per forward call (memory only).

    Returns:
        {T: accuracy} in the order given.
    """
    _check_int("batch_size", batch_size, minimum=1)
    counts = [int(_check_int("iterations", t, minimum=1)) for t in iterations]
    device, dtype = _device_and_dtype(model)
    x, y = _classification((x, y), "data", device, dtype)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        hits = torch.zeros(len(counts), dtype=torch.int64, device=device)  # correct answers per count
        with torch.no_grad():
            for k, t in enumerate(counts):
                for first in range(0, len(x), batch_size):
                    logits = model(x[first : first + batch_size], iterations=t)  # (B, classes)
                    hits[k] += (logits.argmax(dim=1) == y[first : first + batch_size]).sum()
    finally:
        for module, training in modes.items():
            module.train(training)
    return dict(zip(counts, (hits.double() / len(x)).tolist()))


# --- training ---------------------------------------------------------------------------------


@dataclass
class SequenceEpochRecord(EpochRecord):
    """One epoch of `fit_sequences`: EpochRecord's columns, val_accuracy being ACC_end, plus ACC_seq."""

    val_acc_seq: float | None  # None without val data


@dataclass
class SequenceHistory(History):
    """A `loopnets.History` of SequenceEpochRecords: `history["val_accuracy"]` is val ACC_end,
    `history["val_acc_seq"]` val ACC_seq. Code that reads History (the runner, reports) reads it unchanged."""

    COLUMNS: ClassVar[tuple[str, ...]] = tuple(f.name for f in fields(SequenceEpochRecord))

    @classmethod
    def from_dict(cls, data: dict) -> SequenceHistory:
        return cls(
            records=[SequenceEpochRecord(**record) for record in data["records"]],
            stopped_early=data["stopped_early"],
            best_epoch=data["best_epoch"],
            diverged=data["diverged"],
        )


def fit_sequences(
    model: nn.Module,
    train: tuple,
    val: tuple | None = None,
    *,
    optimizer: OptimizerSpec = ("adam", {"lr": 1e-3}),
    epochs: int = 100,
    batch_size: int = 16,
    seed: int = 0,
    interim: str = "sum",
    flag_unit: int = FLAG_UNIT,
    early_stopping: int | None = None,
    restore_best: bool = True,
    progress: bool = True,
) -> SequenceHistory:
    """Train a per-step model on anomaly-detection sequences with the multi-task loss (thesis §2.1.7, §3.3).

    Adam at 1e-3 by default (Table 3.1; the thesis does not give the batch size). Each epoch visits
    every sequence once in a fresh random order (a generator seeded with `seed`); per minibatch:
    `model.passes(x)`, `multitask_loss`, backward, one optimizer step. The epoch's train loss is
    the mean over sequences of the batch losses as trained, accumulated on the device and read
    once per epoch, so no batch waits for the host. Then validation: loss, ACC_end and ACC_seq
    over the whole val set in eval() mode. Module modes are restored at the end.

    Divergence is checked when the epoch's train loss is read, not per batch (`ln.fit` checks each
    batch, a host sync per step): the steps after a non-finite batch loss have been taken when
    TrainingDiverged is raised, so the weights are nan unless early_stopping restores the best.

    Args:
        model: has `passes(x) -> (batch, T, units)` with units >= T (see `sequence_outputs`).
        train: (x, flags, index): x (n, T, *features) float, flags (n, T) or (n, T - 1) in [0, 1],
            index (n,) integer positions in [0, T - 1). Moved to the model's device and dtype.
        val: optional validation triple, same layout.
        optimizer: as in `ln.fit` (a name, (name, kwargs) or a callable params -> optimizer).
        epochs: passes over `train`. batch_size: sequences per optimizer step.
        seed: seeds torch's global RNG and the shuffling. Initialise the model's weights yourself.
        interim: "sum" or "mean" of the interim BCE terms (see `multitask_loss`).
        flag_unit: output unit of the flag logit.
        early_stopping: stop after this many epochs without a new best (lowest) val loss; needs val.
        restore_best: with early_stopping, load the best epoch's weights before returning or raising.
        progress: a tqdm bar over epochs; False prints nothing.

    Returns:
        A SequenceHistory (val_accuracy = ACC_end, val_acc_seq = ACC_seq).

    Raises:
        TrainingDiverged: the epoch's train loss or the val loss is nan / inf; `.history` holds the
            finished epochs.
        ValueError: malformed data or options.
    """
    _check_options(epochs, batch_size, seed, early_stopping, val)
    if interim not in INTERIM:
        raise ValueError(f"interim must be one of {INTERIM}; got {interim!r}")
    device, dtype = _device_and_dtype(model)
    x, flags, index = _sequences(train, "train", device, dtype)  # (n, T, *features), (n, T or T-1), (n,)
    val = _sequences(val, "val", device, dtype) if val is not None else None

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)  # CPU generator: the same order on every device
    opt = make_optimizer(optimizer, model.parameters())
    history = SequenceHistory()
    modes = {module: module.training for module in model.modules()}
    best_loss, best_state = math.inf, None
    bar = tqdm(range(1, epochs + 1), desc="fit_sequences", unit="epoch", disable=not progress)
    try:
        for epoch in bar:
            model.train()
            start = time.perf_counter()
            order = torch.randperm(len(x), generator=generator).to(device)
            total = torch.zeros((), dtype=torch.float64, device=device)
            for first in range(0, len(x), batch_size):
                batch = order[first : first + batch_size]  # (B,)
                outputs = model.passes(x[batch])  # (B, T, units)
                loss = multitask_loss(outputs, flags[batch], index[batch], flag_unit=flag_unit, interim=interim)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tie_(model)  # re-ties COUPLE copies if the model has any; a no-op otherwise
                total += loss.detach().double() * len(batch)
            train_loss = (total / len(x)).item()  # the epoch's one wait for the device
            train_seconds = time.perf_counter() - start
            _check_finite("train", train_loss, epoch, history)

            val_loss = val_end = val_seq = None
            val_seconds = 0.0
            if val is not None:
                model.eval()
                start = time.perf_counter()
                val_loss, val_end, val_seq = _evaluate_sequences(model, *val, flag_unit, interim)
                val_seconds = time.perf_counter() - start
                _check_finite("validation", val_loss, epoch, history)

            history.records.append(
                SequenceEpochRecord(epoch, train_loss, val_loss, val_end, train_seconds, val_seconds, val_seq)
            )
            bar.set_postfix(_postfix(train_loss, val_loss, val_end), refresh=False)
            if val_loss is not None and val_loss < best_loss:
                best_loss, history.best_epoch = val_loss, epoch
                if early_stopping is not None and restore_best:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if early_stopping is not None and epoch - history.best_epoch >= early_stopping:
                history.stopped_early = True
                break
    finally:
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        for module, training in modes.items():
            module.train(training)
    return history


def fit_iterations(
    model: nn.Module,
    train: tuple,
    val: tuple | None = None,
    *,
    iterations: int | None = None,
    weights: Tensor | Sequence[float] | None = None,
    optimizer: OptimizerSpec = ("adam", {"lr": 1e-3}),
    epochs: int = 100,
    batch_size: int = 16,
    seed: int = 0,
    early_stopping: int | None = None,
    restore_best: bool = True,
    progress: bool = True,
) -> History:
    """Train a static-input classifier with a cross-entropy loss at every iteration (thesis Fig 3.22).

    The same loop as `fit_sequences` with `per_iteration_loss` on `model.passes(x, iterations=...)`.
    With a loss at every iteration a trained network settles on a fixed point that holds at other
    iteration counts (§3.4.4; check with `accuracy_by_iterations`). For a loss on the last
    iteration only, `ln.fit(model, ...)` is the plain route.

    Args:
        model: has `passes(x, iterations=T) -> (batch, T, classes)` logits.
        train: (x, y): x (n, inputs) float, y (n,) integer classes. val: optional, same layout.
        iterations: T passed to `model.passes`; None uses the model's own default (and passes no keyword).
        weights: (T,) per-iteration loss weights; None is the mean over iterations (see `per_iteration_loss`).
        optimizer, epochs, batch_size, seed, early_stopping, restore_best, progress: as in `fit_sequences`.

    Returns:
        A loopnets.History: train / val loss (the per-iteration loss), val_accuracy of the last iteration.

    Raises:
        TrainingDiverged: the epoch's train loss or the val loss is nan / inf (checked once per epoch).
        ValueError: malformed data or options.
    """
    _check_options(epochs, batch_size, seed, early_stopping, val)
    kwargs = {} if iterations is None else {"iterations": int(_check_int("iterations", iterations, minimum=1))}
    device, dtype = _device_and_dtype(model)
    x, y = _classification(train, "train", device, dtype)  # (n, inputs), (n,)
    val = _classification(val, "val", device, dtype) if val is not None else None

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    opt = make_optimizer(optimizer, model.parameters())
    history = History()
    modes = {module: module.training for module in model.modules()}
    best_loss, best_state = math.inf, None
    bar = tqdm(range(1, epochs + 1), desc="fit_iterations", unit="epoch", disable=not progress)
    try:
        for epoch in bar:
            model.train()
            start = time.perf_counter()
            order = torch.randperm(len(x), generator=generator).to(device)
            total = torch.zeros((), dtype=torch.float64, device=device)
            for first in range(0, len(x), batch_size):
                batch = order[first : first + batch_size]  # (B,)
                loss = per_iteration_loss(model.passes(x[batch], **kwargs), y[batch], weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tie_(model)
                total += loss.detach().double() * len(batch)
            train_loss = (total / len(x)).item()
            train_seconds = time.perf_counter() - start
            _check_finite("train", train_loss, epoch, history)

            val_loss = val_accuracy = None
            val_seconds = 0.0
            if val is not None:
                model.eval()
                start = time.perf_counter()
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                hits = torch.zeros((), dtype=torch.int64, device=device)
                with torch.no_grad():
                    for first in range(0, len(val[0]), EVAL_BATCH_SIZE):
                        xb, yb = (part[first : first + EVAL_BATCH_SIZE] for part in val)
                        outputs = model.passes(xb, **kwargs)  # (B, T, classes)
                        loss_sum += per_iteration_loss(outputs, yb, weights).double() * len(yb)
                        hits += (outputs[:, -1].argmax(dim=1) == yb).sum()
                val_loss, val_accuracy = (torch.stack([loss_sum, hits.double()]) / len(val[0])).tolist()
                val_seconds = time.perf_counter() - start
                _check_finite("validation", val_loss, epoch, history)

            history.records.append(EpochRecord(epoch, train_loss, val_loss, val_accuracy, train_seconds, val_seconds))
            bar.set_postfix(_postfix(train_loss, val_loss, val_accuracy), refresh=False)
            if val_loss is not None and val_loss < best_loss:
                best_loss, history.best_epoch = val_loss, epoch
                if early_stopping is not None and restore_best:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if early_stopping is not None and epoch - history.best_epoch >= early_stopping:
                history.stopped_early = True
                break
    finally:
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        for module, training in modes.items():
            module.train(training)
    return history


# --- private helpers --------------------------------------------------------------------------


def _unit(flag_unit: int, units: int) -> int:
    """`flag_unit` as a non-negative unit number, checked against the output width."""
    if isinstance(flag_unit, bool) or not isinstance(flag_unit, numbers.Integral) or not -units <= flag_unit < units:
        raise ValueError(f"flag_unit must be an output unit in [{-units}, {units - 1}]; got {flag_unit!r}")
    return int(flag_unit) % units


def _index_logits(outputs: Tensor, unit: int) -> Tensor:
    """Every unit but the flag unit, (..., units - 1)."""
    return torch.cat([outputs[..., :unit], outputs[..., unit + 1 :]], dim=-1)


def _split(outputs: Tensor, flags: Tensor, index: Tensor, flag_unit: int) -> tuple[Tensor, Tensor]:
    """Check the shapes (no host sync) and return (index logits (B, T, units-1), flag logits (B, T))."""
    if outputs.dim() != 3:
        raise ValueError(
            f"the multi-task loss needs outputs (batch, steps, units) from model.passes(x); got {tuple(outputs.shape)}"
        )
    batch, steps, units = outputs.shape
    if steps < 2:
        raise ValueError(f"an anomaly sequence needs at least 2 steps (images, then the query step); got {steps}")
    if units < steps:
        raise ValueError(
            f"a sequence of {steps} steps ({steps - 1} images and the query step) needs {steps} output units "
            f"({steps - 1} index logits + 1 flag logit, sequence_outputs({steps - 1})); the model gives {units}"
        )
    if flags.shape not in ((batch, steps), (batch, steps - 1)):
        raise ValueError(
            f"flags must have shape ({batch}, {steps}) or ({batch}, {steps - 1}), one per image; got {tuple(flags.shape)}"
        )
    if index.shape != (batch,) or index.is_floating_point():
        raise ValueError(f"index must hold integer positions, shape ({batch},); got {index.dtype} {tuple(index.shape)}")
    unit = _unit(flag_unit, units)
    return _index_logits(outputs, unit), outputs[..., unit]


def _end_hits(outputs: Tensor, index: Tensor, flag_unit: int) -> Tensor:
    return (predict_index(outputs, flag_unit) == index).sum()


def _seq_hits(outputs: Tensor, flags: Tensor, index: Tensor, flag_unit: int) -> Tensor:
    """Correct steps: interim flag signs against the flags, plus the final index predictions."""
    steps = outputs.shape[1]
    flag_logits = outputs[:, :-1, _unit(flag_unit, outputs.shape[2])]  # (B, T - 1)
    interim_hits = ((flag_logits > 0) == (flags[:, : steps - 1] > 0.5)).sum()
    return interim_hits + _end_hits(outputs, index, flag_unit)


def _evaluate_sequences(
    model: nn.Module, x: Tensor, flags: Tensor, index: Tensor, flag_unit: int, interim: str
) -> tuple[float, float, float]:
    """(loss, ACC_end, ACC_seq) over the whole set; the caller sets eval() mode."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    end = torch.zeros((), dtype=torch.int64, device=x.device)
    seq = torch.zeros((), dtype=torch.int64, device=x.device)
    steps = 0
    with torch.no_grad():
        for first in range(0, len(x), EVAL_BATCH_SIZE):
            xb, fb, ib = (part[first : first + EVAL_BATCH_SIZE] for part in (x, flags, index))
            outputs = model.passes(xb)  # (B, T, units)
            loss_sum += multitask_loss(outputs, fb, ib, flag_unit=flag_unit, interim=interim).double() * len(ib)
            end += _end_hits(outputs, ib, flag_unit)
            seq += _seq_hits(outputs, fb, ib, flag_unit)
            steps = outputs.shape[1]
    n = len(x)
    loss, acc_e, acc_s = torch.stack([loss_sum / n, end.double() / n, seq.double() / (n * steps)]).tolist()
    return loss, acc_e, acc_s


def _class_pair(pred: Tensor, true: Tensor, classes: int) -> tuple[Tensor, Tensor]:
    _check_int("classes", classes, minimum=1)
    pred, true = torch.as_tensor(pred), torch.as_tensor(true)
    if pred.shape != true.shape or pred.dim() != 1 or pred.is_floating_point() or true.is_floating_point():
        raise ValueError(
            f"pred and true must be integer class vectors of the same shape (n,); got {pred.dtype} "
            f"{tuple(pred.shape)} and {true.dtype} {tuple(true.shape)}"
        )
    for name, value in (("pred", pred), ("true", true)):
        if value.numel() and bool((value.min() < 0) | (value.max() >= classes)):
            raise ValueError(
                f"{name} holds classes in [{int(value.min())}, {int(value.max())}] but classes={classes} allows [0, {classes - 1}]"
            )
    return pred.long(), true.long()


def _as_tensor(value, name: str, part: str) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} {part} must be a torch.Tensor or numpy.ndarray; got {type(value).__name__}")
    return value


def _sequences(data, name: str, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Check an (x, flags, index) triple (the only host syncs are here, once) and move it to the model."""
    if not isinstance(data, (tuple, list)) or len(data) != 3:
        raise ValueError(f"{name} must be a triple (x, flags, index) of tensors; got {type(data).__name__}")
    x, flags, index = (_as_tensor(value, name, part) for value, part in zip(data, ("x", "flags", "index")))
    if x.dim() < 3 or not x.is_floating_point():
        raise ValueError(f"{name} x must be float sequences (n, steps, *features); got {x.dtype} {tuple(x.shape)}")
    n, steps = x.shape[:2]
    if steps < 2:
        raise ValueError(f"{name} x has {steps} step; an anomaly sequence needs its images and the final query step")
    if flags.shape not in ((n, steps), (n, steps - 1)):
        raise ValueError(f"{name} flags must have shape ({n}, {steps}) or ({n}, {steps - 1}); got {tuple(flags.shape)}")
    if index.shape != (n,) or index.is_floating_point():
        raise ValueError(f"{name} index must hold integer positions, shape ({n},); got {index.dtype} {tuple(index.shape)}")
    if n == 0:
        raise ValueError(f"{name} is empty; it needs at least one sequence")
    if bool((index.min() < 0) | (index.max() >= steps - 1)):
        raise ValueError(
            f"{name} index must name one of the {steps - 1} images, positions [0, {steps - 2}] "
            f"(step {steps - 1} is the query step); got [{int(index.min())}, {int(index.max())}]"
        )
    if bool(((flags < 0) | (flags > 1)).any()):
        raise ValueError(f"{name} flags must lie in [0, 1] (1 = this image is the anomaly)")
    return x.to(device, dtype), flags.to(device, dtype), index.to(device).long()


def _classification(data, name: str, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{name} must be a pair (x, y) of tensors; got {type(data).__name__}")
    x, y = (_as_tensor(value, name, part) for value, part in zip(data, ("x", "y")))
    if x.dim() < 2 or not x.is_floating_point():
        raise ValueError(f"{name} x must be float inputs (n, inputs); got {x.dtype} {tuple(x.shape)}")
    if y.shape != x.shape[:1] or y.is_floating_point():
        raise ValueError(f"{name} y must hold integer classes, shape ({len(x)},); got {y.dtype} {tuple(y.shape)}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty; it needs at least one sample")
    if bool(y.min() < 0):
        raise ValueError(f"{name} y holds negative classes (min {int(y.min())}); classes start at 0")
    return x.to(device, dtype), y.to(device).long()


def _check_options(epochs, batch_size, seed, early_stopping, val) -> None:
    _check_int("epochs", epochs, minimum=0)
    _check_int("batch_size", batch_size, minimum=1)
    _check_int("seed", seed, minimum=None)
    if early_stopping is not None:
        _check_int("early_stopping", early_stopping, minimum=1)
        if val is None:
            raise ValueError(f"early_stopping={early_stopping} watches the validation loss: pass val, or early_stopping=None")


def _check_finite(which: str, loss: float, epoch: int, history: History) -> None:
    if not math.isfinite(loss):
        history.diverged = True
        raise TrainingDiverged(
            f"training diverged in epoch {epoch}: the {which} loss is {loss}. Try a lower learning rate "
            "(e.g. optimizer=('adam', {'lr': 1e-4})) and check the data for nan / inf; "
            f"the {len(history)} finished epochs are in the exception's .history",
            history,
        )


def _check_int(name: str, value, minimum: int | None):
    """ValueError unless `value` is an int (not a bool) >= minimum; returns it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be an integer{bound}; got {value!r}")
    return value


def _device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (CPU / default dtype without any)."""
    for p in model.parameters():
        return p.device, (p.dtype if p.is_floating_point() else torch.get_default_dtype())
    return torch.device("cpu"), torch.get_default_dtype()


def _postfix(train_loss: float, val_loss: float | None, val_accuracy: float | None) -> dict:
    postfix = {"train_loss": f"{train_loss:.4g}"}
    if val_loss is not None:
        postfix.update(val_loss=f"{val_loss:.4g}", val_acc=f"{val_accuracy:.3f}")
    return postfix
