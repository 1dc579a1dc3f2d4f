"""fit / evaluate: the one training loop, for any torch.nn.Module (loopnets models or not).

`fit` reads top to bottom: seed, build the optimizer, loop over epochs and minibatches of the
in-memory tensors (index shuffling, no DataLoader: the data sets are small and per-batch Python
overhead dominates), forward, loss, backward, step, re-tie COUPLE copies, validate, log.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from loopnets.loop import cached_ties, tie_
from loopnets.losses import LOSSES, Loss, get_loss
from loopnets.optim import OptimizerSpec, make_optimizer
from loopnets.passes import pass_plan
from loopnets.solvers import NotConvergedWarning

EVAL_BATCH_SIZE = 1024  # validation batch size inside fit; results do not depend on it
GATHER_BYTES = 64 * 2**20  # training data up to this size are shuffled by one gather per epoch


@dataclass
class EpochRecord:
    """One epoch of training. Losses are over the whole (train / val) set; see `fit`."""

    epoch: int  # 1-based
    train_loss: float
    val_loss: float | None  # None without val data
    val_accuracy: float | None  # None without val data or for a non-classification loss
    train_seconds: float
    val_seconds: float  # 0.0 without val data


@dataclass
class History:
    """Per-epoch records of one `fit` call, plus how it ended.

    `history["val_loss"]` gives a column as a list (columns: EpochRecord's fields),
    `history[-1]` the last EpochRecord, `len(history)` the number of finished epochs.

    Attributes:
        records: one EpochRecord per finished epoch.
        stopped_early: early stopping ended training before `epochs`.
        best_epoch: the epoch with the lowest validation loss (None without val data).
        diverged: training raised TrainingDiverged (the records are the epochs before it).
    """

    records: list[EpochRecord] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int | None = None
    diverged: bool = False

    COLUMNS: ClassVar[tuple[str, ...]] = tuple(f.name for f in fields(EpochRecord))

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.COLUMNS:
                raise KeyError(f"unknown history column {key!r}; columns: {', '.join(self.COLUMNS)}")
            return [getattr(record, key) for record in self.records]
        return self.records[key]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def to_dict(self) -> dict:
        """A JSON-able dict (`json.dumps(history.to_dict())`); inverse of `History.from_dict`."""
        return {
            "records": [asdict(record) for record in self.records],
            "stopped_early": self.stopped_early,
            "best_epoch": self.best_epoch,
            "diverged": self.diverged,
        }

    @classmethod
    def from_dict(cls, data: dict) -> History:
        return cls(
            records=[EpochRecord(**record) for record in data["records"]],
            stopped_early=data["stopped_early"],
            best_epoch=data["best_epoch"],
            diverged=data["diverged"],
        )


class TrainingDiverged(RuntimeError):
    """The loss became nan or inf. `.history` holds the epochs finished before it."""

    def __init__(self, message: str, history: History | None = None):
        super().__init__(message)
        self.history = history

    def __reduce__(self):  # picklable with its history (runs in worker processes raise it)
        return (type(self), (str(self), self.history))


def fit(
    model: nn.Module,
    train: tuple,
    val: tuple | None = None,
    *,
    loss: str | Loss,
    optimizer: OptimizerSpec = ("adam", {"lr": 1e-3}),
    epochs: int = 100,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    early_stopping: int | None = None,
    restore_best: bool = True,
    shuffle: bool = True,
    pass_weights: str | list[float] | None = None,
    random_passes: tuple[int, int] | None = None,
    compile: bool = False,
) -> History:
    """Train `model` on in-memory data with minibatch gradient descent; return its History.

    Each epoch visits every sample once, in a fresh random order (a torch.Generator seeded with
    `seed`), in minibatches of `batch_size` (the last one may be smaller). Per batch: forward,
    the mean loss over the batch, backward, one optimizer step, then `loopnets.tie_(model)`, which
    re-ties COUPLE copies (a no-op for models without COUPLE loops). The model is in train() mode
    while training and eval() mode while validating; every submodule's mode is restored at the end.

    Predictions: for cross_entropy / kl_divergence on a model with `output_activation == "softmax"`
    (binary_cross_entropy: "sigmoid"), the loss is computed from `model.logits(x)` in its
    numerically stable form (exact gradient p - t for softmax + cross-entropy); otherwise from
    `model(x)`, where cross_entropy treats the output as logits (PyTorch convention: a generic
    model must not end in a softmax). See `loopnets.losses`.

    Logged numbers: train_loss is the loss over all the epoch's batches as they were trained
    (sums and counts accumulated, so rmse is the root of the epoch's mean squared error);
    val_loss / val_accuracy are computed after the epoch over the whole validation set.

    Speed (docs/performance.md): per step, fit does only the forward, loss, backward, optimizer
    step and COUPLE re-tie. The batch losses stay on the device and are read once per epoch (no
    host sync per step), so a nan / inf training loss is detected at the end of its epoch: the
    epoch's remaining steps have been taken by then, and the weights are nan unless
    early_stopping restores the best epoch. The data are put in shuffled order once per epoch and
    cut into views (data over GATHER_BYTES are indexed batch by batch instead); the COUPLE loops
    are found once per call; named optimizers use fused kernels for float32 (see
    `loopnets.optim`). For the same seed the results are those of a per-batch loop: the same
    shuffling and the same batches; in float64 the same numbers for the same memory layout of the
    data (MKL's matmul rounding can depend on operand alignment, so the same X at another storage
    offset may differ in the last bit, about 1e-17).

    Differences from the seed framework (`neurons` 2.6.2), on purpose (standard PyTorch semantics):
    - the batch loss is the *mean* over the batch (neurons sums per-sample gradients), so learning
      rates tuned there for batch size B correspond to about B times larger ones here;
    - the data are reshuffled every epoch (neurons uses fixed consecutive batches; pass
      `shuffle=False` for fixed batches in the original order);
    - Adam's bias correction counts optimizer steps (neurons counts epochs);
    - the softmax + cross-entropy gradient is the exact p - t (neurons multiplies it by a constant);
    - early stopping waits for `early_stopping` epochs without a new best validation loss
      (neurons stops after `tol` epochs of strictly increasing validation loss);
    - a batch runs as one vectorized forward pass, not one thread per sample.

    Args:
        model: any nn.Module mapping (B, *in) -> (B, *out). The data are moved to the device and
            floating dtype of its first parameter.
        train: (X, y) tensors or numpy arrays, X: (N, *in), y: (N, *out), or (N,) integer class
            indices for cross_entropy.
        val: optional (X, y) validation data, same layout.
        loss: a name in `loopnets.losses.LOSSES` (or a Loss).
        optimizer: a name, a (name, kwargs) pair or a callable params -> optimizer; see
            `loopnets.optim.make_optimizer`.
        epochs: number of passes over `train` (0 returns an empty History).
        batch_size: samples per optimizer step.
        seed: seeds torch's global RNG (dropout, ...) and the shuffling generator. Weights are
            initialized when the model is built, before fit: seed that yourself.
        progress: show a tqdm bar over epochs with the losses; False prints nothing.
        early_stopping: patience: stop when the validation loss has not improved (strictly
            decreased) for this many epochs. Needs `val`.
        restore_best: with early_stopping, load the weights of the best epoch (lowest validation
            loss) into the model before returning, whether or not training stopped early, and
            also when TrainingDiverged is raised. Without early_stopping it has no effect: the
            model keeps its last weights.
        shuffle: reshuffle the samples every epoch (False: the same consecutive batches each epoch).
        pass_weights: deep supervision for a model with one loop (see `loopnets.passes`): the
            batch loss is sum_t w_t loss(output after pass t) over the loop's k passes, with
            w_t = 1/k ("mean"), t / (1 + ... + k) ("linear"), only the final output ("last":
            the same numbers as None), or a list of k numbers >= 0. Not with COMBINE (its passes
            carry no graph: use Combine(accumulate=...)). The logged train_loss stays the loss of
            the final output, so it compares with runs without deep supervision.
        random_passes: (lo, hi): every optimizer step draws a pass count k uniformly from lo..hi
            (a torch.Generator of its own seeded with `seed`, so the shuffling is unchanged) and
            runs the model's loops with k passes for that step; validation runs the loops' own
            unroll. Not with ln.Implicit / ln.OneStep (their solver chooses the passes), nor hi
            beyond a COUPLE loop's unroll. With pass_weights "mean" / "linear" the weights are
            those for the drawn k.
        compile: `torch.compile` the forward that training calls (the model, or its logits) once
            per call; backward, the optimizer and validation stay eager, and the numbers are those
            of the eager forward up to rounding. It pays only where the forward has many ops to
            fuse per dispatch: on this project's CPU workloads it was 1.0-1.25x *slower* after 5-36 s
            of compiling (docs/performance.md, `benchmarks/compile_step.py`); try it for large
            models or on a GPU, and compare with `History["train_seconds"]`.

    Returns:
        The History: one EpochRecord per epoch, `stopped_early`, `best_epoch`, `diverged`.

    Raises:
        TrainingDiverged: a training batch loss or a validation loss is nan / inf (checked at the
            end of each epoch). Its message names the epoch and the first such batch; `.history`
            holds the finished epochs.
        ValueError: malformed data or arguments (the message says how to fix them).
    """
    if isinstance(seed, (list, tuple)):  # several seeds: one model per seed, see loopnets.batched.fit_many
        from loopnets.batched import fit_many

        if pass_weights is not None or random_passes is not None or compile:
            raise ValueError(
                "pass_weights / random_passes / compile are not supported with several seeds (fit_many); "
                "call fit once per seed, e.g. [fit(model_s, ..., seed=s) for s in seeds]"
            )
        return fit_many(model, train, val, seeds=seed, loss=loss, optimizer=optimizer, epochs=epochs,
                        batch_size=batch_size, progress=progress, early_stopping=early_stopping,
                        restore_best=restore_best, shuffle=shuffle)
    loss = get_loss(loss)
    _check_int("epochs", epochs, minimum=0)
    _check_int("batch_size", batch_size, minimum=1)
    _check_int("seed", seed, minimum=None)
    epochs, batch_size, seed = int(epochs), int(batch_size), int(seed)  # numpy integers welcome
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True or False; got {compile!r}")
    if early_stopping is not None:
        _check_int("early_stopping", early_stopping, minimum=1)
        if val is None:
            raise ValueError(
                f"early_stopping={early_stopping} watches the validation loss: pass val=(X_val, y_val), "
                "or early_stopping=None"
            )
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"{type(model).__name__} has no trainable parameters; there is nothing to fit")
    device, dtype = _device_and_dtype(model)
    X, y = _tensors(train, "train", device, dtype)  # (N, *in), (N, *out) or (N,)
    X_val, y_val = _tensors(val, "val", device, dtype) if val is not None else (None, None)
    plan = pass_plan(model, pass_weights, random_passes, seed)  # None: one plain forward per step

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)  # CPU generator: same order on every device
    opt = make_optimizer(optimizer, model.parameters())
    forward, from_logits = _predictor(model, loss)  # model.logits or model, chosen once
    if compile:
        forward = torch.compile(forward)
    zero_grad = _grad_clearer(opt)
    gather = X.nelement() * X.element_size() + y.nelement() * y.element_size() <= GATHER_BYTES

    history = History()
    modes = {module: module.training for module in model.modules()}
    n, batches = len(X), math.ceil(len(X) / batch_size)
    best = _BestEpoch(model, early_stopping, restore_best)
    parts = None  # the loss's (sum, count) function for training batches, set at the first batch
    bar = tqdm(range(1, epochs + 1), desc="fit", unit="epoch", disable=not progress)
    try:
        with cached_ties(model) as loops:  # COUPLE loops, found once; tie_(loops) walks nothing
            for epoch in bar:
                model.train()
                start = time.perf_counter()
                order = torch.randperm(n, generator=generator).to(device) if shuffle else None
                xs, ys = _batches(X, y, order, batch_size, gather)  # (B, *in), (B, *out) each
                sums, count = [], 0
                with _solver_warnings(epoch):  # one warning per epoch, not one per solve
                    for xb, yb in zip(xs, ys):
                        if plan is None:
                            pred = forward(xb)  # (B, *out)
                            if parts is None:
                                parts = _training_parts(loss, pred, y, from_logits)
                            batch_sum, batch_count = parts(pred, yb, from_logits)
                            value = loss.finish(batch_sum / batch_count)  # mean over the batch
                        else:  # deep supervision / random passes, see loopnets.passes
                            preds, weights = plan.predict(forward, xb, from_logits)  # k x (B, *out), final last
                            if parts is None:
                                parts = _training_parts(loss, preds[-1], y, from_logits)
                            batch_sum, batch_count, value = _pass_loss(preds, weights, yb, loss, parts, from_logits)
                        zero_grad()
                        value.backward()
                        opt.step()
                        tie_(loops)  # COUPLE: copies trained apart for one step are re-tied here
                        sums.append(batch_sum.detach())  # stays on the device: no host sync per step
                        count += batch_count
                sums = torch.stack(sums).double()  # (batches,)
                total = sums.cumsum(0)[-1]  # summed in order, as a running total would be
                train_loss = loss.finish(total / count).item()  # the epoch's one wait for the device
                train_seconds = time.perf_counter() - start
                if not math.isfinite(train_loss):
                    bad = (~sums.isfinite()).nonzero()  # the first non-finite batch loss is the one to name
                    batch = int(bad[0]) + 1 if len(bad) else batches
                    history.diverged = True
                    raise TrainingDiverged(
                        f"training diverged at epoch {epoch}, batch {batch} of {batches}: the {loss.name} "
                        f"loss is {train_loss}. Try a lower learning rate (e.g. optimizer=('adam', "
                        "{'lr': 1e-4})) and check the data for nan / inf; "
                        f"the {len(history)} finished epochs are in the exception's .history",
                        history,
                    )

                val_loss = val_accuracy = None
                val_seconds = 0.0
                if X_val is not None:
                    model.eval()
                    start = time.perf_counter()
                    metrics = _evaluate(model, X_val, y_val, loss, EVAL_BATCH_SIZE)
                    val_seconds = time.perf_counter() - start
                    val_loss, val_accuracy = metrics["loss"], metrics.get("accuracy")
                    if not math.isfinite(val_loss):
                        history.diverged = True
                        raise TrainingDiverged(
                            f"training diverged at epoch {epoch}: the validation {loss.name} loss is {val_loss} "
                            f"(the train loss was {train_loss}). Try a lower learning rate (e.g. optimizer=('adam', "
                            "{'lr': 1e-4})) and check the validation data for nan / inf; "
                            f"the {len(history)} finished epochs are in the exception's .history",
                            history,
                        )

                history.records.append(
                    EpochRecord(epoch, train_loss, val_loss, val_accuracy, train_seconds, val_seconds)
                )
                bar.set_postfix(_postfix(train_loss, val_loss, val_accuracy), refresh=False)
                if best.update(history, epoch, val_loss):
                    break
    finally:
        bar.close()
        best.restore()
        for module, training in modes.items():
            module.train(training)
    return history


class _BestEpoch:
    """The lowest validation loss so far, with its epoch, its weights (kept only when early stopping
    will restore them), and the early-stopping decision: one per training call."""

    def __init__(self, model: nn.Module, early_stopping: int | None, restore_best: bool):
        self.model, self.early_stopping, self.restore_best = model, early_stopping, restore_best
        self.loss, self.state = math.inf, None

    def update(self, history: History, epoch: int, val_loss: float | None) -> bool:
        """Record `epoch`'s validation loss in `history`; True when early stopping ends training."""
        if val_loss is not None and val_loss < self.loss:
            self.loss, history.best_epoch = val_loss, epoch
            if self.early_stopping is not None and self.restore_best:
                self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.early_stopping is not None and epoch - history.best_epoch >= self.early_stopping:
            history.stopped_early = True
            return True
        return False

    def restore(self) -> None:
        """Load the best epoch's weights back, if they were kept."""
        if self.state is not None:
            self.model.load_state_dict(self.state)


def evaluate(model: nn.Module, data: tuple, *, loss: str | Loss, batch_size: int = 1024) -> dict:
    """The loss (and accuracy, for classification losses) of `model` over the whole of `data`.

    Runs in eval() mode without gradients (modes restored afterwards). Losses are accumulated as
    sums and counts over the batches, so the result does not depend on `batch_size` (rmse is
    the root of the mean squared error over the whole set).

    Args:
        model: any nn.Module; predictions as in `fit` (logits when the model declares a
            softmax / sigmoid output for a classification loss).
        data: (X, y) tensors or numpy arrays, X: (N, *in), y: (N, *out) or (N,) class indices.
        loss: a name in `loopnets.losses.LOSSES` (or a Loss).
        batch_size: samples per forward pass (memory only).

    Returns:
        {"loss": float} and, for classification losses, "accuracy": the fraction of correct
        predictions (argmax for multi-class, threshold 0.5 per element for binary).
    """
    loss = get_loss(loss)
    _check_int("batch_size", batch_size, minimum=1)
    device, dtype = _device_and_dtype(model)
    X, y = _tensors(data, "data", device, dtype)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        return _evaluate(model, X, y, loss, batch_size)
    finally:
        for module, training in modes.items():
            module.train(training)


def _evaluate(model: nn.Module, X: Tensor, y: Tensor, loss: Loss, batch_size: int) -> dict:
    """evaluate() on tensors already checked and on the model's device; the caller sets the mode."""
    device = X.device
    total = torch.zeros((), dtype=torch.float64, device=device)
    hits = torch.zeros((), dtype=torch.int64, device=device)
    count = seen = 0
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            pred, from_logits = _predict(model, X[start : start + batch_size], loss)
            target = y[start : start + batch_size]
            batch_sum, batch_count = loss.parts(pred, target, from_logits)
            total += batch_sum.double()
            count += batch_count
            if loss.classification:
                correct, predictions = loss.correct(pred, target, from_logits)
                hits += correct
                seen += predictions
    metrics = {"loss": loss.finish(total / count).item()}
    if loss.classification:
        metrics["accuracy"] = hits.item() / seen
    return metrics


def _predict(model: nn.Module, x: Tensor, loss: Loss) -> tuple[Tensor, bool]:
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


def _predictor(model: nn.Module, loss: Loss) -> tuple[Any, bool]:
    """(forward, from_logits): the function `fit` calls on each batch, chosen once as `_predict` chooses."""
    activation = getattr(model, "output_activation", None)
    if loss.logits_activation is None or activation != loss.logits_activation:
        return model, False
    if not callable(getattr(model, "logits", None)):
        _predict(model, None, loss)  # raises its error
    return model.logits, True


def _pass_loss(preds: list[Tensor], weights: list[float], yb: Tensor, loss: Loss, parts, from_logits: bool):
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


@contextmanager
def _solver_warnings(epoch: int) -> Iterator[None]:
    """Gather the NotConvergedWarnings of one epoch's training steps into one warning.

    An implicit loop that misses its tolerance warns at every solve (`loopnets.solvers`), which
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


def _grad_clearer(opt: torch.optim.Optimizer):
    """`opt.zero_grad(set_to_none=True)` as a function; for torch.optim's own zero_grad, a plain loop
    setting every parameter's .grad to None (the same effect without its ~25 us of wrapping per call)."""
    if type(opt).zero_grad is not torch.optim.Optimizer.zero_grad:
        return lambda: opt.zero_grad(set_to_none=True)
    params = [p for group in opt.param_groups for p in group["params"]]

    def zero_grad() -> None:
        for p in params:
            p.grad = None

    return zero_grad


def _batches(X: Tensor, y: Tensor, order: Tensor | None, batch_size: int, gather: bool) -> tuple:
    """One epoch's minibatches of X and y, in `order` (None: as stored).

    Data up to GATHER_BYTES are put in order once (one gather per epoch) and cut into views;
    larger data are gathered batch by batch (no second copy of the data set). The batches are the
    same either way: sample order[i * batch_size + j] is row j of batch i.
    """
    if order is None:
        return X.split(batch_size), y.split(batch_size)
    if gather:
        return X[order].split(batch_size), y[order].split(batch_size)
    index = order.split(batch_size)
    return (X[i] for i in index), (y[i] for i in index)


def _training_parts(loss: Loss, pred: Tensor, y: Tensor, from_logits: bool):
    """`loss.parts` for the training batches, with the per-batch checks done once for all of y.

    cross_entropy checks that class indices are in range, which reads a value back from the
    device (a host sync) in every batch; fit checks every training target once against the first
    batch's prediction instead, and then calls F.cross_entropy directly (the same computation).
    """
    if loss is not LOSSES["cross_entropy"] or y.dtype != torch.long or y.dim() != 1 or pred.dim() != 2:
        return loss.parts
    loss.parts(pred.detach()[:1].expand(len(y), -1), y, from_logits)  # raises as a batch would
    return lambda pred, target, from_logits: (F.cross_entropy(pred, target, reduction="sum"), pred.shape[0])


def _device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (CPU / default dtype without any)."""
    for p in model.parameters():
        return p.device, (p.dtype if p.is_floating_point() else torch.get_default_dtype())
    return torch.device("cpu"), torch.get_default_dtype()


def _tensors(data: Any, name: str, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Check an (X, y) pair and return it as tensors on `device`; floating data cast to `dtype`."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        got = f"a {type(data).__name__} of length {len(data)}" if isinstance(data, (tuple, list)) else type(data).__name__
        raise ValueError(f"{name} must be a pair (X, y) of tensors or numpy arrays; got {got}")
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


def _check_int(name: str, value: Any, minimum: int | None) -> None:
    """ValueError unless `value` is an int (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be an integer{bound}; got {value!r}")


def _postfix(train_loss: float, val_loss: float | None, val_accuracy: float | None) -> dict:
    postfix = {"train_loss": f"{train_loss:.4g}"}
    if val_loss is not None:
        postfix["val_loss"] = f"{val_loss:.4g}"
    if val_accuracy is not None:
        postfix["val_acc"] = f"{val_accuracy:.3f}"
    return postfix
