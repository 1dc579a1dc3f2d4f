"""Issue 16, item 4: a model family is a plugin. A toy family defined here, registered with
`register`, is validated, trained by `loopnets run`, and reported, with no change to the package;
without its registration its config is an error naming it and the known families."""

import json
from dataclasses import dataclass
from typing import Union

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from loopnets.cli import main
from loopnets.experiments import ConfigError, expand_variants, families, load_config
from loopnets.experiments.config import from_dict
from loopnets.experiments.families import Family, register
from loopnets.experiments.schema import choose
from loopnets.report.figures import FigureFile


@dataclass(frozen=True)
class ToySettings:
    """[model.toy]: a plain MLP."""

    hidden: int = 6
    activation: str = "relu"


@dataclass(frozen=True)
class ToyVariantKeys:
    depth: Union[int, list[int]] = 1  # hidden layers; a list expands
    name: Union[str, None] = None


@dataclass(frozen=True)
class ToyVariant:
    name: str
    depth: int

    method = "toy"
    has_skip = False
    has_loop = False
    unroll = 1

    def described(self) -> dict:
        return {"method": self.method, "unroll": 1, "skip": False, "family": "toy", "depth": self.depth}

    def table(self) -> dict:
        return {"name": self.name, "depth": self.depth}


class Toy(Family):
    name = "toy"
    table = "toy"
    settings = ToySettings
    variant_keys = ToyVariantKeys
    variants_example = "depth = [1, 2]"

    def check(self, exp) -> None:
        choose("model.toy.activation", exp.model.toy.activation, ("relu", "tanh"))
        for i, v in enumerate(exp.variants):
            for depth in v.depth if isinstance(v.depth, list) else [v.depth]:
                if depth < 1:
                    raise ConfigError(f"config key variants[{i}].depth must be >= 1; got {depth}")

    def expand(self, exp) -> list:
        out = []
        for v in exp.variants:
            for depth in v.depth if isinstance(v.depth, list) else [v.depth]:
                out.append(ToyVariant(v.name or f"toy-d{depth}", depth))
        return out

    def build_model(self, exp, variant, split):
        width, act = exp.model.toy.hidden, {"relu": nn.ReLU, "tanh": nn.Tanh}[exp.model.toy.activation]
        layers, inputs = [], split.input_shape[0]
        for _ in range(variant.depth):
            layers += [nn.Linear(inputs, width), act()]
            inputs = width
        return nn.Sequential(*layers, nn.Linear(inputs, split.outputs))

    def extra_results(self, exp, variant, model, split, loss, seed):
        norm = float(sum(p.detach().pow(2).sum() for p in model.parameters()).sqrt())
        return {"weight_norm": norm}, {}

    def report_section(self, experiment, out) -> list:
        toy = [v for v in experiment.variants if v.model_family == self.name]
        norms = [[r.summary["extra"]["weight_norm"] for r in v.finished] for v in toy]
        fig = Figure()
        fig.add_subplot().bar([v.name for v in toy], [sum(n) / len(n) for n in norms])
        fig.savefig(out / "toy_norms.png")
        return [("Toy weight norms", FigureFile("toy_norms.png", ""), "mean weight norm per variant")]

    def report_results(self, experiment) -> dict:
        return {"toy": {v.name: [r.summary["extra"]["weight_norm"] for r in v.finished] for v in experiment.variants}}


CONFIG = """
name = "toyexp"
[data]
name = "iris"
[model]
family = "toy"
[model.toy]
hidden = 5
[train]
epochs = 2
seeds = [0]
[[variants]]
depth = [1, 2]
"""


@pytest.fixture
def toy():
    family = register(Toy())
    yield family
    families.unregister("toy")


