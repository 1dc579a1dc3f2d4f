"""The loopy_cnn family in the runner: Caswell, Shen and Wang's loopy CNNs (`loopnets.models.loopy.network`) as experiments.

    [model]
    family = "loopy_cnn"
    [model.loopy]                      # LoopyConfig; defaults follow the authors' code
    filters = 64
    [[variants]]
    model = ["vanilla", "loopy", "deep"]   # lists expand (product with unroll): vanilla, loopy-x3, deep-x3
    unroll = 3

A variant is one `model` (MODELS) at one `unroll` (passes k; Vanilla always runs 1; unset, k is
the variants' shared default 2, so configs state the paper's k = 3 explicitly). The models
return logits and train with cross-entropy through `ln.fit` (the only loss this family accepts).
What a run adds to summary.json (docs/contract-runs.md): `parameter_counts` (conv, bn, fc,
conv+fc, total, ...: `loopnets.models.loopy.network.parameter_counts`) and `extra` with the accuracy on the
training split (Fig 8's "train acc"), an unroll sweep of the tied models (the trained model
evaluated with 1 .. 2k passes: the recurrence-vs-depth protocol's test-time extrapolation), and
the `train.analyses` "guided" (guided-backprop maps of filter 0 of every conv at every unroll,
Figs 10, 11) and "merge" (what conv 1 receives in every unroll, the merge node's "attention
maps", Fig 9), computed for the experiment's first seed on the first validation images and
written as PNGs into the run folder (the report does not gather them).

Schema and expansion: `loopnets.models.loopy.schema`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from loopnets.core.probe import unrolled
from loopnets.data.split import Split
from loopnets.experiments.config import Experiment
from loopnets.experiments.schema import ConfigError
from loopnets.models.loopy import figures as viz
from loopnets.models.loopy import network as loopy
from loopnets.models.loopy.schema import LoopyVariant
from loopnets.training.fit import evaluate

ANALYSIS_IMAGES = 6  # validation images shown by the analyses (the code's guided backprop used 20, Fig 9 shows 5)
GUIDED_FILTER = 0  # the paper's figures show the "first filter"
MNIST_SHAPE = (1, 28, 28)


def build_loopy_model(exp: Experiment, variant: LoopyVariant, split: Split) -> loopy.LoopyCNN:
    """The variant's loopy CNN for `split`'s images (channels, S, S); errors name the config key at fault."""
    g = exp.model.loopy
    shape = split.input_shape
    where = f"variant {variant.name!r} (model = {variant.model!r})"
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ConfigError(f"{where} needs square images (channels, size, size); the data {exp.data.name!r} gives "
                            f"{shape}: use an image layout (data.options.layout = \"image\" where the loader has one)")
    if split.task != "classification":
        raise ConfigError(f"{where} classifies; the data {exp.data.name!r} is a {split.task} task")
    if variant.model == "mnist_loopy" and shape != MNIST_SHAPE:
        raise ConfigError(f"{where} is Caswell's MNIST model for 1 x 28 x 28 digits; the data {exp.data.name!r} "
                            f"gives {shape}: use model = \"loopy\" with model.loopy.filters = [16, 8] for other images")
    common = dict(batch_norm=g.batch_norm, init=g.init)
    looped = dict(common, unroll=variant.unroll, bn_per_unroll=g.bn_per_unroll)
    size = dict(in_channels=shape[0], classes=split.outputs, image_size=shape[1],
                filters=g.filters if isinstance(g.filters, int) else tuple(g.filters))
    try:
        if variant.model == "vanilla":
            return loopy.vanilla(**size, **common)
        if variant.model == "loopy":
            return loopy.loopy(**size, **looped, merge=g.merge)
        if variant.model == "deep":
            return loopy.deep(**size, **common, unroll=variant.unroll, merge=g.merge)
        if variant.model == "plus_layer":
            return loopy.plus_layer(**size, **looped)
        if variant.model == "times_layer":
            return loopy.times_layer(**size, **looped)
        return loopy.mnist_loopy(**looped, merge=g.merge)
    except ValueError as err:
        raise ConfigError(f"{where} cannot be built: {err} (check [model.loopy] and the variant's unroll)") from None


def parameter_counts(model: loopy.LoopyCNN) -> dict[str, int]:
    """summary.json's parameter_counts: conv, bn, fc, conv+fc, total, bn_stats, total+bn_stats."""
    return loopy.parameter_counts({"model": model})["model"]


