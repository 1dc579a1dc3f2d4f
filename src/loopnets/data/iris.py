"""Iris (Fisher 1936) from scikit-learn: 150 flowers, 4 measurements, 3 species.

Split: 120 training / 30 validation samples, stratified (10 per species in validation) and
shuffled with `seed`; the thesis's accuracies are multiples of 1/30, so it too validated on 30.
Normalisation: each feature standardised with the training split's mean and standard deviation
(the thesis does not state its preprocessing).
"""

from __future__ import annotations

import torch

from loopnets.data.split import Split


def load_iris(seed: int = 0, n_val: int = 30, dtype: torch.dtype = torch.float32) -> Split:
    """Iris as (x: (n, 4) float, y: (n,) long class index), split and standardised as above."""
    from sklearn.datasets import load_iris as sklearn_iris
    from sklearn.model_selection import train_test_split

    data = sklearn_iris()
    x_train, x_val, y_train, y_val = train_test_split(
        data.data, data.target, test_size=n_val, stratify=data.target, random_state=seed
    )
    mean, std = x_train.mean(0), x_train.std(0)
    to_x = lambda a: torch.as_tensor((a - mean) / std, dtype=dtype)
    to_y = lambda a: torch.as_tensor(a, dtype=torch.long)
    return Split(to_x(x_train), to_y(y_train), to_x(x_val), to_y(y_val), tuple(data.target_names), "classification")
