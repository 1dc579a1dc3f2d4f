"""fit_many: train several models of one architecture as one stacked model.

    models = [build(s) for s in seeds]          # build seeds its own init, e.g. torch.manual_seed(s)
    histories = ln.fit_many(models, train, val, seeds=seeds, loss="cross_entropy")
    histories = ln.fit(models, train, val, seed=seeds, loss="cross_entropy")   # the same call

What it computes. `fit(model, seed=s)` uses s for its shuffling generator; the weights were
initialised before, by whoever built the model. `fit_many(models, seeds=...)` gives `histories[i]`
and `models[i]`'s final weights equal, within rounding, to `fit(models[i], seed=seeds[i])`: each
model shuffles with its own generator (its own sample order, by gathered indices), has its own
optimizer state, stops early at its own epoch and may diverge on its own (recorded in
`history.diverged` and `histories.errors[i]` instead of raised, so the others go on). Equality is
by tolerance, not bits (tests/test_batched.py: 1e-10 relative in float64 after 50 steps, 1e-5 in
float32): a stacked matrix product (bmm) rounds differently from one model's mm.

How it is stacked (`loopnets.builder.stacking`). The S models are merged into one copy of models[0] whose affine layers hold the
S models' parameters stacked on a new first dimension, (S, out, in), and whose input is the S
models' minibatches concatenated along the batch dimension, (S * rows, *in). Everything that acts
sample by sample (activations, loops and their merges, COMBINE's passes and accumulations, skips,
reshapes, pooling) runs once for all models, unchanged; only the affine layers tell the models
apart: a Linear is one batched product `baddbmm(b, x.view(S, rows, in), W.transpose(1, 2))`, a
convolution one grouped convolution over the S models' channels. The optimizer (Adam, AdamW, SGD,
RMSprop: elementwise) updates the stacked tensors directly with its for-each kernels, so one
step is one forward, one backward and one optimizer call for all S models. COUPLE's re-tie
averages copy with copy elementwise, hence model by model.

The loop is `fit`'s, `loopnets.training.engine.train`: what differs plugs into it as the
engine's objects, `StackedBatches` (each model's own sample order), `StackedTask` (per-model loss
sums; the step's loss is their weighted sum) and `StackedModels` (the tracker: a History, early
stopping, best weights and divergence per model), plus a retie that holds the masked models.

A stopped model is masked, not removed: its loss term gets weight 0 and after every optimizer
step its parameters are put back to their values when it stopped (one `torch.where` per
parameter), so the shapes of the step never change; its best weights were written to its model
when it stopped.

What is refused (trained one after the other with `fit` instead, with one logged line saying why;
`batched=True` raises instead): modules whose computation may mix the batch rows (not in
`SUPPORTED`), loops whose backprop is not Tied, Truncated, Couple or Combine, dropout with p > 0
(`fit` draws its masks from the seeded global RNG), buffers, hooks, parameters shared by two
modules or not owned by an affine layer, and callable optimizers (they might treat parameters
jointly). Models of different architectures are an error.

Timing columns: a stacked epoch's train_seconds / val_seconds are its wall time divided by the
number of models it trained (the cost per model-epoch; the runner labels it as shared).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loopnets.core.dropout import Dropout
from loopnets.builder.layers import Reshape
from loopnets.core.loop import Loop, tie_
from loopnets.training.losses import Loss, get_loss
from loopnets.builder.network import Network
from loopnets.training.optim import OPTIMIZERS, OptimizerSpec, make_optimizer
from loopnets.builder.stacking import AFFINE, Stack, architecture, first_difference, merged_keys, stack_key
from loopnets.training.supervised import as_tensors, fit_one, predict
from loopnets.training.device import device_and_dtype
from loopnets.training.data import batches
from loopnets.training.engine import BestEpoch, check_options, diverged, epoch_record
from loopnets.training.engine import train as run_training
from loopnets.training.history import History, TrainingDiverged

log = logging.getLogger(__name__)

ROWWISE = (nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.GELU, nn.SiLU, nn.Softplus,
           nn.Flatten, nn.Unflatten, Reshape, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
           nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
SOFTMAX = (nn.Softmax, nn.LogSoftmax)  # accepted along a non-batch dimension
CONTAINERS = (nn.Sequential, nn.ModuleList, Loop, Network)
SUPPORTED = AFFINE + ROWWISE + SOFTMAX + CONTAINERS + (Dropout,)  # Dropout only with p == 0
ONE_MODEL_ONLY = {"pass_weights": None, "random_passes": None, "compile": False, "device": None, "precision": None,
                  "callbacks": None, "scheduler": None, "clip": None}  # fit's options that fit_many does not take


class ManyHistories(list):
    """The histories of `fit_many`, one per model in the order given (a list of History).

    Attributes:
        path: "batched" (one stacked model) or "sequential" (one `fit` per model).
        reason: why the sequential path was taken (None when batched).
        errors: per model, the TrainingDiverged `fit` would have raised, or None.
    """

    def __init__(self, histories: Sequence[History], path: str, reason: str | None, errors: Sequence):
        super().__init__(histories)
        self.path = path
        self.reason = reason
        self.errors = list(errors)


def fit_many(
    models: Sequence[nn.Module],
    train: tuple,
    val: tuple | None = None,
    *,
    seeds: Sequence[int],
    loss: str | Loss,
    optimizer: OptimizerSpec = ("adam", {"lr": 1e-3}),
    epochs: int = 100,
    batch_size: int = 16,
    progress: bool = True,
    early_stopping: int | None = None,
    restore_best: bool = True,
    shuffle: bool = True,
    batched: bool | None = None,
) -> ManyHistories:
    """Train `models[i]` with seed `seeds[i]` for every i, as one stacked model when possible.

    The result equals `[fit(m, ..., seed=s) for m, s in zip(models, seeds)]` within rounding
    (histories except their timing columns, and the models' final weights), with one difference:
    a model whose loss turns nan / inf is recorded (`history.diverged`, `histories.errors[i]`)
    instead of raised, so the others finish. See the module docstring for how and when.

    Args:
        models: S >= 1 distinct models of one architecture (same modules, shapes and settings),
            each already initialised (e.g. `torch.manual_seed(s); build()`); trained in place.
        train, val, loss, optimizer, epochs, batch_size, progress, early_stopping, restore_best,
            shuffle: as for `loopnets.fit`, applied to every model.
        seeds: S integer seeds, one per model: each seeds that model's shuffling generator.
        batched: None: stack when possible, else train one after the other (one logged line says
            why); True: raise a ValueError saying why when stacking is not possible; False: always
            one after the other.

    Returns:
        A ManyHistories (a list of History, in the order of `models`) with `.path`, `.reason`
        and `.errors`.
    """
    if isinstance(models, nn.Module) or isinstance(seeds, (int, str)) or not hasattr(seeds, "__len__"):
        raise ValueError(
            f"several seeds need one model each: pass models=[build(s) for s in seeds] and seeds=[...]; got "
            f"{type(models).__name__} models and seeds={seeds!r}"
        )
    models, seeds = list(models), list(seeds)
    _check_arguments(models, seeds, epochs, batch_size, early_stopping, val)
    if batched not in (None, True, False):
        raise ValueError(f"batched must be None (automatic), True or False; got {batched!r}")
    reason = "batched=False" if batched is False else why_not_batched(models[0], optimizer)
    if reason is not None and batched is True:
        raise ValueError(f"these models cannot be trained as one stacked model: {reason}; "
                         "pass batched=None to train them one after the other instead")
    settings = {"loss": loss, "optimizer": optimizer, "epochs": int(epochs), "batch_size": int(batch_size),
                "progress": progress, "early_stopping": early_stopping, "restore_best": restore_best, "shuffle": shuffle}
    if reason is not None:
        if batched is None:
            log.warning("fit_many: training %d models one after the other: %s", len(models), reason)
        return _fit_sequential(models, seeds, train, val, reason, settings)
    return _fit_stacked(models, [int(s) for s in seeds], train, val, **settings)


def why_not_batched(model: nn.Module, optimizer: OptimizerSpec) -> str | None:
    """Why `model`'s copies cannot be trained as one stacked model (None: they can)."""
    if not (isinstance(optimizer, str) or (isinstance(optimizer, (tuple, list)) and optimizer and isinstance(optimizer[0], str))):
        return (f"a callable optimizer might treat its parameters jointly (the models' would mix); use a named one "
                f"({', '.join(OPTIMIZERS)})")
    for path, module in model.named_modules():
        where = f"module {path or '(root)'} ({type(module).__name__})"
        if type(module) not in SUPPORTED:
            return (f"{where} is not one of the modules known to act sample by sample "
                    "(loopnets.training.batched.SUPPORTED: linear and conv layers, elementwise activations, softmax, pooling, "
                    "reshapes, loops and networks)")
        if isinstance(module, Loop) and module.backprop.why_not("batched") is not None:
            return f"{where} uses {module.backprop.label} backprop, which cannot be stacked: {module.backprop.why_not('batched')}"
        if isinstance(module, Dropout) and module.p > 0:
            return (f"{where} has p={module.p}: its masks come from the global RNG, which `fit` seeds per run; "
                    "stacked models would draw different masks")
        if isinstance(module, SOFTMAX) and module.dim in (None, 0):
            return f"{where} has dim={module.dim}, which may act across the batch; give it dim=-1"
        if isinstance(module, nn.Flatten) and module.start_dim == 0 or isinstance(module, nn.Unflatten) and module.dim == 0:
            return f"{where} reshapes the batch dimension"
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks:
            return f"{where} has hooks, which would see all models at once"
        if any(True for _ in module.buffers(recurse=False)):
            return f"{where} has buffers (e.g. batch-norm statistics), which are not stacked"
    params = list(model.named_parameters(remove_duplicate=False))
    if len({id(p) for _, p in params}) != len(params):
        return "a parameter is shared by two modules (tie weights by reusing one module instead)"
    owned = {id(p) for m in model.modules() if type(m) in AFFINE for p in m.parameters(recurse=False)}
    for name, p in params:
        if id(p) not in owned:
            return f"parameter {name} does not belong to a linear or conv layer"
    return None


# --- the stacked path: a task, a batch source and a tracker for `engine.train` ----------------


def _fit_stacked(models, seeds, train, val, *, loss, optimizer, epochs, batch_size, progress, early_stopping,
                 restore_best, shuffle) -> ManyHistories:
    """The body of `fit_many` for stackable models: the one loop (`engine.train`) on the stacked model.

    What differs from `fit` plugs into the loop: the batches hold every model's rows
    (`StackedBatches`), the task's loss is the sum of the live models' mean losses and its batch
    sums are per model (`StackedTask`), and the tracker keeps a History, early stopping and best
    weights per model, masking a model that stops or diverges (`StackedModels`).
    """
    loss = get_loss(loss)
    device, dtype = device_and_dtype(models[0])
    prepare = lambda name: lambda pair: as_tensors(pair, name, device, dtype, models[0])  # noqa: E731
    X, y = prepare("train")(train)  # (N, *in), (N, *out) or (N,)
    val = batches(val, "val", prepare("val")) if val is not None else None
    stack = Stack(models)
    tracker = StackedModels(models, stack, loss.name, early_stopping, restore_best, dtype, device)
    task = StackedTask(loss, y, tracker.weights)
    data = StackedBatches(X, y, [torch.Generator().manual_seed(s) for s in seeds], shuffle, batch_size)

    def retie(loops: list) -> None:
        stack.hold()  # masked models' parameters back to their values when they stopped
        tie_(loops)

    return run_training(stack.model, task, data, val, optimizer=partial(stacked_optimizer, optimizer), epochs=epochs,
                 seed=seeds[-1],  # the global RNG as `fit` leaves it after the last model (nothing draws from it)
                 progress=progress, desc="fit_many", retie=retie, tracker=tracker)


def stacked_optimizer(spec: OptimizerSpec, params: list[Tensor]) -> torch.optim.Optimizer:
    """The optimizer of `spec` over the stacked trainable parameters, with for-each kernels (one
    kernel per operation over all stacked tensors)."""
    opt = make_optimizer(spec, [p for p in params if p.requires_grad])
    for group in opt.param_groups:
        if group.get("foreach", False) is None and not group.get("fused"):
            group["foreach"] = True
    return opt


class StackedBatches:
    """The training batches of S models, each shuffled by its own generator (CPU: the same order
    on every device): `epoch()` yields `stacked_batches`."""

    def __init__(self, X: Tensor, y: Tensor, generators: list[torch.Generator], shuffle: bool, batch_size: int):
        self.X, self.y, self.generators, self.shuffle, self.batch_size = X, y, generators, shuffle, batch_size

    def epoch(self):
        orders = [torch.randperm(len(self.X), generator=g) if self.shuffle else None for g in self.generators]
        return stacked_batches(self.X, self.y, orders, self.batch_size)


class StackedTask:
    """The engine task of the stacked model: the loss is the sum over models of each model's mean
    loss times its weight (1 live, 0 masked), so each live model's loss gets gradient 1, as its own
    backward() would; the batch sums are per model, (S,)."""

    def __init__(self, loss: Loss, y: Tensor, weights: Tensor):
        self.loss_fn, self.weights = loss, weights
        self.loss_name, self.finish = loss.name, loss.finish
        self.parts = StackedLoss(loss, y, len(weights))

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, int]:
        xb, yb = batch  # (S * rows, *in), (S, rows, ...)
        pred, from_logits = predict(model, xb, self.loss_fn)  # (S * rows, *out)
        batch_sums, batch_count = self.parts(pred, yb, from_logits)  # (S,), int
        return (self.finish(batch_sums / batch_count) * self.weights).sum(), batch_sums, batch_count

    def evaluate(self, model: nn.Module, batches) -> dict:
        losses, accuracies = evaluate_stacked(model, len(self.weights), batches, self.loss_fn)
        return {"loss": losses, "accuracy": accuracies}


