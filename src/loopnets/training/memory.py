"""Memory of one training step: what autograd keeps for backward, and the peak allocation.

    usage = step_memory(lambda: loss_fn(model(x), y).backward())
    usage.saved_bytes, usage.peak_bytes

Two numbers, both measured while `step` runs once:
- saved_bytes: the distinct storages autograd saves for backward (exact, from saved-tensor hooks;
  a weight used in k passes is one storage, counted once). This is what grows with the unroll
  for Tied and COUPLE and what COMBINE, Truncated and the implicit modes keep flat.
- peak_bytes: the most memory held beyond what was allocated before the step (activations,
  transient buffers, gradients). On CUDA torch.cuda.max_memory_allocated (exact); on the CPU the
  bytes glibc's malloc has handed out, sampled after every module call and whenever autograd
  saves or unpacks a tensor (so at least once per layer in forward and per node in backward).
  Off glibc it is None.

Used by the experiment runner (every run's summary.json) and by benchmarks/memory.py.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class StepMemory:
    saved_bytes: int  # distinct storages autograd saved for backward
    peak_bytes: int | None  # peak allocation above the level before the step; None where unmeasurable


def step_memory(step: Callable[[], object], device: torch.device | str = "cpu") -> StepMemory:
    """Run `step` (forward and backward of one batch) once and measure its memory; see the module doc."""
    storages: dict[int, int] = {}
    malloc = MallocPeak()

    def pack(t: torch.Tensor) -> torch.Tensor:  # replaces MallocPeak's own hook (the innermost wins)
        malloc.sample()
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    def unpack(t: torch.Tensor) -> torch.Tensor:
        malloc.sample()
        return t

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with malloc, torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        step()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = malloc.peak - malloc.base if malloc.available else None
    return StepMemory(sum(storages.values()), None if peak is None else max(peak, 0))


class MallocPeak:
    """The peak of the bytes glibc's malloc has handed out, sampled within the block.

    Sampled after every module's forward call (a global forward hook), whenever autograd saves a
    tensor (forward) or unpacks one (backward, node by node), and at the block's ends.
    `.available` is False off glibc; then peak == base == 0.
    """

    def __init__(self) -> None:
        class Info(ctypes.Structure):  # struct mallinfo2, glibc >= 2.33
            _fields_ = [(name, ctypes.c_size_t) for name in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

        try:
            self._mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
            self._mallinfo2.restype = Info
        except (OSError, AttributeError):
            self._mallinfo2 = None
        self.available = self._mallinfo2 is not None
        self.base = self.peak = 0

    def sample(self) -> None:
        if self.available:
            info = self._mallinfo2()
            self.peak = max(self.peak, info.uordblks + info.hblkhd)  # in use: heap chunks + mmapped chunks

    def __enter__(self) -> "MallocPeak":
        self.sample()
        self.base = self.peak
        self._hook = torch.nn.modules.module.register_module_forward_hook(lambda *args: self.sample())
        self._saved = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._saved.__enter__()
        return self

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.sample()
        return t

    def _unpack(self, t: torch.Tensor) -> torch.Tensor:
        self.sample()
        return t

    def __exit__(self, *exc) -> None:
        self._saved.__exit__(*exc)
        self._hook.remove()
        self.sample()
