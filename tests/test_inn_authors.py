"""The authors' settings (qbhershey/iterativenn, issue 17 item 4) as the defaults of configs/hershey:
every config builds their network (N(0, 0.05^2) weights, linear output rows, a bias on every state
row) and runs at least 3 seeds."""

from pathlib import Path

import pytest
import torch
from torch import nn

from loopnets.experiments import expand_variants, load_config
from loopnets.experiments.inn import build_model

ROOT = Path(__file__).resolve().parents[1]
HERSHEY = sorted((ROOT / "configs" / "hershey").glob("*.toml"))


@pytest.mark.parametrize("path", HERSHEY, ids=lambda p: p.stem)
def test_every_hershey_config_defaults_to_the_authors_settings_with_three_seeds(path):
    exp = load_config(path)
    assert exp.model.inn.init == "normal"  # N(0, 0.05^2)
    assert exp.model.inn.bias is True and exp.model.inn.activation == "relu"
    assert len(set(exp.train.seeds)) >= 3
    assert "qbhershey/iterativenn" in exp.notes  # the notes say what changed and why


def test_a_config_builds_the_authors_network():
    torch.manual_seed(0)  # as the runner: the global seed and the mask's seed are the run's seed
    exp = load_config(ROOT / "configs" / "hershey" / "anomaly-uniform.toml")
    variant = next(v for v in expand_variants(exp) if v.model == "inn")
    net = build_model(exp, variant, outputs=10, seed=0)
    assert net.init == "normal" and net.init_std == 0.05
    assert isinstance(net.output_activation, nn.Identity) and isinstance(net.activation, nn.ReLU)
    assert net.bias is not None and net.bias.shape == (810,)
    w = net.weight.detach()[net.mask]  # ~1.34 M draws: the std is 0.05 to far better than 1 %
    assert abs(float(w.std()) / 0.05 - 1) < 0.01, (float(w.std()), float(w.mean()))
    # independent of the mask (drawn from the same seed): about half positive, mean ~0 (sd 4e-5 here)
    assert abs(float((w > 0).double().mean()) - 0.5) < 0.005 and abs(float(w.mean())) < 5e-4
