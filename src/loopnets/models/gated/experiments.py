"""The gated_autoencoder family in the runner: build Kemmerling's autoencoder, and its extra results.

`build_gated_model` turns `[model.gated]` and one expanded `GatedVariant` into a `GatedNetwork`
(`loopnets.models.gated.network.dense_autoencoder` / `conv_autoencoder`) for the data's input shape.
`extra_results` computes what summary.json keeps under `extra` for a gated run (see
docs/contract-runs.md): the validation loss per pass (the output of pass t, which is the output
of the network run for t timesteps), the validation loss with evaluation-time Gaussian noise
on every pre-activation in every pass (eq 7, sec 4.4) for each `train.noise_sigmas`, and the
`train.analyses` of `loopnets.models.gated.figures` (numbers in `extra`, PNGs as extra run files).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch

from loopnets.data.split import Split
from loopnets.experiments.config import Experiment
from loopnets.experiments.schema import ConfigError
from loopnets.models.gated import figures as viz
from loopnets.models.gated.network import GatedNetwork, conv_autoencoder, dense_autoencoder
from loopnets.models.gated.schema import GatedVariant
from loopnets.core.probe import unrolled
from loopnets.training.fit import evaluate

CONTRAST_FACTORS = [round(0.1 * i, 1) for i in range(11)]  # App 7.5, Fig 20: 0.0, 0.1, ..., 1.0
STRIP_IMAGES = 10  # Figs 8 and 21 show the first 10 test digits
STRIP_NOISE_SIGMA = 2.0  # Fig 8
STRIP_CONTRAST = 0.5  # Fig 21
TSNE_LAYER = 1  # E2, the bottleneck (Figs 18, 19)


def build_gated_model(exp: Experiment, variant: GatedVariant, split: Split) -> GatedNetwork:
    """The variant's autoencoder for `split.input_shape`; errors name the config key at fault."""
    g = exp.model.gated
    shape = split.input_shape
    gate = dict(timesteps=variant.timesteps, beta_max=variant.beta_max, eta=variant.eta, mode=variant.mode,
                alpha=variant.alpha, constant_gain=variant.constant_gain)
    where = f"variant {variant.name!r} (model.gated.architecture = {g.architecture!r})"
    if g.architecture == "dense" and len(shape) != 1:
        raise ConfigError(f"{where} needs flat inputs; the data gives {shape}: set data.options.layout = \"dense\"")
    if g.architecture == "conv" and len(shape) != 3:
        raise ConfigError(f"{where} needs images (channels, height, width); the data gives {shape}: "
                          f"set data.options.layout = \"image\"")
    try:
        if g.architecture == "dense":
            return dense_autoencoder(variant.feedback, inputs=shape[0], hidden=g.hidden, bottleneck=g.bottleneck, **gate)
        return conv_autoencoder(variant.feedback, input_shape=shape, filters=g.filters, kernel=g.kernel,
                                stride=g.stride, **gate)
    except ValueError as err:
        raise ConfigError(f"{where} cannot be built: {err} (check [model.gated] and the variant's options)") from None


def extra_results(exp: Experiment, model: GatedNetwork, split: Split, loss: str,
                  seed: int) -> tuple[dict, dict[str, bytes]]:
    """summary.json's `extra` for a gated run, and the analyses' PNG files (name -> bytes).

    extra = {"pass_loss": [...], "noise": {"sigmas": [...], "loss": [...]} or None, and one entry per
    `train.analyses`}, all on the validation split. pass_loss[t - 1] is the loss of pass t's output
    (t = 1..T; pass 1 has no feedback). Noise is drawn after seeding torch with the run's seed, so
    the numbers are reproducible.
    """
    pass_loss = []
    for t in range(1, model.timesteps + 1):
        with unrolled(model, t):
            pass_loss.append(evaluate(model, split.val, loss=loss)["loss"])
    noise = None
    if exp.train.noise_sigmas is not None:
        losses = []
        for sigma in exp.train.noise_sigmas:
            torch.manual_seed(seed)  # GatedNetwork draws its noise with torch.randn_like
            with model.noisy(float(sigma)):
                losses.append(evaluate(model, split.val, loss=loss)["loss"])
        noise = {"sigmas": [float(s) for s in exp.train.noise_sigmas], "loss": losses}
    extra = {"pass_loss": pass_loss, "noise": noise}
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in exp.train.analyses:
            extra[name] = ANALYSES[name](exp, model, split, seed, Path(tmp))
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).glob("*.png"))}
    return extra, files


