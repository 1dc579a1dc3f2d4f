"""Optimizers by name: sgd, sgdm, adam, adamw, rmsprop (PyTorch's own classes).

`make_optimizer(spec, params)` accepts
- a name: `"adam"` (PyTorch's defaults; "sgdm" is SGD with momentum 0.9),
- a `(name, kwargs)` pair: `("adam", {"lr": 1e-4, "betas": (0.95, 0.999), "eps": 1e-7})`,
  kwargs override the defaults and are checked against the class's signature,
- a callable `params -> torch.optim.Optimizer`, for anything else:
  `lambda params: torch.optim.Adagrad(params, lr=0.01)`.

Speed: a named optimizer whose class has a fused kernel (sgd, sgdm, adam, adamw) is built with
`fused=True` when every parameter is float32: one kernel updates all parameters, instead of
about ten ATen calls per parameter (PyTorch's default on CPU). On the iris model at batch size 1
that makes Adam's step about 3x faster (benchmarks, docs/performance.md). The fused kernels
round differently in the last bit, so float32 results differ from the unfused ones by rounding;
float64 parameters keep PyTorch's default implementation, so float64 results are unchanged.
Pass `fused` or `foreach` yourself to choose (`("adam", {"lr": 1e-3, "fused": False})`).
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union

import torch

OptimizerSpec = Union[str, tuple, list, Callable[[list], torch.optim.Optimizer]]

# name -> (class, defaults that differ from the class's own)
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {}),
    "sgdm": (torch.optim.SGD, {"momentum": 0.9}),
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
    "rmsprop": (torch.optim.RMSprop, {}),
}

_FORMS = (
    'a name ("adam"), a (name, kwargs) pair (("adam", {"lr": 1e-3})), '
    "or a callable params -> torch.optim.Optimizer"
)


def make_optimizer(spec: OptimizerSpec, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Build the optimizer described by `spec` over `params`.

    Args:
        spec: a name in OPTIMIZERS, a (name, kwargs) tuple or list, or a callable
            params -> optimizer (called with the parameters as a list).
        params: the parameters to optimize (e.g. `model.parameters()`).

    Raises:
        ValueError: unknown name, unknown keyword argument (lists the valid ones), a malformed
            spec, or a callable that does not return a torch.optim.Optimizer.
    """
    params = list(params)
    if callable(spec) and not isinstance(spec, (str, tuple, list)):
        optimizer = spec(params)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(
                f"the optimizer callable must return a torch.optim.Optimizer; it returned {type(optimizer).__name__}"
            )
        return optimizer
    hint = ""
    if isinstance(spec, torch.optim.Optimizer):
        hint = " (an optimizer instance is already bound to parameters: pass lambda params: YourOptimizer(params, ...))"
    name, kwargs = _name_and_kwargs(spec, "optimizer", _FORMS, hint)

    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    cls, defaults = OPTIMIZERS[key]
    valid = [p for p in inspect.signature(cls).parameters if p != "params"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown argument(s) {', '.join(map(repr, unknown))} for optimizer {key!r} "
            f"({cls.__module__}.{cls.__name__}); valid arguments: {', '.join(valid)}"
        )
    kwargs = {**defaults, **kwargs}
    if _fusable(cls, params, kwargs):
        try:
            return cls(params, **kwargs, fused=True)
        except RuntimeError:  # no fused kernel for this device / dtype in this torch build
            pass
    return cls(params, **kwargs)


def _name_and_kwargs(spec: Any, what: str, forms: str, hint: str = "") -> tuple[str, dict]:
    """(name, kwargs) of a spec that is a name or a (name, kwargs) pair; ValueError naming the forms otherwise."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, (tuple, list)):
        if len(spec) != 2 or not isinstance(spec[0], str) or not isinstance(spec[1], Mapping):
            raise ValueError(f"{what} must be {forms}; got {spec!r}")
        return spec[0], dict(spec[1])
    raise ValueError(f"{what} must be {forms}; got {type(spec).__name__}{hint}")


def _fusable(cls: type[torch.optim.Optimizer], params: list, kwargs: dict) -> bool:
    """Whether to ask for the fused kernel: float32 parameters and no explicit implementation choice."""
    if "fused" not in inspect.signature(cls).parameters or {"fused", "foreach", "differentiable"} & set(kwargs):
        return False
    tensors = [p for group in params for p in (group["params"] if isinstance(group, Mapping) else [group])]
    return bool(tensors) and all(isinstance(p, torch.Tensor) and p.dtype == torch.float32 for p in tensors)


# --- learning-rate schedulers and gradient clipping ---------------------------------------------

SchedulerSpec = Union[None, str, tuple, list, Callable[[torch.optim.Optimizer], Any]]
ClipSpec = Union[None, tuple, list]

PER_BATCH_SCHEDULERS = ("OneCycleLR", "CyclicLR")  # schedules in optimizer steps; the others in epochs
_NOT_SCHEDULERS = ("LRScheduler", "_LRScheduler", "ChainedScheduler", "SequentialLR")  # bases, or take schedulers


def schedulers() -> dict[str, type]:
    """torch.optim.lr_scheduler's schedulers by class name (those built from an optimizer and options)."""
    module = torch.optim.lr_scheduler
    base = getattr(module, "LRScheduler", getattr(module, "_LRScheduler", object))
    found = {}
    for name, cls in vars(module).items():
        if (isinstance(cls, type) and name not in _NOT_SCHEDULERS and not name.startswith("_")
                and (issubclass(cls, base) or cls is module.ReduceLROnPlateau)):
            found[name] = cls
    return dict(sorted(found.items()))