class StackedModels:
    """The engine tracker of S stacked models: per model a History, early stopping and best weights
    (`BestEpoch`), divergence recorded (`histories.errors[i]`) instead of raised. A model that stops
    is masked: its loss weight becomes 0, `Stack.hold` keeps its parameters, and its final weights
    (its best epoch's, if kept) are written to its model; training ends when none is left."""

    def __init__(self, models: list[nn.Module], stack: Stack, loss_name: str, early_stopping: int | None,
                 restore_best: bool, dtype: torch.dtype, device: torch.device):
        self.models, self.stack, self.loss_name = models, stack, loss_name
        S = len(models)
        self.histories = [History() for _ in models]
        self.errors: list[TrainingDiverged | None] = [None] * S
        self.best = [BestEpoch(early_stopping, restore_best) for _ in models]
        self.training = list(range(S))  # models still training
        self.weights = torch.ones(S, dtype=dtype, device=device)  # 1 live, 0 masked: each model's loss weight
        self.postfix, self.watched = {}, None

    @property
    def live(self) -> int:
        return len(self.training)

    @property
    def result(self) -> ManyHistories:
        return ManyHistories(self.histories, "batched", None, self.errors)

    def start(self) -> None:
        pass

    def train_loss(self, epoch: int, losses: Tensor, sums: Tensor) -> list[float]:
        return losses.tolist()  # divergence is checked per model in end_epoch

    def end_epoch(self, epoch: int, train_loss: list[float], metrics: dict, train_seconds: float,
                  val_seconds: float, sums: Tensor) -> bool:
        for i in list(self.training):
            history, loss_i = self.histories[i], train_loss[i]
            own = {name: (values[i] if values is not None else None) for name, values in metrics.items()}  # model i's
            val_loss = own.get("loss")
            if not math.isfinite(loss_i) or (val_loss is not None and not math.isfinite(val_loss)):
                self.errors[i] = diverged(history, epoch, self.loss_name, loss_i, val_loss, sums[:, i])
                self.stop(i)
                continue
            history.records.append(epoch_record(history, epoch, loss_i, own, train_seconds, val_seconds))
            if self.best[i].update(history, epoch, val_loss, lambda: self.stack.extract(i)):
                self.stop(i)
        self.postfix = {"training": self.live}
        return not self.training

    def stop(self, i: int) -> None:
        """Model i stops: its final weights go to its model; it is masked."""
        self.write(i)
        self.training.remove(i)
        self.weights[i] = 0.0
        self.stack.freeze(i)

    def write(self, i: int) -> None:
        """Model i's final weights (its best epoch's, if kept) into models[i]."""
        best = self.best[i].state
        self.stack.write(self.models[i], best if best is not None else self.stack.extract(i))

    def close(self) -> None:
        for i in self.training:  # epochs exhausted (or an exception): as fit's `finally`
            self.write(i)


