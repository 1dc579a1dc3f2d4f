"""Where training runs and in which precision: `device=` and `precision=` of fit / evaluate."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    """The torch.device for `device`: None keeps the model's (its first parameter's, CPU without any).

    "auto" picks CUDA, then MPS, then the CPU. A device that is not available is a ValueError
    naming it and what is available.
    """
    if device is None:
        for p in model.parameters():
            return p.device
        return torch.device("cpu")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={device!r} is not a device; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: CUDA is not available on this machine ({available()}); "
                             "use device='cpu' or device='auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif resolved.type == "mps" and not _mps_available():
        raise ValueError(f"device={device!r}: MPS (Apple GPU) is not available on this machine ({available()}); "
                         "use device='cpu' or device='auto'")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r} is not supported; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")
    return resolved


def device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (CPU / default dtype without any)."""
    for p in model.parameters():
        return p.device, (p.dtype if p.is_floating_point() else torch.get_default_dtype())
    return torch.device("cpu"), torch.get_default_dtype()


def destination(model: nn.Module, device: str | torch.device | None, precision: str | None) -> tuple[torch.device, torch.dtype]:
    """Check `device` and `precision`; return the device the model and data train on and the floating
    dtype the data take (the model's). The front moves the model there once its data passed their checks."""
    target = resolve_device(device, model)
    check_precision(precision, target)
    return target, device_and_dtype(model)[1]


def available() -> str:
    """The devices this machine has, in words."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append(f"cuda:0..{torch.cuda.device_count() - 1}")
    if _mps_available():
        found.append("mps")
    return "available: " + ", ".join(found)


def check_precision(precision: str | None, device: torch.device) -> None:
    """ValueError unless `precision` is None, or "bf16" / "fp16" on a CUDA device."""
    if precision is None:
        return
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be None (the model's own dtype), 'bf16' or 'fp16'; got {precision!r}")
    if device.type != "cuda":
        raise ValueError(f"precision={precision!r} (mixed precision with autocast) needs a CUDA device; training "
                         f"runs on {device}. Use precision=None there, or device='cuda'")


def autocast(precision: str | None, device: torch.device) -> Any:
    """The autocast context for the forward and loss (a no-op context without `precision`)."""
    if precision is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
