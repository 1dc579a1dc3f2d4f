"""Hershey's iterative networks as experiments (family "inn"): configs, tiny runs through the CLI, bad keys."""

import json
import sys
from pathlib import Path

import pytest

from loopnets.cli import main
from loopnets.experiments import ConfigError, expand_variants, load_config, validate
from loopnets.experiments.config import from_dict, to_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
HERSHEY = sorted((ROOT / "configs" / "hershey").glob("*.toml"))

# 3-image sequences from 140 images, an 8-unit hidden layer: the real code path at a tiny cost
TINY = """
name = "itiny"
description = "tiny inn"
notes = "test"
[data]
name = "hershey_uniform"
options = { length = 3, sizes = [100, 20, 20], sequences = [16, 8, 8] }
[model]
family = "inn"
[model.inn]
hidden = [8]
density = 0.3
[train]
epochs = 1
batch_size = 8
seeds = [0]
[[variants]]
model = "inn"
density = [0.3, 0.1]
[[variants]]
model = "lstm"
trainable = 150000
"""


def tiny_raw(**changes) -> dict:
    """TINY as parsed TOML with dotted keys changed (a number indexes a list: variants.0.density)."""
    raw = tomllib.loads(TINY)
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = raw
        for part in path:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[last] = value
    return raw


def test_hershey_configs_exist():
    names = {p.stem for p in HERSHEY}
    assert {"structure", "anomaly-uniform", "anomaly-random", "density-fixed-dims", "density-fixed-weights",
            "lr-stability", "difficulty", "iterations"} <= names


@pytest.mark.parametrize("path", HERSHEY, ids=lambda p: p.stem)
def test_every_hershey_config_validates(path):
    exp = load_config(path)
    assert exp.model.family == "inn" and exp.description and exp.notes
    assert "Scale vs the thesis" in exp.notes  # every config says how far it is from the thesis
    variants = validate(exp)
    assert variants and len({v.name for v in variants}) == len(variants)


def test_variant_names_and_expansion():
    exp = from_dict(tiny_raw())
    assert [v.name for v in expand_variants(exp)] == ["inn-r0.3", "inn-r0.1", "lstm-w150000"]
    lr = from_dict(tiny_raw(variants=[{"model": "inn", "lr": [1e-3, 4e-2]}]))
    assert [(v.name, v.lr) for v in expand_variants(lr)] == [("inn-lr0.001", 1e-3), ("inn-lr0.04", 4e-2)]
    # the resolved config holds only this family's keys and reads back to the same experiment
    data = to_dict(exp)
    assert "inn" in data["model"] and not {"layers", "gated", "loopy"} & set(data["model"])
    assert from_dict(data) == exp


def test_structure_config_is_the_thesis_mlp():
    exp = load_config(ROOT / "configs" / "hershey" / "structure.toml")
    assert exp.model.inn.structure == "layered" and exp.model.inn.hidden == [500, 200, 100]
    assert [v.p for v in expand_variants(exp)] == [0.0, 0.2, 0.5]


@pytest.mark.parametrize("change, message", [
    ({"variants.0.depth": 3}, "variants[0].depth"),
    ({"model.inn.structure": "tree"}, "model.inn.structure"),
    ({"model.inn.sizes": [1]}, "model.inn.sizes"),
    ({"variants.0.density": 1.5}, "variants[0].density"),
    ({"variants.0.p": 0.2}, "variants[0].p"),  # block exchange needs the layered structure
    ({"variants.1.density": 0.2}, "variants[1].density"),  # not an LSTM key
    ({"variants.0.iterations": 3}, "variants[0].iterations"),  # sequences run length + 1 steps
    ({"data.options.layout": "image"}, "data.options.layout"),
    ({"data.options.colour": 1}, "data.options.colour"),
    ({"data.name": "mnist"}, "data.name"),
    ({"train.loss": "mse"}, "train.loss"),
    ({"model.inn.structure": "layered", "variants": [{"model": "inn", "p": 0.2}]}, "model.inn.block"),
    ({"model.layers": []}, "model.layers"),
    ({"variants.1.trainable": 1000}, "lstm"),  # no LSTM fits 1,000 weights
])
def test_bad_inn_configs_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(from_dict(tiny_raw(**change)))