# --- train.analyses: each returns its numbers for summary.json (None when it does not apply) and
# --- writes its PNGs into `out`


def _histograms(exp: Experiment, model: GatedNetwork, split: Split, seed: int, out: Path) -> dict | None:
    """mu_D and gain of the lowest feedback-receiving layer (E1 for partial feedback) over the
    validation set, passes t >= 2 (Fig 5). None for no feedback, one timestep, or no learned gain."""
    if not model.feedback_pairs or model.timesteps < 2 or model.mode not in ("gain", "both"):
        return None
    layer = min(t for _, t in model.feedback_pairs)
    r = viz.feedback_histograms(model, split.x_val, layer, out / "histograms.png")
    counts, edges = torch.histogram(torch.as_tensor(r["gain"], dtype=torch.float64).flatten(), bins=20,
                                    range=(1.0, float(r["max_gain"])))
    return {"layer": layer, "max_gain": r["max_gain"], "eta": r["eta"], "mean_mu_d": r["mean_mu_d"],
            "mean_gain": r["mean_gain"], "fraction_max_gain": r["fraction_max_gain"],
            "gain_histogram": {"edges": edges.tolist(), "counts": [int(c) for c in counts]}}


def _contrast(exp: Experiment, model: GatedNetwork, split: Split, seed: int, out: Path) -> dict:
    """Reconstructions of inputs scaled by c (the paper's x' = c x, App 7.5) against the originals."""
    r = viz.contrast_sweep(model, split.x_val, CONTRAST_FACTORS, out / "contrast.png", around="zero")
    return {"factors": r["factors"].tolist(), "first": r["first"].tolist(), "last": r["last"].tolist(),
            "mean_pixel_gap": r["mean_pixel_gap"].tolist()}


def _tsne(exp: Experiment, model: GatedNetwork, split: Split, seed: int, out: Path) -> dict | None:
    """t-SNE of the bottleneck per pass (Figs 18, 19), for the experiment's first seed only."""
    if seed != exp.train.seeds[0] or split.val_labels is None:
        return None
    r = viz.bottleneck_tsne(model, split.x_val, split.val_labels, TSNE_LAYER, out / "tsne.png", seed=seed)
    return {"layer": TSNE_LAYER, "passes": r["passes"], "samples": int(len(r["labels"]))}


def _strips(exp: Experiment, model: GatedNetwork, split: Split, seed: int, out: Path) -> dict | None:
    """Inputs above every pass's reconstructions: clean (strip.png), with sigma = 2 noise in every
    pre-activation (strip_noise.png, Fig 8), and at contrast 0.5 (strip_contrast.png, Fig 21)."""
    shape = _image_shape(split.input_shape)
    if shape is None:
        return None
    x = split.x_val[:STRIP_IMAGES]
    viz.image_strip(model, x, len(x), shape, out / "strip.png")
    with torch.random.fork_rng(), model.noisy(STRIP_NOISE_SIGMA):
        torch.manual_seed(seed)
        viz.image_strip(model, x, len(x), shape, out / "strip_noise.png")
    viz.image_strip(model, STRIP_CONTRAST * x, len(x), shape, out / "strip_contrast.png")
    return {"images": len(x), "noise_sigma": STRIP_NOISE_SIGMA, "contrast": STRIP_CONTRAST}


def _image_shape(input_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if len(input_shape) == 3:
        return input_shape
    side = math.isqrt(input_shape[0]) if len(input_shape) == 1 else 0
    return (side, side) if side and side * side == input_shape[0] else None


ANALYSES = {"histograms": _histograms, "contrast": _contrast, "tsne": _tsne, "strips": _strips}
