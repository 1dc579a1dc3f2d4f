"""The training loop, written once: `train(model, task, data, val, ...)`.

Seed, build the optimizer, loop over epochs and batches: forward and loss (the task's), backward,
clip, step, re-tie COUPLE copies; then validate, log, schedule, early-stop. `ln.fit`,
`ln.inn.fit_sequences` and `ln.inn.fit_iterations` are fronts that check their data, build a task
and call this loop; what differs between them plugs in as the task object:

    task.loss(model, batch) -> (value, batch_sum, batch_count)
        value: the scalar to backpropagate; batch_sum / batch_count: the batch's share of the
        logged train loss (sums accumulated over the epoch, so rmse is the root of the epoch's mean)
    task.finish(mean) -> the logged loss from the epoch's mean (identity, or sqrt for rmse)
    task.evaluate(model, batches) -> {"loss": ..., "accuracy": ... or None, other val_ columns}
    task.loss_name: the loss's name, for messages
    task.output_hook (optional attribute): where the loop puts `clip=("output", c)`'s gradient hook;
        the task registers it on the prediction the loss is computed from (a task without the
        attribute refuses that clip)

How an epoch ends plugs in as a tracker (`Tracker`): `OneModel` (one History, early stopping and
best-weight restore by `BestEpoch`, divergence raised) unless the caller gives another, as the
seed-stacked path (`loopnets.training.batched`) does for S models in one step (per-model records,
early stopping by masking, divergence recorded). Timing, progress (`epoch_bar`) and the
solver-warning summary (`solver_warnings`) exist here once.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from loopnets.core.loop import cached_ties, tie_
from loopnets.training.optim import (PER_BATCH_SCHEDULERS, ClipSpec, OptimizerSpec, SchedulerSpec, make_clipper, make_optimizer,
                            make_output_clamp, make_scheduler)
from loopnets.core.solvers import NotConvergedWarning
from loopnets.training import callbacks as hooks
from loopnets.training.device import autocast
from loopnets.training.distributed import Replicas
from loopnets.training.history import History, TrainingDiverged

EVAL_BATCH_SIZE = 1024  # validation batch size inside training; results do not depend on it


class Task(Protocol):
    """What differs between trainings (see the module docstring)."""

    loss_name: str

    def loss(self, model: nn.Module, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, int]: ...

    def finish(self, mean: Tensor) -> Tensor: ...

    def evaluate(self, model: nn.Module, batches: Any) -> dict: ...


class Tracker(Protocol):
    """How each epoch ends: records, divergence, early stopping, best weights, callbacks.

    `OneModel` is the tracker of one trained model; the stacked seeds of `loopnets.training.batched`
    have one that keeps these per model (and masks a model that stops instead of ending the loop).
    """

    live: int  # models still training: an epoch's seconds are divided by it (seconds per model-epoch)
    postfix: dict  # what the progress bar shows after the epoch
    watched: float | None  # what ReduceLROnPlateau steps on
    result: Any  # what `train` returns

    def start(self) -> None: ...

    def train_loss(self, epoch: int, losses: Tensor, sums: Tensor) -> Any:
        """The epoch's train loss(es) from `task.finish` of the epoch's mean, () or (models,); `sums`
        are the batch sums, (batches,) or (batches, models). May raise TrainingDiverged."""

    def end_epoch(self, epoch: int, train_loss: Any, metrics: dict, train_seconds: float,
                  val_seconds: float, sums: Tensor) -> bool:
        """Record the epoch (metrics: `task.evaluate`'s, {} without val data); True ends training."""

    def close(self) -> None:
        """Training ended (finished, stopped, or an exception): final weights into the model(s)."""


class OneModel:
    """The tracker of one model: its History, early stopping and best-weight restore (`BestEpoch`),
    divergence raised as TrainingDiverged, and the callbacks (`training.callbacks`)."""

    live = 1

    def __init__(self, model: nn.Module, history: History, loss_name: str, early_stopping: int | None,
                 restore_best: bool, callbacks: list):
        self.model, self.history, self.loss_name, self.callbacks = model, history, loss_name, callbacks
        self.best = BestEpoch(early_stopping, restore_best)
        self.postfix, self.watched = {}, None
        self.result = history

    def start(self) -> None:
        hooks.call(self.callbacks, "on_train_start", self.model)

    def train_loss(self, epoch: int, losses: Tensor, sums: Tensor) -> float:
        train_loss = losses.item()  # one host sync per epoch
        if not math.isfinite(train_loss):
            raise diverged(self.history, epoch, self.loss_name, train_loss, None, sums)
        return train_loss

    def end_epoch(self, epoch: int, train_loss: float, metrics: dict, train_seconds: float, val_seconds: float,
                  sums: Tensor) -> bool:
        if metrics and not math.isfinite(metrics["loss"]):
            raise diverged(self.history, epoch, self.loss_name, train_loss, metrics["loss"], sums)
        record = epoch_record(self.history, epoch, train_loss, metrics, train_seconds, val_seconds)
        self.history.records.append(record)
        self.postfix = postfix(train_loss, record.val_loss, record.val_accuracy)
        self.watched = record.val_loss if record.val_loss is not None else train_loss
        hooks.call(self.callbacks, "on_epoch_end", record)
        return self.best.update(self.history, epoch, record.val_loss, lambda: state_copy(self.model))

    def close(self) -> None:
        self.best.restore(self.model)
        hooks.call(self.callbacks, "on_train_end", self.history)


def train(
    model: nn.Module,
    task: Task,
    data: Any,
    val: Any | None,
    *,
    history: History | None = None,
    optimizer: OptimizerSpec,
    epochs: int,
    seed: int,
    early_stopping: int | None = None,
    restore_best: bool = True,
    progress: bool = True,
    desc: str = "fit",
    callbacks: list | None = None,
    scheduler: SchedulerSpec = None,
    clip: ClipSpec = None,
    precision: str | None = None,
    retie: Callable[[list], None] = tie_,
    replicas: Replicas | None = None,
    tracker: Tracker | None = None,
) -> Any:
    """Train `model` in place for `epochs` passes over `data`; fill and return `history`
    (with `tracker`: return `tracker.result`).

    Args:
        model: on its training device already (the fronts move it once).
        task: the loss, metric and evaluation of this kind of training (see the module docstring).
        data, val: batch sources (`loopnets.training.data`): `data.epoch()` yields one epoch's
            training batches, `val.evaluation(size)` the validation batches; val may be None.
        history: the empty History (or subclass) to fill; its RECORD is the per-epoch record type
            (None: a new History).
        optimizer: see `loopnets.training.optim.make_optimizer`.
        epochs, seed, early_stopping, restore_best, progress: as documented in `ln.fit`.
        desc: the progress bar's label.
        callbacks: objects with on_train_start / on_epoch_end / on_train_end (`training.callbacks`).
        scheduler: see `loopnets.training.optim.make_scheduler`; stepped after every epoch (OneCycleLR and
            CyclicLR after every optimizer step; ReduceLROnPlateau with the val loss, or the train
            loss without val data).
        clip: see `loopnets.training.optim.make_clipper`; applied between backward and the optimizer step;
            ("output", c) clamps dLoss/dOutput during backward instead (`make_output_clamp`).
        precision: None, "bf16" or "fp16" (checked by the front): autocast over forward and loss,
            with a GradScaler for fp16.
        retie: re-ties the COUPLE loops after every step (given the cached list of loops).
        replicas: the data-parallel process group, or None in one process (`training.distributed`):
            replicas start from rank 0's weights, gradients and the epoch's loss are averaged over
            the ranks, and only rank 0 shows progress and calls the callbacks.
        tracker: what ends each epoch when one step trains several models (the stacked seeds of
            `loopnets.training.batched`): None builds `OneModel` from history, early_stopping,
            restore_best and callbacks, which must not be given beside a tracker.

    Raises:
        TrainingDiverged: the epoch's train loss or the validation loss is nan / inf (`OneModel`).
    """
    if tracker is None:
        callbacks = hooks.check_callbacks(callbacks)
        if replicas is not None and replicas.rank != 0:
            callbacks, progress = [], False
        tracker = OneModel(model, history if history is not None else History(), task.loss_name, early_stopping,
                           restore_best, callbacks)
    elif history is not None or callbacks or early_stopping is not None or replicas is not None:
        raise ValueError("train: pass history, callbacks, early_stopping and replicas to the tracker, not beside it")
    if replicas is not None:
        replicas.synchronize(model)
        progress = progress and replicas.rank == 0
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters; there is nothing to fit")
    torch.manual_seed(seed)
    opt = make_optimizer(optimizer, model.parameters())
    schedule = make_scheduler(scheduler, opt)
    per_batch = type(schedule).__name__ in PER_BATCH_SCHEDULERS
    plateau = isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau)
    clipper = make_clipper(clip)
    output_clamp = make_output_clamp(clip)
    if output_clamp is not None:
        if not hasattr(task, "output_hook"):
            raise ValueError(f"clip={tuple(clip)!r} clamps the loss gradient at the model's output, which {desc} "
                             f"({type(task).__name__}) does not expose; use ('value', c) or ('norm', c) to clip the "
                             "parameters' gradients instead")
        task.output_hook = output_clamp
    device = next(iter(params)).device
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    zero_grad = grad_clearer(opt)
    bar = epoch_bar(epochs, desc, progress)
    with kept_modes(model), cached_ties(model) as loops:  # COUPLE loops, found once: retie walks nothing
        try:
            tracker.start()
            for epoch in bar:
                model.train()
                live = tracker.live  # models training this epoch: the seconds are per model-epoch
                start = time.perf_counter()
                sums, count = [], 0
                with solver_warnings(epoch):  # one warning per epoch, not one per solve
                    for batch in data.epoch():
                        with autocast(precision, device):
                            value, batch_sum, batch_count = task.loss(model, batch)
                        zero_grad()
                        (value if scaler is None else scaler.scale(value)).backward()  # fp16: a scaled loss
                        if replicas is not None:
                            replicas.average_gradients(params, batch_count)  # the global batch's gradient
                        if clipper is not None:
                            if scaler is not None:
                                scaler.unscale_(opt)  # clip the true gradients
                            clipper(params)
                        if scaler is None:
                            opt.step()
                        else:
                            scaler.step(opt)  # skipped when a gradient is inf / nan, then a smaller scale
                            scaler.update()
                        retie(loops)  # COUPLE: copies trained apart for one step are re-tied here
                        if per_batch:
                            schedule.step()
                        sums.append(batch_sum.detach())  # stays on the device: no host sync per step
                        count += batch_count
                if not sums:
                    raise ValueError(f"the training data yielded no batches in epoch {epoch}; a loader must yield "
                                     "at least one (inputs, targets) batch per epoch (is it exhausted after one pass?)")
                sums = torch.stack(sums).double()  # (batches,) or (batches, models)
                if replicas is not None:
                    sums, count = replicas.total(sums, count)  # the global batches' sums, over all ranks
                train_loss = tracker.train_loss(epoch, task.finish(sums.cumsum(0)[-1] / count), sums)  # summed in order
                train_seconds = (time.perf_counter() - start) / live

                metrics, val_seconds = {}, 0.0
                if val is not None:
                    model.eval()
                    start = time.perf_counter()
                    with torch.no_grad(), autocast(precision, device):
                        metrics = task.evaluate(model, val.evaluation(EVAL_BATCH_SIZE))
                    val_seconds = (time.perf_counter() - start) / live

                stop = tracker.end_epoch(epoch, train_loss, metrics, train_seconds, val_seconds, sums)
                bar.set_postfix(tracker.postfix, refresh=False)
                if plateau:
                    schedule.step(tracker.watched)
                elif schedule is not None and not per_batch:
                    schedule.step()
                if stop:
                    break
        finally:
            bar.close()
            tracker.close()
    return tracker.result


