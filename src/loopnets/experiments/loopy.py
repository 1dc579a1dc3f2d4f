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

Also here, for every family: `placeholder_split`, the data a config is validated on when the data
set is read from the user's own files (CIFAR-10): its shape without loading anything, so
`loopnets check` works before the data is downloaded.

Keys: `model.loopy.*` and `[[variants]] model` belong to this family only; this family refuses
the other families' keys (model.layers / loop / ..., model.gated, variants' method / skip / ...,
train.noise_sigmas), naming the key.
"""

from __future__ import annotations

import inspect
import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch

from loopnets.models.loopy import network as loopy
from loopnets.data.registry import DATASETS, check_dataset_options, dataset_options
from loopnets.data.split import Split
from loopnets.core.loop import MERGES
from loopnets.core.probe import unrolled
from loopnets.training.fit import evaluate
from loopnets.viz import loopy as viz

if TYPE_CHECKING:  # config.py imports this module: no import of it at run time here
    from loopnets.experiments.config import Experiment

FAMILY = "loopy_cnn"
MODELS = ("vanilla", "loopy", "deep", "plus_layer", "times_layer", "mnist_loopy")
LOOPED = ("loopy", "plus_layer", "times_layer", "mnist_loopy")  # tied weights, a loop the feedback_off probe can cut
LOOPY_VARIANT_KEYS = ("model", "unroll")  # with name
LOOPY_ANALYSES = ("guided", "merge")
ANALYSIS_IMAGES = 6  # validation images shown by the analyses (the code's guided backprop used 20, Fig 9 shows 5)
GUIDED_FILTER = 0  # the paper's figures show the "first filter"
MNIST_SHAPE = (1, 28, 28)
# Data sets read from the user's files: the shape and classes they give, so configs validate without them.
USER_DATA_SHAPES = {"cifar10": ((3, 32, 32), 10)}


@dataclass(frozen=True)
class LoopyConfig:
    """`[model.loopy]`: Caswell's loopy CNNs (`loopnets.models.loopy.network`), family "loopy_cnn". Defaults = the authors' code.

    filters: conv 1 and conv 2 filters, one number or [conv 1, conv 2] (CIFAR-10: 64, 64). The top
        conv (and the loop conv of +layer / xlayer) has the image's channel count. Not used by
        "mnist_loopy", which is Fig 4's fixed 16, 8, 1 filters.
    merge: how the fed-back value enters the next pass for "loopy", "deep" and "mnist_loopy":
        "add" (the paper's) | "mul" | "sub" | "mean" | "replace". +layer is add, xlayer mul.
    batch_norm: BN after every conv (conv with bias -> BN -> ReLU), none on the FC.
    bn_per_unroll: every pass its own BN (gamma, beta, running statistics), the conv weights tied.
    init: "glorot" (Glorot-uniform with the ReLU gain, biases 0: Lasagne's GlorotUniform('relu'))
        or "pytorch" (PyTorch's default).
    """

    filters: Union[int, list] = 64
    merge: str = "add"
    batch_norm: bool = True
    bn_per_unroll: bool = True
    init: str = "glorot"


@dataclass(frozen=True)
class LoopyVariant:
    """One expanded variant of the loopy_cnn family: a model and its passes."""

    name: str
    model: str  # one of MODELS
    unroll: int  # passes k (1 for vanilla)

    has_skip = False

    @property
    def method(self) -> str:  # summary.json's method
        return self.model

    @property
    def tied(self) -> bool:
        return self.model != "deep"

    @property
    def has_loop(self) -> bool:
        """A loop that the feedback_off probe can cut: a tied model run for more than one pass."""
        return self.model in LOOPED and self.unroll > 1

    def described(self) -> dict:
        """What summary.json records about this variant (feedback "none" marks no loop, for the report)."""
        return {"method": self.model, "unroll": self.unroll, "skip": False, "family": FAMILY, "model": self.model,
                "tied": self.tied, "feedback": "loop" if self.has_loop else "none"}

    def table(self) -> dict:
        """This variant as one [[variants]] table that expands to exactly it."""
        return {"name": self.name, "model": self.model, "unroll": self.unroll}


# ----------------------------------------------------------------------------- config checks


def _config():
    from loopnets.experiments import config  # imported here: config.py imports this module

    return config


def check_family_keys(family: str, raw: dict) -> None:
    """Refuse this family's keys in the other families, and theirs in this one (raw tables: keys actually set)."""
    c = _config()
    model, train, variants = c.raw_sections(raw)
    tables = [(i, t) for i, t in enumerate(variants) if isinstance(t, dict)]
    if family != FAMILY:
        if "loopy" in model:
            raise c.ConfigError(f"config key model.loopy applies only to model.family = {FAMILY!r}; "
                                f"this experiment's family is {family!r}")
        for i, table in tables:
            if "model" in table:
                raise c.ConfigError(f"config key variants[{i}].model applies only to model.family = {FAMILY!r}; "
                                    f"this experiment's family is {family!r}")
        return
    owners = {**dict.fromkeys(c.LAVIK_MODEL_KEYS, "lavik"), "gated": "gated_autoencoder"}
    for key in model:
        if key in owners:
            hint = f"; set model.loopy.{key} instead" if key == "init" else ""
            raise c.ConfigError(f"config key model.{key} applies only to model.family = {owners[key]!r}; "
                                f"this experiment's family is {FAMILY!r}{hint}")
    if train.get("noise_sigmas") is not None:
        raise c.ConfigError("config key train.noise_sigmas applies only to model.family = 'gated_autoencoder'")
    valid = (*LOOPY_VARIANT_KEYS, "name")
    for i, table in tables:
        for key in table:
            if key not in valid:
                owner = "lavik" if key in c.LAVIK_VARIANT_KEYS else "gated_autoencoder" if key in c.GATED_VARIANT_KEYS else None
                where = f"applies only to model.family = {owner!r}" if owner else "is unknown"
                hint = "; set model.loopy.merge instead" if key == "merge" else ""
                raise c.ConfigError(f"config key variants[{i}].{key} {where}; variant keys for family "
                                    f"{FAMILY!r}: {', '.join(valid)}{hint}")
    if "variants" not in raw:
        raise c.ConfigError(f"model.family = {FAMILY!r} needs its own [[variants]] (the default variants are lavik "
                            f"methods), e.g. [[variants]] model = [\"vanilla\", \"loopy\", \"deep\"], unroll = 3")


def check_values(exp: Experiment) -> None:
    """Check [model.loopy], the loss and train.analyses of a loopy_cnn experiment (variants: `expand`)."""
    c = _config()
    g = exp.model.loopy
    filters = g.filters if isinstance(g.filters, list) else [g.filters]
    if len(filters) not in (1, 2) or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in filters):
        raise c.ConfigError(f"config key model.loopy.filters must be an integer >= 1 or a list [conv 1, conv 2] of "
                            f"them, e.g. 64 or [16, 8]; got {g.filters!r}")
    _choose("model.loopy.merge", g.merge, tuple(MERGES))
    _choose("model.loopy.init", g.init, loopy.INITS)
    if exp.train.loss not in ("auto", "cross_entropy"):
        raise c.ConfigError(f"config key train.loss = {exp.train.loss!r}: the loopy_cnn models return logits and "
                            f"train with cross-entropy; use \"auto\" or \"cross_entropy\"")
    analyses = exp.train.analyses
    if not isinstance(analyses, list) or any(a not in LOOPY_ANALYSES for a in analyses) or len(set(analyses)) != len(analyses):
        raise c.ConfigError(f"config key train.analyses for family {FAMILY!r} must be a list of distinct analyses "
                            f"from {', '.join(LOOPY_ANALYSES)} (e.g. [\"guided\", \"merge\"]); got {analyses!r}")


def _choose(key: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise _config().ConfigError(f"config key {key} = {value!r} is not one of {', '.join(map(str, valid))}")


def expand(exp: Experiment) -> list[LoopyVariant]:
    """Every variant, in config order; lists in model and unroll expand (product, model first).

    Vanilla has no loop: it always runs one pass and appears once however many unrolls are listed.
    Names: "vanilla", "<model>-x<unroll>" (loopy-x3), or the variant's `name`.
    """
    c = _config()
    out = []
    for i, v in enumerate(exp.variants):
        where = f"variants[{i}]."
        models = v.model if isinstance(v.model, list) else [v.model]
        unrolls = v.unroll if isinstance(v.unroll, list) else [v.unroll]
        if v.model is None or not models:
            raise c.ConfigError(f"config key {where}model is required for family {FAMILY!r}: one of "
                                f"{', '.join(MODELS)} or a list of them")
        for model in models:
            _choose(f"{where}model", model, MODELS)
        if not unrolls or not all(isinstance(u, int) and not isinstance(u, bool) and u >= 1 for u in unrolls):
            raise c.ConfigError(f"config key {where}unroll must be an integer >= 1 or a list of them; got {v.unroll!r}")
        combos = list(dict.fromkeys((m, 1 if m == "vanilla" else u) for m, u in itertools.product(models, unrolls)))
        if v.name is not None and len(combos) > 1:
            raise c.ConfigError(f"variants[{i}].name = {v.name!r} names one variant, but model / unroll lists expand to several")
        for model, unroll in combos:
            out.append(LoopyVariant(v.name or (model if model == "vanilla" else f"{model}-x{unroll}"), model, unroll))
    return out


def resolved(data: dict) -> dict:
    """`dataclasses.asdict(experiment)` of a loopy_cnn experiment with only this family's keys."""
    c = _config()
    for key in (*c.LAVIK_MODEL_KEYS, "gated"):
        del data["model"][key]
    keep = (*LOOPY_VARIANT_KEYS, "name")
    data["variants"] = [{k: v for k, v in table.items() if k in keep} for table in data["variants"]]
    return data


# ----------------------------------------------------------------------------- data without loading


def placeholder_split(exp: Experiment) -> Split | None:
    """For a data set read from the user's files (its loader takes `data_dir`) whose shape is known
    (USER_DATA_SHAPES): a 2 + 2 sample split of zeros of that shape, so a config validates (options
    checked, every model built) without the files. None for every other data set (load it)."""
    name, options = exp.data.name, exp.data.options
    if name not in USER_DATA_SHAPES or "data_dir" not in dataset_options(name):
        return None
    try:
        check_dataset_options(name, options)
    except ValueError as err:
        raise _config().ConfigError(f"config key data: {err}") from None
    shape, classes = USER_DATA_SHAPES[name]
    x, y = torch.zeros(2, *shape), torch.zeros(2, dtype=torch.long)
    return Split(x, y, x, y, tuple(str(i) for i in range(classes)), "classification")


def require_data_dir(exp: Experiment) -> None:
    """Before a run: a data set whose loader needs `data_dir` (no default) must be given one."""
    name = exp.data.name
    needed = dataset_options(name).get("data_dir", None) is inspect.Parameter.empty
    if needed and "data_dir" not in exp.data.options:
        loader = DATASETS[name]
        raise _config().ConfigError(
            f"data set {name!r} is read from your own copy of its files, and no folder was given: run with "
            f"--data-dir DIR (or set data.options.data_dir), e.g. loopnets run CONFIG --data-dir ~/cifar-10-batches-py "
            f"(where to get the files: the docstring of {loader.__module__}.{loader.__name__})"
        )


# ----------------------------------------------------------------------------- building


def build_loopy_model(exp: Experiment, variant: LoopyVariant, split: Split) -> loopy.LoopyCNN:
    """The variant's loopy CNN for `split`'s images (channels, S, S); errors name the config key at fault."""
    c = _config()
    g = exp.model.loopy
    shape = split.input_shape
    where = f"variant {variant.name!r} (model = {variant.model!r})"
    if len(shape) != 3 or shape[1] != shape[2]:
        raise c.ConfigError(f"{where} needs square images (channels, size, size); the data {exp.data.name!r} gives "
                            f"{shape}: use an image layout (data.options.layout = \"image\" where the loader has one)")
    if split.task != "classification":
        raise c.ConfigError(f"{where} classifies; the data {exp.data.name!r} is a {split.task} task")
    if variant.model == "mnist_loopy" and shape != MNIST_SHAPE:
        raise c.ConfigError(f"{where} is Caswell's MNIST model for 1 x 28 x 28 digits; the data {exp.data.name!r} "
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
        raise c.ConfigError(f"{where} cannot be built: {err} (check [model.loopy] and the variant's unroll)") from None


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
