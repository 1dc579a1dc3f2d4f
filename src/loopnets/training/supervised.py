"""Supervised training of one model: `fit_one` (the body of `loopnets.fit` for one seed), its task
(`SupervisedTask`), `evaluate`, and the pieces the other fronts share: the checks of (X, y) data
(`as_tensors`), predictions through a model's logits (`predict`, `predictor`) and deep supervision's
loss (`pass_loss`).

`fit_one` checks its arguments and data, builds the supervised task (one loss on (inputs, targets)
batches, optionally deep supervision over a loop's passes) and runs the one training loop,
`loopnets.training.engine.train`. With in-memory tensors the batches are index-shuffled views (no
DataLoader: the data sets are small and per-batch Python overhead dominates); a Dataset or a
loader is used as it is (`loopnets.training.data`). `loopnets.fit` (`loopnets.training.fit`)
documents every argument and also takes several seeds (`loopnets.training.batched.fit_many`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loopnets.core.loop import tie_
from loopnets.training.losses import LOSSES, Loss, get_loss
from loopnets.training.optim import ClipSpec, OptimizerSpec, SchedulerSpec
from loopnets.core.passes import pass_plan
from loopnets.training.data import batches
from loopnets.training.device import autocast, destination
from loopnets.training.distributed import Replicas
from loopnets.training.engine import check_int, check_options, kept_modes
from loopnets.training.engine import train as run_training
from loopnets.training.history import History

GATHER_BYTES = 64 * 2**20  # training data up to this size are shuffled by one gather per epoch


def fit_one(
    model: nn.Module,
    train: Any,
    val: Any | None,
    *,
    loss: str | Loss,
    optimizer: OptimizerSpec,
    epochs: int,
    batch_size: int,
    seed: int,
    progress: bool,
    early_stopping: int | None,
    restore_best: bool,
    shuffle: bool,
    pass_weights: str | list[float] | None,
    random_passes: tuple[int, int] | None,
    compile: bool,
    device: str | torch.device | None,
    precision: str | None,
    callbacks: list | None,
    scheduler: SchedulerSpec,
    clip: ClipSpec,
) -> History:
    """`loopnets.fit` for one model and one integer seed; every argument as documented there."""
    loss = get_loss(loss)
    check_options(epochs, batch_size, early_stopping, val, seed)
    epochs, batch_size, seed = int(epochs), int(batch_size), int(seed)  # numpy integers welcome
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True or False; got {compile!r}")
    device, dtype = destination(model, device, precision)
    generator = torch.Generator().manual_seed(seed)  # CPU generator: same order on every device

    def prepare(name: str):
        return lambda pair: as_tensors(pair, name, device, dtype, model)

    replicas = Replicas.join(device)  # None in one process; under torchrun, the data-parallel group
    data = batches(train, "train", prepare("train"), batch_size=batch_size, shuffle=shuffle,
                   generator=generator, gather_bytes=GATHER_BYTES, replicas=replicas)
    val = batches(val, "val", prepare("val")) if val is not None else None
    plan = pass_plan(model, pass_weights, random_passes, seed)  # None: one plain forward per step
    model.to(device)  # once, in place, after every check passed
    forward, from_logits = predictor(model, loss)  # model.logits or model, chosen once
    if compile:
        forward = torch.compile(forward)
    targets = data.tensors[1] if hasattr(data, "tensors") else None
    task = SupervisedTask(loss, forward, from_logits, plan, targets)
    return run_training(model, task, data, val, history=History(), optimizer=optimizer, epochs=epochs, seed=seed,
                        early_stopping=early_stopping, restore_best=restore_best, progress=progress, desc="fit",
                        callbacks=callbacks, scheduler=scheduler, clip=clip, precision=precision,
                        retie=lambda loops: tie_(loops),  # tie_ looked up here at each call: tests count its calls
                        replicas=replicas)


class SupervisedTask:
    """`fit`'s task: the mean loss over an (inputs, targets) batch, or deep supervision over passes.

    Args:
        loss: the Loss. forward, from_logits: what `predictor` chose (model or model.logits).
        plan: the PassPlan of pass_weights / random_passes (`loopnets.core.passes`), or None.
        targets: all training targets when they are in memory (their class indices are then checked
            once, not in every batch; see `_training_parts`), else None.
    """

    def __init__(self, loss: Loss, forward, from_logits: bool, plan, targets: Tensor | None):
        self.loss_fn, self.forward, self.from_logits, self.plan, self.targets = loss, forward, from_logits, plan, targets
        self.loss_name, self.finish = loss.name, loss.finish
        self.parts = None  # the loss's (sum, count) function for training batches, set at the first batch
        self.output_hook = None  # clip=("output", c): the engine's clamp of dLoss/dOutput, hooked on each prediction

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, int]:
        xb, yb = batch  # (B, *in), (B, *out) or (B,)
        loss, from_logits = self.loss_fn, self.from_logits
        if self.plan is None:
            pred = self.forward(xb) if self.parts is not None else self._first(model, xb, self.forward)  # (B, *out)
            if self.parts is None:
                self.parts = _training_parts(loss, pred, self.targets, from_logits)
            if self.output_hook is not None and pred.requires_grad:
                pred.register_hook(self.output_hook)
            batch_sum, batch_count = self.parts(pred, yb, from_logits)
            return loss.finish(batch_sum / batch_count), batch_sum, batch_count  # mean over the batch
        predict = lambda x: self.plan.predict(self.forward, x, from_logits)  # noqa: E731
        preds, weights = predict(xb) if self.parts is not None else self._first(model, xb, predict)  # k x (B, *out)
        if self.parts is None:
            self.parts = _training_parts(loss, preds[-1], self.targets, from_logits)
        if self.output_hook is not None:
            for pred in preds:
                if pred.requires_grad:
                    pred.register_hook(self.output_hook)
        batch_sum, batch_count, value = pass_loss(preds, weights, yb, loss, self.parts, from_logits)
        return value, batch_sum, batch_count

    @staticmethod
    def _first(model: nn.Module, xb: Tensor, call):
        """`call(xb)` for the first batch: a model that cannot take X says so in fit's terms."""
        try:
            return call(xb)
        except RuntimeError as error:
            raise ValueError(
                f"{type(model).__name__} cannot take the training inputs, batches of shape {tuple(xb.shape)} "
                f"({error}); check that X's feature dimensions match the model's input"
            ) from error

    def evaluate(self, model: nn.Module, batches) -> dict:
        metrics, _ = _evaluate(model, batches, self.loss_fn)
        return metrics


