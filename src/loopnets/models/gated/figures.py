"""Analyses of a trained feedback-gated network (Kemmerling, "Feedback-Gated Rectified Linear Units").

Each function runs a `loopnets.models.gated.network.GatedNetwork` over a data set in eval() mode without gradients,
returns its numbers (numpy arrays in a dict), and draws a PNG only when given a `path`:

  - `feedback_histograms`: mu_D and gain of one layer over the data, passes t >= 2 (Fig 5).
  - `noise_curves`: reconstruction MSE vs evaluation-time noise sigma, pass 1 and last pass (Figs 9, 12).
  - `bottleneck_tsne`: t-SNE of one layer's activations, one embedding per pass (Figs 18, 19).
  - `contrast_sweep`: MSE against the original images of reconstructions of reduced-contrast
    inputs, first vs last pass (App 7.5, Figs 20, 21).
  - `image_strip`: inputs above every pass's reconstructions, as one grid image (Figs 8, 21).

Reconstruction losses are the mean squared error over every element (samples x pixels) against
the clean, original input, so they fit autoencoders (output shape = input shape).
Figures use `matplotlib.figure.Figure` with the Agg canvas (no pyplot), as `loopnets.report.figures`.
The network's train / eval mode and noise setting are restored afterwards.
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from loopnets.models.gated.network import GatedNetwork, GatedPass

__all__ = ["feedback_histograms", "noise_curves", "bottleneck_tsne", "contrast_sweep", "image_strip"]

DPI = 120
BATCH_SIZE = 1024  # samples per forward call; bounds memory on a full test set
BINS = 50


# ----------------------------------------------------------------------------- analyses


def feedback_histograms(
    net: GatedNetwork,
    x: Tensor,
    layer: int,
    path: str | Path | None = None,
    *,
    timesteps: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict:
    """Feedback mu_D and gain 1 / (1 - beta(mu_D)) of one gated layer over a data set (Kemmerling Fig 5).

    Values come from every pass t >= 2 (pass 1 has no feedback). A dense layer gives one value per
    unit and sample, a conv layer one per filter and sample. A unit is "at maximum gain" when
    mu_D >= eta, the saturated branch of eq 4, where the gain is exactly 1 / (1 - beta_max).

    Args:
        net: a GatedNetwork in mode "gain" or "both" (the modes with a feedback-driven gain).
        x: inputs, (samples, *net.input_shape).
        layer: index of a layer that receives feedback (e.g. 0, E1, in `dense_autoencoder`).
        path: write a PNG with the two histograms there (optional).
        timesteps: passes to run (default: net.timesteps); must be >= 2.
        batch_size: samples per forward call.

    Returns:
        dict with "mu_d" and "gain" (passes t >= 2, samples, signals) float arrays, "passes" (the
        pass numbers 2..T), "max_gain", "eta", "mean_mu_d", "mean_gain" and "fraction_max_gain".

    Raises:
        ValueError: fewer than 2 passes, a layer without feedback, or mode "threshold" / "constant".
    """
    T = net.timesteps if timesteps is None else timesteps
    if not isinstance(T, numbers.Integral) or T < 2:
        raise ValueError(
            f"feedback_histograms needs at least 2 passes: pass 1 has no feedback (mu_D = 0, gain 1); "
            f"got timesteps={T!r}. Use a network with timesteps >= 2 or pass timesteps=2"
        )
    if net.mode not in ("gain", "both"):
        raise ValueError(
            f"feedback_histograms needs a feedback-driven gain, i.e. mode 'gain' or 'both'; the network has "
            f"mode {net.mode!r} (mode 'threshold' has gain 1, mode 'constant' has no feedback)"
        )
    targets = sorted({t for _, t in net.feedback_pairs})
    if layer not in targets:
        raise ValueError(
            f"layer {layer!r} receives no feedback; the layers receiving feedback are {targets or 'none'} "
            f"(feedback pairs (source, target): {net.feedback_pairs})"
        )
    mu_d, gain = _per_pass(net, _as_input(net, x), batch_size, T, _feedback_of(layer))
    mu_d, gain = np.stack(mu_d[1:]), np.stack(gain[1:])  # (T - 1, samples, signals)
    result = {
        "mu_d": mu_d,
        "gain": gain,
        "passes": list(range(2, T + 1)),
        "max_gain": net.max_gain,
        "eta": net.eta,
        "mean_mu_d": float(mu_d.mean()),
        "mean_gain": float(gain.mean()),
        "fraction_max_gain": float((mu_d >= net.eta).mean()),
    }
    if path is not None:
        _save(_histogram_figure(result, layer), path)
    return result


def noise_curves(
    net: GatedNetwork,
    x: Tensor,
    sigmas: Sequence[float],
    seed: int = 0,
    path: str | Path | None = None,
    *,
    timesteps: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict:
    """Reconstruction MSE under evaluation-time Gaussian noise, per sigma (Kemmerling eq 7, Figs 9, 12).

    N(0, sigma^2) goes into every pre-activation in every pass (`GatedNetwork.noisy`). Every sigma
    uses the same seed (common random numbers), so the curve's steps come from sigma, not from a new
    draw; sigma = 0 gives exactly the clean loss. The global torch RNG is left as it was.

    Args:
        net: an autoencoder (output shape = input shape).
        x: inputs, (samples, *net.input_shape); the targets are the clean x.
        sigmas: noise standard deviations >= 0.
        seed: seed of the noise draws.
        path: write a PNG of loss vs sigma (pass 1 and last pass) there (optional).
        timesteps: passes to run (default: net.timesteps).
        batch_size: samples per forward call.

    Returns:
        dict with "sigmas" (k,), "first" and "last" (k,) MSE of pass 1 and pass T, "per_pass" (k, T).
    """
    x = _as_input(net, x)
    _check_autoencoder(net)
    T = net.timesteps if timesteps is None else timesteps
    sigmas = np.asarray([float(s) for s in sigmas])
    per_pass = []
    for sigma in sigmas:
        with net.noisy(float(sigma)), _fork_rng(x), torch.no_grad():
            torch.manual_seed(seed)
            per_pass.append(_mse_per_pass(net, x, x, batch_size, T))
    per_pass = np.array(per_pass).reshape(len(sigmas), -1)  # (k, T)
    result = {"sigmas": sigmas, "first": per_pass[:, 0], "last": per_pass[:, -1], "per_pass": per_pass}
    if path is not None:
        _save(_lines_figure(sigmas, result, "noise sigma (every pre-activation, every pass)",
                            "reconstruction loss under evaluation-time noise (eq 7)"), path)
    return result


def bottleneck_tsne(
    net: GatedNetwork,
    x: Tensor,
    y,
    layer: int,
    path: str | Path | None = None,
    seed: int = 0,
    perplexity: float = 30,
    *,
    timesteps: int | None = None,
    max_iter: int = 1000,
    batch_size: int = BATCH_SIZE,
) -> dict:
    """t-SNE of one layer's activations, one embedding per pass, colored by label (Kemmerling Figs 18, 19).

    Each pass gets its own sklearn TSNE fit (2-d, PCA init, learning_rate "auto", random_state seed),
    so the embeddings' axes are not comparable across passes, only their cluster structure. Cost:
    O(samples log samples) per pass with Barnes-Hut; a few seconds per thousand samples.

    Args:
        net: a GatedNetwork.
        x: inputs, (samples, *net.input_shape).
        y: labels, (samples,), used for coloring only.
        layer: the layer whose output is embedded (flattened), e.g. 1 (E2, the bottleneck).
        path: write a PNG with one scatter plot per pass there (optional).
        seed: TSNE random_state.
        perplexity: TSNE perplexity; must be below the number of samples.
        timesteps: passes to run (default: net.timesteps).
        max_iter: TSNE iterations (>= 250).
        batch_size: samples per forward call.

    Returns:
        dict with "embeddings" (a list of T (samples, 2) arrays, pass 1 first), "labels" (samples,),
        "layer" and "passes" (1..T).
    """
    from sklearn.manifold import TSNE  # sklearn is needed here only; import on use

    x = _as_input(net, x)
    _check_layer(net, layer)
    labels = np.asarray(y).reshape(-1)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"bottleneck_tsne: got {x.shape[0]} inputs but {labels.shape[0]} labels")
    if not 0 < perplexity < x.shape[0]:
        raise ValueError(
            f"perplexity must be > 0 and below the number of samples ({x.shape[0]}); got {perplexity!r}. "
            f"Use e.g. perplexity={max(1, min(30, (x.shape[0] - 1) // 3))} or more samples"
        )
    T = net.timesteps if timesteps is None else timesteps
    codes = _per_pass(net, x, batch_size, T, lambda p, _: (p.activations[layer].flatten(1),))[0]
    embeddings = []
    for code in codes:
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                    max_iter=max_iter, random_state=seed)
        embeddings.append(tsne.fit_transform(code.astype(np.float64)))
    result = {"embeddings": embeddings, "labels": labels, "layer": layer, "passes": list(range(1, T + 1))}
    if path is not None:
        _save(_tsne_figure(result), path)
    return result


def contrast_sweep(
    net: GatedNetwork,
    x: Tensor,
    factors: Sequence[float],
    path: str | Path | None = None,
    *,
    around: str = "mean",
    timesteps: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict:
    """Reconstructions of reduced-contrast inputs, first vs last pass, against the ORIGINAL images.

    Contrast factor c in [0, 1] per image: x' = c (x - m) + m, with m the image's mean pixel value
    (around="mean", the default), or x' = c x (around="zero", the paper's own operation, App 7.5:
    "each pixel of the image is multiplied by some contrast factor", so c = 0 is a black image).
    The question (App 7.5): does the last pass reconstruct something closer to the regular-contrast
    image than pass 1? c = 1 gives exactly the clean first / last pass MSE.

    Args:
        net: an autoencoder (output shape = input shape).
        x: original inputs, (samples, *net.input_shape).
        factors: contrast factors in [0, 1] (the paper: 0.0, 0.1, ..., 1.0).
        path: write a PNG of MSE vs factor, first and last pass, there (optional).
        around: "mean" or "zero", see above.
        timesteps: passes to run (default: net.timesteps).
        batch_size: samples per forward call.

    Returns:
        dict with "factors" (k,), "first" and "last" (k,) MSE against the originals, "per_pass"
        (k, T), and "mean_pixel_gap" (k,): |mean pixel value of the last pass's reconstructions - that
        of pass 1's| over the whole set (the quantity of Fig 20).
    """
    x = _as_input(net, x)
    _check_autoencoder(net)
    if around not in ("mean", "zero"):
        raise ValueError(f"around must be 'mean' (x' = c (x - m) + m per image) or 'zero' (x' = c x); got {around!r}")
    factors = np.asarray([float(f) for f in factors])
    bad = [f for f in factors if not 0.0 <= f <= 1.0]
    if bad:
        raise ValueError(f"contrast factors must lie in [0, 1] (1 = unchanged); got {bad}")
    T = net.timesteps if timesteps is None else timesteps
    centre = x.flatten(1).mean(1).reshape(-1, *[1] * (x.dim() - 1)) if around == "mean" else torch.zeros_like(x)
    per_pass, gaps = [], []
    for c in factors:
        reduced = c * (x - centre) + centre
        per_pass.append(_mse_per_pass(net, reduced, x, batch_size, T))
        means = _per_pass(net, reduced, batch_size, T, lambda p, _: (p.output.flatten(1).mean(1),))[0]
        gaps.append(abs(float(means[-1].mean()) - float(means[0].mean())))
    per_pass = np.array(per_pass).reshape(len(factors), -1)
    result = {"factors": factors, "first": per_pass[:, 0], "last": per_pass[:, -1], "per_pass": per_pass,
              "mean_pixel_gap": np.array(gaps)}
    if path is not None:
        _save(_lines_figure(factors, result, f"contrast factor (around {around})",
                            "reconstruction loss of reduced-contrast inputs vs the originals"), path)
    return result


def image_strip(
    net: GatedNetwork,
    x: Tensor,
    n: int = 8,
    shape: Sequence[int] = (28, 28),
    path: str | Path | None = None,
    *,
    timesteps: int | None = None,
) -> np.ndarray:
    """A grid image: row 0 the first n inputs, row t their pass-t reconstructions (Kemmerling Figs 8, 21).

    Args:
        net: an autoencoder (output shape = input shape).
        x: inputs, (samples >= n, *net.input_shape).
        n: images per row.
        shape: one image's shape, (height, width) for grey or (channels, height, width) with 1 or 3
            channels; its size must equal one input's.
        path: write the grid as a PNG there (optional).
        timesteps: passes to run (default: net.timesteps).

    Returns:
        (T + 1) * height x n * width array (grey), or (..., ..., 3) for 3 channels; values as the
        network produced them (not clipped).
    """
    x = _as_input(net, x)
    _check_autoencoder(net)
    shape = tuple(int(s) for s in shape)
    if not isinstance(n, numbers.Integral) or not 1 <= n <= x.shape[0]:
        raise ValueError(f"n must be an integer in 1..{x.shape[0]} (the number of inputs); got {n!r}")
    size = math.prod(x.shape[1:])
    if math.prod(shape) != size or len(shape) not in (2, 3) or (len(shape) == 3 and shape[0] not in (1, 3)):
        raise ValueError(
            f"shape must be (height, width) or (channels 1 or 3, height, width) with {size} values, one "
            f"input's size; got {shape}"
        )
    T = net.timesteps if timesteps is None else timesteps
    outputs = _per_pass(net, x[:n], n, T, lambda p, _: (p.output,))[0]
    rows = [x[:n].detach().cpu().numpy(), *outputs]
    grid = np.concatenate([np.concatenate(_image(row, shape), axis=1) for row in rows], axis=0)
    if path is not None:
        _save(_strip_figure(grid, T, shape), path)
    return grid


# ----------------------------------------------------------------------------- running


@contextmanager
def _evaluating(net: GatedNetwork) -> Iterator[None]:
    """eval() mode (noise on, dropout off) and no gradients within the block; the mode is restored."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        net.train(was_training)


