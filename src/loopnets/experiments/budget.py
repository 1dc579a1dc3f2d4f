"""The memory an experiment's training needs, estimated before anything is built.

`check_memory` runs first in `runner.validate`, so `loopnets check` and `loopnets run` refuse an
experiment with an absurd unroll or width with the number it would need, instead of starting to
build it (a COUPLE unroll of a billion copies would never finish; a layer of 10^9 units would
ask for gigabytes and be killed).

Estimate, per variant, for one training step on one batch:

    bytes = bytes per element x (4 x parameters + activations)

- parameters: weights, their gradients and the optimizer's two moments (Adam), hence 4x;
- activations: every module's output for one batch (`train.batch_size`, at most the training
  set), summed over all passes of the loops (autograd keeps them for the backward pass).

Parameters and activations come from building the variant's network on PyTorch's `meta` device
(shapes only, no memory) with 1 and with 2 passes, then extrapolating linearly to the variant's
pass count (unroll, timesteps or iterations): COUPLE's copies and each pass's activations grow
linearly with it, so a billion passes is estimated from two tiny builds. A family may estimate
without building (`Family.memory_estimates`: the iterative networks from their weight-space size). It is an estimate: temporaries of
the backward pass and the data set itself are not counted; an activation count the meta forward
cannot measure (a solver that reads values) is left out.

A variant of more than `config.MAX_PASSES` passes is refused here too, even where its memory
fits (a solver's activations are not measured; a tied loop of a million passes fits but would
take hours per epoch).

The limit is `MEMORY_FRACTION` of this machine's physical memory (`DEFAULT_LIMIT` where that is
unknown), or `train.max_memory_gb` when set.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from loopnets.data.split import Split
from loopnets.experiments.config import MAX_PASSES, ConfigError, Experiment, expand_variants, family_of, pass_count_field
from loopnets.experiments.user_data import placeholder_split

MEMORY_FRACTION = 0.5  # of physical memory: room for the data, the OS and a second worker
DEFAULT_LIMIT = 8 * 2**30  # bytes, where the physical memory cannot be read
OPTIMIZER_COPIES = 4  # weights, gradients, Adam's first and second moments


@dataclass(frozen=True)
class Estimate:
    """The memory one training step of a variant needs (see the module docstring)."""

    parameters: int  # elements, COUPLE copies included
    activations: int  # elements, one batch, every pass (0: not measured)
    bytes_per_element: int
    passes: int
    batch: int

    @property
    def bytes(self) -> int:
        return self.bytes_per_element * (OPTIMIZER_COPIES * self.parameters + self.activations)


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        return None


def memory_limit(exp: Experiment) -> tuple[int, str]:
    """(bytes, where the number comes from) for `check_memory`."""
    if exp.train.max_memory_gb is not None:
        return int(exp.train.max_memory_gb * 2**30), "train.max_memory_gb"
    ram = physical_memory()
    if ram is None:
        return DEFAULT_LIMIT, "the default limit; this machine's memory could not be read"
    return int(ram * MEMORY_FRACTION), f"{MEMORY_FRACTION:.0%} of this machine's {_gb(ram)} of memory"


def check_memory(exp: Experiment, load_split: Callable[[Experiment], Split], build: Callable) -> None:
    """Refuse (ConfigError) a variant whose estimated training memory exceeds the limit.

    Args:
        load_split: the experiment's data (`runner.load_split`); not called for a data set read
            from the user's files (its known shape is used) nor for a family with its own `memory_estimates`.
        build: `build(exp, variant, split)` -> the variant's network (`runner.build_model`).
    """
    limit, source = memory_limit(exp)
    estimates = family_of(exp).memory_estimates(exp)  # a family that estimates without building
    if estimates is None:
        variants = expand_variants(exp)
        split = placeholder_split(exp) or load_split(exp)
        estimates = [(v, estimate(exp, v, split, build)) for v in variants]
    for variant, est in estimates:  # memory first: the estimate says how far off a huge count is
        if est is not None and est.bytes > limit:
            field = pass_count_field(variant)
            counts = f"{est.parameters:,} parameters x {OPTIMIZER_COPIES} (weights, gradients, Adam's moments)"
            if est.activations:
                passes = f", {est.passes:,} passes" if est.passes > 1 else ""
                counts += f" + {est.activations:,} activations (one batch of {est.batch}{passes})"
            raise ConfigError(
                f"variant {variant.name!r} would need about {_gb(est.bytes)} of memory to train ({counts}, "
                f"{est.bytes_per_element} bytes each); the limit is {_gb(limit)} ({source}). Lower "
                f"{'the ' + field + ' or ' if field and est.passes > 1 else ''}the layer sizes, or if this machine "
                f"really has the memory, set train.max_memory_gb = {math.ceil(est.bytes / 2**30)}"
            )
        _check_passes(variant)


def _check_passes(variant: Any) -> None:
    """A loop of more than MAX_PASSES passes (unroll, timesteps, iterations or random_passes' upper
    end) is refused even where its memory fits: its training would take hours per epoch."""
    field = pass_count_field(variant)
    passes = getattr(variant, field) if field else 1
    highest = max([1, *(getattr(variant, "random_passes", None) or [])])
    for count, key in ((passes, field), (highest, "random_passes")):
        if count > MAX_PASSES:
            raise ConfigError(f"variant {variant.name!r}: {key} {count:,} is more than {MAX_PASSES} passes; a loop of "
                              f"that many passes would take hours per epoch: use at most {MAX_PASSES}")


def estimate(exp: Experiment, variant: Any, split: Split, build: Callable) -> Estimate | None:
    """The variant's training memory, from meta-device builds at 1 and 2 passes (None when the
    build needs an operation the meta device lacks). A ConfigError of the builder passes through;
    torch refusing a size (a TypeError or RuntimeError) becomes one."""
    field = pass_count_field(variant)
    passes = getattr(variant, field) if field else 1
    batch = max(1, min(exp.train.batch_size, len(split.x_train)))
    if field is None or passes <= 2:
        measured = _measure(exp, variant, split, build, batch)
        if measured is None:
            return None
        params, acts, size = measured
    else:
        one = _measure(exp, dataclasses.replace(variant, **{field: 1}), split, build, batch)
        two = _measure(exp, dataclasses.replace(variant, **{field: 2}), split, build, batch)
        if one is None or two is None:
            return None
        params = one[0] + (passes - 1) * max(0, two[0] - one[0])
        acts = one[1] + (passes - 1) * max(0, two[1] - one[1]) if one[1] and two[1] else 0
        size = one[2]
    return Estimate(params, acts, size, passes, batch)


def _measure(exp: Experiment, variant: Any, split: Split, build: Callable, batch: int) -> tuple[int, int, int] | None:
    """(parameter elements, activation elements for one batch, bytes per element) of the variant's
    network built on the meta device; activations 0 when the meta forward cannot run."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = build(exp, variant, split)
    except NotImplementedError:  # an operation without a meta kernel: the real build is checked as before
        return None
    except (TypeError, RuntimeError, OverflowError) as err:  # torch refuses a size (e.g. beyond int64 elements)
        raise ConfigError(f"variant {variant.name!r} cannot be built: torch refuses its sizes ({type(err).__name__}: "
                          f"{str(err).splitlines()[0]}); lower the layer sizes") from None
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    params = sum(t.numel() for t in tensors.values() if t.is_floating_point())
    size = next((t.element_size() for t in tensors.values() if t.is_floating_point()), 4)
    return params, _activations(model, split, batch), size


def _activations(model: nn.Module, split: Split, batch: int) -> int:
    """Elements of every leaf module's output in one forward pass of a batch, on the meta device."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        for out in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(out, torch.Tensor):
                total += out.numel()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.empty((batch, *split.input_shape), device="meta", dtype=split.x_train.dtype))
    except Exception:  # a model whose forward reads values (solvers, early exit) cannot run on meta
        return 0
    finally:
        for handle in handles:
            handle.remove()
    return total


def _gb(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
