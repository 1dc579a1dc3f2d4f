"""The sparse kernel of IterativeNetwork: CSR products on the fixed pattern of non-zero weights.

The pattern (trainable and fixed weights) never changes after construction, so its CSR index
structure, and that of its transpose, is built once (`Pattern`); each forward call puts the current
weight values on it once (`SparseWeights`) and every iteration reuses them. `CSRMatmul` is the
product A @ dense with a hand-written backward: d dense = A^T @ grad, and d values = (grad @ dense^T)
sampled at the pattern only (torch.sparse.sampled_addmm), so no dense weight-sized gradient is formed
here (autograd scatters the values' gradient into the weight's afterwards).

Private to loopnets.models.inn (IterativeNetwork(kernel="sparse") is the public way in).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class Pattern:
    """The CSR index structure of the non-zero weights in columns [c0, c1), and of its transpose."""

    def __init__(self, support: Tensor, mask: Tensor, fixed: Tensor | None, c0: int, c1: int):
        rows, cols = support.shape[0], c1 - c0
        r, c = support[:, c0:c1].nonzero().unbind(1)  # row-major order, as CSR wants
        self.shape = (rows, cols)
        self.crow, self.col = _crow(r, rows), c
        order = torch.argsort(c * rows + r)  # the same entries in the transpose's row-major order
        self.perm = order
        self.crow_t, self.col_t = _crow(c[order], cols), r[order]
        self.flat = r * support.shape[1] + c + c0  # positions in weight.flatten()
        self.trainable = mask[:, c0:c1][r, c]
        self.fixed_values = None if fixed is None else fixed[:, c0:c1][r, c]


class SparseWeights:
    """One forward call's CSR matrix (values on a pattern) and, built on first use, its transpose.

    Built once per forward call, so the T iterations share the matrices and backward builds the
    transpose once, not once per iteration.
    """

    def __init__(self, pattern: Pattern, values: Tensor):
        self.pattern, self.values = pattern, values  # values: (nnz,), differentiable
        v = values.detach()
        self.matrix = _csr(pattern.crow, pattern.col, v, pattern.shape)
        self._transposed: Tensor | None = None
        self._zeros: Tensor | None = None

    def transposed(self) -> Tensor:
        if self._transposed is None:
            p = self.pattern
            self._transposed = _csr(p.crow_t, p.col_t, self.values.detach()[p.perm], p.shape[::-1])
        return self._transposed

    def zeros(self) -> Tensor:
        """The pattern with zero values: the `input` that sampled_addmm samples at (beta=0)."""
        if self._zeros is None:
            p = self.pattern
            self._zeros = _csr(p.crow, p.col, torch.zeros_like(self.values.detach()), p.shape)
        return self._zeros


class CSRMatmul(torch.autograd.Function):
    """A @ dense for the CSR matrix A of `weights` (whose values are `values`); gradients for both.

    Backward: d dense = A^T @ grad (a CSR product with the transposed pattern); d values =
    (grad @ dense^T) sampled at the pattern only (torch.sparse.sampled_addmm), so no dense
    (rows x cols) gradient is ever formed here.
    """

    @staticmethod
    def forward(ctx, values: Tensor, weights: SparseWeights, dense: Tensor) -> Tensor:
        ctx.weights = weights
        ctx.save_for_backward(dense)
        return weights.matrix @ dense  # (rows, batch)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        (dense,) = ctx.saved_tensors
        w = ctx.weights
        grad_values = grad_dense = None
        if ctx.needs_input_grad[0]:
            sampled = torch.sparse.sampled_addmm(w.zeros(), grad.contiguous(), dense.t().contiguous(), beta=0.0)
            grad_values = sampled.values()
        if ctx.needs_input_grad[2]:
            grad_dense = w.transposed() @ grad
        return grad_values, None, grad_dense


def _crow(rows: Tensor, n: int) -> Tensor:
    crow = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
    return crow


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        # Emitted once per process by torch; the CSR operations used here are stable.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)
