"""Checkpoints: safetensors round trips (bit-identical outputs) and clear refusals."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

import loopnets as ln
from loopnets import checkpoint


def mlp(dtype=torch.float64) -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def skip_combine_net() -> ln.Network:
    """Dense layers with a bypassing skip and a COMBINE loopback over layers 1..2."""
    net = ln.Network((4,))
    net.dense(25, activation="relu")
    net.dense(25, activation="relu")
    net.dense(25, activation="relu")
    net.dense(3, activation="softmax")
    net.connect(1, 3)
    net.loopback(outof=2, into=1, unroll=2, backprop=ln.Combine())
    return net


def couple_feedback_net(units: int = 25) -> ln.Network:
    """A dense layer followed by a COUPLE feedback block (untied copies)."""
    net = ln.Network((4,))
    net.dense(units, activation="relu")
    net.feedback([ln.layers.Dense(units, activation="relu")], unroll=2, backprop=ln.Couple())
    net.dense(3, activation="linear")
    return net


def perturb_(model: nn.Module, seed: int = 1) -> None:
    """Give every tensor its own random offset, so COUPLE copies differ (untied mid-step)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def rewrite(path, **changes) -> None:
    """Rewrite a checkpoint with some metadata fields changed (tensors untouched)."""
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = safetensors.torch.load(path.read_bytes())
    meta.update(changes)
    path.write_bytes(safetensors.torch.save(tensors, metadata=meta))


def x_batch(dtype=torch.float64) -> torch.Tensor:
    return torch.randn(7, 4, generator=torch.Generator().manual_seed(0), dtype=dtype)


# --- format --------------------------------------------------------------------------------------


def test_file_is_safetensors_with_loopnets_metadata(tmp_path):
    path = tmp_path / "m.lnet"
    ln.save(mlp(), path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])  # safetensors: 8-byte little-endian header length, then JSON
    assert data[8:9] == b"{"
    meta = json.loads(data[8 : 8 + n])["__metadata__"]
    assert meta["format"] == "loopnets" and meta["format_version"] == "1"
    assert meta["loopnets_version"] == ln.__version__
    assert json.loads(meta["architecture"]) is None
    assert json.loads(meta["tensors"])[0] == ["0.weight", [8, 4], "float64"]
    assert len(meta["digest"]) == 64


def test_load_never_unpickles(tmp_path, monkeypatch):
    path = tmp_path / "m.lnet"
    model = mlp()
    ln.save(model, path)

    def forbidden(*args, **kwargs):
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    other = ln.load(path, model=mlp())
    assert torch.equal(other(x_batch()), model(x_batch()))


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sequential_round_trip_with_model(tmp_path, dtype):
    torch.manual_seed(0)
    model, fresh = mlp(dtype), mlp(dtype)
    x = x_batch(dtype)
    assert not torch.equal(model(x), fresh(x))
    ln.save(model, tmp_path / "m.lnet")
    assert ln.load(tmp_path / "m.lnet", model=fresh) is fresh
    assert torch.equal(fresh(x), model(x))


def test_shared_tensors_stored_once_and_round_trip(tmp_path):
    def tied():
        lin = nn.Linear(5, 5).double()
        return nn.Sequential(lin, nn.Tanh(), lin)  # state_dict: 0.weight and 2.weight share storage

    torch.manual_seed(0)
    model, fresh = tied(), tied()
    path = tmp_path / "tied.lnet"
    ln.save(model, path)
    with safetensors.safe_open(str(path), framework="pt") as f:
        assert sorted(f.keys()) == ["0.bias", "0.weight"]
        assert json.loads(f.metadata()["aliases"]) == {"2.weight": "0.weight", "2.bias": "0.bias"}
    ln.load(path, model=fresh)
    x = torch.randn(3, 5, dtype=torch.float64)
    assert torch.equal(fresh(x), model(x))
    assert fresh[0].weight is fresh[2].weight


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_network_with_skip_and_combine_loopback_round_trip(tmp_path, dtype):
    torch.manual_seed(0)
    net = skip_combine_net().to(dtype)
    x = x_batch(dtype)
    path = tmp_path / "combine.lnet"
    ln.save(net, path)
    loaded = ln.load(path)  # rebuilt from the saved architecture
    assert type(loaded) is ln.Network and loaded is not net
    assert not torch.equal(ln.Network.from_config(net.config()).to(dtype)(x), net(x))
    for mode in (True, False):
        net.train(mode)
        loaded.train(mode)
        assert torch.equal(loaded(x), net(x))
    assert [lp.config() for lp in loaded.loops()] == [lp.config() for lp in net.loops()]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_network_with_couple_feedback_round_trip(tmp_path, dtype):
    torch.manual_seed(0)
    net = couple_feedback_net().to(dtype)
    perturb_(net)  # copies now differ: each must be saved and restored on its own
    (loop,) = net.loops()
    assert not torch.equal(next(loop.copies[0].parameters()), next(loop.copies[1].parameters()))
    x = x_batch(dtype)
    ln.save(net, tmp_path / "couple.lnet")
    loaded = ln.load(tmp_path / "couple.lnet")
    for mode in (True, False):
        net.train(mode)
        loaded.train(mode)
        assert torch.equal(loaded(x), net(x))
    (lloop,) = loaded.loops()
    assert isinstance(lloop.backprop, ln.Couple) and lloop.unroll == 2


