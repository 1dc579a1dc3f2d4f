"""Checkpoints: one safetensors file holding the weights, the architecture and a digest.

A loopnets checkpoint (suggested suffix `.lnet`) is a plain safetensors file: an 8-byte
little-endian header length, a JSON header, then the raw tensor bytes. Nothing is pickled and
nothing is unpickled (never `torch.load`), so loading a checkpoint cannot run code. The header's
string metadata holds:

- `format` = "loopnets", `format_version` (this module writes and reads "1"),
  `loopnets_version` and `torch_version` (informative);
- `architecture`: for an `ln.Network`, the JSON of `model.config()`, so `load(path)` can rebuild
  it; `null` for any other module (then `load(path, model=...)` is needed);
- `tensors`: the architecture fingerprint, `[name, shape, dtype]` for every `state_dict` entry;
- `aliases`: entries sharing storage with an earlier entry (tied weights, COUPLE's `copies.0`
  which is the loop body), stored once in the file and re-expanded on load;
- `training`: the module's train/eval mode when saved;
- `digest`: SHA-256 over all the other metadata and over every stored tensor's name, dtype,
  shape and bytes. It detects corruption and accidental edits, not deliberate forgery (anyone
  can recompute it; it is not a signature).

Train/eval mode: `load(path, model=m)` keeps `m`'s mode (it only copies weights);
`load(path)` returns the rebuilt network in the mode the model had when saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from loopnets.loop import Loop
from loopnets.network import Network

FORMAT = "loopnets"
FORMAT_VERSION = 1
_SUPPORTED_VERSIONS = (1,)
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
_MAX_LISTED = 20  # mismatches listed in one error message
_DIGEST_PREFIX = b"loopnets-checkpoint-digest-v1\0"


class CheckpointError(ValueError):
    """A checkpoint cannot be saved or loaded; the message says why and how to fix it."""


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

    import loopnets  # here, not at module level: loopnets/__init__ imports this module

    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "loopnets_version": loopnets.__version__,
        "torch_version": torch.__version__,
        "architecture": json.dumps(arch),
        "tensors": json.dumps(_fingerprint(state)),
        "aliases": json.dumps(aliases),
        "training": json.dumps(bool(model.training)),
    }
    meta["digest"] = _digest(meta, stored)
    data = safetensors.torch.save(stored, metadata=meta)
    _write_atomic(path, data)


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Load a checkpoint written by `save`; returns the model.

    Without `model`, the `ln.Network` is rebuilt from the saved architecture (on the CPU, with the
    saved dtypes, in the train/eval mode it had when saved; torch's global RNG is left as it was). With `model`, its `state_dict` must match the file's
    fingerprint exactly (names, shapes, dtypes); the weights are then copied in place (onto the
    model's device) and `model` is returned, its train/eval mode unchanged. Nothing is unpickled.

    Raises:
        CheckpointError: the file is missing, is not a loopnets checkpoint, is truncated or was
            modified after saving (digest mismatch), has an unsupported format version, holds no
            architecture and no `model` was given, or does not match `model` (every mismatch
            listed).
    """
    path = Path(path)
    meta, tensors = _read(path)
    state = _expand(path, meta, tensors)

    if model is None:
        arch = _json_field(path, meta, "architecture")
        if arch is None:
            raise CheckpointError(
                f"{path} holds weights only (no architecture: it was saved from a module that is not "
                f"an ln.Network, or with architecture=False); pass model=<a module of the same "
                f"architecture>, e.g. ln.load({str(path)!r}, model=net)"
            )
        try:
            with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten anyway
                model = Network.from_config(arch)
        except Exception as err:  # the builder's own message says what is wrong
            raise CheckpointError(f"{path}: cannot rebuild the Network from its saved architecture: {err}") from err
        saved = _meta_fingerprint(path, meta)
        _cast_like_(model, saved)  # the config does not hold dtypes (net.double() etc.)
        problems = _mismatches(saved, model.state_dict())
        if problems:
            raise CheckpointError(
                f"{path}: the Network rebuilt from the saved architecture does not match the saved "
                f"weights (file written by a different loopnets version?):\n" + _listing(problems)
            )
        model.train(bool(_json_field(path, meta, "training")))
    else:
        problems = _mismatches(_meta_fingerprint(path, meta), model.state_dict())
        if problems:
            raise CheckpointError(
                f"{path} does not fit this {type(model).__name__} (architecture mismatch); "
                f"pass a model built like the saved one:\n" + _listing(problems)
            )

    model.load_state_dict(state, strict=True)
    return model


