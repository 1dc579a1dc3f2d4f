"""A Network's description: its JSON config (to save it and rebuild it) and its printed summary.

`NetworkDescription` is a mixin of `loopnets.builder.network.Network` (which it describes through
the builder's own records: the builder calls it replays, its layers, units, spans and skips);
it lives here so that network.py holds the building and running only.
"""

from __future__ import annotations

import inspect
from typing import Sequence

from torch import nn

from loopnets.builder import layers
from loopnets.core.loop import Loop
from loopnets.core.modes import backprop_from_config

OPS = ("dense", "conv", "deconv", "maxpool", "dropout", "connect", "loopback", "feedback")


class NetworkDescription:
    """Mixin: `config`, `from_config` and the summary `repr` of a `Network`."""

    # -- config -----------------------------------------------------------------------------

    def config(self) -> dict:
        """JSON-able description: input shape, skip accumulation and the builder calls in order."""
        calls = []
        for op, args in self._calls:
            if "spec" in args:
                spec_cfg = args["spec"].config()
                del spec_cfg["kind"]
                calls.append({"op": op, **spec_cfg})
            else:
                calls.append({"op": op, **{k: to_json(v) for k, v in args.items()}})
        return {"input_shape": list(self.input_shape), "skip_accumulation": self.skip_accumulation, "calls": calls}

    @classmethod
    def from_config(cls, cfg: dict) -> "NetworkDescription":
        """Rebuild a network from `config()` by replaying its builder calls."""
        if not isinstance(cfg, dict):
            raise ValueError(f"a Network config is a dict; got {type(cfg).__name__}")
        check_keys("Network config", cfg, ("input_shape", "skip_accumulation", "calls"), required=("input_shape",))
        net = cls(**{k: v for k, v in cfg.items() if k != "calls"})
        calls = cfg.get("calls", [])
        if not isinstance(calls, list):
            raise ValueError(f"Network config: calls must be a list of builder calls; got {type(calls).__name__}")
        for n, call in enumerate(calls):
            if not isinstance(call, dict) or call.get("op") not in OPS:
                op = call.get("op") if isinstance(call, dict) else call
                raise ValueError(f"Network config call {n}: unknown op {op!r}; choose one of {', '.join(OPS)}")
            method = getattr(net, call["op"])
            params = [p for p in inspect.signature(method).parameters]
            check_keys(f"Network config call {n} ({call['op']})", call, ("op", *params))
            args = {k: v for k, v in call.items() if k != "op"}
            if args.get("backprop") is not None:
                args["backprop"] = backprop_from_config(args["backprop"])
            if "specs" in args:
                if not isinstance(args["specs"], list):
                    raise ValueError(f"Network config call {n} (feedback): specs must be a list of layer configs")
                args["specs"] = [layers.spec_from_config(s) for s in args["specs"]]
            method(**args)
        return net

    # -- printing ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        head = f"Network(input_shape={self.input_shape}, skip_accumulation={self.skip_accumulation!r})"
        rows = [("#", "layer", "input", "output", "activation", "params")]
        compact = 0
        for i, layer in enumerate(self._layers):
            body = layer.module.body if isinstance(layer.module, Loop) else layer.module
            count = count_parameters(body)
            compact += count
            act = "-" if layer.kind in ("dropout",) or layer.kind.startswith("maxpool") else layer.activation
            rows.append((str(i), layer.label, str(layer.in_shape), str(layer.out_shape), act, f"{count:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = [head]
        for r in rows:
            cells = [r[c].rjust(widths[c]) if c in (0, 5) else r[c].ljust(widths[c]) for c in range(len(r))]
            lines.append("  " + "  ".join(cells).rstrip())
        extra = 0
        if self.loops():
            lines.append("loops:")
            for unit, (first, last) in zip(self.units, self._spans):
                if not isinstance(unit, Loop):
                    continue
                where = f"feedback block, layer {first}" if self._layers[first].kind == "feedback" else (
                    f"loopback {last} -> {first} (layers {first}..{last})"
                )
                copies = count_parameters(unit) - count_parameters(unit.body)
                extra += copies
                note = f"; COUPLE trains {len(unit.copies)} copies ({copies:,} parameters beyond the compact body)" if copies else ""
                lines.append(
                    f"  {where}: unroll {unit.unroll}, {unit.backprop}, merge {unit.merge}, "
                    f"output {unit.output or unit.backprop.default_output}{note}"
                )
        if self._skips:
            lines.append("skips:" + ("" if self.skips_enabled else " (disabled)"))
            for s in self._skips:
                lines.append(f"  input of {s.source} -> input of {s.target} ({s.accumulation or self.skip_accumulation})")
        total = f"total parameters: {compact:,}"
        if extra:
            total += f" compact ({compact + extra:,} in parameters() with the COUPLE copies)"
        lines.append(total)
        return "\n".join(lines)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_keys(what: str, cfg: dict, valid: Sequence[str], required: Sequence[str] = ()) -> None:
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise ValueError(f"{what}: unknown keys {unknown}; valid keys: {', '.join(valid)}")
    missing = [k for k in required if k not in cfg]
    if missing:
        raise ValueError(f"{what}: missing keys {missing}; valid keys: {', '.join(valid)}")


def to_json(value):
    if isinstance(value, layers.SPEC_TYPES):
        return value.config()
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "config") and callable(value.config):
        return value.config()  # a backprop mode
    return value