def test_train_eval_mode_kept_with_model_and_restored_when_rebuilt(tmp_path):
    path = tmp_path / "m.lnet"
    net = couple_feedback_net()
    net.eval()
    ln.save(net, path)
    assert ln.load(path).training is False  # rebuilt: the mode it was saved in
    net.train()
    ln.save(net, path)
    assert ln.load(path).training is True
    target = couple_feedback_net().eval()
    assert ln.load(path, model=target).training is False  # given model: its own mode is kept


def test_save_does_not_disturb_global_rng(tmp_path):
    net = skip_combine_net()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ln.save(net, tmp_path / "m.lnet")  # rebuilds the net once to check its config
    ln.load(tmp_path / "m.lnet")  # rebuilds it, then overwrites the initial weights
    assert torch.equal(torch.rand(3), expected)


# --- refusals: loading -----------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "model.lnet"
    with pytest.raises(ln.CheckpointError, match="no checkpoint at .*: file not found") as err:
        ln.load(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello", b"hello world, not a checkpoint\n" * 3, b"PK\x03\x04" + bytes(100)],
    ids=["empty", "short", "text", "zip-pickle"],
)
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "junk.lnet"
    path.write_bytes(content)
    with pytest.raises(ln.CheckpointError, match="not a loopnets checkpoint.*safetensors header"):
        ln.load(path, model=mlp())


def test_safetensors_file_that_is_not_loopnets(tmp_path):
    path = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(mlp().state_dict(), str(path))
    with pytest.raises(ln.CheckpointError, match="safetensors file but not a loopnets checkpoint"):
        ln.load(path, model=mlp())


@pytest.mark.parametrize("keep", [-1, -1000, 40], ids=["last-byte", "into-data", "into-header"])
def test_truncated_file(tmp_path, keep):
    path = tmp_path / "m.lnet"
    ln.save(skip_combine_net(), path)
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(ln.CheckpointError, match=r"is truncated: (its header declares|it should hold)"):
        ln.load(path)


