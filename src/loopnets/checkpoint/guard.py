"""The meta-device build guard: `Network.from_config` of a loaded architecture runs under
`BuildGuard`, which stops the build (`Oversized`) as soon as it declares more tensors, more
elements or far more modules than the checkpoint holds, before any real memory is taken."""

from __future__ import annotations

import threading

import torch
from torch import nn

# The rebuild guard's bound on modules: a network matching the file has at most a few modules per
# stored tensor (containers, activations) plus parameterless layers (max pooling, dropout).
MODULES_FREE = 512
MODULES_PER_TENSOR = 8


class Oversized(Exception):
    """Raised inside the meta build when the architecture outgrows the file (caught by _rebuild)."""


class BuildGuard:
    """Counts what a `Network.from_config` on the meta device declares, through torch's global
    module / parameter / buffer registration hooks (active for this thread only, while inside the
    `with`), and raises `Oversized` as soon as it exceeds the saved fingerprint: more distinct
    tensors than it lists, more elements than its shapes hold, or more modules than
    `MODULES_FREE + MODULES_PER_TENSOR * tensors`. COUPLE's copies are deep copies, registered
    one by one as they are made, so a huge unroll stops after a few copies."""

    def __init__(self, saved: list[list]):
        self.max_tensors = len(saved)
        self.max_elements = sum(numel(shape) for _, shape, _ in saved)
        self.max_modules = MODULES_FREE + MODULES_PER_TENSOR * len(saved)
        # kept alive while counting, so no id is reused by a new object
        self.tensors: dict[int, torch.Tensor] = {}
        self.modules: dict[int, nn.Module] = {}
        self.elements = 0
        self.thread = threading.get_ident()
        self.handles: list = []

    def __enter__(self) -> "BuildGuard":
        hooks = torch.nn.modules.module
        self.handles = [
            hooks.register_module_module_registration_hook(self._on_module),
            hooks.register_module_parameter_registration_hook(self._on_tensor),
            hooks.register_module_buffer_registration_hook(self._on_tensor),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def _on_module(self, parent: nn.Module, name: str, child: nn.Module | None) -> None:
        if child is None or threading.get_ident() != self.thread:
            return
        for m in child.modules():  # a deep copy registers only its root: count its whole tree
            if id(m) not in self.modules:
                self.modules[id(m)] = m
                if len(self.modules) > self.max_modules:
                    raise Oversized(f"it builds more than {self.max_modules:,} modules for the file's "
                                     f"{self.max_tensors} tensors (a loop unroll or layer count far too large)")
            for tname, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
                self._count(f"{name}.{tname}", t)

    def _on_tensor(self, module: nn.Module, name: str, tensor: torch.Tensor | None) -> None:
        if tensor is not None and threading.get_ident() == self.thread:
            self._count(name, tensor)

    def _count(self, name: str, tensor: torch.Tensor) -> None:
        if id(tensor) in self.tensors:
            return
        self.tensors[id(tensor)] = tensor
        self.elements += tensor.numel()
        if len(self.tensors) > self.max_tensors:
            raise Oversized(f"it declares more than the {self.max_tensors} tensors the file holds "
                             f"(a loop unroll or layer count larger than the stored weights)")
        if self.elements > self.max_elements:
            raise Oversized(f"{name} of shape {tuple(tensor.shape)} brings the declared elements to "
                             f"{self.elements:,}, more than the {self.max_elements:,} the file's tensors hold "
                             f"(a layer size, layer count or loop unroll larger than the stored weights)")


def numel(shape: list) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