def stacked_batches(X: Tensor, y: Tensor, orders: list[Tensor | None], batch_size: int):
    """One epoch's batches for S models with sample orders `orders` (None: as stored): pairs
    x (S * rows, *in), the S models' rows one after the other, and targets (S, rows, ...)."""
    S, n = len(orders), len(X)
    order = torch.stack([o if o is not None else torch.arange(n) for o in orders]).to(X.device)  # (S, N)
    xs, ys = X[order], y[order]  # one gather: (S, N, *in), (S, N, ...)
    full, last = divmod(n, batch_size)
    if full:
        def split(t: Tensor) -> Tensor:  # (S, N, ...) -> (batches, S, batch_size, ...)
            return t[:, : full * batch_size].reshape(S, full, batch_size, *t.shape[2:]).transpose(0, 1).contiguous()

        for xb, yb in zip(split(xs).unbind(0), split(ys).unbind(0)):
            yield xb.view(S * batch_size, *X.shape[1:]), yb
    if last:
        yield xs[:, full * batch_size :].reshape(S * last, *X.shape[1:]), ys[:, full * batch_size :]


class StackedLoss:
    """Each model's summed loss over its rows of a stacked batch, (S,), and the rows per model.

    Cross-entropy on class indices (every index checked once, here) is one call for all models;
    other losses are `loss.parts` model by model.
    """

    def __init__(self, loss: Loss, y: Tensor, S: int):
        self.loss, self.S = loss, S
        self.fast = loss is get_loss("cross_entropy") and y.dtype == torch.long and y.dim() == 1
        self.checked = False
        self.y = y

    def __call__(self, pred: Tensor, target: Tensor, from_logits: bool) -> tuple[Tensor, int]:
        S, rows = target.shape[:2]
        if not self.checked:  # the checks `loss.parts` makes, once for every training target
            self.fast = self.fast and pred.dim() == 2
            if self.fast:
                self.loss.parts(pred.detach()[:1].expand(len(self.y), -1), self.y, from_logits)
            self.checked = True
        if self.fast and from_logits:  # F.cross_entropy is log_softmax, then nll, row by row
            terms = F.nll_loss(F.log_softmax(pred, 1), target.reshape(-1), reduction="none").view(S, rows)
            return terms.sum(1), rows
        parts = [self.loss.parts(p, t, from_logits) for p, t in zip(pred.reshape(S, rows, *pred.shape[1:]), target)]
        return torch.stack([part[0] for part in parts]), parts[0][1]


