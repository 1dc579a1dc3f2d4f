"""Where training batches come from: in-memory tensors (the fast path), a Dataset, or any iterable of batches.

`batches(data, ...)` turns what the user passed to `fit` / `evaluate` into a source with two methods,
`epoch()` (one epoch's training batches) and `evaluation(batch_size)` (the batches to evaluate on),
each yielding tuples of tensors already on the model's device:

- a tuple of tensors or numpy arrays, e.g. (X, y), or a `TensorDataset`: checked once, moved to the
  device once, shuffled by index with the run's generator and cut into views (`TensorBatches`);
- a map-style `torch.utils.data.Dataset`: wrapped in a `DataLoader` whose batches are the ones
  the same data as tensors would give (`IndexBatches`: fit's batch_size, shuffle and generator);
- any other iterable of batches (a `DataLoader`, an `IterableDataset`, a generator function's list):
  the loader owns shuffling and batching; each batch is checked for its structure and moved to the
  device as it arrives (`LoaderBatches`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, TensorDataset

Prepare = Callable[[Any], tuple[Tensor, ...]]  # checks a tuple of tensors / arrays, returns them on the device


class TensorBatches:
    """Minibatches of in-memory tensors, all on the model's device.

    Each epoch draws a fresh order from `generator` (a CPU generator: the same order on every
    device). Data up to `gather_bytes` are put in order once per epoch (one gather) and cut into
    views; larger data are gathered batch by batch (no second copy of the data set). The batches
    are the same either way: sample order[i * batch_size + j] is row j of batch i.
    """

    def __init__(self, tensors: tuple[Tensor, ...], batch_size: int, shuffle: bool,
                 generator: torch.Generator | None, gather_bytes: int, replicas: Any = None):
        self.tensors, self.shuffle, self.generator, self.replicas = tensors, shuffle, generator, replicas
        self.gather = sum(t.nelement() * t.element_size() for t in tensors) <= gather_bytes
        self.samples = len(tensors[0])
        self.batch_size = global_batch_size(self.samples, batch_size, replicas)

    def epoch(self) -> Iterable[tuple[Tensor, ...]]:
        """One epoch's batches (under data parallel: this rank's part of each global batch)."""
        device = self.tensors[0].device
        if not self.shuffle:
            batches = zip(*(t.split(self.batch_size) for t in self.tensors))
        else:
            order = torch.randperm(self.samples, generator=self.generator).to(device)
            if self.gather:
                batches = zip(*(t[order].split(self.batch_size) for t in self.tensors))
            else:
                batches = (tuple(t[i] for t in self.tensors) for i in order.split(self.batch_size))
        if self.replicas is None:
            return batches
        return (tuple(my_part(t, self.replicas) for t in batch) for batch in batches)

    def evaluation(self, batch_size: int) -> Iterable[tuple[Tensor, ...]]:
        return zip(*(t.split(batch_size) for t in self.tensors))


class IndexBatches(Sampler):
    """The index lists of one epoch's batches, drawn and cut as TensorBatches does: a map-style
    Dataset given to `fit` gets the very batches its tensors would (and its rank's part of them)."""

    def __init__(self, samples: int, batch_size: int, shuffle: bool, generator: torch.Generator | None,
                 replicas: Any = None):
        self.samples, self.shuffle, self.generator, self.replicas = samples, shuffle, generator, replicas
        self.batch_size = global_batch_size(samples, batch_size, replicas)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.samples, generator=self.generator) if self.shuffle else torch.arange(self.samples)
        return (my_part(index, self.replicas).tolist() for index in order.split(self.batch_size))

    def __len__(self) -> int:
        return -(-self.samples // self.batch_size)


def global_batch_size(samples: int, batch_size: int, replicas: Any) -> int:
    """batch_size, or under data parallel batch_size x ranks (ValueError when the last global batch
    would leave a rank without a sample)."""
    if replicas is None:
        return batch_size
    size = batch_size * replicas.size
    last = samples % size
    if 0 < last < replicas.size:
        raise ValueError(
            f"with {replicas.size} ranks and batch_size={batch_size} per rank, the last global batch holds "
            f"{last} of the {samples} samples, fewer than one per rank; choose a batch_size for which "
            f"{samples} % (batch_size * {replicas.size}) is 0 or at least {replicas.size}"
        )
    return size


def my_part(batch: Tensor, replicas: Any) -> Tensor:
    """This rank's rows of a global batch: near-equal ranges, rank r the r-th (all of it in one process)."""
    return batch if replicas is None else batch.tensor_split(replicas.size)[replicas.rank]


class LoaderBatches:
    """Batches from an iterable the user gave (a DataLoader, an IterableDataset, a list of batches).

    The iterable owns shuffling and batching: it is iterated once per epoch, as it is. Each batch
    must be a tuple or list of `arity` tensors / arrays (e.g. (inputs, targets)); it is checked and
    moved to the device by `prepare` as it arrives.
    """

    def __init__(self, loader: Iterable, name: str, arity: int, what: str, prepare: Prepare):
        self.loader, self.name, self.arity, self.what, self.prepare = loader, name, arity, what, prepare
        self.samples = None

    def epoch(self) -> Iterator[tuple[Tensor, ...]]:
        return self._batches()

    def evaluation(self, batch_size: int) -> Iterator[tuple[Tensor, ...]]:
        return self._batches()

    def _batches(self) -> Iterator[tuple[Tensor, ...]]:
        for number, batch in enumerate(self.loader, start=1):
            if not isinstance(batch, (tuple, list)) or len(batch) != self.arity:
                got = (f"a {type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list))
                       else type(batch).__name__)
                raise TypeError(
                    f"{self.name}: batch {number} of the {type(self.loader).__name__} is {got}; it must be "
                    f"a tuple {self.what} of tensors. Make the dataset's __getitem__ (or the loader's "
                    f"collate_fn) return {self.what}"
                )
            yield self.prepare(tuple(batch))


def batches(data: Any, name: str, prepare: Prepare, *, arity: int = 2, what: str = "(inputs, targets)",
            batch_size: int = 1024, shuffle: bool = False, generator: torch.Generator | None = None,
            gather_bytes: int = 0, replicas: Any = None) -> TensorBatches | LoaderBatches:
    """The batch source for `data` (see the module docstring).

    Args:
        data: tensors / arrays as a tuple of `arity`, a TensorDataset, a Dataset, or an iterable of batches.
        name: what to call it in errors ("train", "val", "data").
        prepare: checks one tuple of `arity` tensors / arrays and returns it as tensors on the device
            (the caller's check: shapes, dtypes, label ranges); it raises ValueError / TypeError.
        arity, what: the number of tensors in a batch, and how to describe them in errors.
        batch_size, shuffle, generator: how tensors and map-style Datasets are batched.
        gather_bytes: tensors up to this size are gathered once per epoch (see TensorBatches).
        replicas: the data-parallel group (`loopnets.training.distributed`), for training data: tensors
            and map-style Datasets are split between the ranks; an iterable of batches is the caller's
            to shard (e.g. a DataLoader with a DistributedSampler).
    """
    if isinstance(data, TensorDataset):
        data = data.tensors
    listed = isinstance(data, (tuple, list))
    if listed and data and all(  # a list of batches, each a tuple of tensors
        isinstance(batch, (tuple, list)) and batch and all(isinstance(t, (Tensor, np.ndarray)) for t in batch)
        for batch in data
    ):
        return LoaderBatches(data, name, arity, what, prepare)
    if listed or isinstance(data, (Tensor, np.ndarray)) or not _iterable(data):
        return TensorBatches(prepare(data), batch_size, shuffle, generator, gather_bytes, replicas)
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        sampler = IndexBatches(len(data), batch_size, shuffle, generator, replicas)
        # the loader's own generator only seeds its workers: a private one, so that neither the run's
        # shuffling generator nor the global RNG (dropout) moves
        data = DataLoader(data, batch_sampler=sampler, generator=torch.Generator().manual_seed(0))
    return LoaderBatches(data, name, arity, what, prepare)


def _iterable(data: Any) -> bool:
    """A Dataset (map-style ones are iterable through __getitem__) or an object with __iter__."""
    return isinstance(data, Dataset) or (hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)))