def test_undefinable_budget_is_refused_with_the_minimum():
    raw = tiny_raw(**{"model.inn.structure": "budget", "variants": [{"model": "inn", "trainable": 1000}]})
    with pytest.raises(ConfigError, match="could no longer be defined"):
        validate(from_dict(raw))


def test_inn_keys_refused_in_other_families():
    raw = {"variants": [{"method": "ffn", "density": 0.2}]}
    with pytest.raises(ConfigError, match=r"variants\[0\].density applies only to model.family = 'inn'"):
        from_dict(raw)
    with pytest.raises(ConfigError, match="model.inn applies only"):
        from_dict({"model": {"inn": {"density": 0.2}}})


def run_cli(tmp_path: Path, raw: dict) -> Path:
    import tomli_w

    path = tmp_path / "exp.toml"
    path.write_text(tomli_w.dumps(raw))
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    return tmp_path / "runs" / raw["name"]


def test_tiny_sequence_run_through_the_cli(tmp_path):
    root = run_cli(tmp_path, tiny_raw())
    for variant in ("inn-r0.3", "inn-r0.1", "lstm-w150000"):
        folder = root / variant / "seed=0"
        assert {p.name for p in folder.iterdir()} == {"config.toml", "metrics.csv", "summary.json", "model.lnet"}
        assert (folder / "metrics.csv").read_text().splitlines()[0] == \
            "epoch,train_loss,val_loss,val_accuracy,train_seconds,val_seconds"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["unroll"] == 4  # 3 images + the query step
        assert set(summary["probes"]["original"]) == {"loss", "accuracy"}
        extra = summary["extra"]
        assert extra["task"] == "anomaly_detection" and summary["parameters"] == extra["trainable_weights"]
        test = extra["test"]
        assert {"accuracy", "acc_seq", "accuracy_by_position", "confusion_matrix"} <= set(test)
        assert len(test["confusion_matrix"]) == 3 and sum(map(sum, test["confusion_matrix"])) == 8
        # the run's own config reproduces it
        assert [v.name for v in expand_variants(load_config(folder / "config.toml"))] == [variant]
    inn = json.loads((root / "inn-r0.3" / "seed=0" / "summary.json").read_text())
    lstm = json.loads((root / "lstm-w150000" / "seed=0" / "summary.json").read_text())
    assert inn["method"] == "inn" and 0.2 < inn["extra"]["structure"]["density"] < 0.4
    assert lstm["method"] == "lstm" and lstm["parameters"] <= 150000  # sized to the budget (hidden 14)
    assert (root / "report" / "report.md").is_file()  # `loopnets report` works unchanged


def test_tiny_classification_run_through_the_cli(tmp_path):
    raw = tiny_raw(**{"data.name": "hershey_mnist", "data.options": {"sizes": [100, 20, 20]},
                      "model.inn.structure": "layered", "model.inn.classification_loss": "every",
                      "model.inn.iterations": 2, "model.inn.eval_iterations": [1, 2, 3], "model.inn.block": 2,
                      "variants": [{"model": "inn", "p": 0.5}]})
    root = run_cli(tmp_path, raw)
    summary = json.loads((root / "inn-p0.5" / "seed=0" / "summary.json").read_text())
    assert summary["loss"] == "per_iteration_cross_entropy" and summary["unroll"] == 2
    assert summary["extra"]["task"] == "classification"
    by_t = summary["extra"]["accuracy_by_iterations"]
    assert by_t["iterations"] == [1, 2, 3] and len(by_t["test"]) == 3
    assert summary["extra"]["test"]["accuracy"] == by_t["test"][1]  # the trained count, same test set
    assert summary["structure"] == "layered" and summary["p"] == 0.5


def test_reproduction_page_lists_every_config_and_how_to_run_it(tmp_path):
    sys.path.insert(0, str(ROOT / "docs" / "reproductions"))
    try:
        import build_hershey
    finally:
        sys.path.pop(0)
    page = build_hershey.build(tmp_path, tmp_path / "hershey.md")  # no runs: every claim "not run yet", with its command
    assert set(build_hershey.CONFIGS) == {p.stem for p in HERSHEY}
    for config in build_hershey.CONFIGS:
        assert f"not run yet: `{build_hershey.produce_command(config)}`" in page
