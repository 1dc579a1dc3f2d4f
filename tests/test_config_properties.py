"""Property (issue 13, class 4): every config is either refused by validation with a ConfigError, or
trains and reports without an exception.

Hypothesis mutates iris-sized bases (the bundled default, configs/lavik/iris.toml,
configs/modes/iris.toml, and Kemmerling's gated autoencoder on iris) at key paths taken from the
bases and from every shipped config (so other families' keys are tried too) plus unknown keys, with
random values of random types: booleans, small / out-of-range / huge integers, nan / inf and other
floats, strings (path-like ones included), lists and tables of these. Half the mutations go
through the `key=value` override parser, as on the command line.

Cheap and deterministic: at most two variants, one seed and one epoch per config (whatever the
mutation asked for, a larger count is cut to these after mutating), `derandomize=True` and no
example database.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from pathlib import Path

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from loopnets.experiments import ConfigError, Experiment, run_experiment, validate
from loopnets.experiments.config import apply_override, from_dict, to_dict
from loopnets.report import build_report

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").rglob("*.toml"))


def _read(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def _gated_on_iris() -> dict:
    raw = _read(ROOT / "configs/kemmerling/feedback.toml")
    raw["data"] = {"name": "iris"}
    raw["model"]["gated"].update(hidden=8, bottleneck=2)
    for key in ("analyses", "noise_sigmas"):  # t-SNE and the noise sweep take seconds
        raw["train"].pop(key)
    raw["variants"] = [{"feedback": "partial", "timesteps": 2}]
    return raw


BASES = {
    "default": to_dict(Experiment()),
    "lavik-iris": _read(ROOT / "configs/lavik/iris.toml"),
    "modes-iris": _read(ROOT / "configs/modes/iris.toml"),
    "gated-iris": _gated_on_iris(),
}


def _paths(node, prefix=()):
    """Every key path of a parsed config: leaves, tables and list items (index as an int)."""
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:2]):
            if isinstance(value, (dict, list)):
                yield from _paths(value, (*prefix, i))


UNKNOWN = [("bogus",), ("train", "bogus"), ("model", "bogus"), ("variants", 0, "bogus"), ("data", "options", "bogus"),
           ("model", "layers", 0, "bogus"), ("train", "optimizer_args", "bogus")]
PATHS = sorted({p for raw in [*BASES.values(), *map(_read, SHIPPED)] for p in _paths(raw)} | set(UNKNOWN), key=str)

SCALARS = st.one_of(
    st.booleans(),
    st.integers(-3, 12),
    st.sampled_from([0, -1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2, 2),
    st.text(max_size=8),
    st.sampled_from(["ffn", "couple", "combine", "tied", "truncated", "implicit", "onestep", "relu", "dense", "conv",
                     "mean", "last", "auto", "adam", "iris", "partial", "../x", "a/b", "", "x" * 120, "café"]),
)

def _leaves(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _leaves(value)
    elif isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
        for value in node:
            yield from _leaves(value)
    else:
        yield node


# values that occur in the shipped configs: plausible settings of the right type for some key
SHIPPED_VALUES = sorted({json.dumps(v) for raw in [*BASES.values(), *map(_read, SHIPPED)] for v in _leaves(raw)
                         if not (isinstance(v, str) and len(v) > 40)})
VALUES = st.one_of(
    st.sampled_from(SHIPPED_VALUES).map(json.loads),
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(["type", "units", "lr", "method", "unroll", "p", "bogus"]), SCALARS, max_size=2),
)
BASE_PATHS = {name: sorted(set(_paths(raw)), key=str) for name, raw in BASES.items()}
SHIPPED_STRINGS = sorted({json.loads(v) for v in SHIPPED_VALUES if isinstance(json.loads(v), str)})


def _get(raw: dict, path: tuple):
    node = raw
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _like(value) -> st.SearchStrategy:
    """A value of the same type as `value`, in or out of range: the mutations that look valid."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.one_of(st.integers(-2, 2 * value + 3), st.sampled_from([0, -1, 2**63, 10**12]))
    if isinstance(value, float):
        return st.one_of(st.floats(-2 * abs(value) - 1, 2 * abs(value) + 1), st.sampled_from([0.0, -1.0, math.inf, math.nan]))
    if isinstance(value, str):
        return st.sampled_from(SHIPPED_STRINGS)
    if isinstance(value, list) and value and not isinstance(value[0], (dict, list)):
        return st.lists(_like(value[0]), min_size=0, max_size=len(value) + 1)
    return VALUES


