"""Training for iterative networks (Hershey 2023): the multi-task loss, the per-iteration loss, and two
plain training loops (the LSTM baseline is in `loopnets.models.inn.lstm`, the metrics in `loopnets.models.inn.metrics`).

Every model here has the per-step readout interface of `loopnets.models.inn.IterativeNetwork`:
`model.steps(x) -> (batch, T, outputs)`, the outputs of every step, and `model(x) = steps(x)[:, -1]`.
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

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loopnets.models.inn.metrics import FLAG_UNIT, end_hits, seq_hits, split_outputs
from loopnets.training.optim import ClipSpec, OptimizerSpec, SchedulerSpec
from loopnets.training.data import batches
from loopnets.training.device import destination, device_and_dtype
from loopnets.training.distributed import Replicas
from loopnets.training.engine import EVAL_BATCH_SIZE, check_int, check_options, kept_modes
from loopnets.training.engine import train as run_training
from loopnets.training.history import EpochRecord, History

INTERIM = ("sum", "mean")


# --- losses (thesis §2.1.7, eqs 2.17 and 2.18) ------------------------------------------------


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
        outputs: (batch, T, units) logits from `model.steps(x)`; units >= T (see `sequence_outputs`).
        flags: (batch, T) or (batch, T - 1) anomaly flags in [0, 1]; a final column is ignored.
        index: (batch,) integer anomaly positions in [0, units - 1).
        flag_unit: the output unit holding the flag logit; the other units are the index logits.
        interim: "sum" or "mean" of the BCE over the interim steps.

    Returns:
        The scalar batch loss, differentiable.
    """
    index_logits, flag_logits = split_outputs(outputs, flags, index, flag_unit)
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
        outputs: (batch, T, classes) logits from `model.steps(x)`.
        labels: (batch,) integer classes.
        weights: optional (T,) weight per iteration.
    """
    if outputs.dim() != 3:
        raise ValueError(
            f"per_iteration_loss needs outputs (batch, T, classes) from model.steps(x); got {tuple(outputs.shape)}"
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


# --- evaluation at other iteration counts (Figs 3.21, 3.22) -----------------------------------


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
    check_int("batch_size", batch_size, minimum=1)
    for t in iterations:
        check_int("iterations", t, minimum=1)
    counts = [int(t) for t in iterations]
    device, dtype = device_and_dtype(model)
    x, y = _classification((x, y), "data", device, dtype)
    with kept_modes(model), torch.no_grad():
        model.eval()
        hits = torch.zeros(len(counts), dtype=torch.int64, device=device)  # correct answers per count
        for k, t in enumerate(counts):
            for first in range(0, len(x), batch_size):
                logits = model(x[first : first + batch_size], iterations=t)  # (B, classes)
                hits[k] += (logits.argmax(dim=1) == y[first : first + batch_size]).sum()
    return dict(zip(counts, (hits.double() / len(x)).tolist()))


@dataclass
class SequenceEpochRecord(EpochRecord):
    """One epoch of `fit_sequences`: EpochRecord's columns, val_accuracy being ACC_end, plus ACC_seq."""

    val_acc_seq: float | None  # None without val data


