"""Per-pass outputs of a looped model: deep supervision, random pass counts, early exit.

A loop's k passes each produce a loop output; running the rest of the model on each gives the
model's output after every pass (a per-iteration readout).

- `pass_outputs(model, x)`: the model's output after each pass, with autograd graphs where the
  loop's backprop mode keeps them (Tied / Couple: the full graph of passes 1..t; Truncated: the
  no-grad passes detached; Implicit / OneStep: a one-pass graph each, the fixed-point correction
  of Bai et al. 2022; COMBINE: none, its passes run without a graph).
- `ln.fit(..., pass_weights=...)`: deep supervision, loss = sum_t w_t loss(output after pass t)
  (Lee et al. 2015, "Deeply-supervised nets"; per-iteration losses as in Schwarzschild et al.
  2021 and Bansal et al. 2022, "End-to-end algorithm synthesis").
- `ln.fit(..., random_passes=(lo, hi))`: every optimizer step trains with a pass count drawn
  uniformly from lo..hi, so that the model does not learn one depth only (Bansal et al. 2022's
  random-iteration training).
- `early_exit(model, x, criterion, threshold)`: inference that stops each sample at the first
  pass where its criterion (state residual, prediction entropy, prediction change) falls below
  the threshold, and stops the loop once every sample has stopped (Graves 2016 and Banino et al.
  2021 learn when to halt; here the rule is fixed).

Input re-injection: the loop's `merge` ("add", "sub", "mul", "mean", "concat"; see `loopnets.Loop`) feeds
the original loop input x into every pass, h_t = body(merge(feedback(h_{t-1}), x)), so later
passes cannot forget the input (Bansal et al. 2022's "recall", which concatenates and projects:
merge="concat"). It is a property of the loop, so
it holds in every backprop mode and through `pass_outputs`, deep supervision and `early_exit`;
merge="replace" (the default) gives the input to pass 1 only.

Models: a loop (anything implementing `loopnets.core.protocol.FeedbackLoop`: `Loop`
(`loopy.PassLoop` is one), `gated.GatedNetwork`, `inn.IterativeNetwork`), a model holding exactly one
loop that implements `LoopHost` (`ln.Network` with one loopback or feedback block,
`loopy.LoopyCNN`), or an `nn.Sequential` with exactly one loop among its top-level modules. The
layers after the loop run once on all passes' loop outputs stacked along the batch dimension (skip
values repeated), so batch-statistics layers there (BatchNorm in training) would see the passes mixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from contextlib import closing
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from loopnets.core.loop import Loop, check_unroll
from loopnets.core.protocol import FeedbackLoop, LoopHost, loops_in

CRITERIA = ("residual", "entropy", "change")
PASS_WEIGHTS = ("mean", "linear", "last")


def pass_outputs(model: nn.Module, x: Tensor, unroll: int | None = None, logits: bool = False) -> list[Tensor]:
    """The model's output after each pass of its loop: a list of k tensors (B, *out).

    Output t is what the model returns when its loop runs t passes: for a loop with output
    "mean" / "sum" or COMBINE, the loop's output after t passes is the running mean / sum /
    combination of passes 1..t (what `loop(x, unroll=t)` returns in eval mode). Passes 1..k run
    once, the layers after the loop once for all k. Cost: the loop's forward with k passes plus k
    times the layers after it; memory holds the graphs of all k outputs.

    Args:
        model: a loop, a LoopHost with one loop, or an nn.Sequential with one top-level loop
            (see the module docstring).
        x: (B, *in) input.
        unroll: number of passes k (None: the loop's own, or `probe_unroll` under `ln.unrolled`).
        logits: a LoopHost's logits (`Network.logits` semantics) instead of its output. A loop
            given alone returns its pass outputs as they are (a gated network's after its output
            activation; `GatedNetwork.logits` gives the last pass's logits).
    """
    loop, loop_input, after = split_at_loop(model, x, logits)
    outs = _loop_outputs(loop, loop_input, unroll)  # k x (B, *)
    if after is None:
        return outs
    return list(after(torch.cat(outs)).split(len(loop_input)))  # (k * B, *out) -> k x (B, *out)


@dataclass
class EarlyExit:
    """The result of `early_exit`.

    Attributes:
        output: (B, *out) each sample's model output at its exit pass.
        passes: (B,) int64, the pass at which each sample exited (1..max_passes).
        criterion: the criterion's name.
        threshold: the threshold it was compared with.
        values: (passes run, B) the criterion after each pass that ran (inf where undefined:
            "residual" and "change" at pass 1). Passes run = passes.max().
    """

    output: Tensor
    passes: Tensor
    criterion: str
    threshold: float
    values: Tensor


def early_exit(
    model: nn.Module,
    x: Tensor,
    criterion: str = "residual",
    threshold: float = 1e-3,
    max_passes: int | None = None,
) -> EarlyExit:
    """Inference that stops each sample at the first pass where `criterion < threshold`.

    Runs in eval() mode under no_grad (modes restored), one pass at a time; the loop stops as
    soon as every sample has exited (the saving is per batch: until then every sample runs).
    A sample that never falls below the threshold exits at `max_passes`, so threshold=0 gives
    exactly the output of running max_passes passes.

    Criteria, per sample:
    - "residual": ||h_t - h_{t-1}|| / ||h_t||, the relative change of the loop's state (the raw
      pass output); undefined (inf) at pass 1, so a sample runs at least 2 passes.
    - "entropy": entropy of the predicted distribution: the model's output when it ends in a
      softmax (sigmoid: a sum of per-element binary entropies), else softmax(output) over the last
      dimension (the output read as logits, as the losses do).
    - "change": the L1 change of that predicted distribution since the previous pass (inf at
      pass 1).

    Args:
        model: a loop, a LoopHost with one loop, or an nn.Sequential with one top-level loop
            (see the module docstring).
        x: (B, *in) input.
        criterion: "residual" | "entropy" | "change".
        threshold: a number >= 0.
        max_passes: the most passes (default: the loop's unroll, or probe_unroll under
            ln.unrolled). Implicit / OneStep loops run plain passes here, not their solver: pass
            e.g. max_passes=loop.backprop.max_passes for a residual-stopped fixed-point iteration.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown early-exit criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
        raise ValueError(f"threshold must be a number >= 0 (0: every sample runs max_passes); got {threshold!r}")
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return _early_exit(model, x, criterion, float(threshold), max_passes)
    finally:
        for module, training in modes.items():
            module.train(training)


def _early_exit(model: nn.Module, x: Tensor, criterion: str, threshold: float, max_passes: int | None) -> EarlyExit:
    loop, loop_input, after = split_at_loop(model, x, logits=False)
    k = max_passes if max_passes is not None else loop.planned_passes
    check_unroll(k)
    after = after if after is not None else (lambda y: y)
    batch = len(loop_input)
    exited = torch.zeros(batch, dtype=torch.bool, device=loop_input.device)
    passes = torch.full((batch,), k, dtype=torch.long, device=loop_input.device)
    raw: list[Tensor] = []  # the passes' loop states h_t, (B, *)
    values: list[Tensor] = []  # criterion per pass, (B,)
    chosen = output = probs = None  # the loop outputs / model outputs at each sample's exit
    with closing(loop.iterate(loop_input)) as stream:
        for t, h in zip(range(k), stream):  # range first: no pass beyond k is computed
            raw.append(h)  # h_t: (B, *)
            y = loop.output_after(raw)  # the loop's output after t + 1 passes
            if criterion == "residual":  # needs only the loop state: the model output runs once at the end
                value = _residual(raw)
                chosen = y.clone() if chosen is None else chosen
            else:
                out = after(y)  # (B, *out)
                p = _probabilities(model, out)
                value = _entropy(model, p) if criterion == "entropy" else (
                    torch.full((batch,), math.inf, dtype=p.dtype, device=p.device) if probs is None
                    else (p - probs).abs().flatten(1).sum(1)
                )
                probs = p
                output = out.clone() if output is None else output
            values.append(value)
            leaving = ~exited & (value < threshold) if t < k - 1 else ~exited
            if criterion == "residual":
                chosen[leaving] = y[leaving]
            else:
                output[leaving] = out[leaving]
            passes[leaving] = t + 1
            exited |= leaving
            if bool(exited.all()):
                break
    if criterion == "residual":
        output = after(chosen)
    return EarlyExit(output, passes, criterion, threshold, torch.stack(values))


# -- deep supervision and random pass counts, for ln.fit -----------------------------------------


class PassPlan:
    """fit's per-step pass handling: the pass count (random_passes) and the per-pass outputs and
    weights (pass_weights). Built once per fit call by `pass_plan`, which checks the options."""

    def __init__(self, model: nn.Module, loops: list[Loop], weights, random_passes, seed: int):
        self.model, self.loops, self.weights = model, loops, weights
        self.random_passes = random_passes
        self.generator = torch.Generator().manual_seed(seed)  # its own: the shuffling is unchanged
        self.history: list[int] = []  # the pass count of every step (random_passes only)
        self.mixing = loops[0].backprop.mixes_outputs  # the step's loss mixes the mode's outputs

    def predict(self, forward: Callable, xb: Tensor, from_logits: bool) -> tuple[list[Tensor], list[float]]:
        """(outputs, weights) for one training step: the weighted outputs, the final one last."""
        k = None
        if self.random_passes is not None:
            lo, hi = self.random_passes
            k = int(torch.randint(lo, hi + 1, (), generator=self.generator))
            self.history.append(k)
        if self.mixing:  # the mode's own mix of outputs (Progressive), at k passes
            return mixed_outputs(self.model, xb, k if k is not None else _passes_of(self.loops[0]), from_logits)
        if self.weights is None:  # "last": the plain forward, at k passes
            return [self._forward_with(forward, xb, k)], [1.0]
        k_run = k if k is not None else _passes_of(self.loops[0])
        weights = _pass_weights(self.weights, k_run)
        return pass_outputs(self.model, xb, unroll=k_run, logits=from_logits), weights

    def _forward_with(self, forward: Callable, xb: Tensor, k: int | None) -> Tensor:
        if k is None:
            return forward(xb)
        before = [loop.probe_unroll for loop in self.loops]
        for loop in self.loops:
            loop.probe_unroll = k
        try:
            return forward(xb)
        finally:
            for loop, value in zip(self.loops, before):
                loop.probe_unroll = value


def pass_plan(model: nn.Module, pass_weights, random_passes, seed: int) -> PassPlan | None:
    """Check fit's pass_weights / random_passes against the model; None when both are None and no
    loop's mode mixes the losses of several outputs (`Backprop.mixes_outputs`, e.g. Progressive)."""
    loops = [m for m in model.modules() if isinstance(m, Loop)]
    mixing = [loop.backprop.label for loop in loops if loop.backprop.mixes_outputs]
    if pass_weights is None and random_passes is None and not mixing:
        return None
    options = " and ".join(
        [f"{name}={value!r}" for name, value in (("pass_weights", pass_weights), ("random_passes", random_passes))
         if value is not None] + [f"training with {label}" for label in mixing[:1]]
    )
    if len(loops) != 1:
        raise ValueError(f"{options} needs a model with exactly one Loop; {type(model).__name__} has {len(loops)}")
    loop = loops[0]
    mode = loop.backprop
    if random_passes is not None:
        if not isinstance(random_passes, (tuple, list)) or len(random_passes) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) for v in random_passes
        ):
            raise ValueError(f"random_passes must be a pair of integers (lo, hi), e.g. (1, 5); got {random_passes!r}")
        lo, hi = random_passes
        if lo < 1 or hi < lo:
            raise ValueError(f"random_passes=(lo, hi) needs 1 <= lo <= hi; got {random_passes!r}")
        mode.require("random_passes", "random_passes")
        if mode.untied_copies and hi > loop.unroll:
            raise ValueError(
                f"random_passes={tuple(random_passes)} with {mode.label}: the loop holds {loop.unroll} copies and cannot "
                f"train {hi} passes; use hi <= {loop.unroll}, or build the loop with unroll >= {hi}"
            )
        random_passes = (int(lo), int(hi))
    weights = pass_weights
    if pass_weights is not None:
        mode.require("pass_readout", "pass_weights")
        if isinstance(pass_weights, str):
            if pass_weights not in PASS_WEIGHTS:
                raise ValueError(
                    f"unknown pass_weights {pass_weights!r}; choose one of {', '.join(PASS_WEIGHTS)} "
                    "or a list of k weights"
                )
        elif isinstance(pass_weights, Sequence) and all(
            isinstance(w, (int, float)) and not isinstance(w, bool) for w in pass_weights
        ):
            if random_passes is not None:
                raise ValueError(
                    "pass_weights as a list fixes the number of passes, random_passes varies it; "
                    "use pass_weights='mean', 'linear' or 'last' with random_passes"
                )
            k = _passes_of(loop)
            if len(pass_weights) != k:
                raise ValueError(
                    f"pass_weights needs one weight per pass: the loop runs {k} passes; got {len(pass_weights)} weights"
                )
            if not all(math.isfinite(w) and w >= 0 for w in pass_weights) or not any(w > 0 for w in pass_weights):
                raise ValueError(f"pass_weights must be finite, >= 0 and not all zero; got {list(pass_weights)}")
            weights = [float(w) for w in pass_weights]
            if not any(weights[:-1]):
                weights = "last"  # only the final output counts: the plain forward
        else:
            raise ValueError(
                f"pass_weights must be 'mean', 'linear', 'last' or a list of k numbers; got {pass_weights!r}"
            )
        if weights != "last":
            _split_check(model)
    if mixing:
        _split_check(model)
    return PassPlan(model, loops, None if weights == "last" else weights, random_passes, seed)


