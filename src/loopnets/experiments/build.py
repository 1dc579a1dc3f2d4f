"""What a run is built from: the experiment's data, each variant's network, and the checks before any run.

`validate(experiment)` checks everything that can be checked without training (the engine
settings on this machine, each variant's memory, the loss against the data, every variant's
network and optimizer) and returns the expanded variants; `loopnets check` and `loopnets run`
call it before any folder is written. A model family builds its own networks
(`loopnets.experiments.families.Family.build_model`); a family with its own data and training
validates itself (`Family.validate`).
"""

from __future__ import annotations

import functools
import json

import torch

from loopnets.core.passes import pass_plan
from loopnets.data import dataset_options, load_dataset
from loopnets.data.split import Split
from loopnets.experiments.budget import check_memory
from loopnets.experiments.config import TASK_LOSSES, ConfigError, Experiment, expand_variants, family_of, scheduler_spec
from loopnets.experiments.user_data import placeholder_split
from loopnets.training.callbacks import logger
from loopnets.training.device import check_precision, resolve_device
from loopnets.training.losses import get_loss
from loopnets.training.optim import make_optimizer


@functools.lru_cache(maxsize=4)
def _load_split(name: str, split_seed: int, options: str) -> Split:
    seeded = "seed" in dataset_options(name)  # a fixed split (cifar10: the files' order) takes no seed
    return load_dataset(name, **({"seed": split_seed} if seeded else {}), **json.loads(options))


def load_split(exp: Experiment) -> Split:
    """The experiment's data (cached per process: every run of a sweep uses the same split), as its
    family trains on it (e.g. an autoencoder's X -> X)."""
    try:
        split = _load_split(exp.data.name, exp.data.split_seed, json.dumps(exp.data.options, sort_keys=True))
    except (ValueError, TypeError, FileNotFoundError) as err:  # FileNotFoundError: user files (cifar10) missing
        raise ConfigError(f"config key data: {err}") from None
    return family_of(exp).load_split(exp, split)


def loss_name(exp: Experiment, split: Split) -> str:
    return TASK_LOSSES[split.task] if exp.train.loss == "auto" else exp.train.loss


def build_model(exp: Experiment, variant, split: Split) -> torch.nn.Module:
    """The variant's network for this data (its family builds it); errors name the config key at fault."""
    return family_of(exp).build_model(exp, variant, split)


def validate(exp: Experiment) -> list:
    """Check everything that can be checked without training; return the expanded variants.

    A data set read from the user's files (cifar10) is not loaded: the models are built for its
    known shape (`user_data.placeholder_split`), so a config validates before the data is there.
    """
    check_engine(exp)  # an unavailable device or a missing logger package: refused before anything is built
    check_memory(exp, load_split, build_model)  # an absurd unroll or width: refused with its estimate, nothing built
    family = family_of(exp)
    variants = family.validate(exp)  # a family with its own data and models checks them without generating data
    if variants is not None:
        return variants
    variants = expand_variants(exp)
    split = placeholder_split(exp) or load_split(exp)
    loss = loss_name(exp, split)
    try:
        get_loss(loss)
    except ValueError as err:
        raise ConfigError(f"config key train.loss: {err}") from None
    if split.task == "autoencoding":
        if loss in ("cross_entropy", "kl_divergence"):
            raise ConfigError(f"config key train.loss = {loss!r} does not fit autoencoding (X -> X with a sigmoid "
                              f"output); use \"auto\" (mse) or binary_cross_entropy")
    elif (loss in ("cross_entropy", "binary_cross_entropy")) != (split.task == "classification"):
        raise ConfigError(f"config key train.loss = {loss!r} does not fit the {split.task} data {exp.data.name!r}; use \"auto\"")
    for variant in variants:
        net = build_model(exp, variant, split)
        settings = family.fit_settings(variant)
        try:
            if settings:
                pass_plan(net, **settings, seed=0)
        except ValueError as err:
            raise ConfigError(f"variant {variant.name!r}: {err} (config keys pass_weights / random_passes)") from None
        try:
            make_optimizer((exp.train.optimizer, optimizer_args(exp)), net.parameters())
        except (ValueError, TypeError) as err:
            raise ConfigError(f"config keys train.optimizer / train.optimizer_args: {err}") from None
    return variants


def check_engine(exp: Experiment) -> None:
    """What `[train] device / precision / loggers` need of this machine: the device available,
    precision on CUDA, the tensorboard package. ConfigErrors naming the key; run before any run
    folder is written."""
    try:
        device = resolve_device(exp.train.device or "cpu", torch.nn.Module())
        check_precision(exp.train.precision, device)
    except ValueError as err:
        key = "train.precision" if "precision" in str(err).split(":")[0] else "train.device"
        raise ConfigError(f"config key {key}: {err} (loopnets run --device DEVICE sets train.device)") from None
    if "tensorboard" in exp.train.loggers:
        try:
            logger("tensorboard", ".")
        except ImportError as err:
            raise ConfigError(f"config key train.loggers = {exp.train.loggers!r}: {err}") from None


def engine_settings(exp: Experiment) -> dict:
    """fit's device / precision / scheduler / clip from `[train]` (None where unset: fit's defaults)."""
    clip = None if exp.train.clip is None else tuple(exp.train.clip)
    return {"device": exp.train.device, "precision": exp.train.precision,
            "scheduler": scheduler_spec(exp.train.scheduler), "clip": clip}


def uses_engine(exp: Experiment) -> bool:
    """Whether `[train]` sets anything only `fit` takes (fit_many trains neither on a device nor with these)."""
    return any(value is not None for value in engine_settings(exp).values()) or exp.train.loggers != ["csv"]


def optimizer_args(exp: Experiment) -> dict:
    # TOML has arrays, torch wants tuples (betas)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in exp.train.optimizer_args.items()}