# ---------------------------------------------------------------------------------------------
# saving


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
    saved = _fingerprint(state)
    _cast_like_(rebuilt, saved)
    problems = _mismatches(saved, rebuilt.state_dict())
    if problems:
        raise CheckpointError(
            "cannot save the architecture of this Network: Network.from_config(net.config()) "
            "builds a network with different parameters (was the network changed after building?); "
            "save the weights only with architecture=False:\n" + _listing(problems)
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


def _fingerprint(state: dict[str, torch.Tensor]) -> list[list]:
    """[name, shape, dtype] for every state_dict entry, in order."""
    return [[name, list(t.shape), _dtype_name(t.dtype)] for name, t in state.items()]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


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


def _digest(meta: dict[str, str], stored: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the metadata (except the digest) and every stored tensor's name, dtype,
    shape and bytes."""
    h = hashlib.sha256(_DIGEST_PREFIX)
    rest = {k: v for k, v in meta.items() if k != "digest"}
    h.update(json.dumps(rest, sort_keys=True).encode())
    for name in sorted(stored):
        t = stored[name]
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy()
        head = json.dumps([name, _dtype_name(t.dtype), list(t.shape), raw.nbytes]).encode()
        h.update(struct.pack("<Q", len(head)) + head)
        h.update(raw)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file next to `path`, flush it to disk, then rename it over
    `path` (os.replace is atomic on POSIX and Windows)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# loading


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Validate the file (header, format, version, length, digest) and return its metadata and
    stored tensors."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: file not found")
    if path.is_dir():
        raise CheckpointError(f"cannot load checkpoint {path}: it is a directory, not a file")
    data = path.read_bytes()
    not_ours = (
        f"{path} is not a loopnets checkpoint: it does not start with a safetensors header "
        f"(8-byte length, then JSON); files written by torch.save (pickle) are not read, by design"
    )
    if len(data) < 8:
        raise CheckpointError(f"{not_ours} (the file has only {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n < 2 or n > _MAX_HEADER or data[8:9] != b"{":
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
    if version not in {str(v) for v in _SUPPORTED_VERSIONS}:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r} (written by loopnets "
            f"{meta.get('loopnets_version', '?')}); this loopnets reads version "
            f"{', '.join(map(str, _SUPPORTED_VERSIONS))}; upgrade loopnets to read it"
        )

    expected = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            expected = max(expected, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError) as err:
            raise CheckpointError(f"{path} is corrupted: bad header entry for tensor {name!r}") from err
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
    digest = meta.get("digest")
    if digest != _digest(meta, tensors):
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
        if t is None or list(t.shape) != shape or _dtype_name(t.dtype) != dtype:
            raise CheckpointError(f"{path} is corrupted: tensor {name!r} is missing or differs from the metadata")
        state[name] = t
    return state


def _cast_like_(model: nn.Module, saved: list[list]) -> None:
    """Convert a freshly built model's floating-point tensors to the saved dtypes, in place
    (through `.data`, so tied parameters stay tied). Other differences are left to
    `_mismatches` to report."""
    want = {name: dtype for name, _, dtype in saved}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, t in named:
        dtype = getattr(torch, want.get(name, ""), None)
        if isinstance(dtype, torch.dtype) and t.dtype != dtype and t.is_floating_point() and dtype.is_floating_point:
            t.data = t.data.to(dtype)


def _mismatches(saved: list[list], state: dict[str, torch.Tensor]) -> list[str]:
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
        elif _dtype_name(t.dtype) != dtype:
            problems.append(
                f"layer {name}: file has dtype {dtype}, model has {_dtype_name(t.dtype)} "
                f"(convert the model first, e.g. model.to(torch.{dtype}))"
            )
    for name in state:
        if name not in have:
            problems.append(f"{name}: in the model, not in the file (missing)")
    return problems


def _listing(problems: list[str]) -> str:
    lines = [f"  {p}" for p in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    return "\n".join(lines)
