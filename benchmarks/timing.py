"""Side-by-side timing: the contenders run in turn in one process, medians and ratios.

On a shared machine the speed drifts over seconds, so A is never timed long before B: every
round runs each contender once, the order reversed every other round (A B, B A, A B, ...), and
the result is the median over all rounds of each contender's samples (seconds per epoch or per
step). A ratio is the ratio of two such medians, both taken under the same drift.
"""

from __future__ import annotations

import statistics
from typing import Callable

import torch


def interleaved(contenders: dict[str, Callable[[], list[float]]], rounds: int) -> dict[str, list[float]]:
    """Run every contender once per round, alternating the order; return all samples by name.

    Args:
        contenders: name -> function returning the seconds of one or more units (epochs, steps).
        rounds: how many times each contender runs.
    """
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            samples[name].extend(contenders[name]())
    return samples


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples) if samples else float("nan")


def synchronizer(device: torch.device | str) -> Callable[[], None]:
    """A function that waits for the device (CUDA kernels run asynchronously); no-op on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None