def test_a_registered_family_runs_end_to_end_and_is_reported(toy, tmp_path):
    config = tmp_path / "toy.toml"
    config.write_text(CONFIG)
    assert "toy" in families.names() and families.get("toy") is toy
    assert [v.name for v in expand_variants(load_config(config))] == ["toy-d1", "toy-d2"]
    assert main(["run", str(config), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    root = tmp_path / "runs" / "toyexp"
    summary = json.loads((root / "toy-d2" / "seed=0" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["family"] == "toy" and summary["depth"] == 2
    assert summary["extra"]["weight_norm"] > 0
    # the runner built the family's model: 4 -> 5 -> 5 -> 3 with biases
    assert summary["parameters"] == (4 * 5 + 5) + (5 * 5 + 5) + (5 * 3 + 3)
    assert summary["probes"]["original"]["accuracy"] is not None
    # the run's own config reproduces it: the family's keys only
    run_config = (root / "toy-d2" / "seed=0" / "config.toml").read_text()
    assert "[model.toy]" in run_config and "method" not in run_config and "layers" not in run_config
    report = root / "report"
    assert (report / "toy_norms.png").is_file() and "Toy weight norms" in (report / "report.md").read_text()
    results = json.loads((report / "results.json").read_text())
    assert results["toy"]["toy-d1"] == [pytest.approx(json.loads(
        (root / "toy-d1" / "seed=0" / "summary.json").read_text())["extra"]["weight_norm"])]


@pytest.mark.parametrize("change,words", [
    ({"model": {"family": "toy", "toy": {"hiden": 3}}},
     ["unknown config key model.toy.hiden", "valid keys in model.toy: hidden, activation", "did you mean model.toy.hidden?"]),
    ({"model": {"family": "toy", "toy": {"hidden": True}}}, ["model.toy.hidden must be int", "true / false are not numbers"]),
    ({"model": {"family": "toy", "toy": {"activation": "gelu"}}}, ["model.toy.activation = 'gelu' is not one of relu, tanh"]),
    ({"variants": [{"depth": 0}]}, ["variants[0].depth must be >= 1"]),
    ({"variants": [{"depth": [1, "2"]}]}, ["variants[0].depth[1] must be int"]),
    ({"variants": [{"method": "couple"}]},
     ["unknown config key variants[0].method", "valid keys in variants[0]: depth, name",
      "applies only to model.family = 'lavik'", "this experiment's family is 'toy'"]),
    ({"model": {"family": "toy", "layers": []}}, ["unknown config key model.layers", "applies only to model.family = 'lavik'"]),
    ({"model": {"family": "toy"}, "variants": None}, ["model.family = 'toy' needs its own [[variants]]", "depth = [1, 2]"]),
])
def test_a_registered_family_has_its_keys_validated(toy, change, words):
    raw = {"model": {"family": "toy"}, "variants": [{"depth": 1}], **change}
    if raw["variants"] is None:
        del raw["variants"]
    with pytest.raises(ConfigError) as err:
        from_dict(raw)
    for word in words:
        assert word in str(err.value)


def test_a_toy_key_is_unknown_to_the_other_families(toy):
    with pytest.raises(ConfigError, match=r"variants\[0\]\.depth applies only to model.family = 'toy'; "
                                          r"this experiment's family is 'lavik'"):
        from_dict({"variants": [{"method": "ffn", "depth": 2}]})


def test_without_its_registration_the_config_names_the_family_and_the_known_ones(tmp_path):
    config = tmp_path / "toy.toml"
    config.write_text(CONFIG)
    with pytest.raises(ConfigError) as err:
        load_config(config)
    message = str(err.value)
    assert "model.family = 'toy' is not one of lavik, gated_autoencoder, loopy_cnn, inn" in message
    assert "register" in message
    register(Toy())
    try:
        assert load_config(config).model.toy.hidden == 5
    finally:
        families.unregister("toy")
    with pytest.raises(ConfigError, match="'toy' is not one of"):
        load_config(config)


def test_builtin_families_load_on_first_use_by_dotted_path():
    assert families.names()[:4] == ["lavik", "gated_autoencoder", "loopy_cnn", "inn"]
    for name, path in families.BUILTIN.items():
        module = path.split(":")[0]
        assert module.startswith("loopnets.models.") and families.get(name).name == name
    with pytest.raises(TypeError, match="Family instance"):
        register(object())


def test_entry_point_families_are_loaded(monkeypatch):
    class EntryPoint:
        name, value = "toy", f"{__name__}:TOY"

    monkeypatch.setattr(families.metadata, "entry_points", lambda group: [EntryPoint] if group == families.ENTRY_POINTS else [])
    monkeypatch.setattr(families, "_LOADED", False)
    try:
        assert families.get("toy") is TOY
    finally:
        families.unregister("toy")


TOY = Toy()


def test_the_toy_model_trains(toy):  # the built model is the family's own, and learns
    exp = from_dict({"model": {"family": "toy"}, "variants": [{"depth": 1}], "train": {"epochs": 1}})
    (variant,) = expand_variants(exp)
    model = toy.build_model(exp, variant, type("S", (), {"input_shape": (4,), "outputs": 3})())
    assert isinstance(model, nn.Sequential) and model(torch.zeros(2, 4)).shape == (2, 3)
