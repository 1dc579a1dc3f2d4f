"""What a loopy CNN looks at (Caswell, Shen and Wang 2016, sec 6.4, Figs 9-11): numbers first, a PNG second.

- `guided_backprop`: the input-image gradient of one filter of one conv at one unroll, with
  guided backpropagation (Springenberg et al. 2015): at every ReLU only positive gradients pass,
  and only where the ReLU's input was positive (Figs 10, 11).
- `merge_images`: what the first conv receives in every unroll: the image itself in unroll 0,
  then the merge node's output merge(loop output, image), the paper's "attention maps" (Fig 9).
- `image_grid`: rows of images (e.g. the input, then one row per unroll) as one array, a PNG
  only when given a path.
- `guided_relus`: the context manager that makes every `nn.ReLU` of a model guided.

Addressing follows `loopnets.models.loopy.network.LoopyCNN`: a layer by name ("conv1", "conv2", "conv3", or
"loop" for the conv in the loop path) and an unroll by 0-based index (unroll 0 is the first pass;
the code's `conv_1_unroll=0`, the paper's "unroll 1"). Both functions run the model in eval()
mode (BN with running statistics, as the code's `deterministic=True`) and restore its mode.
Figures use `matplotlib.figure.Figure` with the Agg canvas (no pyplot).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from loopnets.models.loopy.network import LoopyCNN

__all__ = ["guided_relus", "guided_backprop", "merge_images", "image_grid"]

DPI = 120


class _GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward grad * (input > 0) * (grad > 0) (Springenberg et al. 2015).

    Not the derivative of anything (gradcheck does not apply): it is the guided-backprop rule.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every `nn.ReLU` in `model` backpropagates guided (positive gradients, positive inputs).

    A forward hook replaces each ReLU's output by `_GuidedReLU` of its input (same values, guided
    backward). Functional `F.relu` calls are not seen; in-place ReLUs are refused. Hooks are
    removed on exit, also after an error.
    """
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"guided backprop needs nn.ReLU modules; this {type(model).__name__} has none")
    if any(m.inplace for m in relus):
        raise ValueError("guided backprop cannot guide an in-place nn.ReLU (its input is overwritten); build it with inplace=False")
    with ExitStack() as stack:
        for m in relus:
            stack.callback(m.register_forward_hook(lambda _, args, __: _GuidedReLU.apply(args[0])).remove)
        yield model


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def _recording(modules: Sequence[nn.Module], inputs: bool) -> Iterator[list[Tensor]]:
    """Record the input (or output) of every call to `modules`, in call order (= unroll order)."""
    calls: list[Tensor] = []
    with ExitStack() as stack:
        for m in modules:
            if inputs:
                handle = m.register_forward_pre_hook(lambda _, args: calls.append(args[0]))
            else:
                handle = m.register_forward_hook(lambda _, __, out: calls.append(out))
            stack.callback(handle.remove)
        yield calls


def _check_model(model, x) -> Tensor:
    if not isinstance(model, LoopyCNN):
        raise TypeError(f"expected a loopnets.models.loopy.network model (LoopyCNN, e.g. loopy.loopy()); got {type(model).__name__}")
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a batch of images, a tensor (batch, channels, height, width); got {getattr(x, 'shape', x)!r}")
    return x