def check_scheduler(name: str, kwargs: Mapping[str, Any]) -> type:
    """The `torch.optim.lr_scheduler` class called `name`, after checking that `kwargs` are its arguments.

    Raises:
        ValueError: unknown name (did-you-mean, and the valid names), unknown argument (did-you-mean,
            and the valid ones), or a missing required argument.
    """
    known = schedulers()
    if name not in known:
        close = [k for k in known if k.lower() == name.lower()] or difflib.get_close_matches(name, list(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown scheduler {name!r}{hint}; choose one of torch.optim.lr_scheduler's: "
                         f"{', '.join(known)}")
    cls = known[name]
    signature = inspect.signature(cls)
    valid = [p for p in signature.parameters if p != "optimizer"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown argument(s) {', '.join(map(repr, unknown))} for scheduler {name!r}{hint}; "
                         f"valid arguments: {', '.join(valid)}")
    missing = [p for p, param in signature.parameters.items()
               if p != "optimizer" and param.default is inspect.Parameter.empty
               and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD) and p not in kwargs]
    if missing:
        raise ValueError(f"scheduler {name!r} needs argument(s) {', '.join(map(repr, missing))}, e.g. "
                         f"({name!r}, {{{', '.join(f'{m!r}: ...' for m in missing)}}})")
    return cls


def make_scheduler(spec: SchedulerSpec, optimizer: torch.optim.Optimizer) -> Any:
    """The learning-rate scheduler described by `spec`, on `optimizer` (None: no scheduler).

    Args:
        spec: None; a class name in `torch.optim.lr_scheduler` ("CosineAnnealingLR"); a (name, kwargs)
            pair (("StepLR", {"step_size": 10, "gamma": 0.5})), kwargs checked against the class's
            signature; or a callable optimizer -> scheduler.

    Raises:
        ValueError: unknown name (lists the valid ones), unknown or missing argument (lists the valid
            ones), or a malformed spec.
    """
    if spec is None:
        return None
    forms = ('a name ("CosineAnnealingLR"), a (name, kwargs) pair (("StepLR", {"step_size": 10})), '
             "or a callable optimizer -> scheduler")
    if callable(spec) and not isinstance(spec, (str, tuple, list)):
        return spec(optimizer)
    name, kwargs = _name_and_kwargs(spec, "scheduler", forms)
    cls = check_scheduler(name, kwargs)
    return cls(optimizer, **kwargs)


CLIP_KINDS = ("norm", "value", "output")


def check_clip(spec: ClipSpec) -> tuple[str, float] | None:
    """`clip` as (kind, limit), or None; ValueError for a malformed spec (see `make_clipper`)."""
    if spec is None:
        return None
    if (not isinstance(spec, (tuple, list)) or len(spec) != 2 or spec[0] not in CLIP_KINDS
            or isinstance(spec[1], bool) or not isinstance(spec[1], (int, float)) or not spec[1] > 0
            or not math.isfinite(spec[1])):
        raise ValueError(f"clip must be None, ('norm', max_norm), ('value', max_value) or ('output', max_value) with "
                         f"a finite number > 0, e.g. ('value', 5.0); got {spec!r}")
    return spec[0], float(spec[1])


def make_clipper(spec: ClipSpec) -> Callable[[list], None] | None:
    """A function params -> None that clips their gradients in place, for `clip=` of fit (None: no
    clipping of the parameters' gradients, also for ("output", c): see `make_output_clamp`).

    ("norm", c): `torch.nn.utils.clip_grad_norm_` rescales all gradients together so that their
    total 2-norm is at most c. ("value", c): `clip_grad_value_` clamps every parameter gradient element to
    [-c, c].
    """
    checked = check_clip(spec)
    if checked is None or checked[0] == "output":
        return None
    kind, limit = checked
    if kind == "norm":
        return lambda params: torch.nn.utils.clip_grad_norm_(params, limit)
    return lambda params: torch.nn.utils.clip_grad_value_(params, limit)


def make_output_clamp(spec: ClipSpec) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For ("output", c): a gradient hook g -> g.clamp(-c, c) for the model's output (None otherwise).

    It clamps every element of dLoss/dOutput, the gradient of the backpropagated batch loss with
    respect to the prediction the loss is computed from (the logits where the loss uses them), before
    it flows into the network: the thesis's (-5, 5) clamp of the loss gradient in its FTIR
    classification (neurons clamps the per-sample gradient of a summed loss; loopnets' batch loss is
    the mean over B samples, so the thesis's clamp is ("output", 5 / B)).
    """
    checked = check_clip(spec)
    if checked is None or checked[0] != "output":
        return None
    limit = checked[1]
    return lambda grad: grad.clamp(-limit, limit)
