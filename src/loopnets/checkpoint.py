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

A forged checkpoint cannot make `load` allocate or work beyond what its tensors hold: the file's
size and its declared tensor bytes are checked against `max_bytes` (default `MAX_BYTES`) before
anything is read, and the architecture is rebuilt on PyTorch's `meta` device (shapes only, no
memory) under a guard that stops the build as soon as it declares more tensors, more elements or
far more modules than the file holds (a huge COUPLE unroll, 20,000-unit layers). Only a network
whose every parameter and buffer matches the stored tensors' names, shapes and dtypes is then
materialised, on the requested device.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from loopnets.atomic import write_atomic
from loopnets.core.loop import Loop
from loopnets.builder.network import Network
from loopnets.training.device import resolve_device

FORMAT = "loopnets"
FORMAT_VERSION = 1
_SUPPORTED_VERSIONS = (1,)
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
_MAX_LISTED = 20  # mismatches listed in one error message
_DIGEST_PREFIX = b"loopnets-checkpoint-digest-v1\0"
# Default cap on the bytes a load may hold: the file's tensor data, and the rebuilt model. Loading
# peaks at about three times the tensor bytes (file, decoded tensors, model); raise it with
# ln.load(path, max_bytes=...).
MAX_BYTES = 4 * 2**30
# The rebuild guard's bound on modules: a network matching the file has at most a few modules per
# stored tensor (containers, activations) plus parameterless layers (max pooling, dropout).
_MODULES_FREE = 512
_MODULES_PER_TENSOR = 8


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

    from loopnets.version import __version__

    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "loopnets_version": __version__,
        "torch_version": torch.__version__,
        "architecture": json.dumps(arch),
        "tensors": json.dumps(_fingerprint(state)),
        "aliases": json.dumps(aliases),
        "training": json.dumps(bool(model.training)),
    }
    meta["digest"] = digest(meta, stored)
    data = safetensors.torch.save(stored, metadata=meta)
    write_atomic(path, data)


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
        problems = _mismatches(_meta_fingerprint(path, meta), model.state_dict())
        if problems:
            raise CheckpointError(
                f"{path} does not fit this {type(model).__name__} (architecture mismatch); "
                f"pass a model built like the saved one:\n" + _listing(problems)
            )
        if target is not None:
            model.to(target)

    model.load_state_dict(state, strict=True)
    return model


def _target(path: Path, device: str | torch.device | None, model: nn.Module | None) -> torch.device | None:
    """The device to load onto (None: the default, see `load`), checked to exist here by the
    training engine's `resolve_device` (the same names and messages as `ln.fit(device=...)`)."""
    if device is None:
        return None
    try:
        return resolve_device(device, model if model is not None else nn.Module())
    except ValueError as err:
        raise CheckpointError(f"cannot load {path}: {err}") from None


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


def digest(meta: dict[str, str], stored: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the metadata (except the digest) and every stored tensor's name, dtype,
    shape and bytes: what a checkpoint's "digest" field holds. Public because it protects
    against corruption only: anyone can recompute it, so `load` never trusts a file for it."""
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


# ---------------------------------------------------------------------------------------------
# loading


def _read(path: Path, max_bytes: int = MAX_BYTES) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Validate the file (size, header, format, version, length, digest) and return its metadata
    and stored tensors. A file larger than `max_bytes` plus the largest header is refused before
    it is read."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: file not found")
    if path.is_dir():
        raise CheckpointError(f"cannot load checkpoint {path}: it is a directory, not a file")
    size = path.stat().st_size
    if size > max_bytes + _MAX_HEADER + 8:
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
        if t is None or list(t.shape) != shape or _dtype_name(t.dtype) != dtype:
            raise CheckpointError(f"{path} is corrupted: tensor {name!r} is missing or differs from the metadata")
        state[name] = t
    return state


def _rebuild(path: Path, arch: Any, saved: list[list], max_bytes: int) -> Network:
    """The Network the architecture declares, on the `meta` device (no memory), checked against
    the saved fingerprint: every parameter and buffer with the saved name, shape and dtype.

    The build runs under `_BuildGuard`, which stops it the moment it declares more tensors or
    elements than the file holds, or far more modules, so a forged count (a COUPLE unroll of a
    billion copies) or size (20,000-unit layers) is refused at once, before any real memory."""
    guard = _BuildGuard(saved)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), guard:
            model = Network.from_config(arch)
    except _Oversized as err:
        raise CheckpointError(f"{path}: the saved architecture does not match the saved weights: {err}; "
                              f"the file is damaged or forged") from None
    except Exception as err:  # the builder's own message says what is wrong
        raise CheckpointError(f"{path}: cannot rebuild the Network from its saved architecture: {err}") from err
    _cast_like_(model, saved)  # the config does not hold dtypes (net.double() etc.)
    problems = _mismatches(saved, model.state_dict())
    if problems:
        raise CheckpointError(
            f"{path}: the Network rebuilt from the saved architecture does not match the saved "
            f"weights (file written by a different loopnets version, or forged):\n" + _listing(problems)
        )
    held = sum(t.numel() * t.element_size() for t in _unique_state(model))
    if held > max_bytes:
        raise CheckpointError(f"{path}: the rebuilt Network holds {held:,} bytes, more than the cap of "
                              f"max_bytes={max_bytes:,}; if you trust it, load it with ln.load(path, max_bytes={held})")
    return model


class _Oversized(Exception):
    """Raised inside the meta build when the architecture outgrows the file (caught by _rebuild)."""


class _BuildGuard:
    """Counts what a `Network.from_config` on the meta device declares, through torch's global
    module / parameter / buffer registration hooks (active for this thread only, while inside the
    `with`), and raises `_Oversized` as soon as it exceeds the saved fingerprint: more distinct
    tensors than it lists, more elements than its shapes hold, or more modules than
    `_MODULES_FREE + _MODULES_PER_TENSOR * tensors`. COUPLE's copies are deep copies, registered
    one by one as they are made, so a huge unroll stops after a few copies."""

    def __init__(self, saved: list[list]):
        self.max_tensors = len(saved)
        self.max_elements = sum(_numel(shape) for _, shape, _ in saved)
        self.max_modules = _MODULES_FREE + _MODULES_PER_TENSOR * len(saved)
        # kept alive while counting, so no id is reused by a new object
        self.tensors: dict[int, torch.Tensor] = {}
        self.modules: dict[int, nn.Module] = {}
        self.elements = 0
        self.thread = threading.get_ident()
        self.handles: list = []

    def __enter__(self) -> "_BuildGuard":
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
                    raise _Oversized(f"it builds more than {self.max_modules:,} modules for the file's "
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
            raise _Oversized(f"it declares more than the {self.max_tensors} tensors the file holds "
                             f"(a loop unroll or layer count larger than the stored weights)")
        if self.elements > self.max_elements:
            raise _Oversized(f"{name} of shape {tuple(tensor.shape)} brings the declared elements to "
                             f"{self.elements:,}, more than the {self.max_elements:,} the file's tensors hold "
                             f"(a layer size, layer count or loop unroll larger than the stored weights)")


def _numel(shape: list) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


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
