"""The checkpoint format, shared by writing and reading: its constants, the error, the architecture
fingerprint ([name, shape, dtype] per state_dict entry), the digest, and the comparison of a
fingerprint with a model (see `loopnets.checkpoint` for the format itself)."""

from __future__ import annotations

import hashlib
import json
import struct

import torch
from torch import nn

FORMAT = "loopnets"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
MAX_LISTED = 20  # mismatches listed in one error message
DIGEST_PREFIX = b"loopnets-checkpoint-digest-v1\0"
# Default cap on the bytes a load may hold: the file's tensor data, and the rebuilt model. Loading
# peaks at about three times the tensor bytes (file, decoded tensors, model); raise it with
# ln.load(path, max_bytes=...).
MAX_BYTES = 4 * 2**30


class CheckpointError(ValueError):
    """A checkpoint cannot be saved or loaded; the message says why and how to fix it."""


def fingerprint(state: dict[str, torch.Tensor]) -> list[list]:
    """[name, shape, dtype] for every state_dict entry, in order."""
    return [[name, list(t.shape), dtype_name(t.dtype)] for name, t in state.items()]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def digest(meta: dict[str, str], stored: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the metadata (except the digest) and every stored tensor's name, dtype,
    shape and bytes: what a checkpoint's "digest" field holds. Public because it protects
    against corruption only: anyone can recompute it, so `load` never trusts a file for it."""
    h = hashlib.sha256(DIGEST_PREFIX)
    rest = {k: v for k, v in meta.items() if k != "digest"}
    h.update(json.dumps(rest, sort_keys=True).encode())
    for name in sorted(stored):
        t = stored[name]
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy()
        head = json.dumps([name, dtype_name(t.dtype), list(t.shape), raw.nbytes]).encode()
        h.update(struct.pack("<Q", len(head)) + head)
        h.update(raw)
    return h.hexdigest()



def cast_like_(model: nn.Module, saved: list[list]) -> None:
    """Convert a freshly built model's floating-point tensors to the saved dtypes, in place
    (through `.data`, so tied parameters stay tied). Other differences are left to
    `_mismatches` to report."""
    want = {name: dtype for name, _, dtype in saved}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, t in named:
        dtype = getattr(torch, want.get(name, ""), None)
        if isinstance(dtype, torch.dtype) and t.dtype != dtype and t.is_floating_point() and dtype.is_floating_point:
            t.data = t.data.to(dtype)


def mismatches(saved: list[list], state: dict[str, torch.Tensor]) -> list[str]:
    """Every difference between the saved fingerprint and a model's state_dict."""
    have = {name: (shape, dtype) for name, shape, dtype in saved}
    problems = []
    for name, (shape, dtype) in have.items():
        if name not in state:
            problems.append(f"{name}: in the file, not in the model (unexpected)")
            continue
        t = state[name]
        if list(t.shape) != shape:
            problems.append(f"layer {name}: file has {tuple(shape)}, model has {tuple(t.shape)}")
        elif dtype_name(t.dtype) != dtype:
            problems.append(
                f"layer {name}: file has dtype {dtype}, model has {dtype_name(t.dtype)} "
                f"(convert the model first, e.g. model.to(torch.{dtype}))"
            )
    for name in state:
        if name not in have:
            problems.append(f"{name}: in the model, not in the file (missing)")
    return problems


def listing(problems: list[str]) -> str:
    lines = [f"  {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
    return "\n".join(lines)
