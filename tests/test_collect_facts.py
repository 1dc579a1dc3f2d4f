"""collect.py's data facts: a family with its own data (Hershey's anomaly sequences) states its chance levels."""

import importlib.util
from pathlib import Path

import pytest

from loopnets.experiments import load_config
from loopnets.experiments.config import family_of

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("collect", ROOT / "docs" / "reproductions" / "collect.py")
collect = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collect)

ANOMALY = """
name = "tiny-anomaly"
[data]
name = "hershey_uniform"
options = {{ length = {length}, sizes = [200, 100, 100], sequences = [40, 30, 30] }}
[model]
family = "inn"
[model.inn]
structure = "random"
hidden = [20]
density = 0.5
[train]
epochs = 1
[[variants]]
model = "inn"
"""


@pytest.mark.parametrize("length", [5, 7])
def test_anomaly_sequences_have_chance_one_over_their_length(tmp_path, length):
    path = tmp_path / "experiment.toml"
    path.write_text(ANOMALY.format(length=length))
    facts = collect.data_facts(path)
    assert facts["classes"] == length and facts["chance_accuracy"] == pytest.approx(1 / length)
    assert facts["n_train"] == 40 and facts["n_val"] == 30 and facts["one_sample_accuracy"] == pytest.approx(1 / 30)
    assert 1 / length <= facts["majority_accuracy"] <= 1


def test_a_family_on_a_split_leaves_the_facts_to_the_split():
    iris = load_config(str(ROOT / "configs" / "lavik" / "iris.toml"))
    assert family_of(iris).data_facts(iris) is None
    facts = collect.data_facts(ROOT / "configs" / "lavik" / "iris.toml")
    assert facts["classes"] == 3 and facts["n_val"] == 30
