"""Data sets read from the user's own files (CIFAR-10, Fashion-MNIST, the full MNIST): checked before they are there.

`placeholder_split` is the data a config is validated on when the data set is read from the user's
files: its shape without loading anything, so `loopnets check` works before the data is
downloaded. `require_data_dir` refuses a run of such a data set without its folder.
"""

from __future__ import annotations

import inspect

import torch

from loopnets.data.registry import DATASETS, check_dataset_options, dataset_options
from loopnets.data.split import Split
from loopnets.experiments.config import Experiment
from loopnets.experiments.schema import ConfigError

# Data sets read from the user's files: the shape (per layout, where the loader has one) and the number of
# classes they give, so configs validate without them.
USER_DATA_SHAPES = {
    "cifar10": ({None: (3, 32, 32)}, 10),
    "fashion_mnist": ({"dense": (784,), "image": (1, 28, 28)}, 10),
    "mnist_files": ({"dense": (784,), "image": (1, 28, 28)}, 10),
}


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
        raise ConfigError(f"config key data: {err}") from None
    shapes, classes = USER_DATA_SHAPES[name]
    layout = options.get("layout", dataset_options(name).get("layout", None))
    key = layout if layout in shapes else None
    if key not in shapes:
        raise ConfigError(f"config key data.options.layout: {name} has the layouts {', '.join(shapes)}; got {layout!r}")
    shape = shapes[key]
    x, y = torch.zeros(2, *shape), torch.zeros(2, dtype=torch.long)
    return Split(x, y, x, y, tuple(str(i) for i in range(classes)), "classification")


def require_data_dir(exp: Experiment) -> None:
    """Before a run: a data set whose loader needs `data_dir` (no default) must be given one."""
    name = exp.data.name
    needed = dataset_options(name).get("data_dir", None) is inspect.Parameter.empty
    if needed and "data_dir" not in exp.data.options:
        loader = DATASETS[name]
        raise ConfigError(
            f"data set {name!r} is read from your own copy of its files, and no folder was given: run with "
            f"--data-dir DIR (or set data.options.data_dir), e.g. loopnets run CONFIG --data-dir ~/cifar-10-batches-py "
            f"(where to get the files: the docstring of {loader.__module__}.{loader.__name__})"
        )

