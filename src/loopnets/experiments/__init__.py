"""Experiments: typed TOML configs, the resumable runner, and its run folders."""

from loopnets.experiments.config import ConfigError, Experiment, Variant, expand_variants, load_config
from loopnets.experiments.runner import RunsFailed, build_model, run_experiment, validate

__all__ = [
    "ConfigError",
    "Experiment",
    "Variant",
    "expand_variants",
    "load_config",
    "build_model",
    "run_experiment",
    "RunsFailed",
    "validate",
]