@st.composite
def mutations(draw, base: str):
    """1-3 (path, value, through the key=value parser?) for `base`: mostly its own keys with values
    of their own type (3 in 4), else any shipped config's keys or unknown keys with any value."""
    mostly = st.sampled_from([True, True, True, False])
    out = []
    for _ in range(draw(st.sampled_from([1, 1, 2, 3]))):
        path = draw(st.sampled_from(BASE_PATHS[base]) if draw(mostly) else st.sampled_from(PATHS))
        current = _get(BASES[base], path)
        value = draw(_like(current) if current is not None and draw(mostly) else VALUES)
        out.append((path, value, draw(st.booleans())))
    return out


def _toml(value) -> str:
    """A TOML literal of a generated value, for a key=value override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def _set(raw: dict, path: tuple, value) -> None:
    """Set `path` in the parsed config (creating tables on the way; a path through a list item
    that is not there, or through a value that is no container, is left alone)."""
    node = raw
    for part in path[:-1]:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return
            node = node[part]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            return
    last = path[-1]
    if isinstance(last, int):
        if isinstance(node, list) and last < len(node):
            node[last] = value
    elif isinstance(node, dict):
        node[last] = value


def _tiny(raw: dict) -> None:
    """One epoch, one seed, at most two variants: where a mutation asked for more, cut it."""
    train = raw.get("train")
    if isinstance(train, dict):
        if isinstance(train.get("epochs"), int) and not isinstance(train["epochs"], bool) and train["epochs"] > 1:
            train["epochs"] = 1
        if isinstance(train.get("seeds"), list):
            train["seeds"] = train["seeds"][:1]
        else:
            train.setdefault("seeds", [0])
    if isinstance(raw.get("variants"), list):
        raw["variants"] = raw["variants"][:2]


def _prepare(base: str, mutations) -> tuple[dict, list[str]]:
    raw = json.loads(json.dumps(BASES[base]))  # a deep copy
    raw.setdefault("train", {}).update(epochs=1, seeds=[0])
    if isinstance(raw.get("variants"), list):
        raw["variants"] = raw["variants"][:2]
    overrides = []
    for path, value, as_override in mutations:
        if as_override and not any(isinstance(p, int) for p in path):
            overrides.append(f"{'.'.join(path)}={_toml(value)}")
        else:
            _set(raw, path, value)
    return raw, overrides


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), base=st.sampled_from(sorted(BASES)))
def test_mutated_config_is_refused_or_trains_and_reports(data, base):
    raw, overrides = _prepare(base, data.draw(mutations(base)))
    try:
        for item in overrides:
            apply_override(raw, item)
        _tiny(raw)
        exp = from_dict(raw)
        validate(exp)
    except ConfigError as err:
        assert str(err).strip()  # refused, with a message
        event("refused")
        return
    event("trains")
    with tempfile.TemporaryDirectory() as runs, warnings.catch_warnings():
        # A config that validates may still train badly (a diverged run is recorded, an implicit
        # solve may not converge): warnings are reported to the user, not failures of this property.
        warnings.simplefilter("ignore")
        folder = run_experiment(exp, runs, progress=False, log=lambda line: None)
        report = build_report(folder)
        assert (report / "report.html").is_file()
        assert sorted(p.parent.parent.name for p in Path(folder).glob("*/seed=*/summary.json"))  # runs written


def test_the_bases_themselves_train_tiny():
    # The property's bases validate (so mutations start from configs that train).
    for name in BASES:
        raw, _ = _prepare(name, [])
        assert validate(from_dict(raw)), name
