"""The config schema's type checks: frozen dataclasses of settings, validated by pydantic v2.

Each section of the schema is a frozen dataclass (defaults in one place, readable as plain
Python); `check_fields(cls, raw, prefix)` validates plain data (parsed TOML) against it with a
pydantic model made from its fields (strict, extra="forbid", finite floats, 64-bit integers), and
turns pydantic's errors into messages that name the key, list the valid keys (with a
did-you-mean) and say how to fix the value, recursing into sub-tables that are dataclasses. The config (`loopnets.experiments.config`) and every model family's schema
(`loopnets.experiments.families`) use it, so one set of rules holds for all keys: true / false
are never numbers, integers fit in 64 bits, floats are finite, list elements have their type.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from typing import Annotated, Any, Callable, Literal, Union

import pydantic


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
    """The fields of dataclass `cls` from `raw`, every value validated by pydantic against its type hint.

    The rules (`_pydantic`): strict types, choices as `Literal`s, so true / false are never numbers (Python's bool is an
    int; TOML keeps them apart), integers fit in 64 bits (TOML's own range), floats are finite
    (an integer is taken as a float), list elements have their declared type. Lists and tables of
    free-form settings (optimizer_args, backprop_args, data.options, model.layers) may not mix
    true / false with numbers in one list, nor hold nan / inf. Pydantic's errors become messages
    that name the key (`config key model.gated.eta`), the valid keys and how to fix the value.

    Args:
        prefix: the table's key path with a trailing dot ("model.gated."), "" at the top.
        passthrough: keys returned unchecked (tables the caller checks itself).
        unknown_hint: (prefix, key) -> more words for an unknown key (e.g. which family has it), said
            instead of the did-you-mean; "" for none.
    """
    try:
        checked = _pydantic(cls).model_validate(raw)
    except pydantic.ValidationError as err:
        raise _refusal(cls, raw, prefix, err.errors(), unknown_hint) from None
    hints = typing.get_type_hints(cls)
    out = {}
    for key in raw:
        value = raw[key] if key in passthrough else getattr(checked, key)
        if key not in passthrough and dataclasses.is_dataclass(hints[key]):  # a sub-table, e.g. [model.gated]
            sub = hints[key]
            value = sub(**check_fields(sub, table(value, prefix + key), f"{prefix}{key}.", (), unknown_hint))
        elif key not in passthrough and isinstance(value, (list, dict)):
            bad = _free_form_fault(value)
            if bad is not None:
                raise ConfigError(f"config key {prefix}{key}{bad[0]}: {bad[1]}")
        out[key] = value
    return out


INT64 = Annotated[int, pydantic.Field(ge=-(2**63), lt=2**63)]  # TOML's integers; torch indexes with int64 too


def _rules(hint: Any) -> Any:
    """A schema type hint with its integers made 64-bit (pydantic's are unbounded)."""
    if hint is int:
        return INT64
    if typing.get_origin(hint) in (Union, types.UnionType):
        return Union[tuple(_rules(option) for option in typing.get_args(hint))]
    if typing.get_origin(hint) is list:
        return list[_rules(typing.get_args(hint)[0])]
    return hint


@functools.lru_cache(maxsize=None)
def _pydantic(cls: type) -> type[pydantic.BaseModel]:
    """The pydantic model of a schema dataclass: its fields, strict, no other keys, finite floats.
    Sub-tables (dataclass fields) are checked by `check_fields` itself, so their errors name their path."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: (Any if dataclasses.is_dataclass(hints[f.name]) else _rules(hints[f.name]), None)
              for f in dataclasses.fields(cls)}
    config = pydantic.ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, protected_namespaces=())
    return pydantic.create_model(f"{cls.__name__}Schema", __config__=config, **fields)


def _refusal(cls: type, raw: dict, prefix: str, errors: list[dict], unknown_hint: Callable) -> ConfigError:
    """Pydantic's first error as today's message: the key's path, what it must be, and how to fix it."""
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, valid, n=1)
        hint = unknown_hint(prefix, key) or (f"; did you mean {prefix}{close[0]}?" if close else "")
        return ConfigError(f"unknown config key {prefix}{key}; valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: "
                           f"{', '.join(valid)}{hint}")
    key = errors[0]["loc"][0]
    mine = [e for e in errors if e["loc"][0] == key]
    hint, value, path = typing.get_type_hints(cls)[key], raw[key], f"{prefix}{key}"
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    for e in mine:  # an integer beyond 64 bits
        if e["type"] in ("greater_than_equal", "less_than"):
            where = path + "".join(f"[{part}]" for part in e["loc"][1:] if isinstance(part, int))
            return ConfigError(f"config key {where} = {e['input']} is out of range: TOML's integers are 64-bit "
                               f"(-2^63 .. 2^63 - 1), and no setting needs a number that large")
    if typing.get_origin(hint) is Literal:  # a choice: name them
        return ConfigError(f"config key {path} = {value!r} is not one of {', '.join(map(str, typing.get_args(hint)))}")
    lists = [o for o in options if typing.get_origin(o) is list]
    for e in mine:  # name the element at fault, e.g. model.loop[0]
        index = next((part for part in e["loc"][1:] if isinstance(part, int)), None)
        if index is not None and lists:
            (element,) = typing.get_args(lists[0])
            item = value[index]
            return ConfigError(f"config key {path}[{index}] must be {_type_name(element)}; got "
                               f"{described(item)}{fix(item, element)}")
    names = " or ".join(_type_name(o) for o in options)
    return ConfigError(f"config key {path} must be {names}; got {described(value)}"
                       f"{fix(value, next((o for o in options if o in (int, float)), options[0]))}")


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
    if typing.get_origin(option) is Literal:
        return f"one of {', '.join(map(str, typing.get_args(option)))}"
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

