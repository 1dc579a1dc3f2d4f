"""Losses by name: ae, mae, mse, rmse, cross_entropy, binary_cross_entropy, kl_divergence.

Every loss is computed as a *sum* over the samples it sees plus a *count*, and finished by
`Loss.finish`. One minibatch's loss is `finish(sum / count)`; a whole data set's loss (in
`evaluate`) accumulates sums and counts over its batches first, so set-level numbers do not
depend on the evaluation batch size. This matters for rmse: it is the square root of the mean
squared error over the whole evaluated set, not the mean of per-batch RMSEs.

Reductions (PyTorch conventions where PyTorch has the loss):
- ae: sum of absolute errors per sample, mean over samples (the seed framework's "AE").
- mae / mse: mean over every element; rmse: sqrt of that mse.
- cross_entropy: mean over samples. Targets are class indices (integer, shape (B,)) or
  one-hot / probability rows (float, the prediction's shape (B, C)). Per-position
  classification (outputs (B, C, L) or (B, C, H, W), index targets (B, L) / (B, H, W), as
  PyTorch's CrossEntropyLoss takes them): the mean over every position of every sample, and
  accuracy counts positions.
- binary_cross_entropy: mean over every element; targets in [0, 1], the prediction's shape.
- kl_divergence: KL(target || prediction) summed over classes, mean over samples
  (PyTorch's reduction="batchmean"); targets are probability rows.

Logits. The classification losses have a numerically stable form on logits (the values before
a final softmax / sigmoid): F.cross_entropy, F.binary_cross_entropy_with_logits, and KL via
log_softmax. `fit` / `evaluate` use it when the model declares that output activation
(`model.output_activation`) and calls `model.logits(x)`. Otherwise they pass the plain output:
- cross_entropy treats a plain output as logits (PyTorch's nn.CrossEntropyLoss convention), so
  a generic model must *not* end in a softmax;
- binary_cross_entropy treats it as probabilities (nn.BCELoss convention; PyTorch clamps the log at -100);
- kl_divergence treats it as probabilities (values below the smallest normal float are clamped
  before the log).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# (prediction, target, from_logits) -> (sum over the batch, count it is averaged over)
SumFn = Callable[[Tensor, Tensor, bool], "tuple[Tensor, int]"]


@dataclass(frozen=True)
class Loss:
    """A named loss: how to sum it over a batch, what to average over, how to finish it.

    Attributes:
        name: the registry name.
        classification: True when accuracy is meaningful (reported by evaluate / fit).
        logits_activation: the output activation ("softmax" / "sigmoid") whose pre-activation
            the stable logits form consumes; None when the loss has no logits form.
        sum_fn: (prediction, target, from_logits) -> (summed loss tensor, count).
        finish: maps the mean (sum / count) to the loss value (identity, or sqrt for rmse).
    """

    name: str
    classification: bool
    logits_activation: str | None
    sum_fn: SumFn
    finish: Callable[[Tensor], Tensor]

    def parts(self, pred: Tensor, target: Tensor, from_logits: bool = False) -> tuple[Tensor, int]:
        """(sum, count) of this loss over one batch; the batch loss is finish(sum / count)."""
        return self.sum_fn(pred, target, from_logits)

    def __call__(self, pred: Tensor, target: Tensor, from_logits: bool = False) -> Tensor:
        """The loss of one batch, a scalar tensor that can be backpropagated.

        Args:
            pred: (B, *out) model output, or its logits when `from_logits`.
            target: (B, *out), or (B,) class indices for cross_entropy.
            from_logits: `pred` holds logits (only for losses with `logits_activation`).
        """
        total, count = self.parts(pred, target, from_logits)
        return self.finish(total / count)

    def correct(self, pred: Tensor, target: Tensor, from_logits: bool = False) -> tuple[Tensor, int]:
        """(number of correct predictions, number of predictions) for a classification loss.

        Multi-class (cross_entropy, kl_divergence): argmax of the prediction equals the target
        index (or the argmax of a one-hot / probability row). binary_cross_entropy: every
        element thresholded at 0.5 (at 0 on logits) against the target thresholded at 0.5.
        """
        if not self.classification:
            raise ValueError(f"{self.name} is not a classification loss; it has no accuracy")
        if self.name == "binary_cross_entropy":
            predicted = pred > (0.0 if from_logits else 0.5)
            return (predicted == (target > 0.5)).sum(), target.numel()
        labels = target if not target.is_floating_point() else target.argmax(dim=1)
        return (pred.argmax(dim=1) == labels).sum(), labels.numel()


def _shape_error(name: str, pred: Tensor, target: Tensor, expected: str, fix: str | None = None) -> ValueError:
    """A ValueError naming both shapes and how to fix the targets or the model."""
    if fix is None and pred.shape[:1] == target.shape[:1] and pred.numel() == target.numel():
        fix = f"reshape the targets, e.g. y.reshape({', '.join(['-1', *map(str, pred.shape[1:])])})"
    elif fix is None:
        fix = "make the model output one value per target (change its last layer's size), or fix y"
    return ValueError(
        f"{name} loss needs {expected}; the model's output has shape {tuple(pred.shape)} "
        f"but the targets have shape {tuple(target.shape)}: {fix}"
    )


def _same_shape(name: str, pred: Tensor, target: Tensor) -> Tensor:
    """Check target.shape == pred.shape (no silent broadcasting); return target in pred's dtype."""
    if pred.shape != target.shape:
        raise _shape_error(name, pred, target, "targets of the same shape as the model's output")
    return target.to(pred.dtype)


