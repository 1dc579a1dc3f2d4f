"""Experiments: typed TOML configs, the resumable runner, its run folders, and the model families' registry."""

from loopnets.experiments import families
from loopnets.experiments.config import ConfigError, Experiment, expand_variants, load_config
from loopnets.experiments.families import Family, register
from loopnets.experiments.runner import RunsFailed, build_model, run_experiment, validate

__all__ = [
    "ConfigError",
    "Experiment",
    "Family",
    "expand_variants",
    "families",
    "load_config",
    "build_model",
    "register",
    "run_experiment",
    "RunsFailed",
    "validate",
]
