"""A larger image workload: Caswell's loopy CNN on 32x32 images, batch 128, per training step.

loopnets: `loopnets.models.loopy.network.loopy(unroll=3, bn_per_unroll=False)`, an `ln.Loop` (Tied) over
conv 64 -> conv 64 -> conv 3 (each with batch norm and ReLU), image + feedback merged by addition,
then a linear classifier, trained by `ln.fit`. Hand-written: the same stack as an nn.Sequential
and a for-loop `h = stack(x + h)`, trained by the textbook loop. Data: 128 images of
`loopnets.data.synthetic_cifar`, so one epoch is one optimizer step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import loopnets as ln
from loopnets import loopy

from handwritten import train_epochs
from timing import interleaved, median_ms, synchronizer


class HandLoopy(nn.Module):
    """Loopy by hand: one conv stack applied `unroll` times, the image added before every pass after the first."""

    def __init__(self, channels: int = 3, filters: int = 64, image_size: int = 32, classes: int = 10, unroll: int = 3):
        super().__init__()
        sizes = [channels, filters, filters, channels]
        self.stack = nn.Sequential(*(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU()) for a, b in zip(sizes, sizes[1:])
        ))
        self.head = nn.Linear(channels * image_size * image_size, classes)
        self.unroll = unroll

    def forward(self, x: Tensor) -> Tensor:
        h = self.stack(x)
        for _ in range(self.unroll - 1):
            h = self.stack(x + h)
        return self.head(h.flatten(1))

    def tie(self) -> None:  # nothing to re-tie: one stack
        pass


def run(quick: bool = False, rounds: int = 3, device: str = "cpu", log=print) -> list[dict]:
    """One row: median ms per training step (= per epoch of 128 images) for both, and the ratio."""
    from loopnets.data import synthetic_cifar

    size, filters, batch, unroll = (8, 4, 8, 3) if quick else (32, 64, 128, 3)
    split = synthetic_cifar(n=max(10, batch * 5 // 4))  # 80 % train: `batch` images
    X = split.x_train[:batch, :, :size, :size].contiguous().to(device)  # (batch, 3, size, size)
    y = split.y_train[:batch].to(device)
    torch.manual_seed(0)
    net = loopy.loopy(image_size=size, filters=filters, unroll=unroll, bn_per_unroll=False).to(device)
    torch.manual_seed(0)
    hand = HandLoopy(filters=filters, image_size=size, unroll=unroll).to(device)
    sync = synchronizer(device)
    adam = {"lr": 1e-3}
    peaks: dict[str, list[int]] = {"loopnets": [], "handwritten": []}

    def fit_step():
        _reset_peak(device)
        seconds = ln.fit(net, (X, y), loss="cross_entropy", optimizer=("adam", adam), epochs=1, batch_size=batch,
                         progress=False)["train_seconds"]
        peaks["loopnets"].append(_peak(device))
        return seconds

    def hand_step():
        _reset_peak(device)
        seconds = train_epochs(hand, X, y, epochs=1, batch_size=batch, adam=adam, sync=sync)
        peaks["handwritten"].append(_peak(device))
        return seconds

    fit_step(), hand_step()  # warm-up (kernels, allocator, optimizer state)
    samples = interleaved({"loopnets": fit_step, "handwritten": hand_step}, rounds)
    row = {"workload": "loopy CNN", "image": size, "filters": filters, "batch": batch, "unroll": unroll,
           "device": device, "loopnets_ms": median_ms(samples["loopnets"]),
           "handwritten_ms": median_ms(samples["handwritten"])}
    row["vs_handwritten"] = row["loopnets_ms"] / row["handwritten_ms"]
    if device != "cpu":
        row.update({f"{k}_peak_bytes": max(v) for k, v in peaks.items()})
    log(f"loopy CNN {size}x{size} x{unroll}, batch {batch}: loopnets {row['loopnets_ms']:.1f} ms/step  "
        f"hand-written {row['handwritten_ms']:.1f} ms/step ({row['vs_handwritten']:.2f}x)")
    return [row]


def _reset_peak(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> int:
    return torch.cuda.max_memory_allocated() if device != "cpu" else 0
