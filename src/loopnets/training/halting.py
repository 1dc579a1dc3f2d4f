"""fit_halting: train a `loopnets.Halting` model with PonderNet's loss in the one training loop.

The halting head, its distribution and the loss formula live in `loopnets.core.halting` (they are
part of the model and run at inference); this module is only the task that plugs PonderNet's
loss into `loopnets.training.engine.train`: per batch, mean_B [sum_t p_t L_t + beta KL(p || p_G)]
with L_t the per-sample loss after pass t. Validation reports that loss, the accuracy of the
outputs at each sample's halting pass (`Halting.stop`) and the mean pass count (`val_passes`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from loopnets.core.halting import Halting, check_prior, ponder_loss
from loopnets.training.data import batches
from loopnets.training.device import destination
from loopnets.training.engine import check_options
from loopnets.training.engine import train as run_training
from loopnets.training.fit import as_tensors
from loopnets.training.history import EpochRecord, History
from loopnets.training.optim import OptimizerSpec


def _flat_mean(values: Tensor) -> Tensor:
    return values.reshape(len(values), -1).mean(1)  # (B, *) -> (B,)


PER_SAMPLE: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    # the mean over positions / elements of each sample, (B,)
    "cross_entropy": lambda pred, y: _flat_mean(F.cross_entropy(pred, y if y.is_floating_point() else y.long(),
                                                                reduction="none")),
    "mse": lambda pred, y: _flat_mean((pred - y.to(pred.dtype)).square()),
    "mae": lambda pred, y: _flat_mean((pred - y.to(pred.dtype)).abs()),
}


@dataclass
class HaltingEpochRecord(EpochRecord):
    """An EpochRecord with val_passes: the mean pass at which validation samples halted."""

    val_passes: float | None = None


@dataclass
class HaltingHistory(History):
    """The History of `fit_halting`: `history["val_passes"]` besides the usual columns."""

    COLUMNS: ClassVar[tuple[str, ...]] = tuple(f.name for f in fields(HaltingEpochRecord))
    RECORD: ClassVar[type] = HaltingEpochRecord


class HaltingTask:
    """The engine task of `fit_halting` (see `loopnets.training.engine`)."""

    def __init__(self, loss: str, lambda_p: float, beta: float):
        self.loss_name, self.per_sample = f"ponder({loss})", PER_SAMPLE[loss]
        self.lambda_p, self.beta, self.classification = lambda_p, beta, loss == "cross_entropy"

    def loss(self, model: Halting, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, int]:
        xb, yb = batch
        value = model.loss(xb, yb, self.per_sample, self.lambda_p, self.beta)
        return value, value.detach() * len(xb), len(xb)

    def finish(self, mean: Tensor) -> Tensor:
        return mean

    def evaluate(self, model: Halting, source: Any) -> dict:
        total = hits = seen = passes = count = 0.0
        for xb, yb in source:
            total += model.loss(xb, yb, self.per_sample, self.lambda_p, self.beta).item() * len(xb)
            exit_ = model.stop(xb)
            passes += exit_.passes.double().sum().item()
            count += len(xb)
            if self.classification and not yb.is_floating_point():
                hits += (exit_.output.argmax(1) == yb).sum().item()
                seen += yb.numel()
        return {"loss": total / count, "accuracy": hits / seen if seen else None, "passes": passes / count}


def fit_halting(model: Halting, train: Any, val: Any | None = None, *, loss: str = "cross_entropy",
                prior: float = 0.2, beta: float = 0.01, optimizer: OptimizerSpec = ("adam", {"lr": 1e-3}),
                epochs: int = 10, batch_size: int = 32, seed: int = 0, progress: bool = True,
                clip: Any = None) -> HaltingHistory:
    """Train `model` (a `loopnets.Halting`) with PonderNet's loss; return its HaltingHistory.

    Args:
        model: the looped model with its halting head; T = its max_passes.
        train, val: (X, y) tensors / arrays, a Dataset or an iterable of batches (as `ln.fit`).
        loss: the per-pass loss, one of PER_SAMPLE ("cross_entropy" takes per-position targets
            (B, L) with outputs (B, C, L) too: each sample's mean over positions).
        prior: lambda_p of the geometric prior, in (0, 1); about 1 / lambda_p expected passes.
        beta: weight of KL(p || prior), >= 0 (PonderNet: 0.01).
        optimizer, epochs, batch_size, seed, progress, clip: as in `ln.fit`.
    """
    if not isinstance(model, Halting):
        raise TypeError(f"fit_halting trains a loopnets.Halting (a looped model with a halting head); "
                        f"got {type(model).__name__}: wrap it, Halting(model, halting_head(width))")
    if loss not in PER_SAMPLE:
        raise ValueError(f"fit_halting needs a per-sample loss; choose one of {', '.join(PER_SAMPLE)}; got {loss!r}")
    lambda_p = check_prior(prior)
    ponder_loss(torch.zeros(1, 1), torch.ones(1, 1), lambda_p, beta)  # checks beta now, before any step
    check_options(epochs, batch_size, None, val, seed)
    device, dtype = destination(model, None, None)
    generator = torch.Generator().manual_seed(int(seed))
    prepare = lambda name: lambda pair: as_tensors(pair, name, device, dtype, model)  # noqa: E731
    data = batches(train, "train", prepare("train"), batch_size=int(batch_size), shuffle=True, generator=generator)
    source = batches(val, "val", prepare("val")) if val is not None else None
    return run_training(model, HaltingTask(loss, lambda_p, beta), data, source, history=HaltingHistory(),
                        optimizer=optimizer, epochs=int(epochs), seed=int(seed), progress=progress,
                        desc="fit_halting", clip=clip)
