"""The config schema's type checks: frozen dataclasses of settings, checked against plain data (parsed TOML).

`check_fields(cls, raw, prefix)` refuses unknown keys (listing the valid ones, with a did-you-mean)
and checks every value against the field's type hint (`coerce`), recursing into sub-tables that
are dataclasses. The config (`loopnets.experiments.config`) and every model family's schema
(`loopnets.experiments.families`) use it, so one set of rules holds for all keys: true / false
are never numbers, integers fit in 64 bits, floats are finite, list elements have their type.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Callable, Union


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type or an impossible value; says how to fix it."""


def did_you_mean(word: str, choices) -> str:
    """" (did you mean 'x'?)" for the closest of `choices`, or ""."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def choose(key: str, value: Any, valid: tuple) -> None:
    """Refuse a value that is not one of `valid`, listing them."""
    if value not in valid:
        raise ConfigError(f"config key {key} = {value!r} is not one of {', '.join(map(str, valid))}")


def at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"config key {key} must be >= {low}; got {value}")


def table(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table; got {type(value).__name__} {value!r}")
    return value


def check_fields(cls: type, raw: dict, prefix: str, passthrough: tuple = (),
                 unknown_hint: Callable[[str, str], str] = lambda prefix, key: "") -> dict:
    """The fields of dataclass `cls` from `raw`, every value checked against its type hint.

    Args:
        prefix: the table's key path with a trailing dot ("model.gated."), "" at the top.
        passthrough: keys returned unchecked (tables the caller checks itself).
        unknown_hint: (prefix, key) -> more words for an unknown key (e.g. which family has it), said
            instead of the did-you-mean; "" for none.
    """
    valid = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(valid), n=1)
        hint = unknown_hint(prefix, key) or (f"; did you mean {prefix}{close[0]}?" if close else "")
        raise ConfigError(
            f"unknown config key {prefix}{key}; valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: "
            f"{', '.join(valid)}{hint}"
        )
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in raw.items():
        if key in passthrough:
            out[key] = value
            continue
        if dataclasses.is_dataclass(hints[key]):  # a sub-table, e.g. [model.gated]
            sub = hints[key]
            out[key] = sub(**check_fields(sub, table(value, prefix + key), f"{prefix}{key}.", (), unknown_hint))
            continue
        out[key] = coerce(value, hints[key], prefix + key)
    return out


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint (int, float, str, bool, list, list[X], dict, unions of
    these): the one place where types are checked, for every field of the schema.

    true / false are never numbers (TOML keeps them apart; Python's bool is an int, so it is
    refused explicitly), integers fit in 64 bits (TOML's own range), floats are finite, and list
    elements have their declared type. Lists and
    tables of free-form settings (optimizer_args, backprop_args, data.options, model.layers, the
    families' tables) may not mix true / false with numbers in one list, nor hold nan / inf.
    """
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    for option in options:
        ok, out = _match(value, option)
        if ok:
            return out
    for option in options:  # name the element at fault, e.g. model.loop[0]
        if typing.get_origin(option) is list and isinstance(value, list):
            (element,) = typing.get_args(option)
            for i, item in enumerate(value):
                if not _match(item, element)[0]:
                    refuse_huge_int(f"{key}[{i}]", item, element)
                    raise ConfigError(f"config key {key}[{i}] must be {_type_name(element)}; got "
                                      f"{described(item)}{fix(item, element)}")
    if int in options:
        refuse_huge_int(key, value, int)
    bad = _free_form_fault(value) if isinstance(value, (list, dict)) else None
    if bad is not None:
        where, problem = bad
        raise ConfigError(f"config key {key}{where}: {problem}")
    names = " or ".join(_type_name(o) for o in options)
    raise ConfigError(f"config key {key} must be {names}; got {described(value)}"
                      f"{fix(value, next((o for o in options if o in (int, float)), options[0]))}")


def refuse_huge_int(key: str, value: Any, wanted: Any) -> None:
    if wanted is int and isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise ConfigError(f"config key {key} = {value} is out of range: TOML's integers are 64-bit "
                          f"(-2^63 .. 2^63 - 1), and no setting needs a number that large")


def _match(value: Any, option: Any) -> tuple[bool, Any]:
    """(whether `value` fits the type `option`, the value to keep)."""
    if option is type(None):
        return value is None, None
    if option is bool:
        return isinstance(value, bool), value
    if option is int:  # TOML's integers are 64-bit; torch indexes with int64 too
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63, value
    if option is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else None
    if option is str:
        return isinstance(value, str), value
    if option in (list, dict):
        return isinstance(value, option) and _free_form_fault(value) is None, value
    if typing.get_origin(option) is list:
        (element,) = typing.get_args(option)
        return isinstance(value, list) and all(_match(item, element)[0] for item in value), value
    raise TypeError(f"config schema: unsupported type hint {option!r}")  # a bug in a dataclass of this package


def _free_form_fault(value: Any, where: str = "") -> tuple[str, str] | None:
    """The first place in a free-form list / table that later stages cannot read: a list mixing
    true / false with numbers, or a nan / inf."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, f"{value} is not allowed; give a finite number"
    if isinstance(value, dict):
        items = [(f"{where}.{k}", v) for k, v in value.items()]
    elif isinstance(value, list):
        bools = [v for v in value if isinstance(v, bool)]
        numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if bools and numbers:
            return where, (f"the list {value!r} mixes true / false with numbers; true / false are not numbers "
                           f"(write 1 or 0 if a number is meant)")
        items = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    for inner, item in items:
        bad = _free_form_fault(item, inner)
        if bad is not None:
            return bad
    return None


def _type_name(option: Any) -> str:
    if option is type(None):
        return "none"
    if typing.get_origin(option) is list:
        return f"list of {_type_name(typing.get_args(option)[0])}"
    return getattr(option, "__name__", str(option))


def described(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def fix(value: Any, wanted: Any) -> str:
    """How to fix a value of the wrong type, where there is a clear way."""
    if isinstance(value, bool) and wanted in (int, float):
        return f" (true / false are not numbers; write {int(value)} if you mean the number {int(value)})"
    if isinstance(value, float) and not math.isfinite(value):
        return " (nan and inf are not allowed; give a finite number)"
    if isinstance(value, float) and wanted is int and value.is_integer():
        return f" (write {int(value)} without the decimal point)"
    if wanted is bool and value in (0, 1) and not isinstance(value, bool):
        return f" (write {'true' if value else 'false'})"
    if isinstance(value, str) and wanted in (int, float):
        return " (write the number without quotes)"
    return ""

