"""fit_many: train several seeds of one architecture as one batched computation, bit for bit.

    models = [build(s) for s in seeds]          # build seeds its own init, e.g. torch.manual_seed(s)
    histories = ln.fit_many(models, train, val, seeds=seeds, loss="cross_entropy")
    histories = ln.fit(models, train, val, seed=seeds, loss="cross_entropy")   # the same call

What "one at a time" means. `fit(model, seed=s)` uses s for its shuffling generator (and seeds
the global RNG); the weights were initialised before, by whoever built the model. So training S
seeds takes S models: `fit_many(models, seeds=...)` gives `histories[i]` and `models[i]`'s final
weights equal to `fit(models[i], seed=seeds[i])`, all columns but the timings: each seed shuffles
with its own generator, has its own optimizer state, stops early at its own epoch (its history
ends there, its best epoch is restored, it leaves the batch), and may diverge on its own (as in
`fit`, detected at the end of an epoch; recorded in `history.diverged` and `histories.errors[i]`,
the TrainingDiverged `fit` would raise, instead of raised, so that the other seeds go on).

How it is batched: seed-batched layers. The S models are merged into one copy of models[0] whose
affine layers (Linear, Conv, ConvTranspose) hold the S seeds' parameters stacked on a new first
dimension, and whose input is the S seeds' minibatches concatenated along the batch dimension,
(S * rows, *in). Everything that acts sample by sample (activations, loops and their merges,
COMBINE's passes, accumulations and straight-through backward, skips, reshapes, pooling) then
runs once for all seeds, unchanged; only the affine layers tell the seeds apart. Per step: one
forward, the S losses, one backward, one optimizer step, one COUPLE re-tie (`Loop.retie_` on the
stacked copies averages copy with copy, seed by seed: never across seeds).

Why not torch.func (stack_module_state + vmap + functional_call), measured with torch 2.13 and MKL
on this CPU, float64 and float32:
- vmap turns each seed's matrix product into one bmm, and MKL's batched gemm rounds differently
  from its gemm for common shapes (a batch-1 row (1, 25) @ (25, 25): every trial differs, by up
  to ~5e-15 relative), so vmap cannot reproduce one-at-a-time training bit for bit. Its
  elementwise ops would not either: ATen computes a tensor's last few elements with scalar code
  and the rest vectorised, and for sigmoid (unlike relu, tanh, exp) the two round differently,
  so a seed's values depend on where its block sits in a stacked tensor.
- Even one seed's own gemm depends on where its operands lie: MKL rounds differently when an
  operand or the output is not 16-byte aligned (fresh tensors are 64-byte aligned).
So each affine layer calls the very kernels `fit` calls (mm / addmm / conv and, in backward, the
products autograd's MmBackward computes), once per seed, on operands placed like `fit`'s: stacked
parameters live in storage whose per-seed blocks start on 64-byte boundaries; each seed's rows are
followed by zero rows up to a multiple of 64 bytes (8 rows in float64, 16 in float32, none for
batch sizes that are multiples of these; padding rows are never multiplied and never reach a
loss); a batch's input starts at the byte offset modulo 64 that `fit`'s batch view has. The
optimizer sees every seed's parameters as tensors of their own (views into the stack), so its
kernels, fused or not, compute what they compute in `fit`. The S small products per layer are the
price of exactness; the saving is everything else: one pass of Python and elementwise kernels,
one loss bookkeeping, one autograd graph walk and one optimizer call for all seeds.

What is refused. Modules whose batched computation is not known to be exact (`SUPPORTED` lists
the accepted ones; sigmoid is not, see above), dropout with p > 0 (`fit` draws its masks from the
seeded global RNG), buffers, hooks, parameters shared by two modules, and callable optimizers.
Such models are trained one after the other with `fit` (exact by definition):
`histories.path` is "batched" or "sequential", `histories.reason` says why. Models of different
architectures are an error. Tested on CPU; on CUDA the construction is the same but untested.

Timing columns: a batched epoch's train_seconds / val_seconds are its wall time divided by the
number of seeds it trained (the cost per model-epoch).
"""

from __future__ import annotations