def test_flipped_byte_in_tensor_data_is_detected(tmp_path):
    path = tmp_path / "m.lnet"
    ln.save(skip_combine_net(), path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(ln.CheckpointError, match="modified or corrupted after saving: its SHA-256 digest does not match"):
        ln.load(path)


def test_edited_metadata_is_detected(tmp_path):
    path = tmp_path / "m.lnet"
    ln.save(skip_combine_net(), path)
    # Same-length in-place edit of the architecture JSON inside the header.
    data = path.read_bytes()
    assert data.count(b'relu') >= 1
    path.write_bytes(data.replace(b"relu", b"tanh", 1))
    with pytest.raises(ln.CheckpointError, match="modified or corrupted after saving: its SHA-256 digest does not match"):
        ln.load(path)


def test_rewritten_metadata_with_stale_digest_is_detected(tmp_path):
    path = tmp_path / "m.lnet"
    net = skip_combine_net()
    ln.save(net, path)
    arch = net.config()
    rewrite(path, architecture=json.dumps(arch).replace('"relu"', '"sigmoid"'))
    with pytest.raises(ln.CheckpointError, match="its SHA-256 digest does not match"):
        ln.load(path)


def test_unsupported_format_version(tmp_path):
    path = tmp_path / "m.lnet"
    ln.save(mlp(), path)
    rewrite(path, format_version="999")
    with pytest.raises(ln.CheckpointError, match="format version '999'.*reads version 1"):
        ln.load(path, model=mlp())


def test_architecture_mismatch_lists_the_differences(tmp_path):
    path = tmp_path / "m.lnet"
    ln.save(couple_feedback_net(25), path)
    with pytest.raises(ln.CheckpointError, match=r"does not fit this Network \(architecture mismatch\)") as err:
        ln.load(path, model=couple_feedback_net(24))
    assert "file has (25, 4), model has (24, 4)" in str(err.value)
    with pytest.raises(ln.CheckpointError, match="in the file, not in the model"):
        ln.load(path, model=skip_combine_net())


def test_dtype_mismatch(tmp_path):
    path = tmp_path / "m.lnet"
    ln.save(mlp(torch.float64), path)
    with pytest.raises(ln.CheckpointError, match="file has dtype float64, model has float32"):
        ln.load(path, model=mlp(torch.float32))


def test_weights_only_file_needs_model(tmp_path):
    path = tmp_path / "m.lnet"
    ln.save(mlp(), path)
    with pytest.raises(ln.CheckpointError, match="holds weights only .*pass model="):
        ln.load(path)


# --- refusals and safety: saving -------------------------------------------------------------------


def test_save_into_missing_directory(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "m.lnet"
    with pytest.raises(ln.CheckpointError, match="cannot save checkpoint to .*: directory .* does not exist") as err:
        ln.save(mlp(), path)
    assert str(path.parent) in str(err.value)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.lnet"
    good = mlp()
    ln.save(good, path)
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="simulated"):
        ln.save(mlp(), path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the good file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["m.lnet"]  # and no temp file is left behind
    assert torch.equal(ln.load(path, model=mlp())(x_batch()), good(x_batch()))


def test_callable_grad_scale_names_the_setting_and_weights_only_fallback(tmp_path):
    def build():
        net = ln.Network((4,))
        net.dense(6, activation="relu")
        net.dense(6, activation="relu")
        net.loopback(outof=1, into=1, unroll=2, backprop=ln.Combine(grad_scale=lambda k: 1.0 / k))
        return net

    net = build()
    path = tmp_path / "m.lnet"
    with pytest.raises(ln.CheckpointError, match=r"loop 'units.1' has Combine\(grad_scale=<function.*architecture=False"):
        ln.save(net, path)
    assert not path.exists()
    ln.save(net, path, architecture=False)
    with pytest.raises(ln.CheckpointError, match="holds weights only .*pass model="):
        ln.load(path)
    x = x_batch(next(net.parameters()).dtype)  # the default dtype (another test module may change it)
    assert torch.equal(ln.load(path, model=build())(x), net(x))


def test_config_that_does_not_rebuild_the_network_is_refused(tmp_path, monkeypatch):
    net = couple_feedback_net(25)
    wrong = couple_feedback_net(24).config()
    monkeypatch.setattr(net, "config", lambda: wrong)
    with pytest.raises(ln.CheckpointError, match="builds a network with different parameters"):
        ln.save(net, tmp_path / "m.lnet")


# --- forged architectures: refused at once, before any memory ------------------------------------


def forge(path, edit) -> None:
    """Rewrite a checkpoint's architecture with `edit(arch)` and a recomputed digest (as a forger
    would: the digest is no signature), tensors untouched."""
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = safetensors.torch.load(path.read_bytes())
    arch = json.loads(meta["architecture"])
    edit(arch)
    meta["architecture"] = json.dumps(arch)
    meta["digest"] = checkpoint.digest(meta, tensors)
    path.write_bytes(safetensors.torch.save(tensors, metadata=meta))


def set_feedback_unroll(k):
    def edit(arch):
        (call,) = [c for c in arch["calls"] if c["op"] == "feedback"]
        call["unroll"] = k
    return edit


def widen(units):
    def edit(arch):
        for call in arch["calls"]:
            for spec in (call, *call.get("specs", [])):
                if "units" in spec:
                    spec["units"] = units
    return edit


FORGE_SCRIPT = r"""
import json, resource, sys, time, tracemalloc
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import loopnets as ln
from test_checkpoint import couple_feedback_net, forge, set_feedback_unroll, widen

out = {}
for case, edit in [("couple", set_feedback_unroll(10**9)), ("wide", widen(20_000))]:
    path = Path(sys.argv[2]) / f"{case}.lnet"
    ln.save(couple_feedback_net(), path)
    forge(path, edit)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    start = time.perf_counter()
    try:
        ln.load(path)
        message = None
    except ln.CheckpointError as err:
        message = str(err)
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB on Linux
    out[case] = dict(message=message, seconds=seconds, traced=traced, grown_kib=grown, size=path.stat().st_size)
print(json.dumps(out))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS (ru_maxrss) is measured in KiB on Linux only")
def test_forged_huge_unroll_and_wide_layers_refused_at_once_without_memory(tmp_path):
    # In a fresh process, so the peak RSS before the load is the imports', not other tests'.
    # Without the meta-device build these cases allocate ~1.6 GB (20,000 x 20,000 float32) or
    # never finish (a billion COUPLE copies).
    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", FORGE_SCRIPT, str(tests), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for case, r in out.items():
        assert r["size"] < 10_000, case  # a small checkpoint
        assert r["message"] is not None, f"{case}: the forged checkpoint was loaded"
        assert "does not match the saved weights" in r["message"] and "forged" in r["message"]
        assert r["seconds"] < 2.0, case
        assert r["traced"] < 20 * 2**20, case  # Python objects (module copies)
        assert r["grown_kib"] < 200 * 1024, case  # tensors: far below the 1.6 GB a real build takes
    assert "(25, 25)" in out["couple"]["message"]
    assert "(20000, 4)" in out["wide"]["message"]


def test_forged_unroll_of_a_parameterless_body_stops_at_the_module_bound(tmp_path):
    # Copies of a body without tensors cost no elements; the module bound stops them.
    path = tmp_path / "m.lnet"
    ln.save(couple_feedback_net(), path)

    def edit(arch):
        arch["calls"].insert(2, {"op": "feedback", "specs": [{"kind": "dropout", "p": 0.1}], "unroll": 10**9,
                                 "backprop": {"mode": "couple", "accumulate": "mean"}, "merge": "replace", "output": None})

    forge(path, edit)
    start = time.perf_counter()
    with pytest.raises(ln.CheckpointError, match=r"builds more than \d+ modules for the file's 8 tensors"):
        ln.load(path)
    assert time.perf_counter() - start < 2.0


def test_forged_smaller_architecture_lists_the_mismatch(tmp_path):
    path = tmp_path / "m.lnet"
    ln.save(couple_feedback_net(), path)

    def two_outputs(arch):
        arch["calls"][-1]["units"] = 2

    forge(path, two_outputs)
    with pytest.raises(ln.CheckpointError, match=r"does not match the saved weights[^\n]*\n  layer units.2.0.weight: file has "
                                                 r"\(3, 25\), model has \(2, 25\)"):
        ln.load(path)


def test_forged_unroll_within_the_files_tensors_is_still_compared(tmp_path):
    # unroll 1 declares fewer tensors than stored: the build passes the guard, the comparison refuses
    path = tmp_path / "m.lnet"
    ln.save(couple_feedback_net(), path)
    forge(path, set_feedback_unroll(1))
    with pytest.raises(ln.CheckpointError, match=r"units.1.couple_copies.0.0.0.weight: in the file, not in the model"):
        ln.load(path)


def test_memory_cap_refuses_before_reading_and_keyword_raises_it(tmp_path):
    path = tmp_path / "m.lnet"
    net = couple_feedback_net()
    ln.save(net, path)
    stored = sum(t.numel() * t.element_size() for t in net.state_dict().values())  # no aliases here
    with pytest.raises(ln.CheckpointError, match=rf"declares {stored:,} bytes of tensors, more than the cap of "
                                                 r"max_bytes=1,000; .*ln.load\(path, max_bytes=\d+\)"):
        ln.load(path, max_bytes=1000)
    big = tmp_path / "big.lnet"  # sparse: 300 MB long, nothing on disk, refused without reading
    with open(big, "wb") as f:
        f.truncate(300 * 2**20)
    with pytest.raises(ln.CheckpointError, match=r"holds 314,572,800 bytes, more than the cap of max_bytes=1,000 bytes"):
        ln.load(big, max_bytes=1000)
    with pytest.raises(ln.CheckpointError, match="max_bytes must be an integer >= 0"):
        ln.load(path, max_bytes=-1)
    assert checkpoint.MAX_BYTES == 4 * 2**30
    x = x_batch(torch.float32)
    assert torch.equal(ln.load(path, max_bytes=stored)(x), net(x))


# --- device ----------------------------------------------------------------------------------------


def test_load_onto_cpu_and_refuse_a_device_that_is_not_there(tmp_path):
    path = tmp_path / "m.lnet"
    net = couple_feedback_net()
    ln.save(net, path)
    loaded = ln.load(path, device="cpu")
    assert all(t.device.type == "cpu" for t in loaded.state_dict().values())
    target = couple_feedback_net()
    assert ln.load(path, model=target, device=torch.device("cpu")) is target
    with pytest.raises(ln.CheckpointError, match=r"cannot load .*m.lnet: device='bogus' is not a device; use 'cpu'"):
        ln.load(path, device="bogus")
    with pytest.raises(ln.CheckpointError, match="device='meta' is not supported"):
        ln.load(path, device="meta")
    if not torch.cuda.is_available():
        for device in ("cuda", "cuda:1"):
            with pytest.raises(ln.CheckpointError, match=rf"device='{device}': CUDA is not available on this machine"):
                ln.load(path, device=device)
            with pytest.raises(ln.CheckpointError, match=rf"device='{device}': CUDA is not available"):
                ln.load(path, model=couple_feedback_net(), device=device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_load_onto_cuda(tmp_path):
    path = tmp_path / "m.lnet"
    net = couple_feedback_net()
    ln.save(net, path)
    loaded = ln.load(path, device="cuda")
    assert all(t.is_cuda for t in loaded.state_dict().values())
    x = x_batch(torch.float32)
    torch.testing.assert_close(loaded(x.cuda()).cpu(), net(x))
    with pytest.raises(ln.CheckpointError, match=r"device='cuda:\d+': this machine has \d+ CUDA device"):
        ln.load(path, device=f"cuda:{torch.cuda.device_count()}")