def check_int(name: str, value: Any, minimum: int | None) -> None:
    """ValueError unless `value` is an int (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be an integer{bound}; got {value!r}")


def check_options(epochs: Any, batch_size: Any, early_stopping: Any, val: Any, seed: Any = 0) -> None:
    """The checks every training front makes on the loop's options (ValueErrors that say how to fix them)."""
    check_int("epochs", epochs, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    check_int("seed", seed, minimum=None)
    if early_stopping is not None:
        check_int("early_stopping", early_stopping, minimum=1)
        if val is None:
            raise ValueError(
                f"early_stopping={early_stopping} watches the validation loss: pass val=(X_val, y_val), "
                "or early_stopping=None"
            )


def epoch_record(history: History, epoch: int, train_loss: float, metrics: dict, train_seconds: float,
                 val_seconds: float):
    """The history's record for one epoch; metrics {"loss", "accuracy", other} become val_ columns."""
    columns = {f"val_{name}": value for name, value in metrics.items()}
    record = history.RECORD
    names = [f for f in record.__dataclass_fields__ if f.startswith("val_") and f != "val_seconds"]
    return record(epoch=epoch, train_loss=train_loss, train_seconds=train_seconds, val_seconds=val_seconds,
                  **{name: columns.get(name) for name in names})


class BestEpoch:
    """The lowest validation loss so far, with its epoch, its weights (kept only when early stopping
    will restore them), and the early-stopping decision: one per trained model."""

    def __init__(self, early_stopping: int | None, restore_best: bool):
        self.early_stopping, self.restore_best = early_stopping, restore_best
        self.loss, self.state = math.inf, None

    def update(self, history: History, epoch: int, val_loss: float | None, snapshot: Callable[[], Any]) -> bool:
        """Record `epoch`'s validation loss in `history`; True when early stopping ends training.
        `snapshot()` copies the weights; it is called only for a new best that will be restored."""
        if val_loss is not None and val_loss < self.loss:
            self.loss, history.best_epoch = val_loss, epoch
            if self.early_stopping is not None and self.restore_best:
                self.state = snapshot()
        if self.early_stopping is not None and epoch - history.best_epoch >= self.early_stopping:
            history.stopped_early = True
            return True
        return False

    def restore(self, model: nn.Module) -> None:
        """Load the best epoch's weights (a state dict) back into `model`, if they were kept."""
        if self.state is not None:
            model.load_state_dict(self.state)


def state_copy(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def diverged(history: History, epoch: int, loss_name: str, train_loss: float, val_loss: float | None,
             sums: Tensor) -> TrainingDiverged:
    """Mark `history` diverged and return the TrainingDiverged to raise (or record) for this epoch.

    `sums` (batches,) are the epoch's batch losses: the first non-finite one is named."""
    history.diverged = True
    finished = f"the {len(history)} finished epochs are in the exception's .history"
    hint = "Try a lower learning rate (e.g. optimizer=('adam', {'lr': 1e-4})) and check the"
    if not math.isfinite(train_loss):
        bad = (~sums.isfinite()).nonzero()
        batch = int(bad[0]) + 1 if len(bad) else len(sums)
        return TrainingDiverged(
            f"training diverged at epoch {epoch}, batch {batch} of {len(sums)}: the {loss_name} loss is "
            f"{train_loss}. {hint} data for nan / inf; {finished}", history)
    return TrainingDiverged(
        f"training diverged at epoch {epoch}: the validation {loss_name} loss is {val_loss} (the train loss was "
        f"{train_loss}). {hint} validation data for nan / inf; {finished}", history)


def epoch_bar(epochs: int, desc: str, progress: bool):
    """The progress bar over epochs (tqdm; plain text when not a terminal); False prints nothing."""
    return tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress)


def postfix(train_loss: float, val_loss: float | None, val_accuracy: float | None) -> dict:
    shown = {"train_loss": f"{train_loss:.4g}"}
    if val_loss is not None:
        shown["val_loss"] = f"{val_loss:.4g}"
    if val_accuracy is not None:
        shown["val_acc"] = f"{val_accuracy:.3f}"
    return shown


@contextmanager
def kept_modes(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's train() / eval() mode when the block ends."""
    modes = {module: module.training for module in model.modules()}
    try:
        yield
    finally:
        for module, training in modes.items():
            module.train(training)


@contextmanager
def solver_warnings(epoch: int) -> Iterator[None]:
    """Gather the NotConvergedWarnings of one epoch's training steps into one warning.

    An implicit loop that misses its tolerance warns at every solve (`loopnets.core.solvers`), which
    in training is every step: hundreds of lines per epoch. Inside the block they are collected
    and reported once, with their count and the worst residual; other warnings pass through.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NotConvergedWarning)
        yield
    unsolved = [w.message for w in caught if isinstance(w.message, NotConvergedWarning)]
    for w in caught:
        if not isinstance(w.message, NotConvergedWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if unsolved:
        worst = max((m.stats.residual for m in unsolved if m.stats is not None), default=math.nan)
        warnings.warn(NotConvergedWarning(
            f"epoch {epoch}: {len(unsolved)} fixed-point solves in training did not converge (worst relative "
            f"residual {worst:.3g}); the first: {unsolved[0]}", unsolved[0].stats), stacklevel=3)


def grad_clearer(opt: torch.optim.Optimizer) -> Callable[[], None]:
    """`opt.zero_grad(set_to_none=True)` as a function; for torch.optim's own zero_grad, a plain loop
    setting every parameter's .grad to None (the same effect without its ~25 us of wrapping per call)."""
    if type(opt).zero_grad is not torch.optim.Optimizer.zero_grad:
        return lambda: opt.zero_grad(set_to_none=True)
    params = [p for group in opt.param_groups for p in group["params"]]

    def zero_grad() -> None:
        for p in params:
            p.grad = None

    return zero_grad
