"""Data sets by name: `DATASETS`, `load_dataset` with checked options, descriptions and default losses.

Configs name a data set and its options (`load_dataset("meats", task="classification")`); the
options are the loader's keyword arguments, checked against its signature before anything loads.
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch

from loopnets.data.bike import load_bike
from loopnets.data.cifar import caswell_mnist, load_cifar10, synthetic_cifar
from loopnets.data.digits import load_digits
from loopnets.data.hershey import hershey_classification
from loopnets.data.idx import load_fashion_mnist, load_mnist_files
from loopnets.data.iris import load_iris
from loopnets.data.meats import load_meats
from loopnets.data.mnist import load_mnist
from loopnets.data.spectra import load_spectra
from loopnets.data.split import Split

DATASETS: dict[str, Callable[..., Split]] = {
    "iris": load_iris,
    "meats": load_meats,
    "spectra": load_spectra,
    "mnist": load_mnist,
    "digits": load_digits,
    "bike": load_bike,
    "cifar10": load_cifar10,
    "synthetic_cifar": synthetic_cifar,
    "caswell_mnist": caswell_mnist,
    "hershey_mnist": hershey_classification,
    "fashion_mnist": load_fashion_mnist,
    "mnist_files": load_mnist_files,
}
# Import name -> name to pip-install, where the two differ.
_PIP_NAMES = {"sklearn": "scikit-learn"}
_DEFAULT_LOSSES = {"classification": "cross_entropy", "regression": "rmse"}


class MissingPackageError(RuntimeError):
    """A data set's loader needs a package that is not installed (or too old to provide it)."""

    def __init__(self, dataset: str, package: str, upgrade: bool = False):
        self.dataset, self.package = dataset, package
        if upgrade:
            message = f"data set {dataset!r} needs a newer {package}; install it with: pip install --upgrade {package}"
        else:
            message = (
                f"data set {dataset!r} needs the package {package}, which is not installed; "
                f"install it with: pip install {package}"
            )
        super().__init__(message)


def load_dataset(name: str, **options: Any) -> Split:
    """Load data set `name` with the loader's keyword `options` (e.g. seed=1, task="regression").

    `dtype` may also be given by name ("float64"), as a config file would.

    Raises:
        ValueError: unknown data set or option, naming the valid ones.
        MissingPackageError: the loader needs a package that is not installed; says what to pip install.
    """
    check_dataset_options(name, options)
    if isinstance(options.get("dtype"), str):
        options["dtype"] = _dtype(options["dtype"])
    try:
        return DATASETS[name](**options)
    except ImportError as error:
        if error.name is None:
            raise
        module = error.name.split(".")[0]
        package = _PIP_NAMES.get(module, module)
        raise MissingPackageError(name, package, upgrade=not isinstance(error, ModuleNotFoundError)) from error


def check_dataset_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise ValueError if `name` is not a data set or `options` holds a key its loader does not take."""
    valid = dataset_options(name)
    for key in options:
        if key not in valid:
            raise ValueError(
                f"data set {name!r} has no option {key!r}{_nearest(key, valid)}; "
                f"its options are: {', '.join(valid)}"
            )


def dataset_options(name: str) -> dict[str, Any]:
    """The options of data set `name` with their defaults, in the loader's order."""
    if name not in DATASETS:
        raise ValueError(
            f"unknown data set {name!r}{_nearest(name, DATASETS)}; the data sets are: {', '.join(DATASETS)}"
        )
    return {p.name: p.default for p in inspect.signature(DATASETS[name]).parameters.values()}


def describe_dataset(name: str, full: bool = False) -> str:
    """The first paragraph of the data set's module docstring (all of it with `full`), for reports."""
    dataset_options(name)  # checks the name
    doc = inspect.cleandoc(sys.modules[DATASETS[name].__module__].__doc__ or "")
    return doc if full else doc.split("\n\n")[0].replace("\n", " ")


def default_loss(split: Split) -> str:
    """The loss a model for this split trains on by default: "cross_entropy" or "rmse" (loopnets.training.losses names)."""
    if split.task not in _DEFAULT_LOSSES:
        raise ValueError(f"Split.task must be one of {tuple(_DEFAULT_LOSSES)}; got {split.task!r}")
    return _DEFAULT_LOSSES[split.task]


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must name a torch floating dtype such as 'float32' or 'float64'; got {name!r}")
    return dtype


def _nearest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
