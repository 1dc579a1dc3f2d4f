"""Split: the tensors every data loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Split:
    """Training and validation tensors of one data set.

    x: (n, *input_shape) float; y: (n,) long class indices for classification, (n, outputs)
    float for regression, y = x for autoencoding (`autoencoding(split)`).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: tuple[str, ...] = ()  # class names; empty for regression
    task: str = "classification"  # or "regression", "autoencoding"
    val_labels: torch.Tensor | None = None  # autoencoding: the original class labels of x_val (t-SNE colors)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def outputs(self) -> int:
        """Output units a model needs: the number of classes, or of regression targets."""
        if self.task == "classification":
            return len(self.classes)
        return 1 if self.y_train.dim() == 1 else int(self.y_train.shape[1])

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_train, self.y_train

    @property
    def val(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_val, self.y_val


def autoencoding(split: Split) -> Split:
    """The same inputs as targets (X -> X), task "autoencoding"; the class labels of the validation
    inputs are kept in `val_labels` (for analyses such as a t-SNE colored by class), not as targets."""
    labels = split.y_val if split.task == "classification" else None
    return Split(split.x_train, split.x_train, split.x_val, split.x_val, (), "autoencoding", labels)


IMAGE_LAYOUTS = ("dense", "image")


def image_classification_split(
    name: str,
    x,  # (n, pixels) numpy array, already scaled
    y,  # (n,) integer labels
    classes: tuple[str, ...],
    image_shape: tuple[int, ...],
    *,
    seed: int,
    layout: str,
    val_fraction: float,
    dtype: torch.dtype,
) -> Split:
    """A stratified, seeded split of an image data set, as flat vectors ("dense") or (n, *image_shape)."""
    if layout not in IMAGE_LAYOUTS:
        raise ValueError(f"{name} layout must be one of {IMAGE_LAYOUTS}; got {layout!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"{name} val_fraction must lie strictly between 0 and 1; got {val_fraction}")
    from sklearn.model_selection import train_test_split

    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=val_fraction, stratify=y, random_state=seed)
    shape = (-1, x.shape[1]) if layout == "dense" else (-1, *image_shape)
    to_x = lambda a: torch.as_tensor(a, dtype=dtype).reshape(shape)
    to_y = lambda a: torch.as_tensor(a, dtype=torch.long)
    return Split(to_x(x_train), to_y(y_train), to_x(x_val), to_y(y_val), classes, "classification")


def first_n(size: int | None, available: int, name: str) -> int:
    """How many of `available` items a loader keeps when asked for the first `size` (None: all)."""
    if size is None:
        return available
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= available:
        raise ValueError(f"{name} must be an integer in 1..{available} (the images in the files) or None; got {size!r}")
    return size