def evaluate_stacked(model: nn.Module, S: int, batches, loss: Loss) -> tuple[list[float], list[float] | None]:
    """`loopnets.evaluate` for every model of the stacked `model` over (x, target) `batches`:
    (losses, accuracies or None), one per model."""
    device = next(model.parameters()).device
    total = torch.zeros(S, dtype=torch.float64, device=device)
    hits = torch.zeros(S, dtype=torch.int64, device=device)
    count = seen = 0
    with torch.no_grad():
        for x, target in batches:
            rows = len(x)
            pred, from_logits = predict(model, x.repeat(S, *[1] * (x.dim() - 1)), loss)
            preds = pred.view(S, rows, *pred.shape[1:]).unbind(0)
            parts = [loss.parts(p, target, from_logits) for p in preds]
            total += torch.stack([part[0] for part in parts]).double()
            count += parts[0][1]
            if loss.classification:
                correct = [loss.correct(p, target, from_logits) for p in preds]
                hits += torch.stack([c[0] for c in correct])
                seen += correct[0][1]
    losses = loss.finish(total / count).tolist()
    accuracies = [h / seen for h in hits.tolist()] if loss.classification else None
    return losses, accuracies


def _fit_sequential(models, seeds, train, val, reason: str, settings: dict) -> ManyHistories:
    histories, errors = [], []
    for model, seed in zip(models, seeds):
        try:
            histories.append(fit_one(model, train, val, seed=seed, **settings, **ONE_MODEL_ONLY))
            errors.append(None)
        except TrainingDiverged as err:
            histories.append(err.history if err.history is not None else History(diverged=True))
            errors.append(err)
    return ManyHistories(histories, "sequential", reason, errors)