@dataclass
class SequenceHistory(History):
    """A `loopnets.History` of SequenceEpochRecords: `history["val_accuracy"]` is val ACC_end,
    `history["val_acc_seq"]` val ACC_seq. Code that reads History (the runner, reports) reads it unchanged."""

    COLUMNS: ClassVar[tuple[str, ...]] = tuple(f.name for f in fields(SequenceEpochRecord))
    RECORD: ClassVar[type] = SequenceEpochRecord


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
    device: str | torch.device | None = None,
    precision: str | None = None,
    callbacks: list | None = None,
    scheduler: SchedulerSpec = None,
    clip: ClipSpec = None,
) -> SequenceHistory:
    """Train a per-step model on anomaly-detection sequences with the multi-task loss (thesis §2.1.7, §3.3).

    Adam at 1e-3 by default (Table 3.1; the thesis does not give the batch size). The loop is
    `ln.fit`'s (`loopnets.training.engine.train`) with `SequenceTask`: per minibatch
    `model.steps(x)`, `multitask_loss`, backward, one optimizer step, COUPLE re-tie. Each epoch
    visits every sequence once in a fresh random order (a generator seeded with `seed`). The
    epoch's train loss is the mean over sequences of the batch losses as trained, read once per
    epoch. Then validation: loss, ACC_end and ACC_seq over the whole val set in eval() mode.

    Divergence is checked when the epoch's train loss is read (as in `ln.fit`): the steps after a
    non-finite batch loss have been taken when TrainingDiverged is raised, so the weights are nan
    unless early_stopping restores the best.

    Args:
        model: has `steps(x) -> (batch, T, units)` with units >= T (see `sequence_outputs`).
        train: (x, flags, index): x (n, T, *features) float, flags (n, T) or (n, T - 1) in [0, 1],
            index (n,) integer positions in [0, T - 1). Moved to the model's device and dtype.
            Or a Dataset / an iterable of such triples as batches (see `ln.fit`).
        val: optional validation data, same forms.
        optimizer: as in `ln.fit` (a name, (name, kwargs) or a callable params -> optimizer).
        epochs: passes over `train`. batch_size: sequences per optimizer step.
        seed: seeds torch's global RNG and the shuffling. Initialise the model's weights yourself.
        interim: "sum" or "mean" of the interim BCE terms (see `multitask_loss`).
        flag_unit: output unit of the flag logit.
        early_stopping: stop after this many epochs without a new best (lowest) val loss; needs val.
        restore_best: with early_stopping, load the best epoch's weights before returning or raising.
        progress: a tqdm bar over epochs; False prints nothing.
        device, precision, callbacks, scheduler, clip: as in `ln.fit`.

    Returns:
        A SequenceHistory (val_accuracy = ACC_end, val_acc_seq = ACC_seq).

    Raises:
        TrainingDiverged: the epoch's train loss or the val loss is nan / inf; `.history` holds the
            finished epochs.
        ValueError: malformed data or options.
    """
    check_options(epochs, batch_size, early_stopping, val, seed)
    if interim not in INTERIM:
        raise ValueError(f"interim must be one of {INTERIM}; got {interim!r}")
    task = SequenceTask(flag_unit, interim)
    return _fit(model, task, train, val, SequenceHistory(), "fit_sequences", _sequences, 3, "(x, flags, index)",
                optimizer=optimizer, epochs=epochs, batch_size=batch_size, seed=seed, early_stopping=early_stopping,
                restore_best=restore_best, progress=progress, device=device, precision=precision,
                callbacks=callbacks, scheduler=scheduler, clip=clip)


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
    device: str | torch.device | None = None,
    precision: str | None = None,
    callbacks: list | None = None,
    scheduler: SchedulerSpec = None,
    clip: ClipSpec = None,
) -> History:
    """Train a static-input classifier with a cross-entropy loss at every iteration (thesis Fig 3.22).

    The same loop as `fit_sequences` with `per_iteration_loss` on `model.steps(x, iterations=...)`.
    With a loss at every iteration a trained network settles on a fixed point that holds at other
    iteration counts (§3.4.4; check with `accuracy_by_iterations`). For a loss on the last
    iteration only, `ln.fit(model, ...)` is the plain route.

    Args:
        model: has `steps(x, iterations=T) -> (batch, T, classes)` logits.
        train: (x, y): x (n, inputs) float, y (n,) integer classes. val: optional, same layout.
        iterations: T passed to `model.steps`; None uses the model's own default (and passes no keyword).
        weights: (T,) per-iteration loss weights; None is the mean over iterations (see `per_iteration_loss`).
        optimizer, epochs, batch_size, seed, early_stopping, restore_best, progress, device, precision,
            callbacks, scheduler, clip: as in `fit_sequences`.

    Returns:
        A loopnets.History: train / val loss (the per-iteration loss), val_accuracy of the last iteration.

    Raises:
        TrainingDiverged: the epoch's train loss or the val loss is nan / inf (checked once per epoch).
        ValueError: malformed data or options.
    """
    check_options(epochs, batch_size, early_stopping, val, seed)
    if iterations is not None:
        check_int("iterations", iterations, minimum=1)
    task = IterationTask({} if iterations is None else {"iterations": int(iterations)}, weights)
    return _fit(model, task, train, val, History(), "fit_iterations", _classification, 2, "(x, y)",
                optimizer=optimizer, epochs=epochs, batch_size=batch_size, seed=seed, early_stopping=early_stopping,
                restore_best=restore_best, progress=progress, device=device, precision=precision,
                callbacks=callbacks, scheduler=scheduler, clip=clip)


