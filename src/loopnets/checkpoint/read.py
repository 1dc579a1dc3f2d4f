"""`load`: a checkpoint back into a model, or into a Network rebuilt from its architecture; every
field checked before it is trusted (size, header, format version, digest, fingerprint), and the
rebuild done on the meta device under the build guard (`loopnets.checkpoint.guard`)."""

from __future__ import annotations

import copy
import json
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from loopnets.builder.network import Network
from loopnets.checkpoint.format import (FORMAT, MAX_BYTES, MAX_HEADER, SUPPORTED_VERSIONS, CheckpointError, cast_like_,
                                        digest, dtype_name, listing, mismatches)
from loopnets.checkpoint.guard import BuildGuard, Oversized
from loopnets.training.device import resolve_device


def load(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    device: str | torch.device | None = None,
    max_bytes: int = MAX_BYTES,
) -> nn.Module:
    """Load a checkpoint written by `save`; returns the model.

    Without `model`, the `ln.Network` is rebuilt from the saved architecture (with the saved
    dtypes, in the train/eval mode it had when saved; torch's global RNG is left as it was). It is
    first built on the `meta` device, which holds shapes but no memory, and compared with the
    stored tensors; only a network that matches them exactly is materialised. With `model`, its
    `state_dict` must match the file's fingerprint exactly (names, shapes, dtypes); the weights
    are then copied in place and `model` is returned, its train/eval mode unchanged. Nothing is
    unpickled.

    Args:
        model: a module built like the saved one (needed for a weights-only file).
        device: where the weights go: "cpu", "cuda", "cuda:N", "mps", "auto" (CUDA, else MPS,
            else the CPU) or a `torch.device`. None: the CPU for a rebuilt Network, the model's
            own device for `model=` (a given device moves the model there).
        max_bytes: the most bytes of tensors the file and the rebuilt model may hold (default
            `MAX_BYTES`, 4 GiB); raise it to load a larger checkpoint you trust.

    Raises:
        CheckpointError: the file is missing, is not a loopnets checkpoint, is truncated or was
            modified after saving (digest mismatch), has an unsupported format version, is larger
            than `max_bytes`, holds no architecture and no `model` was given, declares an
            architecture that does not match its tensors, does not match `model` (every mismatch
            listed), or `device` is not available here.
    """
    path = Path(path)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise CheckpointError(f"max_bytes must be an integer >= 0 (bytes of tensors); got {max_bytes!r}")
    target = _target(path, device, model)
    meta, tensors = _read(path, max_bytes)
    state = _expand(path, meta, tensors)

    if model is None:
        arch = _json_field(path, meta, "architecture")
        if arch is None:
            raise CheckpointError(
                f"{path} holds weights only (no architecture: it was saved from a module that is not "
                f"an ln.Network, or with architecture=False); pass model=<a module of the same "
                f"architecture>, e.g. ln.load({str(path)!r}, model=net)"
            )
        model = _rebuild(path, arch, _meta_fingerprint(path, meta), max_bytes)
        _materialize_(model, target or torch.device("cpu"))
        model.train(bool(_json_field(path, meta, "training")))
    else:
        fingerprint = _meta_fingerprint(path, meta)
        problems = mismatches(fingerprint, model.state_dict())
        if problems and not fits_after_key_upgrade(fingerprint, model):
            raise CheckpointError(
                f"{path} does not fit this {type(model).__name__} (architecture mismatch); "
                f"pass a model built like the saved one:\n" + listing(problems)
            )
        if target is not None:
            model.to(target)

    model.load_state_dict(state, strict=True)
    return model