# --- checks ----------------------------------------------------------------------------------


def _check_arguments(models, seeds, epochs, batch_size, early_stopping, val) -> None:
    if not models or not all(isinstance(m, nn.Module) for m in models):
        raise ValueError(f"models must be a non-empty list of nn.Module, one per seed; got {models!r}")
    if len(models) != len(seeds):
        raise ValueError(
            f"got {len(models)} models for {len(seeds)} seeds; pass one model per seed, each initialised for it, "
            "e.g. models = [build(s) for s in seeds]"
        )
    if len({id(m) for m in models}) != len(models):
        raise ValueError("the same model object appears twice in models; build one model per seed")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise ValueError(f"seeds must be integers; got {s!r}")
    check_options(epochs, batch_size, early_stopping, val)
    for i, model in enumerate(models):
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"models[{i}] ({type(model).__name__}) has no trainable parameters; there is nothing to fit")
    keys = merged_keys([stack_key(m) for m in models])
    for i, model in enumerate(models[1:], start=1):
        if keys[i] != keys[0]:
            raise ValueError(
                f"models[{i}] differs from models[0] ({first_difference(architecture(models[0]), architecture(model))}); "
                "fit_many trains models of one architecture (networks may differ only in COMBINE pass counts and in "
                "'add' skips): build every model with the same code and settings, or call fit per model"
            )
