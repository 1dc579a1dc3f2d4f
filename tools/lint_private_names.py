"""An import-linter contract: no module uses another module's `_`-names.

`from loopnets.core.loop import _helper` and `loop_module._helper` both count; so does an import of
a `_`-module from outside its own package. Dunder names (`__version__`) are public. A helper that a
second module needs is made public where it lives (and documented there) instead.

Configured in pyproject.toml as `type = "private_names"` with `packages = ["loopnets"]`.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


@dataclass(frozen=True)
class Use:
    module: str
    line: int
    name: str  # e.g. "loopnets.core.loop._helper"


def is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def module_file(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec is not None and spec.origin not in (None, "built-in", "frozen") else None


def resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a (possibly relative) `from ... import` source."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def private_uses(module: str, known: set[str], source: str, is_package: bool) -> list[Use]:
    """Every place `module`'s source reaches a `_`-name of another module in `known`."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> module it is bound to
    uses: list[Use] = []

    def foreign(owner: str) -> bool:
        return owner in known and owner != module

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if any(is_private(p) for p in parts) and not a.name.startswith(module.rsplit(".", 1)[0] + "."):
                    uses.append(Use(module, node.lineno, a.name))
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    aliases[parts[0]] = parts[0]
        elif isinstance(node, ast.ImportFrom):
            owner = resolve(module, is_package, node.level, node.module)
            for a in node.names:
                full = f"{owner}.{a.name}"
                if full in known:  # a submodule
                    aliases[a.asname or a.name] = full
                    if is_private(a.name) and not module.startswith(owner + "."):
                        uses.append(Use(module, node.lineno, full))
                elif is_private(a.name) and foreign(owner):
                    uses.append(Use(module, node.lineno, full))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            chain = []
            value: ast.AST = node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                owner = ".".join([aliases[value.id], *reversed(chain)])
                if foreign(owner):
                    uses.append(Use(module, node.lineno, f"{owner}.{node.attr}"))
    return uses


class PrivateNamesContract(Contract):
    type_name = "private_names"
    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        roots = list(self.packages)  # type: ignore[arg-type]
        known = {m for m in graph.modules if any(m == r or m.startswith(r + ".") for r in roots)}
        uses: list[Use] = []
        for module in sorted(known):
            path = module_file(module)
            if path is None or path.suffix != ".py":
                continue
            uses += private_uses(module, known, path.read_text(), path.name == "__init__.py")
        return ContractCheck(kept=not uses, metadata={"uses": uses})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for use in check.metadata["uses"]:
            output.print_error(f"{use.module}:{use.line} uses {use.name}", bold=False)
            output.new_line()
        output.print("Make the name public where it is defined (no leading underscore) and document it there.")