def fits_after_key_upgrade(fingerprint: list[list], model: nn.Module) -> bool:
    """Whether `model`'s own load-state-dict hooks turn the saved names into its own, as the loopy
    family's hook renames a former PassLoop's keys (`upgrade_pass_loop_keys`): the fingerprint, as
    shape-only tensors, loads strictly into a meta-device twin of the model (the twin holds no
    memory; the deep copy it starts from is the model's size, and only a mismatching file pays it)."""
    twin = copy.deepcopy(model).to("meta")
    state = {name: torch.empty(shape, dtype=getattr(torch, dtype), device="meta") for name, shape, dtype in fingerprint}
    try:
        with warnings.catch_warnings():  # a hook's own default tensors are real, the twin's meta: no copy happens
            warnings.simplefilter("ignore", UserWarning)
            twin.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, KeyError, ValueError):
        return False
    have, want = twin.state_dict(), model.state_dict()  # the twin now holds the file's tensors under today's names
    return have.keys() == want.keys() and all(
        have[n].shape == want[n].shape and have[n].dtype == want[n].dtype for n in want)


def _target(path: Path, device: str | torch.device | None, model: nn.Module | None) -> torch.device | None:
    """The device to load onto (None: the default, see `load`), checked to exist here by the
    training engine's `resolve_device` (the same names and messages as `ln.fit(device=...)`)."""
    if device is None:
        return None
    try:
        return resolve_device(device, model if model is not None else nn.Module())
    except ValueError as err:
        raise CheckpointError(f"cannot load {path}: {err}") from None


def _read(path: Path, max_bytes: int = MAX_BYTES) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Validate the file (size, header, format, version, length, digest) and return its metadata
    and stored tensors. A file larger than `max_bytes` plus the largest header is refused before
    it is read."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: file not found")
    if path.is_dir():
        raise CheckpointError(f"cannot load checkpoint {path}: it is a directory, not a file")
    size = path.stat().st_size
    if size > max_bytes + MAX_HEADER + 8:
        raise CheckpointError(f"{path} holds {size:,} bytes, more than the cap of max_bytes={max_bytes:,} bytes of "
                              f"tensors; if you trust it, load it with ln.load(path, max_bytes={size})")
    data = path.read_bytes()
    not_ours = (
        f"{path} is not a loopnets checkpoint: it does not start with a safetensors header "
        f"(8-byte length, then JSON); files written by torch.save (pickle) are not read, by design"
    )
    if len(data) < 8:
        raise CheckpointError(f"{not_ours} (the file has only {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n < 2 or n > MAX_HEADER or data[8:9] != b"{":
        raise CheckpointError(not_ours)
    if 8 + n > len(data):
        raise CheckpointError(
            f"{path} is truncated: its header declares {n} bytes but the file has only "
            f"{len(data) - 8} after the length (interrupted copy or download?); save it again"
        )
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{not_ours} (header is not valid JSON: {err})") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{not_ours} (header is not a JSON object)")

    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a loopnets checkpoint (no 'format': 'loopnets' "
            f"in its metadata); read it with safetensors directly, or write checkpoints with ln.save"
        )
    version = meta.get("format_version")
    if version not in {str(v) for v in SUPPORTED_VERSIONS}:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r} (written by loopnets "
            f"{meta.get('loopnets_version', '?')}); this loopnets reads version "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}; upgrade loopnets to read it"
        )

    expected = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            expected = max(expected, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError) as err:
            raise CheckpointError(f"{path} is corrupted: bad header entry for tensor {name!r}") from err
    if expected > max_bytes:
        raise CheckpointError(f"{path} declares {expected:,} bytes of tensors, more than the cap of "
                              f"max_bytes={max_bytes:,}; if you trust it, load it with ln.load(path, max_bytes={expected})")
    present = len(data) - 8 - n
    if present < expected:
        raise CheckpointError(
            f"{path} is truncated: it should hold {expected} bytes of tensor data but has "
            f"{present} (interrupted copy or download?); save it again"
        )

    try:
        tensors = safetensors.torch.load(data)
    except Exception as err:  # SafetensorError has no stable import path across versions
        raise CheckpointError(f"{path} is corrupted: safetensors cannot read it ({err})") from err
    if meta.get("digest") != digest(meta, tensors):
        raise CheckpointError(
            f"{path} was modified or corrupted after saving: its SHA-256 digest does not match "
            f"its contents (weights or metadata changed); use an intact copy"
        )
    return meta, tensors


