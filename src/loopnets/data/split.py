"""Split: the tensors every data loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Split:
    """Training and validation tensors of one data set.

    x: (n, *input_shape) float; y: (n,) long class indices for classification, (n, outputs)
    float for regression.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: tuple[str, ...] = ()  # class names; empty for regression
    task: str = "classification"  # or "regression"

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
