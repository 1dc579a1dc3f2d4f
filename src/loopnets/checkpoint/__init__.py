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

Layout: `format` (constants, `CheckpointError`, fingerprint, digest), `write` (`save`),
`read` (`load`), `guard` (the meta-device build guard).
"""

from loopnets.checkpoint.format import FORMAT, FORMAT_VERSION, MAX_BYTES, CheckpointError, digest
from loopnets.checkpoint.read import load
from loopnets.checkpoint.write import save

__all__ = ["save", "load", "CheckpointError", "digest", "MAX_BYTES", "FORMAT", "FORMAT_VERSION"]
