"""Digits (UCI optical recognition, as shipped by scikit-learn): 1,797 handwritten digits, 8x8 pixels, 10 classes.

Source: `sklearn.datasets.load_digits()`, bundled with scikit-learn (no download). Each pixel
counts set bits in a 4x4 block of a 32x32 bitmap, so values are integers 0..16.

Split: `val_fraction` (default 0.2: 1,437 training / 360 validation images), stratified by digit
and shuffled with `seed`.
Normalisation: pixels divided by 16 into [0, 1]; no per-pixel standardisation (corner pixels
are almost always 0). Layouts: "dense" gives x of shape (n, 64); "image" gives (n, 1, 8, 8).
"""

from __future__ import annotations

import torch

from loopnets.data.split import IMAGE_LAYOUTS, Split, image_classification_split

LAYOUTS = IMAGE_LAYOUTS


def load_digits(
    seed: int = 0, layout: str = "dense", val_fraction: float = 0.2, dtype: torch.dtype = torch.float32
) -> Split:
    """8x8 digits as x: (n, 64) or (n, 1, 8, 8) float in [0, 1]; y: (n,) long digit.

    Args:
        seed: shuffles the split.
        layout: "dense" -> x (n, 64); "image" -> x (n, 1, 8, 8).
        val_fraction: share of the 1,797 images held out for validation, in (0, 1).
        dtype: floating dtype of x.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()  # data (1797, 64) float64 in 0..16, target (1797,)
    classes = tuple(str(d) for d in data.target_names)
    return image_classification_split("digits", data.data / 16.0, data.target, classes, (1, 8, 8), seed=seed,
                                      layout=layout, val_fraction=val_fraction, dtype=dtype)
