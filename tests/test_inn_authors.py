"""The authors' settings (qbhershey/iterativenn, issue 17 item 4) as the defaults of configs/hershey:
every config builds their network (N(0, 0.05^2) weights, linear output rows, a bias on every state
row) and runs at least 3 seeds."""

from pathlib import Path

import pytest
import torch
from torch import nn

from loopnets.experiments import ConfigError, expand_variants, load_config, validate
from loopnets.experiments.config import from_dict
from loopnets.models.inn.experiments import build_model

ROOT = Path(__file__).resolve().parents[1]
HERSHEY = sorted((ROOT / "configs" / "hershey").glob("*.toml"))


@pytest.mark.parametrize("path", HERSHEY, ids=lambda p: p.stem)
def test_every_hershey_config_defaults_to_the_authors_settings_with_three_seeds(path):
    exp = load_config(path)
    assert exp.model.inn.init == "normal" and exp.model.inn.init_std == 0.05  # N(0, 0.05^2)
    assert exp.model.inn.bias == "all" and exp.model.inn.activation == "relu"  # every row's bias counted
    assert len(set(exp.train.seeds)) >= 3
    assert "qbhershey/iterativenn" in exp.notes  # the notes say what changed and why


def test_a_config_builds_the_authors_network():
    torch.manual_seed(0)  # as the runner: the global seed and the mask's seed are the run's seed
    exp = load_config(ROOT / "configs" / "hershey" / "anomaly-uniform.toml")
    variant = next(v for v in expand_variants(exp) if v.model == "inn")
    net = build_model(exp, variant, outputs=10, seed=0)
    assert net.init == "normal" and net.init_std == 0.05
    assert isinstance(net.output_activation, nn.Identity) and isinstance(net.activation, nn.ReLU)
    assert net.bias is not None and net.bias.shape == (810,) and net.bias_rows == "all"
    assert net.trainable_parameters == net.trainable_weights + 2500 + 810
    w = net.weight.detach()[net.mask]  # ~1.34 M draws: the std is 0.05 to far better than 1 %
    assert abs(float(w.std()) / 0.05 - 1) < 0.01, (float(w.std()), float(w.mean()))
    # independent of the mask (drawn from the same seed): about half positive, mean ~0 (sd 4e-5 here)
    assert abs(float((w > 0).double().mean()) - 0.5) < 0.005 and abs(float(w.mean())) < 5e-4


def tiny(**inn) -> dict:
    """A tiny inn experiment (140 images, 3-image sequences) with [model.inn] keys set."""
    return {
        "name": "authors", "description": "tiny", "notes": "test",
        "data": {"name": "hershey_uniform", "options": {"length": 3, "sizes": [100, 20, 20], "sequences": [16, 8, 8]}},
        "model": {"family": "inn", "inn": {"hidden": [8], "density": 0.3, **inn}},
        "train": {"epochs": 1, "batch_size": 8, "seeds": [0]},
        "variants": [{"model": "inn"}],
    }


def test_a_config_sets_the_bias_rule_and_the_init_std():
    exp = from_dict(tiny(init="normal", init_std=0.2, bias="all"))
    variant = validate(exp)[0]
    net = build_model(exp, variant, outputs=4, seed=0)
    assert net.init_std == 0.2 and net.bias_rows == "all"
    assert net.trainable_parameters == net.trainable_weights + 2500 + 12  # depth 8 hidden + 4 outputs
    w = net.weight.detach()[net.mask]  # ~7,500 draws
    assert abs(float(w.std()) / 0.2 - 1) < 0.1
    plain = build_model(from_dict(tiny()), variant, outputs=4, seed=0)  # today's defaults are kept
    assert plain.init == "linear" and plain.init_std is None and plain.bias_rows == "state"
    assert build_model(from_dict(tiny(bias=False)), variant, outputs=4, seed=0).bias is None


@pytest.mark.parametrize("inn, message", [
    ({"bias": "rows"}, "model.inn.bias must be bool or one of state, all, none"),
    ({"bias": 1}, "model.inn.bias"),
    ({"init": "normal", "init_std": 0.0}, "model.inn.init_std: .*finite number > 0"),
    ({"init": "normal", "init_std": -0.05}, "model.inn.init_std: .*finite number > 0"),
    ({"init": "normal", "init_std": "0.05"}, "model.inn.init_std"),
    ({"init_std": 0.05}, "model.inn.init_std: init_std sets the spread of init='normal'"),
    ({"init": "gaussian"}, "model.inn.init"),
])
def test_check_refuses_bad_bias_and_init_values(inn, message):
    with pytest.raises(ConfigError, match=message):
        validate(from_dict(tiny(**inn)))


def test_loopnets_check_refuses_a_bad_init_std_and_passes_the_shipped_settings(tmp_path, capsys):
    import tomli_w

    from loopnets.cli import main

    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(tiny(init="normal", init_std=-1.0, bias="all")))
    assert main(["check", str(path)]) == 2
    assert "model.inn.init_std" in capsys.readouterr().err
    assert main(["check", str(ROOT / "configs" / "hershey" / "anomaly-uniform.toml")]) == 0