class SequenceTask:
    """fit_sequences' task: `multitask_loss` on `model.steps(x)`; val loss, ACC_end and ACC_seq."""

    loss_name = "multi-task"

    def __init__(self, flag_unit: int, interim: str):
        self.flag_unit, self.interim = flag_unit, interim

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, int]:
        x, flags, index = batch  # (B, T, *features), (B, T or T-1), (B,)
        value = multitask_loss(model.steps(x), flags, index, flag_unit=self.flag_unit, interim=self.interim)
        return value, value.detach().double() * len(index), len(index)  # the batch mean, weighted by its size

    @staticmethod
    def finish(mean: Tensor) -> Tensor:
        return mean

    def evaluate(self, model: nn.Module, batches) -> dict:
        return _evaluate_sequences(model, batches, self.flag_unit, self.interim)


class IterationTask:
    """fit_iterations' task: `per_iteration_loss` on `model.steps(x, **kwargs)`; val accuracy of the last iteration."""

    loss_name = "per-iteration cross_entropy"

    def __init__(self, kwargs: dict, weights: Tensor | Sequence[float] | None):
        self.kwargs, self.weights = kwargs, weights

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, int]:
        x, y = batch  # (B, inputs), (B,)
        value = per_iteration_loss(model.steps(x, **self.kwargs), y, self.weights)
        return value, value.detach().double() * len(y), len(y)

    @staticmethod
    def finish(mean: Tensor) -> Tensor:
        return mean

    def evaluate(self, model: nn.Module, batches) -> dict:
        loss_sum = hits = None
        n = 0
        for xb, yb in batches:
            outputs = model.steps(xb, **self.kwargs)  # (B, T, classes)
            batch_loss = per_iteration_loss(outputs, yb, self.weights).double() * len(yb)
            batch_hits = (outputs[:, -1].argmax(dim=1) == yb).sum()
            loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
            hits = batch_hits if hits is None else hits + batch_hits
            n += len(yb)
        loss, accuracy = (torch.stack([loss_sum, hits.double()]) / n).tolist()
        return {"loss": loss, "accuracy": accuracy}


def _fit(model: nn.Module, task: Any, train: Any, val: Any, history: History, desc: str, check, arity: int,
         what: str, *, optimizer, epochs, batch_size, seed, early_stopping, restore_best, progress,
         device=None, precision=None, callbacks=None, scheduler=None, clip=None) -> History:
    """Check and place the data, then run the one training loop (`loopnets.training.engine.train`)."""
    device, dtype = destination(model, device, precision)
    generator = torch.Generator().manual_seed(int(seed))  # CPU generator: the same order on every device
    replicas = Replicas.join(device)  # None in one process; under torchrun, the data-parallel group
    data = batches(train, "train", lambda part: check(part, "train", device, dtype), arity=arity, what=what,
                   batch_size=int(batch_size), shuffle=True, generator=generator, replicas=replicas)
    val = batches(val, "val", lambda part: check(part, "val", device, dtype), arity=arity, what=what) \
        if val is not None else None
    model.to(device)  # once, in place, after the data passed their checks
    return run_training(model, task, data, val, history=history, optimizer=optimizer, epochs=int(epochs),
                        seed=int(seed), early_stopping=early_stopping, restore_best=restore_best, progress=progress,
                        desc=desc, callbacks=callbacks, scheduler=scheduler, clip=clip, precision=precision,
                        replicas=replicas)


# --- private helpers --------------------------------------------------------------------------


def _evaluate_sequences(model: nn.Module, batches, flag_unit: int, interim: str) -> dict:
    """{"loss", "accuracy" (ACC_end), "acc_seq"} over the batches; the caller sets eval() mode and no_grad."""
    loss_sum = end = seq = None
    n = steps = 0
    for xb, fb, ib in batches:
        outputs = model.steps(xb)  # (B, T, units)
        parts = (multitask_loss(outputs, fb, ib, flag_unit=flag_unit, interim=interim).double() * len(ib),
                 end_hits(outputs, ib, flag_unit), seq_hits(outputs, fb, ib, flag_unit))
        loss_sum, end, seq = parts if loss_sum is None else (loss_sum + parts[0], end + parts[1], seq + parts[2])
        n += len(ib)
        steps = outputs.shape[1]
    loss, acc_e, acc_s = torch.stack([loss_sum / n, end.double() / n, seq.double() / (n * steps)]).tolist()
    return {"loss": loss, "accuracy": acc_e, "acc_seq": acc_s}


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
