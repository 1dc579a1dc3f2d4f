"""Several models of one architecture as one stacked model: what `fit_many` trains.

`Stack(models)` deep-copies one model (the template) and switches its linear and conv layers to
stacked ones holding every model's parameters on a new first dimension: a Linear is one
`baddbmm` over (S, rows, in) x (S, in, out), a convolution one grouped convolution over the S
models' channels; the input is the S models' rows one after the other, (S * rows, *in), and every
module that acts sample by sample runs once for all. Models may also differ in the pass count of
their one COMBINE loop (a network without a loop is COMBINE with one pass), or of their Tied /
COUPLE loop with output "last", and in which "add" skips they have: the template is the model
with the most passes and skips, and per-model factors (`RowFactors`) make each model compute
its own network. `stack_key` says which models stack; `merged_keys` lets an FFN join COMBINE.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from loopnets.core.modes import backprop_from_config
from loopnets.builder.conv import Conv1d as UnfoldConv1d
from loopnets.core.loop import Loop
from loopnets.builder.network import Network

LINEAR = (nn.Linear,)
CONV = (nn.Conv1d, UnfoldConv1d, nn.Conv2d, nn.Conv3d)
AFFINE = LINEAR + CONV


class StackedLinear(nn.Linear):
    """nn.Linear with S models' parameters, weight (S, out, in) and bias (S, out): input
    (S * rows, ..., in), model s owning rows [s * rows, (s + 1) * rows); one batched product."""

    models: int

    def forward(self, x: Tensor) -> Tensor:
        S = self.models
        blocks = x.reshape(S, -1, x.shape[-1])  # (S, rows * ..., in)
        w = self.weight.transpose(1, 2)  # (S, in, out)
        out = torch.bmm(blocks, w) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), blocks, w)
        return out.view(*x.shape[:-1], out.shape[-1])


class StackedConv:
    """Mixin for a convolution with S models' parameters, weight (S, out, in / groups, *k): one
    grouped convolution, the S models' channels side by side (groups * S groups)."""

    models: int

    def forward(self, x: Tensor) -> Tensor:
        S = self.models
        rows = x.shape[0] // S
        folded = x.view(S, rows, *x.shape[1:]).transpose(0, 1).reshape(rows, S * x.shape[1], *x.shape[2:])
        w = self.weight.reshape(-1, *self.weight.shape[2:])  # (S * out, in / groups, *k)
        b = None if self.bias is None else self.bias.reshape(-1)
        out = self.conv(folded, w, b, S * self.groups)  # (rows, S * out, *spatial)
        return out.view(rows, S, -1, *out.shape[2:]).transpose(0, 1).reshape(S * rows, -1, *out.shape[2:])

    def conv(self, x: Tensor, w: Tensor, b: Tensor | None, groups: int) -> Tensor:
        kept = self.groups
        self.groups = groups  # _conv_forward reads self.groups (and, for UnfoldConv1d, its shape)
        try:
            return self._conv_forward(x, w, b)
        finally:
            self.groups = kept


STACKED: dict[type, type] = {nn.Linear: StackedLinear}
for _cls in CONV:
    STACKED[_cls] = type(f"Stacked{_cls.__name__}", (StackedConv, _cls), {})