# ----------------------------------------------------------------------------- extra results


def extra_results(exp: Experiment, variant: LoopyVariant, model: loopy.LoopyCNN, split: Split, loss: str,
                  seed: int) -> tuple[dict, dict[str, bytes]]:
    """summary.json's `extra` for a loopy_cnn run, and the analyses' PNG files (name -> bytes).

    extra = {"train": {"loss", "accuracy"} on the training split after training (eval mode, as
    Fig 8's "train acc"), "unroll_sweep": {"unrolls": [1 .. 2k], "accuracy": [...], "loss": [...]}
    on the validation split for a tied looped model (null otherwise; passes beyond the trained k
    reuse the last pass's BN), and one entry per train.analyses (null except for the first seed)}.
    """
    extra: dict[str, Any] = {"train": evaluate(model, split.train, loss=loss), "unroll_sweep": None}
    if variant.has_loop:
        unrolls = list(range(1, 2 * variant.unroll + 1))
        results = []
        for k in unrolls:
            with unrolled(model, k):
                results.append(evaluate(model, split.val, loss=loss))
        extra["unroll_sweep"] = {"unrolls": unrolls, "accuracy": [r["accuracy"] for r in results],
                                 "loss": [r["loss"] for r in results]}
    files: dict[str, bytes] = {}
    first = seed == exp.train.seeds[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name in exp.train.analyses:
            extra[name] = ANALYSES[name](model, split, Path(tmp)) if first else None
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).glob("*.png"))}
    return extra, files


def _guided(model: loopy.LoopyCNN, split: Split, out: Path) -> dict:
    """guided_<layer>.png for every conv: the images, then filter 0's guided-backprop map at every unroll.

    Numbers per layer: the mean |map| per unroll and each unroll's correlation with unroll 0's map
    (over all pixels of the shown images; the paper says later unrolls respond "in a more refined
    and nonlinear fashion", Fig 11).
    """
    x = split.x_val[:ANALYSIS_IMAGES]
    layers = {}
    for layer in model.layer_names:
        runs = model.unroll - (1 if layer == loopy.LOOP_LAYER else 0)  # the loop conv runs after passes 1..k-1
        if runs < 1:
            continue
        maps = [viz.guided_backprop(model, x, layer, GUIDED_FILTER, unroll=u) for u in range(runs)]
        first = maps[0].flatten()
        layers[layer] = {
            "unrolls": len(maps),
            "mean_abs": [float(m.abs().mean()) for m in maps],
            "corr_with_unroll_0": [_corr(first, m.flatten()) for m in maps],
        }
        labels = ["image"] + [f"unroll {i}" for i in range(len(maps))]
        viz.image_grid([x, *maps], out / f"guided_{layer}.png", labels=labels)
    return {"images": len(x), "filter": GUIDED_FILTER, "layers": layers}


def _merge(model: loopy.LoopyCNN, split: Split, out: Path) -> dict | None:
    """merge.png: the images, then what conv 1 receives in unrolls 1, 2, ... (Fig 9); None without merges.

    Numbers: the mean |merge output - image| per merge (an additive merge stays close to the image,
    a multiplicative one looks like an attention mask, the paper says).
    """
    x = split.x_val[:ANALYSIS_IMAGES]
    inputs = viz.merge_images(model, x)
    if len(inputs) < 2:
        return None
    viz.image_grid(inputs, out / "merge.png", labels=["image"] + [f"before unroll {t}" for t in range(1, len(inputs))])
    return {"images": len(x), "mean_abs_change": [float((m - x).abs().mean()) for m in inputs[1:]]}


def _corr(a: torch.Tensor, b: torch.Tensor) -> float | None:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    norm = a.norm() * b.norm()
    return None if norm == 0 else max(-1.0, min(1.0, float((a @ b) / norm)))  # clamped: rounding gives 1 + 1e-14


ANALYSES = {"guided": _guided, "merge": _merge}