def _json_field(path: Path, meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupted: metadata field {key!r} is missing or not JSON") from err


def _meta_fingerprint(path: Path, meta: dict[str, str]) -> list[list]:
    """The saved [name, shape, dtype] list, validated."""
    fp = _json_field(path, meta, "tensors")
    ok = isinstance(fp, list) and all(
        isinstance(e, list) and len(e) == 3 and isinstance(e[0], str) and isinstance(e[1], list) and isinstance(e[2], str)
        for e in fp
    )
    if not ok:
        raise CheckpointError(f"{path} is corrupted: metadata field 'tensors' is not a list of [name, shape, dtype]")
    return fp


def _expand(path: Path, meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The full state_dict: stored tensors plus aliases, checked against the fingerprint."""
    aliases = _json_field(path, meta, "aliases")
    if not isinstance(aliases, dict):
        raise CheckpointError(f"{path} is corrupted: metadata field 'aliases' is not an object")
    state: dict[str, torch.Tensor] = {}
    for name, shape, dtype in _meta_fingerprint(path, meta):
        source = aliases.get(name, name)
        t = tensors.get(source)
        if t is None or list(t.shape) != shape or dtype_name(t.dtype) != dtype:
            raise CheckpointError(f"{path} is corrupted: tensor {name!r} is missing or differs from the metadata")
        state[name] = t
    return state


def _rebuild(path: Path, arch: Any, saved: list[list], max_bytes: int) -> Network:
    """The Network the architecture declares, on the `meta` device (no memory), checked against
    the saved fingerprint: every parameter and buffer with the saved name, shape and dtype.

    The build runs under `BuildGuard`, which stops it the moment it declares more tensors or
    elements than the file holds, or far more modules, so a forged count (a COUPLE unroll of a
    billion copies) or size (20,000-unit layers) is refused at once, before any real memory."""
    guard = BuildGuard(saved)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), guard:
            model = Network.from_config(arch)
    except Oversized as err:
        raise CheckpointError(f"{path}: the saved architecture does not match the saved weights: {err}; "
                              f"the file is damaged or forged") from None
    except Exception as err:  # the builder's own message says what is wrong
        raise CheckpointError(f"{path}: cannot rebuild the Network from its saved architecture: {err}") from err
    cast_like_(model, saved)  # the config does not hold dtypes (net.double() etc.)
    problems = mismatches(saved, model.state_dict())
    if problems:
        raise CheckpointError(
            f"{path}: the Network rebuilt from the saved architecture does not match the saved "
            f"weights (file written by a different loopnets version, or forged):\n" + listing(problems)
        )
    held = sum(t.numel() * t.element_size() for t in _unique_state(model))
    if held > max_bytes:
        raise CheckpointError(f"{path}: the rebuilt Network holds {held:,} bytes, more than the cap of "
                              f"max_bytes={max_bytes:,}; if you trust it, load it with ln.load(path, max_bytes={held})")
    return model


def _unique_state(model: nn.Module) -> list[torch.Tensor]:
    """Each parameter and buffer of `model` once (tied ones once)."""
    seen: dict[int, torch.Tensor] = {}
    for _, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        seen.setdefault(id(t), t)
    return list(seen.values())


def _materialize_(model: nn.Module, device: torch.device) -> None:
    """Replace every meta parameter and buffer by an uninitialised tensor on `device` (the weights
    are copied in next), keeping tied tensors tied: one new tensor per original, set on every
    module that holds it. (`Module.to_empty` would give each module its own copy.)"""
    new: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False, remove_duplicate=False)):
            if id(p) not in new:
                new[id(p)] = nn.Parameter(torch.empty_like(p, device=device), requires_grad=p.requires_grad)
            setattr(module, name, new[id(p)])
        for name, b in list(module.named_buffers(recurse=False, remove_duplicate=False)):
            if id(b) not in new:
                new[id(b)] = torch.empty_like(b, device=device)
            setattr(module, name, new[id(b)])