def mixed_outputs(model: nn.Module, x: Tensor, k: int, logits: bool) -> tuple[list[Tensor], list[float]]:
    """(model outputs, weights) of one training step of a loop whose mode mixes outputs
    (`Backprop.training_outputs`, e.g. Progressive's progressive and max-passes outputs): the
    layers after the loop run once on all of them, stacked along the batch dimension."""
    loop, loop_input, after = split_at_loop(model, x, logits)
    outs, weights = loop.backprop.training_outputs(loop, loop_input, k)  # each (B, *)
    if after is not None:
        outs = list(after(torch.cat(outs)).split(len(loop_input)))
    return outs, weights


def _pass_weights(rule, k: int) -> list[float]:
    if rule == "mean":
        return [1.0 / k] * k
    if rule == "linear":  # proportional to t, normalised
        total = k * (k + 1) / 2
        return [t / total for t in range(1, k + 1)]
    return list(rule)


# -- running a model pass by pass ----------------------------------------------------------------


def split_at_loop(model: nn.Module, x: Tensor, logits: bool) -> tuple[FeedbackLoop, Tensor, Callable | None]:
    """(the model's loop, the loop's input, after): after(y) runs the rest of the model on loop
    outputs stacked along the batch dimension (None: the loop is the model)."""
    at = _split_check(model)
    if isinstance(model, FeedbackLoop):
        return model, x, None
    if isinstance(model, LoopHost):
        return model.around_loop(x, logits)
    modules = list(model)
    for m in modules[:at]:
        x = m(x)
    rest = modules[at + 1 :]

    def after(y: Tensor) -> Tensor:
        for m in rest:
            y = m(y)
        return y

    return modules[at], x, after