@contextmanager
def _fork_rng(x: Tensor) -> Iterator[None]:
    """Leave the global torch RNG (CPU, and x's GPU) as it was after the block."""
    devices = [x.device] if x.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        yield


def _per_pass(
    net: GatedNetwork, x: Tensor, batch_size: int, timesteps: int,
    pick: Callable[[GatedPass, slice], tuple[Tensor, ...]],
) -> list[list[np.ndarray]]:
    """Run all passes batch by batch; pick(pass, batch slice) -> tensors; [item][pass] arrays over x."""
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    chunks: list[list[list[Tensor]]] | None = None  # [item][pass][batch]
    with _evaluating(net):
        for start in range(0, x.shape[0], batch_size):
            where = slice(start, start + batch_size)
            records = net.records(x[where], timesteps=timesteps)
            picked = [pick(p, where) for p in records]  # [pass][item]
            if chunks is None:
                chunks = [[[] for _ in records] for _ in picked[0]]
            for t, items in enumerate(picked):
                for k, value in enumerate(items):
                    chunks[k][t].append(value.detach().cpu())
    if chunks is None:
        raise ValueError("got no samples: x has length 0")
    return [[torch.cat(batches).numpy() for batches in item] for item in chunks]


def _feedback_of(layer: int) -> Callable[[GatedPass, slice], tuple[Tensor, Tensor]]:
    """pick() for mu_D and gain of `layer`; empty in pass 1, which has no feedback."""
    def pick(p: GatedPass, _: slice) -> tuple[Tensor, Tensor]:
        if layer not in p.mu_d:
            return torch.empty(0), torch.empty(0)
        return p.mu_d[layer], p.gain[layer]
    return pick