def _ae(pred: Tensor, target: Tensor, from_logits: bool) -> tuple[Tensor, int]:
    target = _same_shape("ae", pred, target)
    return (pred - target).abs().sum(), pred.shape[0]


def _mae(pred: Tensor, target: Tensor, from_logits: bool) -> tuple[Tensor, int]:
    target = _same_shape("mae", pred, target)
    return (pred - target).abs().sum(), pred.numel()


def _squared(name: str) -> SumFn:
    def squared(pred: Tensor, target: Tensor, from_logits: bool) -> tuple[Tensor, int]:
        target = _same_shape(name, pred, target)
        return (pred - target).square().sum(), pred.numel()

    return squared


def _sqrt(mean: Tensor) -> Tensor:
    # Clamped so that a perfect fit (mean 0) has gradient 0 instead of inf * 0 = nan; the value
    # changes by at most sqrt(smallest normal float), ~1e-19 in float32.
    return mean.clamp_min(torch.finfo(mean.dtype).tiny).sqrt()


def _cross_entropy(pred: Tensor, target: Tensor, from_logits: bool) -> tuple[Tensor, int]:
    # pred: (B, C) logits; plain outputs are logits too (PyTorch convention; see module docstring).
    if pred.dim() < 2:
        raise ValueError(
            f"cross_entropy loss needs a model output of shape (batch, classes); got {tuple(pred.shape)}. "
            "For a single output per sample use binary_cross_entropy"
        )
    index_shape = pred.shape[:1] + pred.shape[2:]
    positions = index_shape.numel()  # B, or B * L / B * H * W for per-position classes
    if target.shape == pred.shape:  # one-hot / probability rows (B, C)
        return F.cross_entropy(pred, target.to(pred.dtype), reduction="sum"), positions
    if target.is_floating_point() or target.shape != index_shape:
        fix = None
        if target.shape == index_shape:
            fix = "convert class indices to integers with y.long()"
        elif target.shape == index_shape[:1] + (1,) + index_shape[1:]:
            fix = "drop the extra dimension of the class indices with y.squeeze(1)"
        raise _shape_error(
            "cross_entropy", pred, target,
            f"integer class indices of shape {tuple(index_shape)} or one-hot / probability rows "
            f"of the output's shape {tuple(pred.shape)}",
            fix,
        )
    classes = pred.shape[1]
    if target.numel() and bool((target.min() < 0) | (target.max() >= classes)):
        raise ValueError(
            f"cross_entropy loss needs class indices in [0, {classes - 1}] for a model with {classes} outputs; "
            f"got indices in [{int(target.min())}, {int(target.max())}]: fix y or the model's output size"
        )
    return F.cross_entropy(pred, target.long(), reduction="sum"), positions


def _binary_cross_entropy(pred: Tensor, target: Tensor, from_logits: bool) -> tuple[Tensor, int]:
    target = _same_shape("binary_cross_entropy", pred, target)
    if from_logits:
        return F.binary_cross_entropy_with_logits(pred, target, reduction="sum"), pred.numel()
    try:
        return F.binary_cross_entropy(pred, target, reduction="sum"), pred.numel()
    except RuntimeError as error:  # torch's "all elements of input should be between 0 and 1"
        low, high = float(pred.detach().min()), float(pred.detach().max())
        if 0.0 <= low and high <= 1.0:
            raise
        raise ValueError(
            f"the binary_cross_entropy loss needs predictions in [0, 1] (probabilities); the model's outputs are in "
            f"[{low:.4g}, {high:.4g}]: give the model a sigmoid output activation (e.g. output_activation='sigmoid', "
            f"whose logits the loss then uses stably), or use a loss for unbounded outputs such as mse"
        ) from None


def _kl_divergence(pred: Tensor, target: Tensor, from_logits: bool) -> tuple[Tensor, int]:
    # pred: (B, C) probabilities, or logits when from_logits; KL(target || pred) per sample.
    target = _same_shape("kl_divergence", pred, target)
    if pred.dim() < 2:
        raise ValueError(
            f"kl_divergence loss needs outputs of shape (batch, classes); got {tuple(pred.shape)}"
        )
    if from_logits:
        log_pred = F.log_softmax(pred, dim=1)
    else:
        log_pred = pred.clamp_min(torch.finfo(pred.dtype).tiny).log()
    return F.kl_div(log_pred, target, reduction="sum"), pred.shape[0]


def _identity(mean: Tensor) -> Tensor:
    return mean


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("ae", False, None, _ae, _identity),
        Loss("mae", False, None, _mae, _identity),
        Loss("mse", False, None, _squared("mse"), _identity),
        Loss("rmse", False, None, _squared("rmse"), _sqrt),
        Loss("cross_entropy", True, "softmax", _cross_entropy, _identity),
        Loss("binary_cross_entropy", True, "sigmoid", _binary_cross_entropy, _identity),
        Loss("kl_divergence", True, "softmax", _kl_divergence, _identity),
    )
}


def get_loss(loss: str | Loss) -> Loss:
    """The Loss named `loss` (one of LOSSES), or `loss` itself when it already is a Loss."""
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[loss]
