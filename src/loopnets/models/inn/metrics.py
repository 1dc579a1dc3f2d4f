"""The output layout of Hershey's anomaly tasks and the thesis's metrics (§2.2, eqs 2.19 and 2.20; Figs 3.8, 3.11).

A sequence of `length` images is followed by one blank query step (T = length + 1 steps). Output
units 0 .. length-1 are the index logits, read at the last (query) step; the last unit is the
anomaly-flag logit, read at every interim step (`FLAG_UNIT`; see `loopnets.models.inn.tasks`).
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from loopnets.training.engine import check_int

FLAG_UNIT = -1  # the output unit holding the anomaly-flag logit: the last one (see the module docstring)


def sequence_outputs(length: int) -> int:
    """Output units an anomaly task of `length` images needs: `length` index logits + 1 flag logit."""
    check_int("length", length, minimum=1)
    return length + 1


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
    return (end_hits(outputs, index, flag_unit) / len(index)).item()


def acc_seq(outputs: Tensor, flags: Tensor, index: Tensor, flag_unit: int = FLAG_UNIT) -> float:
    """ACC_seq (eq 2.20): accuracy over all T steps of all N sequences, hits / (N T).

    A hit at interim step t < T-1: the flag logit's sign (> 0, i.e. p > 0.5) equals flags[t] (> 0.5);
    a hit at the last step: the index prediction equals `index` (the thesis compares each step with
    its own ground truth; the per-step targets are the binary flags, §2.2).
    """
    split_outputs(outputs, flags, index, flag_unit)
    hits = seq_hits(outputs, flags, index, flag_unit)
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


# --- private helpers --------------------------------------------------------------------------


def _unit(flag_unit: int, units: int) -> int:
    """`flag_unit` as a non-negative unit number, checked against the output width."""
    if isinstance(flag_unit, bool) or not isinstance(flag_unit, numbers.Integral) or not -units <= flag_unit < units:
        raise ValueError(f"flag_unit must be an output unit in [{-units}, {units - 1}]; got {flag_unit!r}")
    return int(flag_unit) % units


def _index_logits(outputs: Tensor, unit: int) -> Tensor:
    """Every unit but the flag unit, (..., units - 1)."""
    return torch.cat([outputs[..., :unit], outputs[..., unit + 1 :]], dim=-1)


def split_outputs(outputs: Tensor, flags: Tensor, index: Tensor, flag_unit: int) -> tuple[Tensor, Tensor]:
    """Check the shapes (no host sync) and return (index logits (B, T, units-1), flag logits (B, T))."""
    if outputs.dim() != 3:
        raise ValueError(
            f"the multi-task loss needs outputs (batch, steps, units) from model.steps(x); got {tuple(outputs.shape)}"
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


def end_hits(outputs: Tensor, index: Tensor, flag_unit: int) -> Tensor:
    return (predict_index(outputs, flag_unit) == index).sum()


def seq_hits(outputs: Tensor, flags: Tensor, index: Tensor, flag_unit: int) -> Tensor:
    """Correct steps: interim flag signs against the flags, plus the final index predictions."""
    steps = outputs.shape[1]
    flag_logits = outputs[:, :-1, _unit(flag_unit, outputs.shape[2])]  # (B, T - 1)
    interim_hits = ((flag_logits > 0) == (flags[:, : steps - 1] > 0.5)).sum()
    return interim_hits + end_hits(outputs, index, flag_unit)


def _class_pair(pred: Tensor, true: Tensor, classes: int) -> tuple[Tensor, Tensor]:
    check_int("classes", classes, minimum=1)
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