class Stack:
    """S models merged into one stacked copy; maps models to their slices and back.

    The models share a `stack_key` (see there): one architecture, or dense / conv networks that
    differ only in their COMBINE pass counts (a network without the loop is one pass) and in
    which "add" skips they have. The copy is of the model with the loop and the most skips
    (its loop runs the largest pass count); per model, its passes' accumulation weights (0
    after its last pass) and a 0 / 1 factor per skip make it compute what its own network does.

    Attributes:
        model: the merged model (a deep copy of the template model with stacked affine layers).
        params: its trainable parameters, each (S, ...).
        size: S.
    """

    def __init__(self, models: Sequence[nn.Module]):
        self.size = S = len(models)
        template = max(range(S), key=lambda i: (_varying_loop(models[i]) is not None,
                                                 getattr(_varying_loop(models[i]), "unroll", 0), len(_add_skips(models[i]))))
        self.model = copy.deepcopy(models[template])
        names = [name for name, _ in self.model.named_parameters()]
        self.index = [_parameter_index(m, names) for m in models]  # model i's parameters as template positions
        columns = []  # model i's parameters in the template's order
        for m, index in zip(models, self.index):
            own = list(m.parameters())
            where = {k: own[j] for j, k in enumerate(index)}
            columns.append([where[k] if k in where else dict(m.named_parameters())[_body_name(n)]
                            for k, n in enumerate(names)])
        for path, module in self.model.named_modules():
            if type(module) not in STACKED:
                continue
            module.__class__ = STACKED[type(module)]
            module.models = S
            for name, param in list(module._parameters.items()):
                if param is not None:
                    k = names.index(f"{path}.{name}" if path else name)
                    stacked = torch.stack([column[k].detach() for column in columns])
                    setattr(module, name, nn.Parameter(stacked, requires_grad=param.requires_grad))
        self.names = names
        self.named = dict(self.model.named_parameters())
        self.params = [p for p in self.named.values() if p.requires_grad]
        self._per_model(models, template)
        self.mask: Tensor | None = None  # (S,) bool, True for masked models; None: none masked
        self.frozen: list[Tensor] = []

    def _per_model(self, models: Sequence[nn.Module], template: int) -> None:
        """The per-model pass weights and skip factors, where the models differ."""
        device, dtype = self.params[0].device, self.params[0].dtype
        rows = RowFactors(self.size)
        loop = _varying_loop(self.model)
        if loop is not None:
            counts = [(_varying_loop(m).unroll if _varying_loop(m) is not None else 1) for m in models]
            if len(set(counts)) > 1:
                k = max(counts)
                table = torch.zeros(k, self.size, dtype=dtype, device=device)  # [t, i]: pass t's weight for model i
                for i, count in enumerate(counts):
                    # COMBINE: its accumulation weights; output "last": 1 at model i's last pass
                    table[:count, i] = torch.tensor(pass_weights(loop, count), dtype=dtype)
                loop.__class__ = _stacked_class(StackedLoop, type(loop))
                loop.unroll, loop.pass_weights, loop.rows = k, table.unbind(0), rows
                if loop.backprop.untied_copies:  # copy c's weight in model i's tie: 1 / k_i for c < k_i
                    ties = torch.zeros(k, self.size, dtype=dtype, device=device)
                    for i, count in enumerate(counts):
                        ties[:count, i] = torch.tensor(loop.backprop.tie_weights(count), dtype=dtype)
                    loop.tie_weights = ties.unbind(0)
        net = self.model
        if isinstance(net, Network):
            have = [{(s.source, s.target) for s in _add_skips(m)} for m in models]
            factors = {}
            for skip in _add_skips(net):
                where = (skip.source, skip.target)
                column = [1.0 if where in h else 0.0 for h in have]
                if min(column) == 0.0:
                    factors[id(skip)] = torch.tensor(column, dtype=dtype, device=device)
            for i, h in enumerate(have):
                missing = h - {(s.source, s.target) for s in _add_skips(net)}
                if missing:
                    raise ValueError(f"models[{i}] has skips {sorted(missing)} that models[{template}] lacks; the "
                                     "stacked model is a copy of the one with the most skips: stack models whose "
                                     "skips are subsets of one model's")
            if factors:
                net.__class__ = _stacked_class(StackedNetwork, type(net))
                net.skip_factors, net.rows = factors, rows

    def extract(self, i: int) -> list[Tensor]:
        """A copy of model i's parameters, in its own order."""
        params = list(self.named.values())
        return [params[k].detach()[i].clone() for k in self.index[i]]

    @staticmethod
    @torch.no_grad()
    def write(model: nn.Module, state: list[Tensor]) -> None:
        for param, value in zip(model.parameters(), state):
            param.copy_(value)

    @torch.no_grad()
    def freeze(self, i: int) -> None:
        """Mask model i: from now on `hold` keeps its parameters at their present values."""
        if self.mask is None:
            self.mask = torch.zeros(self.size, dtype=torch.bool, device=self.params[0].device)
            self.frozen = [p.detach().clone() for p in self.params]
        self.mask[i] = True
        for p, kept in zip(self.params, self.frozen):
            kept[i] = p[i]
        self.masks = [self.mask.view(-1, *[1] * (p.dim() - 1)) for p in self.params]

    @torch.no_grad()
    def hold(self) -> None:
        """Put the masked models' parameters back (after an optimizer step)."""
        if self.mask is None:
            return
        for p, kept, mask in zip(self.params, self.frozen, self.masks):
            p.copy_(torch.where(mask, kept, p))


