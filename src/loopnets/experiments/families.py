"""Model families as plugins: a registry of `Family` objects, found by name.

A family is one paper's kind of model (the thesis's loop networks, Kemmerling's gated
autoencoder, Caswell's loopy CNNs, Hershey's iterative networks). Its `Family` object owns
everything the config, the runner and the report need to know about it:

  - its config schema: the `[model.<table>]` settings (`settings`), the keys of one `[[variants]]`
    table (`variant_keys`), extra `[train]` keys (`train_keys`), and its checks (`check`);
  - variant expansion (`expand`): the `[[variants]]` tables -> expanded variants, each a frozen
    dataclass with `name`, `method`, `unroll`, `has_loop`, `has_skip`, `described()`, `table()`;
  - building a variant's model (`build_model`) and its extra results (`extra_results`), or a
    whole run of its own (`train_run`);
  - its report section (`report_section`, `report_results`).

`model.family = "<name>"` picks one. The built-in families live in `loopnets.models.<fam>.family`
and are imported on first use from the dotted paths in BUILTIN (this layer sits below
`loopnets.models`, so it never imports them statically). Other packages add families with
`register(family)`, or through the entry-point group "loopnets.families" (an entry point's
object is a Family), loaded with the built-ins. A family registered only by `register()` in the
driver is unknown to `--workers` processes started fresh and to Ray workers: ship it as an entry
point (or import its module where the workers start) to train it there.

Adding a family: a package `loopnets.models.<fam>/` with its model code and a `family.py` whose
`FAMILY = register(MyFamily())` subclasses `Family` (schema dataclasses, `check`, `expand`,
`build_model`, optionally its extra results and report section), and an entry in BUILTIN (or an
entry point). `tests/test_family_plugin.py` defines a whole family in one test file.
"""

from __future__ import annotations

import difflib
import importlib
from importlib import metadata
from typing import Any

DEFAULT = "lavik"  # model.family when a config does not say
ENTRY_POINTS = "loopnets.families"
BUILTIN = {  # family name -> "module:attribute" of its Family object
    "lavik": "loopnets.models.lavik.family:FAMILY",
    "gated_autoencoder": "loopnets.models.gated.family:FAMILY",
    "loopy_cnn": "loopnets.models.loopy.family:FAMILY",
    "inn": "loopnets.models.inn.family:FAMILY",
    "thinking": "loopnets.models.thinking.family:FAMILY",
}


class UnknownFamily(KeyError):
    """No family of that name is registered; the message names the known ones."""

    def __str__(self) -> str:
        return self.args[0]


