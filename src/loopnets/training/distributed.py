"""Data parallel training across processes: `ln.fit` under `torchrun --nproc-per-node N`, unchanged.

Under torchrun (the environment holds WORLD_SIZE > 1, RANK, MASTER_ADDR, ...) or after the caller
ran `torch.distributed.init_process_group`, every process (rank) trains its own replica of the model:

- at the start, rank 0's parameters and buffers are broadcast, so all replicas start equal;
- `batch_size` is per rank: the ranks draw the same shuffled order (the same seed), cut it into
  global batches of batch_size x N samples, and rank r trains on rows [r * batch_size, (r + 1) *
  batch_size) of each; a Dataset is split the same way; an iterable of batches (a DataLoader) is
  the caller's to shard (e.g. with a `DistributedSampler`);
- after every backward the gradients are summed over the ranks, each rank's weighted by its number
  of samples, and divided by the global batch's: the gradient of the mean loss over the global
  batch, as one process with batch_size x N computes it (an all-reduce of one flat tensor per step;
  gloo on CPU, nccl on CUDA, as torchrun's backend);
- every replica then takes the same optimizer step and re-ties its own COUPLE copies, so the
  copies stay tied and the replicas equal on every rank;
- the epoch's train loss is summed over the ranks (one all-reduce per epoch); validation runs on
  every rank over the whole validation set (the same numbers); only rank 0 shows progress and
  calls the callbacks (loggers).

This is PyTorch's data-parallel algorithm (what `DistributedDataParallel` computes) written as one
all-reduce after backward instead of the DDP wrapper, so the model keeps its own class, methods
(`logits`, `passes`) and state-dict keys.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor, nn


class Replicas:
    """The process group a training run shares: rank, world size, and the collective steps it needs."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size

    @classmethod
    def join(cls, device: torch.device) -> Replicas | None:
        """The current process group (started from torchrun's environment when needed); None when
        training runs in one process."""
        if not dist.is_available():
            return None
        if not dist.is_initialized():
            if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
                return None
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
        if dist.get_world_size() <= 1:
            return None
        return cls(dist.get_rank(), dist.get_world_size())

    def synchronize(self, model: nn.Module) -> None:
        """Give every replica rank 0's parameters and buffers."""
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def average_gradients(self, params: list[Tensor], rows: int) -> None:
        """Replace each gradient by the global batch's: sum_r rows_r * grad_r / sum_r rows_r."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [grads[0].new_ones(1)]) * rows  # last: rows_r
        dist.all_reduce(flat)
        flat = flat[:-1] / flat[-1]
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(g)
            offset += g.numel()

    def total(self, sums: Tensor, count: int) -> tuple[Tensor, int]:
        """The epoch's batch sums (batches,) and sample count, summed over the ranks."""
        both = torch.cat([sums, sums.new_tensor([count])])
        dist.all_reduce(both)
        return both[:-1], int(both[-1].item())

    def shard(self, batch_size: int) -> tuple[int, slice]:
        """The global batch size and this rank's rows of each global batch."""
        return batch_size * self.size, slice(self.rank * batch_size, (self.rank + 1) * batch_size)