import copy
import math
import numbers
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loopnets.backprop import Combine, Couple, Tied
from loopnets.conv import Conv1d as UnfoldConv1d
from loopnets.dropout import Dropout
from loopnets.layers import Reshape
from loopnets.loop import Loop
from loopnets.losses import Loss, get_loss
from loopnets.network import Network
from loopnets.optim import OPTIMIZERS, OptimizerSpec, make_optimizer
from loopnets.train import GATHER_BYTES, _predict, _tensors, fit
from loopnets.training.device import device_and_dtype
from loopnets.training.engine import EVAL_BATCH_SIZE, BestEpoch, check_options, diverged, epoch_bar
from loopnets.training.history import EpochRecord, History, TrainingDiverged

ALIGN_BYTES = 64  # a fresh CPU tensor's alignment; every per-seed block starts on such a boundary

AFFINE = (nn.Linear, nn.Conv1d, UnfoldConv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
ROWWISE = (nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Flatten, nn.Unflatten, Reshape, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
SOFTMAX = (nn.Softmax, nn.LogSoftmax)  # accepted along a non-batch dimension
CONTAINERS = (nn.Sequential, nn.ModuleList, Loop, Network)
SUPPORTED = AFFINE + ROWWISE + SOFTMAX + CONTAINERS + (Dropout,)  # Dropout only with p == 0


class ManyHistories(list):
    """The histories of `fit_many`, one per seed in the order given (a list of History).

    Attributes:
        path: "batched" (one batched computation) or "sequential" (one `fit` per seed).
        reason: why the sequential path was taken (None when batched).
        errors: per seed, the TrainingDiverged `fit` would have raised, or None.
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
    """Train `models[i]` with seed `seeds[i]` for every i, as one batched computation when exact.

    The result equals `[fit(m, ..., seed=s) for m, s in zip(models, seeds)]` bit for bit
    (histories except their timing columns, and the models' final weights), with one difference:
    a seed whose loss turns nan / inf is recorded (`history.diverged`, `histories.errors[i]`)
    instead of raised, so the other seeds finish. See the module docstring for how and when.

    Memory: one copy of the S models' parameters and optimizer state, activations for S
    minibatches. Time per step: about one model's step plus S small matrix products per layer;
    on iris at batch size 1 with 5 seeds, 1.6 to 1.9 times less CPU time per model-epoch than
    `fit` seed after seed (scripts/time_fit_many.py).

    Args:
        models: S >= 1 distinct models of one architecture (same modules, shapes and settings),
            each already initialised (e.g. `torch.manual_seed(s); build()`); trained in place.
        train, val, loss, optimizer, epochs, batch_size, progress, early_stopping, restore_best,
            shuffle: as for `loopnets.fit`, applied to every seed.
        seeds: S integer seeds, one per model: each seeds that model's shuffling generator.
        batched: None: batch when it is exact, else train one after the other; True: raise a
            ValueError saying why when batching is not possible; False: always one after the other.

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
    reason = "batched=False" if batched is False else _why_not_batched(models[0], optimizer)
    if reason is not None and batched is True:
        raise ValueError(f"these models cannot be trained as one exact batched computation: {reason}; "
                         "pass batched=None to train them one after the other instead")
    settings = {"loss": loss, "optimizer": optimizer, "epochs": int(epochs), "batch_size": int(batch_size),
                "progress": progress, "early_stopping": early_stopping, "restore_best": restore_best, "shuffle": shuffle}
    if reason is not None:
        return _fit_sequential(models, seeds, train, val, reason, settings)
    return _fit_batched(models, [int(s) for s in seeds], train, val, **settings)


def _why_not_batched(model: nn.Module, optimizer: OptimizerSpec) -> str | None:
    """Why `model`'s seeds cannot be trained as one exact batched computation (None: they can).

    Every module must be in `SUPPORTED` (softmax along a non-batch dimension, dropout only with
    p == 0), without buffers or hooks, every parameter must belong to one affine layer, and the
    optimizer must be a named one (a callable might treat its parameters jointly).
    """
    if not (isinstance(optimizer, str) or (isinstance(optimizer, (tuple, list)) and optimizer and isinstance(optimizer[0], str))):
        return (f"a callable optimizer might treat its parameters jointly (the seeds' would mix); use a named one "
                f"({', '.join(OPTIMIZERS)})")
    for path, module in model.named_modules():
        where = f"module {path or '(root)'} ({type(module).__name__})"
        if type(module) not in SUPPORTED:
            return (f"{where} is not one of the modules whose batched computation is known to be exact "
                    "(loopnets.batched.SUPPORTED: affine layers, relu / leaky_relu / tanh / softmax, pooling, "
                    "reshapes, loops and networks; sigmoid, for one, rounds a tensor's last elements differently)")
        if isinstance(module, Loop) and not isinstance(module.backprop, (Tied, Couple, Combine)):
            return (f"{where} uses {type(module.backprop).__name__} backprop, whose no-grad passes, solver and "
                    "statistics are per model; only Tied, Couple and Combine loops are batched")
        if isinstance(module, Dropout) and module.p > 0:
            return (f"{where} has p={module.p}: its masks come from the global RNG, which `fit` seeds per run; "
                    "batched seeds would draw different masks")
        if isinstance(module, SOFTMAX) and module.dim in (None, 0):
            return f"{where} has dim={module.dim}, which may act across the batch; give it dim=-1"
        if isinstance(module, nn.Flatten) and module.start_dim == 0 or isinstance(module, nn.Unflatten) and module.dim == 0:
            return f"{where} reshapes the batch dimension"
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks:
            return f"{where} has hooks, which would see all seeds at once"
        if any(True for _ in module.buffers(recurse=False)):
            return f"{where} has buffers (e.g. batch-norm statistics), which are not batched"
    params = list(model.named_parameters(remove_duplicate=False))
    if len({id(p) for _, p in params}) != len(params):
        return "a parameter is shared by two modules (tie weights by reusing one module instead)"
    owned = {id(p) for m in model.modules() if type(m) in AFFINE for p in m.parameters(recurse=False)}
    for name, p in params:
        if id(p) not in owned:
            return f"parameter {name} does not belong to an affine layer"
    return None


# --- the batched training loop ---------------------------------------------------------------


def _fit_batched(models, seeds, train, val, *, loss, optimizer, epochs, batch_size, progress, early_stopping,
                 restore_best, shuffle) -> ManyHistories:
    """The body of `fit_many` for batchable models: `fit`'s loop with a seed dimension."""
    loss = get_loss(loss)
    device, dtype = device_and_dtype(models[0])
    X, y = _tensors(train, "train", device, dtype, models[0])  # (N, *in), (N, *out) or (N,)
    X_val, y_val = _tensors(val, "val", device, dtype, models[0]) if val is not None else (None, None)
    for s in seeds:
        torch.manual_seed(s)  # the global RNG as `fit` leaves it after the last seed (nothing draws from it)
    generators = [torch.Generator().manual_seed(s) for s in seeds]  # CPU: same order on every device

    stack = _SeedStack(models)  # the merged model; stack.live: positions in `models`, in stack order
    opt = _SeedOptimizer(optimizer, stack)
    feed = _Feed(X, y, batch_size, shuffle, device)
    histories = [History() for _ in models]
    errors: list[TrainingDiverged | None] = [None] * len(models)
    best = [BestEpoch(early_stopping, restore_best) for _ in models]  # early stopping, per seed
    fast = None  # whether `_seed_sums` may shortcut the loss; decided at the first batch

    def finish(position: int) -> None:
        """Write seed `position`'s final weights (its best epoch's, if kept) into its model."""
        i = stack.live[position]
        stack.write(models[i], best[i].state if best[i].state is not None else stack.extract(position))

    bar = epoch_bar(epochs, "fit_many", progress)
    try:
        for epoch in bar:
            stack.model.train()
            start = time.perf_counter()
            orders = [torch.randperm(len(X), generator=generators[i]) for i in stack.live] if shuffle else None
            sums, count = [], 0
            for xb, yb, real in feed.epoch(orders, len(stack.live)):
                stack.rows.real = real
                pred, from_logits = _predict(stack.model, xb, loss)  # (S * padded, *out)
                if fast is None:
                    fast = _fast_cross_entropy(loss, pred, y, from_logits)
                batch_sums, batch_count = _seed_sums(loss, pred, yb, real, from_logits, fast)  # (S,), int
                values = loss.finish(batch_sums / batch_count)  # each seed's mean over its batch
                opt.zero_grad()
                values.sum().backward()  # each seed's loss gets gradient 1, as its own backward() would
                opt.step()
                for loop in stack.coupled:  # tie_(stack.model): COUPLE copies re-tied, seed by seed
                    loop.retie_()
                sums.append(batch_sums.detach())
                count += batch_count
            sums = torch.stack(sums).double()  # (batches, S)
            train_losses = loss.finish(sums.cumsum(0)[-1] / count).tolist()  # summed in order, as fit does
            S = len(stack.live)
            train_seconds = (time.perf_counter() - start) / S

            val_losses = val_accuracies = None
            val_seconds = 0.0
            if X_val is not None:
                stack.model.eval()
                start = time.perf_counter()
                val_losses, val_accuracies = _evaluate_many(stack, X_val, y_val, loss)
                val_seconds = (time.perf_counter() - start) / S

            ended = []
            for p, i in enumerate(stack.live):
                history, train_loss = histories[i], train_losses[p]
                val_loss = val_losses[p] if val_losses is not None else None
                if not math.isfinite(train_loss) or (val_loss is not None and not math.isfinite(val_loss)):
                    errors[i] = diverged(history, epoch, loss.name, train_loss, val_loss, sums[:, p])
                    finish(p)
                    ended.append(p)
                    continue
                val_accuracy = val_accuracies[p] if val_accuracies is not None else None
                history.records.append(
                    EpochRecord(epoch, train_loss, val_loss, val_accuracy, train_seconds, val_seconds)
                )
                if best[i].update(history, epoch, val_loss, lambda: stack.extract(p)):
                    finish(p)
                    ended.append(p)
            if ended:
                opt.drop(ended)  # the stack and its optimizer go on with the other seeds
            bar.set_postfix({"seeds": len(stack.live)}, refresh=False)
            if not stack.live:
                break
    finally:
        bar.close()
        for p in range(len(stack.live)):  # epochs exhausted (or an exception): as fit's `finally`
            finish(p)
    return ManyHistories(histories, "batched", None, errors)


def _seed_sums(loss: Loss, pred: Tensor, target: Tensor, real: int, from_logits: bool, fast: bool) -> tuple[Tensor, int]:
    """Each seed's summed loss over its `real` rows, (S,), and the count: `loss.parts` per seed.

    pred (S * padded, *out); target (S, padded, ...). With `fast` (cross-entropy on class indices,
    all checked in range) the log-softmax, row by row, runs once for all seeds, as F.cross_entropy
    does per seed, and a batch of one row needs no per-seed call at all: its nll sum is its term.
    """
    S, padded = target.shape[:2]
    if fast:
        logp = F.log_softmax(pred, 1)  # what F.cross_entropy computes first, row by row
        if real == 1:
            return F.nll_loss(logp, target.view(-1), reduction="none").view(S, padded)[:, 0], 1
        targets = target[:, :real].unbind(0)
        return torch.stack([F.nll_loss(lp, t, reduction="sum") for lp, t in zip(_rows(logp, S, padded, real), targets)]), real
    parts = [loss.parts(p, t, from_logits) for p, t in zip(_rows(pred, S, padded, real), target[:, :real].unbind(0))]
    return torch.stack([part[0] for part in parts]), parts[0][1]


def _fast_cross_entropy(loss: Loss, pred: Tensor, y: Tensor, from_logits: bool) -> bool:
    """Whether `_seed_sums` may shortcut the loss: cross-entropy on class indices, every one of
    which is checked here once (raising as `loss.parts` would for a batch holding a bad one)."""
    if loss is not get_loss("cross_entropy") or y.dtype != torch.long or y.dim() != 1 or pred.dim() != 2:
        return False
    loss.parts(pred.detach()[:1].expand(len(y), -1), y, from_logits)
    return True


class _Feed:
    """Each epoch's minibatches for the seeds in the stack, laid out as `fit` lays out its own.

    A batch is x (S * padded, *in), the S seeds' rows each followed by zero rows up to `padded`
    (a multiple of 64 bytes), and targets (S, padded, ...). BLAS rounding depends on where an
    operand lies in memory (see the module docstring), so each seed's block starts at the byte
    offset modulo 64 that `fit`'s batch has: `fit` cuts its batches as views of one gathered (or
    the given) tensor (loopnets.training.data.TensorBatches), so batch b starts b * batch_size rows into it.
    """

    def __init__(self, X: Tensor, y: Tensor, batch_size: int, shuffle: bool, device: torch.device):
        self.X = torch.cat([X, X.new_zeros((1, *X.shape[1:]))])  # row N: zeros, for padding rows
        self.y = torch.cat([y, y.new_zeros((1, *y.shape[1:]))])
        self.n, self.batch_size, self.device = len(X), batch_size, device
        self.rows = ALIGN_BYTES // X.element_size() if ALIGN_BYTES % X.element_size() == 0 else 1
        row_bytes = X[0].numel() * X.element_size()
        gathered = X.nelement() * X.element_size() + y.nelement() * y.element_size() <= GATHER_BYTES
        base = X.data_ptr() if not shuffle else 0 if gathered else None  # None: fit indexes each batch afresh
        self.offsets = [0 if base is None else (base + start * row_bytes) % ALIGN_BYTES
                        for start in range(0, len(X), batch_size)]  # bytes, per batch

    def epoch(self, orders: list[Tensor] | None, S: int) -> list[tuple[Tensor, Tensor, int]]:
        """The epoch's batches for S seeds whose sample orders are `orders` (None: as stored)."""
        order = torch.arange(self.n).expand(S, -1) if orders is None else torch.stack(orders)  # (S, N)
        order = order.to(self.device)
        rows = self.rows if S > 1 else 1  # one seed needs no padding: its block starts the tensor
        full, last = divmod(self.n, self.batch_size)
        out = []
        for start, count, real in ((0, full, self.batch_size), (full * self.batch_size, 1 if last else 0, last)):
            if count == 0:
                continue
            index = order[:, start : start + count * real].reshape(S, count, real).transpose(0, 1).contiguous()  # (count, S, real)
            padded = -(-real // rows) * rows
            if padded > real:
                index = torch.cat([index, index.new_full((count, S, padded - real), self.n)], dim=2)
            xs, ys = self.X[index], self.y[index]  # one gather: (count, S, padded, *in), (count, S, padded, ...)
            for b in range(count):
                x = _placed(xs[b].view(S * padded, *xs.shape[3:]), self.offsets[start // self.batch_size + b])
                out.append((x, ys[b], real))
        return out


def _placed(x: Tensor, offset: int) -> Tensor:
    """x, or a copy of it starting `offset` bytes past a 64-byte boundary."""
    if x.data_ptr() % ALIGN_BYTES == offset:
        return x
    shift = offset // x.element_size()
    return torch.empty(x.numel() + shift, dtype=x.dtype, device=x.device)[shift:].view(x.shape).copy_(x)


def _evaluate_many(stack: _SeedStack, X: Tensor, y: Tensor, loss: Loss) -> tuple[list[float], list[float] | None]:
    """`train._evaluate` for every seed in the stack: (losses, accuracies or None)."""
    S = len(stack.live)
    rows = ALIGN_BYTES // X.element_size() if S > 1 and ALIGN_BYTES % X.element_size() == 0 else 1
    total = torch.zeros(S, dtype=torch.float64, device=X.device)
    hits = torch.zeros(S, dtype=torch.int64, device=X.device)
    count = seen = 0
    with torch.no_grad():
        for start in range(0, len(X), EVAL_BATCH_SIZE):
            x, target = X[start : start + EVAL_BATCH_SIZE], y[start : start + EVAL_BATCH_SIZE]  # views, as in fit
            real = len(x)
            padded = -(-real // rows) * rows
            blocks = torch.cat([x, x.new_zeros((padded - real, *x.shape[1:]))]) if padded > real else x
            stack.rows.real = real
            pred, from_logits = _predict(stack.model, _placed(blocks.repeat(S, *[1] * (x.dim() - 1)), x.data_ptr() % ALIGN_BYTES), loss)
            preds = _rows(pred, S, padded, real)
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
            histories.append(fit(model, train, val, seed=seed, **settings))
            errors.append(None)
        except TrainingDiverged as err:
            histories.append(err.history if err.history is not None else History(diverged=True))
            errors.append(err)
    return ManyHistories(histories, "sequential", reason, errors)


# --- seed-batched affine layers --------------------------------------------------------------


class _Rows:
    """The real (unpadded) rows per seed of the batch being computed; shared by a stack's layers.

    Also keeps the zero blocks that pad each seed's rows (one per shape, reused every step).
    """

    __slots__ = ("_zeros", "real")

    def __init__(self) -> None:
        self.real = 0
        self._zeros: dict[tuple, Tensor] = {}

    def zeros(self, like: Tensor, rows: int) -> Tensor:
        key = (rows, *like.shape[1:], like.dtype, like.device)
        block = self._zeros.get(key)
        if block is None:
            block = self._zeros[key] = like.new_zeros((rows, *like.shape[1:]))
        return block


class _SeedAffine:
    """Mixin for an affine layer whose parameters are stacked over S seeds on dim 0.

    Input (S * padded, *in): seed s owns rows [s * padded, s * padded + rows.real); the rest of its
    block is padding. Each seed's rows go through the layer's own kernel with that seed's
    parameters (exactly the call `fit` makes); the output has zero padding rows.
    """

    seeds: int
    rows: _Rows

    def forward(self, x: Tensor) -> Tensor:
        S, real = self.seeds, self.rows.real
        if S == 1:  # one seed: its tensors lie as in fit, no padding
            return self._affine(x, self.weight[0], None if self.bias is None else self.bias[0])
        padded = x.shape[0] // S
        biases = self.bias.unbind(0) if self.bias is not None else [None] * S
        outs = [self._affine(b, w, c) for b, w, c in zip(_rows(x, S, padded, real), _seed_slices(self.weight), biases)]
        return _cat_rows(outs, padded, self.rows)  # (S * padded, *out)


class _SeedLinear(_SeedAffine, nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or self.seeds == 1:  # F.linear takes other paths for (N, ..., in): call it per seed
            return super().forward(x)
        return _SeedLinearFunction.apply(x, self.weight, self.bias, self.seeds, self.rows)

    def _affine(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return F.linear(x, w, b)


class _SeedLinearFunction(torch.autograd.Function):
    """F.linear per seed, forward and backward, as the very calls autograd makes for F.linear.

    One autograd node per layer instead of ~4 per seed (select, linear, transpose, cat): the
    per-seed products are plain ATen calls. For a 2-D input F.linear is addmm(b, x, W.t()) (or
    mm(x, W.t()) without bias); its backward (torch/csrc/autograd/FunctionsManual.cpp,
    mm_mat1_backward / mm_mat2_backward, and the engine's sum_to for the broadcast bias) is
    reproduced below branch for branch. tests/test_batched.py checks it against fit bit for bit.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, S: int, rows: _Rows) -> Tensor:
        padded, real = x.shape[0] // S, rows.real
        weight = _aligned_stack(weight)  # (S, out, in), every seed's block placed like a fresh tensor
        blocks = _rows(x, S, padded, real)  # S x (real, in)
        transposed = weight.transpose(1, 2).unbind(0)  # S x W_s.t(), as F.linear passes it
        if bias is None:
            outs = [torch.mm(b, w) for b, w in zip(blocks, transposed)]
        else:
            outs = [torch.addmm(c, b, w) for c, b, w in zip(bias.unbind(0), blocks, transposed)]
        ctx.save_for_backward(weight, *blocks)
        ctx.padded, ctx.has_bias, ctx.shape, ctx.rows = padded, bias is not None, x.shape, rows
        return _cat_rows(outs, padded, rows)  # (S * padded, out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        weight, *blocks = ctx.saved_tensors
        S, real, padded = len(blocks), blocks[0].shape[0], ctx.padded
        rows = grad.view(S, padded, -1)
        rows = rows[:, :real] if padded > real else rows  # (S, real, out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            first = blocks[0]
            if first.stride(0) == 1 and first.stride(1) == first.shape[0]:  # column-major input
                parts = [w.t().mm(g.t()).t() for g, w in zip(rows.unbind(0), weight.unbind(0))]
            else:
                parts = [g.mm(w) for g, w in zip(rows.unbind(0), weight.unbind(0))]
            grad_x = _cat_rows(parts, padded, ctx.rows).view(ctx.shape)
        if ctx.needs_input_grad[1]:
            # W.t() is column-major, so autograd computes (grad.t() @ x).t() for it and TBackward
            # hands on its transpose: grad.t() @ x.
            grad_w = torch.stack([g.mm(b) for g, b in zip(rows.transpose(1, 2).unbind(0), blocks)])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = torch.stack([g.sum_to_size(g.shape[1:]) for g in rows.unbind(0)])
        return grad_x, grad_w, grad_b, None, None


class _SeedConv(_SeedAffine):
    def _affine(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return self._conv_forward(x, w, b)


class _SeedConvTranspose(_SeedAffine):
    def _affine(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        dims = len(self.kernel_size)
        output_padding = self._output_padding(x, None, self.stride, self.padding, self.kernel_size, dims, self.dilation)
        conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[dims - 1]
        return conv(x, w, b, self.stride, self.padding, output_padding, self.groups, self.dilation)


SEED_CLASSES: dict[type, type] = {nn.Linear: _SeedLinear}
for _cls in (nn.Conv1d, UnfoldConv1d, nn.Conv2d, nn.Conv3d):  # UnfoldConv1d: its _conv_forward, per seed as in fit
    SEED_CLASSES[_cls] = type(f"_Seed{_cls.__name__}", (_SeedConv, _cls), {})
for _cls in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
    SEED_CLASSES[_cls] = type(f"_Seed{_cls.__name__}", (_SeedConvTranspose, _cls), {})


def _rows(x: Tensor, S: int, padded: int, real: int) -> tuple[Tensor, ...]:
    """The S seeds' real rows of x (S * padded, *rest), as views."""
    blocks = x.view(S, padded, *x.shape[1:])
    return (blocks[:, :real] if padded > real else blocks).unbind(0)


def _cat_rows(parts: Sequence[Tensor], padded: int, rows: _Rows) -> Tensor:
    """The S per-seed results (real, *rest) as one (S * padded, *rest) tensor, zero padding rows."""
    real = parts[0].shape[0]
    if padded == real:
        return torch.cat(parts)
    zeros = rows.zeros(parts[0], padded - real)
    return torch.cat([t for part in parts for t in (part, zeros)])


def _seed_slices(weight: Tensor) -> tuple[Tensor, ...]:
    """weight (S, ...) as S slices that start on 64-byte boundaries, like fresh tensors."""
    return _aligned_stack(weight).unbind(0)


def _aligned_stack(weight: Tensor) -> Tensor:
    """`weight` (S, ...), or a padded copy of it when a seed's block is not 64-byte aligned.

    Parameters live in aligned storage already; only weights built on the fly (COMBINE's
    grad_scale) are copied. The copy is differentiable (pad, then a view)."""
    if weight.data_ptr() % ALIGN_BYTES == 0 and (
        len(weight) == 1 or (weight.stride(0) * weight.element_size()) % ALIGN_BYTES == 0
    ):
        return weight
    numel = weight[0].numel()
    per = ALIGN_BYTES // weight.element_size()
    flat = weight.reshape(weight.shape[0], numel)
    padded = F.pad(flat, (0, -(-numel // per) * per - numel))
    return padded[:, :numel].view(weight.shape)


def _padded_stack(tensors: Sequence[Tensor]) -> Tensor:
    """torch.stack(tensors) in storage whose per-seed blocks start on 64-byte boundaries."""
    first = tensors[0]
    numel = first.numel()
    per = ALIGN_BYTES // first.element_size()
    storage = torch.zeros(len(tensors), -(-numel // per) * per, dtype=first.dtype, device=first.device)
    block = storage[:, :numel]
    block.copy_(torch.stack([t.detach().reshape(-1) for t in tensors]))
    return block.view(len(tensors), *first.shape)


class _SeedStack:
    """S models merged into one seed-batched copy; maps seeds to their slices and back.

    Attributes:
        model: the merged model (a deep copy of models[0] with seed-batched affine layers).
        live: positions in the original `models` list of the seeds in the stack, in stack order.
        rows: the shared real-rows record the affine layers read.
    """

    def __init__(self, models: Sequence[nn.Module]):
        self.live = list(range(len(models)))
        self.rows = _Rows()
        self.model = copy.deepcopy(models[0])
        self.layers: list[nn.Module] = []
        for path, module in self.model.named_modules():
            if type(module) not in SEED_CLASSES:
                continue
            module.__class__ = SEED_CLASSES[type(module)]
            module.seeds, module.rows = len(models), self.rows
            for name, param in list(module._parameters.items()):
                if param is not None:
                    full = f"{path}.{name}" if path else name
                    stacked = _padded_stack([m.get_parameter(full) for m in models])
                    setattr(module, name, nn.Parameter(stacked, requires_grad=param.requires_grad))
            self.layers.append(module)
        self.coupled = [m for m in self.model.modules() if isinstance(m, Loop) and isinstance(m.backprop, Couple)]

    def extract(self, position: int) -> dict[str, Tensor]:
        """A copy of one seed's parameters, by name."""
        return {name: p.detach()[position].clone() for name, p in self.model.named_parameters()}

    @staticmethod
    @torch.no_grad()
    def write(model: nn.Module, state: dict[str, Tensor]) -> None:
        for name, value in state.items():
            model.get_parameter(name).copy_(value)

    def compact(self, keep: list[int]) -> None:
        """Keep only the seeds at stack positions `keep` (new stacked parameters)."""
        for module in self.layers:
            module.seeds = len(keep)
            for name, param in list(module._parameters.items()):
                if param is not None:
                    kept = _padded_stack([param.detach()[p] for p in keep])
                    setattr(module, name, nn.Parameter(kept, requires_grad=param.requires_grad))
        self.live = [self.live[p] for p in keep]


class _SeedOptimizer:
    """The optimizer `fit` builds, over every seed's parameters as tensors of their own.

    Each stacked parameter (S, ...) reaches the optimizer as S views, one per seed, so its kernels
    (fused or not) see what they see in `fit`: one model's tensors, each with its own state (Adam
    moments, step count). Where PyTorch leaves the implementation open (foreach=None: on CPU one
    call per tensor and operation), the for-each kernels are used: per tensor they compute the
    same (tested), in one call per operation.
    """

    def __init__(self, spec: OptimizerSpec, stack: _SeedStack):
        self.spec, self.stack = spec, stack
        self._build({})

    def _build(self, states: dict[tuple[int, int], dict]) -> None:
        """A fresh optimizer over the stack's views; `states[(parameter, model)]` carried over."""
        self.params = list(self.stack.model.parameters())
        self.views = [p.detach().unbind(0) for p in self.params]  # per parameter, one view per seed
        per_seed = [views[s] for s in range(len(self.stack.live)) for views in self.views]  # model by model
        self.opt = make_optimizer(self.spec, per_seed)
        for group in self.opt.param_groups:
            if group.get("foreach", False) is None and not group.get("fused"):
                group["foreach"] = True
        for k, views in enumerate(self.views):
            for s, i in enumerate(self.stack.live):
                if (k, i) in states:
                    self.opt.state[views[s]] = states[(k, i)]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for p, views in zip(self.params, self.views):
            grads = p.grad.unbind(0) if p.grad is not None else [None] * len(views)
            for view, grad in zip(views, grads):
                view.grad = grad
        self.opt.step()

    def drop(self, positions: list[int]) -> None:
        """The seeds at these stack positions leave the stack (and the optimizer)."""
        keep = [s for s in range(len(self.stack.live)) if s not in positions]
        if not keep:
            self.stack.live = []
            return
        states = {(k, i): self.opt.state[views[s]] for k, views in enumerate(self.views)
                  for s, i in enumerate(self.stack.live) if views[s] in self.opt.state}
        self.stack.compact(keep)
        self._build(states)


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
    signature = _architecture(models[0])
    for i, model in enumerate(models[1:], start=1):
        other = _architecture(model)
        if other != signature:
            raise ValueError(
                f"models[{i}] differs from models[0] ({_first_difference(signature, other)}); fit_many trains seeds "
                "of one architecture: build every model with the same code and settings, or call fit per model"
            )


def _architecture(model: nn.Module) -> list[str]:
    """What must agree between models to stack them: module tree, settings, parameter shapes."""
    lines = [f"{path or '(root)'}: {module.extra_repr() if not isinstance(module, Network) else ''} "
             f"{type(module).__name__}" for path, module in model.named_modules()]
    if isinstance(model, Network):
        lines += repr(model).splitlines()
    lines += [f"parameter {name}: {tuple(p.shape)} {p.dtype} {p.device} requires_grad={p.requires_grad}"
              for name, p in model.named_parameters()]
    for path, module in model.named_modules():
        if isinstance(module, Network):
            lines.append(f"{path}: skips_enabled={module.skips_enabled}")
        if isinstance(module, Loop):
            lines.append(f"{path}: probe_unroll={module.probe_unroll}")
    return lines


def _first_difference(a: list[str], b: list[str]) -> str:
    for left, right in zip(a, b):
        if left != right:
            return f"{left.strip()!r} vs {right.strip()!r}"
    return f"{len(a)} vs {len(b)} modules / parameters"