class Family:
    """What the config, the runner and the report ask of a model family. Subclass and override.

    Class attributes:
        name: the `model.family` value.
        table: the name of its `[model.<table>]` settings table; None: its settings are `[model]`'s
            own keys (the default family's layers / loop / ...).
        settings: a frozen dataclass of those settings, every default in it.
        variant_keys: a frozen dataclass of one `[[variants]]` table (lists allowed where the
            family expands them; include `name`).
        train_keys: a frozen dataclass of `[train]` keys only this family takes, or None.
        analyses: the names `train.analyses` may list (empty: the family has none).
        variants_example: a `[[variants]]` line shown when a config of this family lists none.
        gathers_own_figures: the report section gathers the runs' PNGs itself (the report's
            generic per-variant figure gallery skips this family's variants).
        figure_captions: {file name prefix: caption} of the PNGs its runs write (`{layer}`: the rest
            of the file name), for the report's gallery.
        label_by_name: the report labels variants by their folder name (named by their settings
            already) instead of the method's thesis name.
    """

    name: str = ""
    table: str | None = None
    settings: type = type(None)
    variant_keys: type = type(None)
    train_keys: type | None = None
    analyses: tuple[str, ...] = ()
    variants_example: str = ""
    gathers_own_figures: bool = False
    figure_captions: dict[str, str] = {}
    label_by_name: bool = False

    # --- config -----------------------------------------------------------------------------

    def default_variants(self) -> list | None:
        """The `[[variants]]` tables (`variant_keys` instances) of a config that lists none; None:
        the config must list its own."""
        return None

    def check(self, exp: Any) -> None:
        """Check the family's settings and the variants' values (raise ConfigError naming the key)."""

    def expand(self, exp: Any) -> list:
        """Every variant the experiment trains, in config order."""
        raise NotImplementedError(f"family {self.name!r} does not expand its variants")

    # --- running ------------------------------------------------------------------------------

    def load_split(self, exp: Any, split: Any) -> Any:
        """The data a run trains on, from the experiment's loaded split (e.g. X -> X for an autoencoder)."""
        return split

    def build_model(self, exp: Any, variant: Any, split: Any) -> Any:
        """The variant's network for `split`; errors are ConfigErrors naming the config key at fault."""
        raise NotImplementedError(f"family {self.name!r} does not build models")

    def validate(self, exp: Any) -> list | None:
        """Check what the runner cannot (own data, own training) and return the variants; None: the
        runner's checks apply (load the data, check the loss, build every variant)."""
        return None

    def prepare(self, exp: Any) -> bool:
        """Load or generate the family's own data before any run folder is written; False: the
        runner loads the experiment's data set itself."""
        return False

    def data_facts(self, exp: Any) -> dict | None:
        """The validation set's size and chance levels when the family's own data is not a Split
        (keys as `docs/reproductions/collect.py` writes them); None: computed from the loaded Split."""
        return None

    def memory_estimates(self, exp: Any) -> list | None:
        """[(variant, `budget.Estimate`)] without building anything; None: the runner builds each
        variant on the meta device to estimate it."""
        return None

    def train_run(self, exp: Any, variant: Any, seed: int, experiment: dict, started: float,
                  engine: dict) -> dict[str, bytes] | None:
        """A run's folder files when the family trains its own way; None: the runner's `fit` path."""
        return None

    def fit_settings(self, variant: Any) -> dict:
        """Extra keyword arguments of `ln.fit` for this variant (e.g. deep supervision)."""
        return {}

    def groupable(self, variant: Any) -> bool:
        """Whether the variant's seeds may train as one stacked model (`ln.fit_many`)."""
        return False

    def saves_architecture(self, model: Any) -> bool:
        """Whether model.lnet can hold the architecture (the model has `config()`), not only weights."""
        return False

    def extra_results(self, exp: Any, variant: Any, model: Any, split: Any, loss: str,
                      seed: int) -> tuple[dict | None, dict[str, bytes]]:
        """summary.json's `extra` for a finished run (None: no extra) and extra run files (PNGs)."""
        return None, {}

    def summary_extras(self, exp: Any, variant: Any, model: Any, split: Any, loss: str, finished: bool) -> dict:
        """More summary.json keys for a run (`finished`: else it diverged), e.g. a modes comparison."""
        return {}

    # --- report -------------------------------------------------------------------------------

    def report_section(self, experiment: Any, out: Any) -> list:
        """(heading, table or figure, caption) items the report adds for this family's variants;
        writes its figures into `out`."""
        return []

    def report_results(self, experiment: Any) -> dict | None:
        """Keys the report adds to results.json beside its section (when the section has items); None: none."""
        return None

    def variant_results(self, variant: Any) -> dict:
        """Keys the report adds to one variant's entry in results.json."""
        return {}


_REGISTERED: dict[str, Family] = {}
_LOADED = False


def register(family: Family) -> Family:
    """Add `family` (replacing one of the same name); returns it, so it can decorate an instance."""
    if not isinstance(family, Family) or not isinstance(family.name, str) or not family.name:
        raise TypeError(f"register() takes a Family instance with a name; got {family!r}")
    _REGISTERED[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove a registered family (for tests and plugins that replace one); a missing name is ignored."""
    _REGISTERED.pop(name, None)


def _load(path: str) -> Family:
    module, _, attribute = path.partition(":")
    family = getattr(importlib.import_module(module), attribute)
    if not isinstance(family, Family):
        raise TypeError(f"{path} is not a loopnets.experiments.families.Family")
    return family


def _load_all() -> None:
    """Import the built-ins and the entry points once (a registered family of the same name wins)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    found = dict(BUILTIN)
    for point in metadata.entry_points(group=ENTRY_POINTS):
        found.setdefault(point.name, point.value)
    for name, path in found.items():
        if name not in _REGISTERED:
            _REGISTERED[name] = _load(path)


def names() -> list[str]:
    """The registered families' names: the built-ins first, then the others in registration order."""
    _load_all()
    return [*[n for n in BUILTIN if n in _REGISTERED], *[n for n in _REGISTERED if n not in BUILTIN]]


def get(name: str) -> Family:
    """The family called `name`. Raises UnknownFamily naming the known families."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    _load_all()
    if name in _REGISTERED:
        return _REGISTERED[name]
    close = difflib.get_close_matches(str(name), names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownFamily(f"{name!r} is not one of {', '.join(names())}{hint}; a family from another package "
                        f"registers with loopnets.experiments.families.register() or the entry-point group "
                        f"{ENTRY_POINTS!r}")


def owners(section: str, key: str) -> list[str]:
    """The families whose schema has `key` in `section` ("model", "train", "variants")."""
    import dataclasses

    out = []
    for name in names():
        family = _REGISTERED[name]
        if section == "model":
            fields = [family.table] if family.table else [f.name for f in dataclasses.fields(family.settings)]
        elif section == "train":
            fields = [f.name for f in dataclasses.fields(family.train_keys)] if family.train_keys else []
        else:
            fields = [f.name for f in dataclasses.fields(family.variant_keys) if f.name != "name"]
        if key in fields:
            out.append(name)
    return out
