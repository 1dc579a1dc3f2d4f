"""Synthetic FTIR-shaped spectra (SYNTHETIC, for timing and shape parity only): 571 wavenumbers, 28 classes, 529 / 182 split.

The thesis's FTIR data (protein hydrolysates from 28 by-product / enzyme combinations, Kristoffersen
et al., as used by Helin et al.; thesis section 4.1) are not public. This generator reproduces its
shapes exactly (571 features, 28 classes, 529 training / 182 validation samples; the thesis's 174
test samples are dropped because it reports validation numbers), so per-epoch times and model sizes
match the thesis's. Accuracies and RMSEs on it say nothing about the real data; for real
spectroscopy use `meats`.

Generative model (a fixed "file": everything is drawn from a fixed internal seed, and `seed` only
picks the split, as it would for a real data set):
- 8 pure components (think peptide-size fractions), each a sum of 6-10 Gaussian absorption bands
  on a normalised wavenumber axis, with an average molecular weight log-spaced from 300 to
  8,000 g/mol.
- 28 classes, each a mixture of the components with Dirichlet(3) weights; samples are assigned
  to classes in turn, so classes are balanced to within one sample.
- A sample multiplies its class's weights by lognormal(0, 0.2) factors (its concentrations c),
  and its spectrum is EMSC-like: `a + b t + d t^2 + m * sum_k c_k band_k(t) + noise`, with
  baseline offset a ~ N(0, 0.1), slope b ~ N(0, 0.1), curvature d ~ N(0, 0.05) (t centred on
  the axis), multiplicative scatter m ~ lognormal(0, 0.1) and white noise of sd `noise`
  (peak absorbances are about 0.5-1).
- Regression target: the concentration-weighted average molecular weight
  `sum_k c_k mw_k / sum_k c_k` in g/mol, a smooth function of the band intensities that the
  multiplicative scatter cancels out of (mean about 2,660, sd about 430, range 1,600-3,660
  g/mol; kept in these units, as the thesis's RMSEs of 240-550 are).
For scale: on the default split, scikit-learn's logistic regression reaches about 96 %
validation accuracy and ridge regression an RMSE of about 60 g/mol.

Split: `n_train` / `n_val` samples, stratified by class and shuffled with `seed`.
Normalisation: each wavenumber standardised with the training split's mean and standard
deviation (EMSC is not applied; the network sees the scatter effects). Layouts: "dense" gives x
of shape (n, 571); "conv" gives (n, 1, 571), channels first for conv1d (the thesis's 1x571).
"""

from __future__ import annotations

import numpy as np
import torch

from loopnets.data.split import Split

TASKS = ("classification", "regression")
LAYOUTS = ("dense", "conv")
N_FEATURES = 571
N_CLASSES = 28
N_COMPONENTS = 8
_FILE_SEED = 571_28  # fixed: the synthetic "file" is the same for every split seed


def load_spectra(
    seed: int = 0,
    task: str = "classification",
    layout: str = "dense",
    n_train: int = 529,
    n_val: int = 182,
    noise: float = 0.01,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """Synthetic FTIR-shaped spectra as x: (n, 571) or (n, 1, 571) float; y: (n,) class or (n, 1) g/mol.

    Args:
        seed: shuffles the split (the generated samples do not depend on it).
        task: "classification" (28 classes) or "regression" (average molecular weight, g/mol).
        layout: "dense" -> x (n, 571); "conv" -> x (n, 1, 571).
        n_train, n_val: split sizes; each at least 28, so every class appears in both.
        noise: standard deviation of the white noise added to each absorbance.
        dtype: floating dtype of x (and of y for regression).
    """
    if task not in TASKS:
        raise ValueError(f"spectra task must be one of {TASKS}; got {task!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"spectra layout must be one of {LAYOUTS}; got {layout!r}")
    if n_train < N_CLASSES or n_val < N_CLASSES:
        raise ValueError(
            f"spectra needs n_train and n_val of at least {N_CLASSES} (one sample per class in each); "
            f"got n_train={n_train}, n_val={n_val}"
        )
    if noise < 0:
        raise ValueError(f"spectra noise is a standard deviation and must be >= 0; got {noise}")
    from sklearn.model_selection import train_test_split

    x, labels, weight = _generate(n_train + n_val, noise)
    y = labels if task == "classification" else weight[:, None]
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=n_val, stratify=labels, random_state=seed
    )
    mean, std = x_train.mean(0), x_train.std(0)
    shape = (-1, N_FEATURES) if layout == "dense" else (-1, 1, N_FEATURES)
    to_x = lambda a: torch.as_tensor((a - mean) / std, dtype=dtype).reshape(shape)
    if task == "classification":
        to_y = lambda a: torch.as_tensor(a, dtype=torch.long)
        classes = tuple(f"class {i}" for i in range(N_CLASSES))
        return Split(to_x(x_train), to_y(y_train), to_x(x_val), to_y(y_val), classes, "classification")
    to_y = lambda a: torch.as_tensor(a, dtype=dtype)
    return Split(to_x(x_train), to_y(y_train), to_x(x_val), to_y(y_val), (), "regression")


def _generate(n: int, noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n samples of the model in the module docstring: spectra (n, 571), labels (n,), weights (n,) g/mol."""
    rng = np.random.default_rng(_FILE_SEED)
    t = np.linspace(-0.5, 0.5, N_FEATURES)  # normalised wavenumber axis
    components = np.zeros((N_COMPONENTS, N_FEATURES))
    for k in range(N_COMPONENTS):
        n_bands = rng.integers(6, 11)
        centre = rng.uniform(-0.48, 0.48, n_bands)
        width = rng.uniform(0.004, 0.03, n_bands)
        height = rng.uniform(0.2, 1.0, n_bands)
        components[k] = (height[:, None] * np.exp(-0.5 * ((t - centre[:, None]) / width[:, None]) ** 2)).sum(0)
    mw = np.geomspace(300.0, 8000.0, N_COMPONENTS)  # g/mol per component
    class_weights = rng.dirichlet(np.full(N_COMPONENTS, 3.0), N_CLASSES)  # (28, 8)

    labels = np.arange(n) % N_CLASSES
    c = class_weights[labels] * rng.lognormal(0.0, 0.2, (n, N_COMPONENTS))  # (n, 8) concentrations
    offset, slope, curve = rng.normal(0.0, [[0.1], [0.1], [0.05]], (3, n))
    scatter = rng.lognormal(0.0, 0.1, n)
    x = (
        offset[:, None] + slope[:, None] * t + curve[:, None] * t**2
        + scatter[:, None] * (c @ components)
        + rng.normal(0.0, 1.0, (n, N_FEATURES)) * noise
    )
    weight = (c @ mw) / c.sum(1)
    return x, labels, weight