def guided_backprop(model: LoopyCNN, x: Tensor, layer: str, filter: int, unroll: int = 0) -> Tensor:
    """Guided-backprop image of filter `filter` of conv `layer` at unroll `unroll`: a tensor of x's shape.

    The objective, as the authors' code (`guided_backprop.py`): the sum over positions (and over
    the batch; each image's gradient is its own in eval mode) of that filter's conv output, before
    BN and ReLU. Its gradient flows back to the image with every ReLU guided; because the image
    enters every unroll through the merge nodes, the gradient of an unroll-t filter sums the paths
    through all earlier unrolls. The raw gradient is returned (normalise for display; `image_grid`
    stretches each image to its own min..max, as the code's `visualize_image`).

    Args:
        model: a `loopnets.models.loopy.network` model.
        x: images (batch, C, H, W).
        layer: a name in `model.layer_names`.
        filter: output channel of that conv, 0-based.
        unroll: 0-based pass; 0 .. model.unroll - 1 (the loop conv: 0 .. model.unroll - 2).
    """
    x = _check_model(model, x)
    convs = model.layer_modules(layer)
    channels = convs[0].out_channels
    if isinstance(filter, bool) or not isinstance(filter, int) or not 0 <= filter < channels:
        raise ValueError(f"filter must be an integer in 0..{channels - 1} ({layer} has {channels} filters); got {filter!r}")
    x = x.detach().clone().requires_grad_(True)
    with _evaluating(model), guided_relus(model), _recording(convs, inputs=False) as outputs, torch.enable_grad():
        model(x)
    if isinstance(unroll, bool) or not isinstance(unroll, int) or not 0 <= unroll < len(outputs):
        raise ValueError(
            f"unroll must be an integer in 0..{len(outputs) - 1}: {layer} runs {len(outputs)} times in this "
            f"{model.family} model (unroll 0 is the first pass); got {unroll!r}"
        )
    (grad,) = torch.autograd.grad(outputs[unroll][:, filter].sum(), x)
    return grad


def merge_images(model: LoopyCNN, x: Tensor) -> list[Tensor]:
    """What conv 1 receives in every unroll: [x, merge(loop output after unroll 0, x), ...], each of x's shape.

    Entry 0 is the image itself (unroll 0 has no merge node; the code adds nothing there); entry
    t >= 1 is the merge node's output before unroll t, the paper's attention map (Fig 9: for a
    multiplicative merge it looks like an attention mask, for an additive one it stays close to
    the image). Vanilla gives [x]. Computed without gradients in eval mode.
    """
    x = _check_model(model, x)
    with _evaluating(model), _recording(model.layer_modules("conv1"), inputs=True) as inputs, torch.no_grad():
        model(x)
    return [v.detach() for v in inputs]


def image_grid(images: Tensor | Sequence[Tensor], path: str | Path | None = None, *,
               labels: Sequence[str] | None = None) -> np.ndarray:
    """Rows of images as one array, each image stretched to its own min..max in [0, 1]; a PNG when given `path`.

    Args:
        images: one batch (n, C, H, W) (one row) or a sequence of batches of equal shape (one row
            each; e.g. `merge_images(...)` or one `guided_backprop` map per unroll). C is 1 or 3.
        path: write the grid as a PNG there (optional; folders are created).
        labels: one label per row, written beside the rows in the PNG.

    Returns:
        (rows * H, n * W) array for C = 1, (rows * H, n * W, 3) for C = 3, values in [0, 1].
    """
    rows = [images] if isinstance(images, Tensor) else list(images)
    if not rows or any(not isinstance(r, Tensor) or r.dim() != 4 or r.shape != rows[0].shape for r in rows):
        shapes = [tuple(r.shape) if isinstance(r, Tensor) else type(r).__name__ for r in rows]
        raise ValueError(f"images must be one tensor (n, C, H, W) or a non-empty list of them, all the same shape; got {shapes}")
    n, c, h, w = rows[0].shape
    if c not in (1, 3):
        raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels; got {c}")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"labels must give one label per row ({len(rows)}); got {len(labels)}")
    batch = torch.stack([r.detach().to("cpu", torch.float64) for r in rows])  # (rows, n, C, H, W)
    low = batch.amin(dim=(2, 3, 4), keepdim=True)
    span = batch.amax(dim=(2, 3, 4), keepdim=True) - low
    batch = ((batch - low) / torch.where(span > 0, span, 1.0)).numpy()  # a flat image becomes 0
    grid = batch.transpose(0, 3, 1, 4, 2).reshape(len(rows) * h, n * w, c)  # rows x H, n x W, C
    grid = grid[..., 0] if c == 1 else grid
    if path is not None:
        _save_grid(grid, path, labels, h)
    return grid


def _save_grid(grid: np.ndarray, path: str | Path, labels: Sequence[str] | None, height: int) -> None:
    scale = 0.04  # inches per pixel
    fig = Figure(figsize=(max(grid.shape[1] * scale, 2.0) + (1.5 if labels else 0.0), max(grid.shape[0] * scale, 1.0)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    if labels:
        ax.set_yticks([height * (i + 0.5) for i in range(len(labels))], labels)
    else:
        ax.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