class RowFactors:
    """Per-model values (S,) as per-row values (S * rows,) for a stacked batch; cached per size."""

    def __init__(self, models: int):
        self.models = models
        self.cache: dict[tuple, Tensor] = {}

    def __call__(self, values: Tensor, x: Tensor) -> Tensor:
        """(S * rows, 1, ...): broadcastable against x (S * rows, ...)."""
        key = (id(values), x.shape[0], x.dim())
        out = self.cache.get(key)
        if out is None:
            out = self.cache[key] = values.repeat_interleave(x.shape[0] // self.models).view(-1, *[1] * (x.dim() - 1))
        return out


class StackedLoop:
    """Mixin for a loop whose stacked models run different pass counts (COMBINE, or Tied / COUPLE
    with output "last"): all run the largest, and per pass, per model, the pass's weight in that
    model's output (`pass_weights`: COMBINE's accumulation weights of its own pass count, 0 after
    its last pass; output "last": 1 at its own last pass) enters the mode's `weighted_run`. COUPLE
    copies a model does not use get no gradient; the re-tie averages each model's own copies."""

    pass_weights: tuple[Tensor, ...]
    tie_weights: tuple[Tensor, ...]
    rows: RowFactors

    def run(self, x: Tensor, k: int | None, readout: list | None) -> Tensor:
        # Stacked models have no active dropout (`why_not_batched`), so no masks to pin here.
        if k != len(self.pass_weights):
            raise ValueError(f"this stacked loop trains models with up to {len(self.pass_weights)} passes; it cannot run {k}")
        return self.backprop.weighted_run(self, x, [self.rows(w, x) for w in self.pass_weights], readout)

    @torch.no_grad()
    def retie_(self) -> None:
        """COUPLE: every copy set to the model's own accumulation of its copies (thesis eq 3.2)."""
        if not self.backprop.untied_copies:
            return
        columns = list(zip(*(list(c.parameters()) for c in self.copies)))  # per parameter: its copies
        for tensors in columns:
            tied = None
            for w, t in zip(self.tie_weights, tensors):
                term = w.view(-1, *[1] * (t.dim() - 1)) * t
                tied = term if tied is None else tied.add_(term)
            for t in tensors:
                t.copy_(tied)


class StackedNetwork:
    """Mixin for a Network whose models differ in their "add" skips: a skip's source is added with
    a 0 / 1 factor per model."""

    skip_factors: dict[int, Tensor]
    rows: RowFactors

    def _accumulate(self, target: Tensor, source: Tensor, skip) -> Tensor:
        factor = self.skip_factors.get(id(skip))
        if factor is None:
            return super()._accumulate(target, source, skip)
        if source.shape != target.shape:
            source = source.reshape(target.shape)
        return target + self.rows(factor, target) * source


STACKED_MIXED: dict[tuple[type, type], type] = {}


def _stacked_class(mixin: type, cls: type) -> type:
    """The class `mixin` + `cls` (made once), to which a stacked copy's module is switched."""
    if (mixin, cls) not in STACKED_MIXED:
        STACKED_MIXED[(mixin, cls)] = type(f"Stacked{cls.__name__}", (mixin, cls), {})
    return STACKED_MIXED[(mixin, cls)]


def _varying_loop(model: nn.Module) -> Loop | None:
    """The model's one loop whose pass count may differ between stacked models: its mode
    `stacks_pass_counts` (COMBINE, Tied, COUPLE) and its output is the last pass or combined (None
    without a loop, with several, or with another kind)."""
    loops = [m for m in model.modules() if isinstance(m, Loop)]
    if len(loops) != 1:
        return None
    loop = loops[0]
    return loop if loop.backprop.stacks_pass_counts and loop.output in (None, "last") else None


def pass_weights(loop: Loop, k: int) -> list[float]:
    """Each of k passes' weight in the loop's output: COMBINE's accumulation, else one-hot at the last pass."""
    raw = list(torch.eye(k, dtype=torch.float64))  # pass t's output as the unit vector e_t
    return loop.backprop.output(loop, raw).tolist()  # sum_t w_t e_t (exact: one nonzero term per entry)


def _body_name(name: str) -> str:
    """A COUPLE copy's parameter name as the body's: 'a.couple_copies.2.0.weight' -> 'a.body.0.weight'."""
    head, sep, tail = name.partition("couple_copies.")
    return head + "body." + tail.partition(".")[2] if sep else name


def _parameter_index(model: nn.Module, names: list[str]) -> list[int]:
    """Positions in the template's parameter list `names` of `model`'s parameters, in its order:
    by name where its names are among the template's (COUPLE with fewer copies), else by position."""
    own = [n for n, _ in model.named_parameters()]
    if set(own) <= set(names):
        return [names.index(n) for n in own]
    return list(range(len(own)))


def _add_skips(model: nn.Module) -> list:
    """The Network's skips accumulated by "add" (Skip objects; none for other models)."""
    if not isinstance(model, Network) or not model.skips_enabled:
        return []
    return [s for s in model.skips() if (s.accumulation or model.skip_accumulation) == "add"]


# --- which models stack ----------------------------------------------------------------------


def stack_key(model: nn.Module) -> tuple:
    """What must agree between models to train them as one stack (`fit_many`, the runner's groups).

    A Network's layers, loops and settings, except the pass count of a COMBINE loop with a
    constant grad_scale and which "add" skips it has (both become per-model values in the
    stack), or the pass count of a Tied / COUPLE loop with output "last" (models run the largest
    and read their own pass's output); any other model's full architecture. The key's last element
    names that loop ("" without one): see `merged_keys` for networks without a loop.
    """
    try:
        config = model.config() if isinstance(model, Network) else None
    except ValueError:  # e.g. a grad_scale function: no config
        config = None
    if config is None:
        return ("module", tuple(architecture(model)), "")
    calls, combine = [], ""
    for call in config["calls"]:
        if call["op"] == "connect" and (call.get("accumulation") or config["skip_accumulation"]) == "add":
            continue  # a per-model 0 / 1 factor
        if call["op"] in ("loopback", "feedback") and _passes_may_differ(call) and not combine:
            combine = json.dumps({k: v for k, v in call.items() if k != "unroll"}, sort_keys=True, default=str)
            continue
        calls.append(json.dumps(call, sort_keys=True, default=str))
    params = tuple((tuple(p.shape), str(p.dtype), str(p.device), p.requires_grad)
                   for n, p in model.named_parameters() if "couple_copies." not in n)  # COUPLE copies: per pass count
    loops = tuple(m.probe_unroll for m in model.modules() if isinstance(m, Loop))
    return ("network", json.dumps(config["input_shape"]), config["skip_accumulation"], model.skips_enabled,
            tuple(calls), params, loops if combine == "" else (), combine)


def _passes_may_differ(call: dict) -> bool:
    """Whether a loop call's pass count may differ between stacked models (see `_varying_loop`)."""
    if not call.get("backprop") or call.get("output") not in (None, "last"):
        return False
    try:
        return backprop_from_config(call["backprop"]).stacks_pass_counts
    except ValueError:  # a mode outside loopnets.core.modes.MODES
        return False


def merged_keys(keys: list[tuple]) -> list[tuple]:
    """`keys` with a network without a loop (an FFN: COMBINE with one pass) given the key of the
    COMBINE networks it would stack with, when those are all of one loop and do not scale their
    gradients (grad_scale 1: with another factor one pass is not an FFN); else unchanged."""
    looped: dict[tuple, set] = {}
    for key in keys:
        if key[0] == "network" and key[-1] and json.loads(key[-1])["backprop"] == {**json.loads(key[-1])["backprop"],
                                                                                  "mode": "combine", "grad_scale": 1}:
            looped.setdefault(key[:-2], set()).add(key)  # COMBINE with unscaled gradients: one pass is an FFN
    out = []
    for key in keys:
        partners = looped.get(key[:-2], set()) if key[0] == "network" and not key[-1] else set()
        out.append(next(iter(partners)) if len(partners) == 1 else key)
    return out


def architecture(model: nn.Module) -> list[str]:
    """What must agree between models to stack them: module tree, settings, parameter shapes."""
    lines = [f"{path or '(root)'}: {module.extra_repr() if not isinstance(module, Network) else ''} "
             f"{type(module).__name__}" for path, module in model.named_modules()]
    if isinstance(model, Network):
        lines += repr(model).splitlines()
    lines += [f"parameter {name}: {tuple(p.shape)} {p.dtype} {p.device} requires_grad={p.requires_grad}"
              for name, p in model.named_parameters()]
    for path, module in model.named_modules():
        if isinstance(module, Network):
            lines.append(f"{path}: skips_enabled={module.skips_enabled}")
        if isinstance(module, Loop):
            lines.append(f"{path}: probe_unroll={module.probe_unroll}")
    return lines


def first_difference(a: list[str], b: list[str]) -> str:
    for left, right in zip(a, b):
        if left != right:
            return f"{left.strip()!r} vs {right.strip()!r}"
    return f"{len(a)} vs {len(b)} modules / parameters"
