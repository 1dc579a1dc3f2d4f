"""The gated_autoencoder family in the runner: build Kemmerling's autoencoder, and its extra results.

`build_gated_model` turns `[model.gated]` and one expanded `GatedVariant` into a `GatedNetwork`
(`loopnets.gated.dense_autoencoder` / `conv_autoencoder`) for the data's input shape.
`extra_results` computes what summary.json keeps under `extra` for a gated run (see
docs/contract-runs.md): the validation loss per pass (the output of pass t, which is the output
of the network run for t timesteps), and the validation loss with evaluation-time Gaussian noise
on every pre-activation in every pass (eq 7, sec 4.4) for each `train.noise_sigmas`.
"""

from __future__ import annotations

import torch

from loopnets.data.split import Split
from loopnets.experiments.config import ConfigError, Experiment, GatedVariant
from loopnets.gated import GatedNetwork, conv_autoencoder, dense_autoencoder
from loopnets.probe import unrolled
from loopnets.train import evaluate


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


def extra_results(exp: Experiment, model: GatedNetwork, split: Split, loss: str, seed: int) -> dict:
    """{"pass_loss": [...], "noise": {"sigmas": [...], "loss": [...]} or None} on the validation split.

    pass_loss[t - 1] is the loss of pass t's output (t = 1..T; pass 1 has no feedback). The noise
    is drawn from a generator seeded with the run's seed, so the numbers are reproducible.
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
    return {"pass_loss": pass_loss, "noise": noise}
