"""PerPass: a place in a loop that runs its own module in every pass (per-unroll batch norm, untied copies).

`ln.Loop` runs one body (and one feedback module) in every pass. Some loops need a module that
differs from pass to pass while the rest stays tied: Caswell et al.'s per-unroll batch norm (one BN,
with its own gamma, beta and running statistics, per pass, around tied convs), their Deep network
(k untied copies of the body, trained with exact backprop through the unroll), or a loop path with a
module per loop-back. `PerPass([m_0, ..., m_{n-1}])` is that place: inside pass t (0-based) it runs
m_min(t, n-1), so pass counts beyond n (`ln.unrolled(model, k)`) reuse the last module.

    Loop(nn.Sequential(conv, PerPass([bn_1, bn_2, bn_3]), nn.ReLU()), unroll=3)  # per-unroll BN
    Loop(PerPass([body_1, body_2, body_3]), unroll=3)                             # Deep: untied copies
    Loop(body, unroll=3, feedback=PerPass([fb_1, fb_2]))                        # a feedback per loop-back

How PerPass knows the pass: `Loop.run_pass`, which every pass-by-pass mode runs its passes with,
publishes the pass index in a context variable while the pass runs (the pattern of dropout's pinned
masks, `loopnets.core.dropout.pinned_masks`: the loop, not the module, knows the pass). The
feedback belongs to the pass whose output it maps back: feedback(h_t) runs with index t, so a
feedback `PerPass([fb_1, ..., fb_{k-1}])` uses fb_1 after pass 0. A nested loop publishes its own
index while its passes run and restores the outer one after. Called outside a loop pass, PerPass
raises an error naming the fix.

Modes that do not run their passes through `run_pass` cannot hold one: a fixed-point solve
(Implicit, OneStep) needs one map for every pass, and COMBINE runs its body layer by layer; `Loop`
refuses those combinations at construction (the mode's `per_pass_modules` capability). Under
COUPLE every copy holds all entries and copy t runs entry t; the re-tie averages each entry over
the copies, so an entry that only pass t uses moves by 1/k of its own step (accumulate "mean").

`at_pass(module, t)` is the module pass t runs, with every PerPass replaced by its entry for t,
sharing the weights (for inspection, or `copy.deepcopy` for an untied copy of pass t);
`pass_key(module, t, path)` maps a parameter path of that per-pass module to its state-dict key in
`module`.
"""

from __future__ import annotations

import copy
from contextvars import ContextVar
from typing import Iterable, Sequence

from torch import Tensor, nn

__all__ = ["PerPass", "PASS_INDEX", "at_pass", "holds_per_pass", "pass_key", "per_pass"]

# The 0-based index of the loop pass now running (None outside every loop); set by Loop.run_pass.
PASS_INDEX: ContextVar[int | None] = ContextVar("loopnets_pass_index", default=None)


class PerPass(nn.ModuleList):
    """Modules indexed by loop pass: inside pass t (0-based) of a `ln.Loop` it runs entry min(t, len - 1).

    A `nn.ModuleList` (entry t is `per_pass[t]`, its state-dict keys are `<name>.<t>.*`) whose
    forward runs the current pass's entry. Entries may share submodules: per-pass bodies that hold
    the same conv object are tied in that conv and untied elsewhere.

    Args:
        modules: one module per pass, at least one; the last is used for every later pass.
    """

    def __init__(self, modules: Iterable[nn.Module]):
        modules = list(modules)
        if not modules:
            raise ValueError("PerPass needs at least one module (one per pass; the last is reused for later passes)")
        for i, m in enumerate(modules):
            if not isinstance(m, nn.Module):
                raise TypeError(f"PerPass entries must be nn.Modules; entry {i} is {type(m).__name__}")
        super().__init__(modules)

    def forward(self, *args: Tensor, **kwargs) -> Tensor:
        t = PASS_INDEX.get()
        if t is None:
            raise RuntimeError(
                "PerPass runs the module of the current loop pass, but it was called outside a loop pass; put it "
                "in the body or feedback of an ln.Loop (Tied, Truncated or Couple backprop), or call "
                "at_pass(module, t) (loopnets.core.perpass) for the module of pass t"
            )
        return self[min(t, len(self) - 1)](*args, **kwargs)

    def extra_repr(self) -> str:
        return f"passes={len(self)}, pass t runs entry min(t, {len(self) - 1})"


def holds_per_pass(modules: Iterable[nn.Module | None]) -> bool:
    """Whether any of `modules` is or contains a PerPass."""
    return any(isinstance(m, PerPass) for module in modules if module is not None for m in module.modules())


def at_pass(module: nn.Module, t: int) -> nn.Module:
    """The module pass t (0-based) runs: `module` with every PerPass replaced by its entry for pass t.

    A view sharing every parameter, buffer and leaf module with `module` (containers that hold a
    PerPass are shallow copies); `module` itself when it holds none. Use it to inspect or call pass
    t's modules, or `copy.deepcopy(at_pass(module, t))` for an untied copy of pass t.
    """
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise ValueError(f"the pass index must be an integer >= 0 (0 is the first pass); got {t!r}")
    if isinstance(module, PerPass):
        return at_pass(module[min(t, len(module) - 1)], t)
    if not holds_per_pass([module]):
        return module
    view = copy.copy(module)  # shares the parameter / buffer dicts; only its children differ
    children = {name: None if c is None else at_pass(c, t) for name, c in module._modules.items()}
    object.__setattr__(view, "_modules", children)
    return view


def pass_key(module: nn.Module, t: int, path: str) -> str:
    """The state-dict key in `module` of `path` (a dotted name in the module pass t runs, `at_pass(module, t)`).

    E.g. for `module = Sequential(conv=..., bn=PerPass([bn_0, bn_1]))`: pass_key(module, 1, "bn.weight")
    is "bn.1.weight" and pass_key(module, 1, "conv.weight") is "conv.weight". Raises KeyError naming
    the part of `path` that `module` does not have.
    """
    parts = path.split(".")
    key: list[str] = []
    current = module
    for i, name in enumerate(parts):
        while isinstance(current, PerPass):
            index = min(t, len(current) - 1)
            key.append(str(index))
            current = current[index]
        if i == len(parts) - 1:
            key.append(name)
            break
        child = current._modules.get(name)
        if child is None:
            raise KeyError(f"{'.'.join(parts[:i + 1])!r}: {type(current).__name__} has no submodule {name!r}")
        key.append(name)
        current = child
    return ".".join(key)


def per_pass(modules: Sequence[nn.Module]) -> nn.Module:
    """The one module when `modules` has one, else PerPass(modules)."""
    return modules[0] if len(modules) == 1 else PerPass(modules)