def _mse_per_pass(net: GatedNetwork, inputs: Tensor, targets: Tensor, batch_size: int, timesteps: int) -> list[float]:
    """Mean squared error of each pass's output against targets, over all samples and elements."""
    sse = _per_pass(net, inputs, batch_size, timesteps,
                    lambda p, where: (((p.output - targets[where]) ** 2).flatten(1).sum(1, dtype=torch.float64),))[0]
    return [float(s.sum()) / targets.numel() for s in sse]


def _as_input(net: GatedNetwork, x) -> Tensor:
    """x as a tensor on the network's device and dtype (numpy arrays accepted)."""
    parameter = next(net.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.get_default_dtype()
    device = parameter.device if parameter is not None else None
    x = torch.as_tensor(x, dtype=dtype, device=device)
    if x.dim() != len(net.input_shape) + 1 or tuple(x.shape[1:]) != net.input_shape:
        expected = ", ".join(["samples", *map(str, net.input_shape)])
        raise ValueError(f"expected inputs of shape ({expected}); got {tuple(x.shape)}")
    return x


def _check_autoencoder(net: GatedNetwork) -> None:
    if net.output_shape != net.input_shape:
        raise ValueError(
            f"reconstruction analyses need an autoencoder (output shape = input shape); the network maps "
            f"{net.input_shape} to {net.output_shape}"
        )


def _check_layer(net: GatedNetwork, layer) -> None:
    if not isinstance(layer, numbers.Integral) or not 0 <= layer < len(net.layers):
        raise ValueError(f"layer must be an index in 0..{len(net.layers) - 1}; got {layer!r}")


def _image(batch: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Each sample of (n, ...) as an image: (height, width), or (height, width, 3) for 3 channels."""
    images = batch.reshape(batch.shape[0], *shape)
    if len(shape) == 3:
        images = images.transpose(0, 2, 3, 1)
        if shape[0] == 1:
            images = images[..., 0]
    return list(images)


# ----------------------------------------------------------------------------- figures


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)


def _histogram_figure(result: dict, layer: int) -> Figure:
    fig = _new_figure(6.0, 6.0)
    top, bottom = fig.subplots(2, 1)
    top.hist(result["mu_d"].ravel(), bins=BINS, color="tab:blue")
    top.axvline(result["eta"], color="black", linestyle="--", linewidth=1, label=f"eta = {result['eta']:g} (saturation)")
    top.set_xlabel("feedback mu_D")
    bottom.hist(result["gain"].ravel(), bins=BINS, color="tab:red")
    bottom.axvline(result["max_gain"], color="black", linestyle="--", linewidth=1,
                   label=f"max gain {result['max_gain']:g} ({100 * result['fraction_max_gain']:.1f} % of values)")
    bottom.set_xlabel("gain 1 / (1 - beta(mu_D))")
    for ax in (top, bottom):
        ax.set_ylabel("count")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    passes = result["passes"]
    which = f"pass {passes[0]}" if len(passes) == 1 else f"passes {passes[0]}-{passes[-1]}"
    fig.suptitle(f"layer {layer}: feedback and gain over the data set, {which}")
    return fig


def _lines_figure(x: np.ndarray, result: dict, xlabel: str, title: str) -> Figure:
    fig = _new_figure(6.0, 4.2)
    ax = fig.subplots()
    T = result["per_pass"].shape[1]
    ax.plot(x, result["first"], marker="o", color="tab:blue", linewidth=1.4, label="pass 1")
    if T > 1:
        ax.plot(x, result["last"], marker="o", color="tab:red", linewidth=1.4, label=f"pass {T} (last)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("MSE vs the clean input")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig


def _tsne_figure(result: dict) -> Figure:
    embeddings, labels = result["embeddings"], result["labels"]
    fig = _new_figure(4.5 * len(embeddings), 4.5)
    axes = fig.subplots(1, len(embeddings), squeeze=False)[0]
    classes = np.unique(labels)
    for ax, t, points in zip(axes, result["passes"], embeddings):
        for k, label in enumerate(classes):
            mask = labels == label
            ax.scatter(points[mask, 0], points[mask, 1], s=4, color=f"C{k % 10}", label=str(label))
        ax.set_title(f"pass {t}")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].legend(fontsize="small", markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"t-SNE of layer {result['layer']}'s activations, one fit per pass")
    return fig


def _strip_figure(grid: np.ndarray, timesteps: int, shape: tuple[int, ...]) -> Figure:
    height = shape[-2]
    rows = timesteps + 1
    fig = _new_figure(max(4.0, grid.shape[1] / grid.shape[0] * 0.9 * rows + 1.0), 0.9 * rows + 0.4)
    ax = fig.subplots()
    shown = np.clip(grid, 0.0, 1.0) if grid.ndim == 3 else grid  # RGB imshow needs [0, 1]
    ax.imshow(shown, cmap="gray", interpolation="nearest")
    ax.set_yticks([height * (r + 0.5) for r in range(rows)],
                  ["input", *[f"pass {t}" for t in range(1, rows)]])
    ax.set_xticks([])
    return fig