def evaluate(model: nn.Module, data: Any, *, loss: str | Loss, batch_size: int = 1024,
             device: str | torch.device | None = None, precision: str | None = None) -> dict:
    """The loss (and accuracy, for classification losses) of `model` over the whole of `data`.

    Runs in eval() mode without gradients (modes restored afterwards). Losses are accumulated as
    sums and counts over the batches, so the result does not depend on `batch_size` (rmse is
    the root of the mean squared error over the whole set). When any output is nan / inf, every
    metric is nan and a RuntimeWarning says so (an argmax over nan would count as a prediction).

    Args:
        model: any nn.Module; predictions as in `fit` (logits when the model declares a
            softmax / sigmoid output for a classification loss).
        data: (X, y) tensors or numpy arrays, X: (N, *in), y: (N, *out) or (N,) class indices;
            or a Dataset, or an iterable of (X, y) batches (a DataLoader).
        loss: a name in `loopnets.training.losses.LOSSES` (or a Loss).
        batch_size: samples per forward pass for tensors and Datasets (memory only).
        device: as in `fit` (None: the model's; otherwise the model is moved there, in place).
        precision: as in `fit` ("bf16" / "fp16" autocast, CUDA only).

    Returns:
        {"loss": float} and, for classification losses, "accuracy": the fraction of correct
        predictions (argmax for multi-class, threshold 0.5 per element for binary).
    """
    loss = get_loss(loss)
    check_int("batch_size", batch_size, minimum=1)
    device, dtype = destination(model, device, precision)
    source = batches(data, "data", lambda pair: as_tensors(pair, "data", device, dtype, model), batch_size=int(batch_size))
    model.to(device)
    with kept_modes(model), torch.no_grad(), autocast(precision, device):
        model.eval()
        metrics, finite = _evaluate(model, source.evaluation(int(batch_size)), loss)
    if not finite:
        warnings.warn(f"{type(model).__name__} produced nan / inf outputs on this data, so its metrics are nan "
                      "(check the weights for nan, e.g. after a diverged training, and the inputs for nan / inf)",
                      RuntimeWarning, stacklevel=2)
        metrics = {name: math.nan for name in metrics}
    return metrics


def _evaluate(model: nn.Module, batches, loss: Loss) -> tuple[dict, bool]:
    """(metrics, whether every output was finite) over `batches` of (X, y) on the model's device;
    the caller sets eval() mode and no_grad."""
    total = hits = finite = None
    count = seen = 0
    for X, y in batches:
        pred, from_logits = predict(model, X, loss)
        if total is None:
            total = torch.zeros((), dtype=torch.float64, device=pred.device)
            hits = torch.zeros((), dtype=torch.int64, device=pred.device)
            finite = torch.ones((), dtype=torch.bool, device=pred.device)
        batch_sum, batch_count = loss.parts(pred, y, from_logits)
        total += batch_sum.double()
        count += batch_count
        finite &= pred.isfinite().all()  # stays on the device: read once at the end
        if loss.classification:
            correct, predictions = loss.correct(pred, y, from_logits)
            hits += correct
            seen += predictions
    if total is None:
        raise ValueError("the evaluation data yielded no batches; it needs at least one (inputs, targets) batch")
    metrics = {"loss": loss.finish(total / count).item()}
    if loss.classification:
        metrics["accuracy"] = hits.item() / seen
    return metrics, bool(finite)