def _split_check(model: nn.Module) -> int | None:
    """ValueError unless per-pass outputs can run on `model`; the loop's index in an nn.Sequential."""
    if isinstance(model, FeedbackLoop):
        return None
    loops = loops_in(model)
    if isinstance(model, LoopHost) and len(loops) == 1:
        return None
    at = [i for i, m in enumerate(model) if any(m is loop for loop in loops)] if isinstance(model, nn.Sequential) else []
    if len(loops) == 1 and len(at) == 1:
        return at[0]
    raise ValueError(
        f"per-pass outputs need a loop (ln.Loop, gated.GatedNetwork, inn.IterativeNetwork), "
        f"an ln.Network or loopy.LoopyCNN with exactly one loop, or an nn.Sequential with exactly one loop "
        f"among its top-level modules; got {type(model).__name__} with {len(loops)} loop(s)"
        + (" (nested inside another module: put it at the top level of the nn.Sequential)"
           if isinstance(model, nn.Sequential) and len(loops) == 1 else "")
    )


def _passes_of(loop: FeedbackLoop) -> int:
    """The number of passes the loop runs by default (its unroll, or probe_unroll under ln.unrolled)."""
    return loop.planned_passes


def _loop_outputs(loop: FeedbackLoop, x: Tensor, unroll: int | None) -> list[Tensor]:
    """The loop's output after each of its passes: the raw pass outputs, or for output "mean" /
    "sum" and COMBINE their running mean / sum / combination."""
    raw = loop.passes(x, unroll)
    return [loop.output_after(raw[:t]) for t in range(1, len(raw) + 1)]


def _residual(raw: list[Tensor]) -> Tensor:
    h = raw[-1].flatten(1)  # (B, n)
    if len(raw) == 1:
        return torch.full((len(h),), math.inf, dtype=h.dtype, device=h.device)
    change = (h - raw[-2].flatten(1)).norm(dim=1)
    return change / h.norm(dim=1).clamp_min(torch.finfo(h.dtype).tiny)


def _probabilities(model: nn.Module, out: Tensor) -> Tensor:
    if getattr(model, "output_activation", None) in ("softmax", "sigmoid"):
        return out
    return torch.softmax(out, dim=1)  # the class dimension, as cross_entropy: (B, C) or per position (B, C, *S)


def _entropy(model: nn.Module, p: Tensor) -> Tensor:
    h = -torch.special.xlogy(p, p)
    if getattr(model, "output_activation", None) == "sigmoid":
        h = h - torch.special.xlogy(1 - p, 1 - p)
    return h.flatten(1).sum(1)
