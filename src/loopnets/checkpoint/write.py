"""`save`: a model's weights, and a Network's architecture, into one safetensors checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from loopnets.atomic import write_atomic
from loopnets.builder.network import Network
from loopnets.checkpoint.format import (FORMAT, FORMAT_VERSION, CheckpointError, cast_like_, digest, fingerprint,
                                        listing, mismatches)
from loopnets.core.loop import Loop
from loopnets.version import __version__


def save(model: nn.Module, path: str | os.PathLike, *, architecture: bool = True) -> None:
    """Write `model`'s weights (and, for an `ln.Network`, its architecture) to one file at `path`.

    The write is atomic: the file is written to a temporary file in the same directory and then
    renamed over `path`, so an interrupted save never leaves a half-written file in place of a
    good one. Tensors are copied to the CPU; tensors shared between `state_dict` entries are
    stored once.

    Args:
        model: any `nn.Module`. For an `ln.Network` (exactly that class, not a subclass, whose
            constructor may differ) the architecture is saved too, so `ln.load(path)` rebuilds it.
        path: destination file; its directory must exist. Suggested suffix: `.lnet`.
        architecture: False saves the weights only (architecture `null`); use it for a Network
            whose config holds a setting that JSON cannot store, then load with
            `ln.load(path, model=...)`.

    Raises:
        CheckpointError: the directory does not exist, `path` is a directory, or the Network's
            config cannot be stored as JSON (the message names the setting).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"cannot save checkpoint to {path}: it is a directory; give a file name such as {path / 'model.lnet'}")
    parent = path.parent
    if not parent.is_dir():
        raise CheckpointError(
            f"cannot save checkpoint to {path}: directory {parent} does not exist; "
            f"create it first, e.g. Path({str(parent)!r}).mkdir(parents=True)"
        )

    state = model.state_dict()
    arch = _architecture_of(model, state) if architecture else None
    stored, aliases = _unique_tensors(state)

    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "loopnets_version": __version__,
        "torch_version": torch.__version__,
        "architecture": json.dumps(arch),
        "tensors": json.dumps(fingerprint(state)),
        "aliases": json.dumps(aliases),
        "training": json.dumps(bool(model.training)),
    }
    meta["digest"] = digest(meta, stored)
    data = safetensors.torch.save(stored, metadata=meta)
    write_atomic(path, data)


def _architecture_of(model: nn.Module, state: dict[str, torch.Tensor]) -> Any:
    """The JSON-able architecture of a plain `Network` (None for any other module), checked to
    survive a JSON round trip and to rebuild a network with the same state_dict layout."""
    if type(model) is not Network:
        return None
    hint = (
        "use a plain number or string for it (e.g. ln.Combine(grad_scale=1.0) or "
        "grad_scale='1/k' instead of a function), or save the weights only with ln.save(model, path, architecture=False) and "
        "load them with ln.load(path, model=<a Network built the same way>)"
    )
    for name, m in model.named_modules():
        scale = getattr(getattr(m, "backprop", None), "grad_scale", None)
        if isinstance(m, Loop) and callable(scale):
            raise CheckpointError(
                f"cannot save the architecture of this Network: loop {name!r} has "
                f"{type(m.backprop).__name__}(grad_scale=<function {getattr(scale, '__qualname__', '?')}>), "
                f"a Python function, which cannot be stored as JSON; {hint}"
            )
    try:
        arch = model.config()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"cannot save the architecture of this Network: {err}; {hint}") from err
    bad = _non_json(arch, "config")
    if bad is not None:
        where, value = bad
        raise CheckpointError(
            f"cannot save the architecture of this Network: setting {where} = {value!r} "
            f"(a {type(value).__name__}) cannot be stored as JSON; {hint}"
        )
    arch = json.loads(json.dumps(arch))  # exactly what load() will see
    # Rebuilding initialises parameters from torch's global RNG; do not disturb the caller's.
    with torch.random.fork_rng(devices=[]):
        rebuilt = Network.from_config(arch)
    saved = fingerprint(state)
    cast_like_(rebuilt, saved)
    problems = mismatches(saved, rebuilt.state_dict())
    if problems:
        raise CheckpointError(
            "cannot save the architecture of this Network: Network.from_config(net.config()) "
            "builds a network with different parameters (was the network changed after building?); "
            "save the weights only with architecture=False:\n" + listing(problems)
        )
    return arch


def _non_json(value: Any, where: str) -> tuple[str, Any] | None:
    """The first (path, value) in a config that JSON cannot store faithfully, or None."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            bad = _non_json(item, f"{where}[{i}]")
            if bad is not None:
                return bad
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} key {key!r}", key
            bad = _non_json(item, f"{where}.{key}")
            if bad is not None:
                return bad
        return None
    return where, value


def _unique_tensors(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split the state_dict into the tensors to store (each storage view once, as a contiguous
    CPU copy) and aliases {name: stored name} for entries that are the very same view.

    safetensors refuses tensors that share memory; entries that share storage but are different
    views are stored as separate copies (load copies values into the model, whose own structure
    decides what is shared)."""
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"cannot save state_dict entry {name!r}: expected a tensor, got {type(t).__name__}")
        if t.layout != torch.strided:
            raise CheckpointError(f"cannot save state_dict entry {name!r}: {t.layout} tensors are not supported; convert with .to_dense()")
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        stored[name] = t.detach().cpu().clone(memory_format=torch.contiguous_format)
    return stored, aliases