def predict(model: nn.Module, x: Tensor, loss: Loss) -> tuple[Tensor, bool]:
    """(prediction, from_logits): the model's logits when the loss can use them stably."""
    activation = getattr(model, "output_activation", None)
    if loss.logits_activation is None or activation != loss.logits_activation:
        return model(x), False
    if not callable(getattr(model, "logits", None)):
        raise ValueError(
            f"{type(model).__name__} declares output_activation={activation!r}, so the {loss.name} loss needs "
            f"its logits (the values before the {activation}) for a stable loss: give it a logits(x) method"
        )
    return model.logits(x), True


def predictor(model: nn.Module, loss: Loss) -> tuple[Any, bool]:
    """(forward, from_logits): the function `fit` calls on each batch, chosen once as `predict` chooses."""
    activation = getattr(model, "output_activation", None)
    if loss.logits_activation is None or activation != loss.logits_activation:
        return model, False
    if not callable(getattr(model, "logits", None)):
        predict(model, None, loss)  # raises its error
    return model.logits, True


def pass_loss(preds: list[Tensor], weights: list[float], yb: Tensor, loss: Loss, parts, from_logits: bool):
    """(the final output's batch sum and count, the weighted loss sum_t w_t loss(output_t)),
    summed in pass order; the batch sum is the one logged as train_loss."""
    value = None
    for w, pred in zip(weights, preds):
        if w:
            batch_sum, batch_count = parts(pred, yb, from_logits)
            term = loss.finish(batch_sum / batch_count) * w  # the mean over the batch, weighted
            value = term if value is None else value + term
    if not weights[-1]:
        batch_sum, batch_count = parts(preds[-1].detach(), yb, from_logits)
    return batch_sum, batch_count, value


def _training_parts(loss: Loss, pred: Tensor, y: Tensor, from_logits: bool):
    """`loss.parts` for the training batches, with the per-batch checks done once for all of y.

    cross_entropy checks that class indices are in range, which reads a value back from the
    device (a host sync) in every batch; fit checks every training target once against the first
    batch's prediction instead, and then calls F.cross_entropy directly (the same computation).
    """
    if y is None or loss is not LOSSES["cross_entropy"] or y.dtype != torch.long or y.dim() != 1 or pred.dim() != 2:
        return loss.parts
    loss.parts(pred.detach()[:1].expand(len(y), -1), y, from_logits)  # raises as a batch would
    return lambda pred, target, from_logits: (F.cross_entropy(pred, target, reduction="sum"), pred.shape[0])


def as_tensors(data: Any, name: str, device: torch.device, dtype: torch.dtype,
             model: nn.Module | None = None) -> tuple[Tensor, Tensor]:
    """Check an (X, y) pair and return it as tensors on `device`; floating data cast to `dtype`.

    X must be floating (or complex) unless `model` has an embedding, which takes integer indices."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        got = f"a {type(data).__name__} of length {len(data)}" if isinstance(data, (tuple, list)) else type(data).__name__
        raise ValueError(f"{name} must be a pair (X, y) of tensors or numpy arrays, a torch Dataset, or an iterable "
                         f"of (X, y) batches such as a DataLoader; got {got}")
    pair = []
    for part, value in zip(("X", "y"), data):
        if isinstance(value, np.ndarray):
            try:
                value = torch.tensor(value)
            except TypeError as error:
                raise ValueError(
                    f"{name} {part} is a numpy array of dtype {value.dtype}, which torch cannot hold: "
                    f"convert it to numbers, e.g. {part}.astype(np.float32) ({error})"
                ) from None
        elif not isinstance(value, Tensor):
            raise ValueError(
                f"{name} {part} must be a torch.Tensor or numpy.ndarray; got {type(value).__name__}: "
                f"convert it with torch.as_tensor({part})"
            )
        if value.dim() == 0:
            raise ValueError(f"{name} {part} is a scalar; it needs a first dimension of samples, shape (N, ...)")
        if part == "X" and model is not None and not (value.is_floating_point() or value.is_complex()) and not any(
            isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules()
        ):
            raise TypeError(
                f"{name} X has dtype {value.dtype}; {type(model).__name__} computes in {dtype}: convert the inputs "
                f"with X.to({dtype}) (X.float() for float32, X.double() for float64; numpy: X.astype(np.float32))"
            )
        value = value.to(device, dtype) if value.is_floating_point() else value.to(device)
        pair.append(value)
    X, y = pair
    if len(X) != len(y):
        raise ValueError(
            f"{name} X has {len(X)} samples but y has {len(y)}; their first dimensions must match "
            f"(X: {tuple(X.shape)}, y: {tuple(y.shape)})"
        )
    if len(X) == 0:
        raise ValueError(f"{name} is empty (X has shape {tuple(X.shape)}); it needs at least one sample")
    return X, y


