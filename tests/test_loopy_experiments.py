"""Caswell's loopy CNNs as experiments (family loopy_cnn): configs, a tiny run through the CLI, --data-dir, the page."""

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_page_builder
from test_gated_experiments import changed

import loopnets as ln
from loopnets.cli import main
from loopnets.experiments import ConfigError, expand_variants, load_config, validate
from loopnets.experiments.config import dumps, from_dict, to_dict
from loopnets.models.loopy.schema import LoopyVariant
from loopnets.experiments.runner import build_model, load_split

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CASWELL = sorted((ROOT / "configs" / "caswell").glob("*.toml"))

# 40 synthetic CIFAR-shaped images, 2 filters: the real code path at a fraction of a second per run
TINY = """
name = "ltiny"
description = "tiny loopy CNNs"
notes = "test"
[data]
name = "synthetic_cifar"
options = { n = 40 }
[model]
family = "loopy_cnn"
[model.loopy]
filters = 2
[train]
epochs = 1
batch_size = 16
seeds = [0, 1]
analyses = ["guided", "merge"]
[[variants]]
model = ["vanilla", "loopy", "deep"]
unroll = 2
"""


def write(tmp_path: Path, text: str = TINY, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def tiny_raw(**changes) -> dict:
    """TINY as parsed TOML, with dotted keys changed (a number indexes a list: variants.0.model)."""
    return changed(tomllib.loads(TINY), **changes)


def summary(root: Path, variant: str, seed: int = 0) -> dict:
    return json.loads((root / variant / f"seed={seed}" / "summary.json").read_text())


# ----------------------------------------------------------------------------- shipped configs


def test_caswell_configs_exist():
    assert {p.stem for p in CASWELL} >= {"mnist", "cifar10-batch5", "cifar10-batch32", "synthetic-batch5",
                                         "synthetic-batch32", "depth"}


@pytest.mark.parametrize("path", CASWELL, ids=lambda p: p.stem)
def test_every_caswell_config_validates(path):
    exp = load_config(path)
    variants = validate(exp)  # builds every model; cifar10 on its known shape, without the files
    assert variants and exp.description and exp.notes and exp.model.family == "loopy_cnn"
    assert all(isinstance(v, LoopyVariant) for v in variants)
    assert from_dict(to_dict(exp)) == exp  # the resolved config reads back as itself
    if exp.data.name == "cifar10":
        assert "data_dir" not in exp.data.options  # the user's folder comes from --data-dir
        assert exp.train.epochs == 24 and exp.train.batch_size == (5 if "batch5" in path.stem else 32)
        assert exp.data.options == {"train_size": 20000, "val_size": 1000, "subtract_mean": True}
        assert [v.name for v in variants] == ["vanilla", "loopy-x3", "deep-x3", "plus_layer-x3", "times_layer-x3"]


def test_mnist_config_unrolls_the_paper_model_1_2_3_times():
    exp = load_config(ROOT / "configs" / "caswell" / "mnist.toml")
    assert [(v.model, v.unroll) for v in expand_variants(exp)] == [("mnist_loopy", 1), ("mnist_loopy", 2), ("mnist_loopy", 3)]


def test_variant_names_and_expansion():
    exp = from_dict(tiny_raw(**{"variants": [{"model": ["vanilla", "loopy", "plus_layer"], "unroll": [1, 3]},
                                             {"model": "deep", "unroll": 4, "name": "untied"}]}))
    assert [(v.name, v.unroll) for v in expand_variants(exp)] == [
        ("vanilla", 1), ("loopy-x1", 1), ("loopy-x3", 3), ("plus_layer-x1", 1), ("plus_layer-x3", 3), ("untied", 4)]
    assert [v.has_loop for v in expand_variants(exp)] == [False, False, True, False, True, False]


def test_resolved_configs_of_other_families_have_no_loopy_keys():
    # resolved configs of existing experiments must not change, or their sweeps would not resume
    text = dumps(to_dict(load_config(None)))
    assert "loopy" not in text and "model = " not in text


@pytest.mark.parametrize(
    "change,message",
    [
        ({"variants.0.method": "couple"}, r"unknown config key variants\[0\]\.method; valid keys in variants\[0\]: model, unroll, name; variants\[0\]\.method applies only to model.family = 'lavik'"),
        ({"variants.0.feedback": "partial"}, r"variants\[0\]\.feedback applies only to model.family = 'gated_autoencoder'"),
        ({"variants.0.merge": "mul"}, r"variants\[0\]\.merge applies only to .*set model\.loopy\.merge instead"),
        ({"variants.0.colour": 1}, r"unknown config key variants\[0\]\.colour; valid keys in variants\[0\]: model, unroll, name"),
        ({"model.layers": []}, r"model\.layers applies only to model.family = 'lavik'"),
        ({"model.init": "default"}, r"model\.init applies only to model.family = 'lavik'.*set model\.loopy\.init instead"),
        ({"model.gated": {"hidden": 3}}, r"model\.gated applies only to model.family = 'gated_autoencoder'"),
        ({"model.loopy.filtrs": 3}, r"unknown config key model\.loopy\.filtrs; valid keys in model\.loopy: filters, merge"),
        ({"model.loopy.filters": [4, 4, 4]}, r"model\.loopy\.filters must be an integer >= 1 or a list"),
        ({"model.loopy.merge": "xor"}, r"model\.loopy\.merge = 'xor' is not one of replace, add"),
        ({"model.loopy.init": "he"}, r"model\.loopy\.init = 'he' is not one of glorot, pytorch"),
        ({"model.loopy.bn_per_unroll": "yes"}, r"model\.loopy\.bn_per_unroll must be bool"),
        ({"variants.0.model": "resnet"}, r"variants\[0\]\.model = 'resnet' is not one of vanilla, loopy, deep"),
        ({"variants.0.model": None}, r"variants\[0\]\.model is required"),
        ({"variants.0.unroll": 0}, r"variants\[0\]\.unroll must be an integer >= 1"),
        ({"variants.0.model": "mnist_loopy"}, r"Caswell's MNIST model for 1 x 28 x 28 digits; the data 'synthetic_cifar' gives \(3, 32, 32\)"),
        ({"train.loss": "mse"}, r"train\.loss = 'mse': the loopy_cnn models return logits"),
        ({"train.analyses": ["tsne"]}, r"train\.analyses must be a list of analyses from guided, merge \(family 'loopy_cnn'"),
        ({"train.noise_sigmas": [1.0]}, r"train\.noise_sigmas applies only to model.family = 'gated_autoencoder'"),
        ({"data.name": "iris"}, r"needs square images \(channels, size, size\); the data 'iris' gives \(4,\)"),
    ],
)
def test_bad_loopy_configs_name_the_key(change, message):
    raw = tiny_raw(**{k: v for k, v in change.items() if v is not None})
    if None in change.values():
        del raw["variants"][0]["model"]
    if change.get("data.name") == "iris":
        raw["data"].pop("options")
    with pytest.raises(ConfigError, match=message):
        validate(from_dict(raw))


def test_loopy_keys_refused_in_other_families():
    with pytest.raises(ConfigError, match=r"model\.loopy applies only to model.family = 'loopy_cnn'"):
        from_dict({"model": {"loopy": {"filters": 3}}})
    with pytest.raises(ConfigError, match=r"variants\[0\]\.model applies only to model.family = 'loopy_cnn' or 'inn' or 'thinking'; this experiment's family is 'gated_autoencoder'"):
        from_dict({"model": {"family": "gated_autoencoder"}, "variants": [{"feedback": "none", "model": "loopy"}]})
    with pytest.raises(ConfigError, match=r"model.family = 'loopy_cnn' needs its own \[\[variants\]\]"):
        from_dict({"model": {"family": "loopy_cnn"}, "data": {"name": "synthetic_cifar"}})


# ----------------------------------------------------------------------------- a tiny run through the CLI


def test_tiny_loopy_run_through_the_cli(tmp_path, capsys):
    config = write(tmp_path)
    runs = tmp_path / "runs"
    assert main(["run", str(config), "--runs-dir", str(runs), "--no-progress"]) == 0
    root = runs / "ltiny"
    basic = {"config.toml", "metrics.csv", "summary.json", "model.lnet"}
    for name in ("vanilla", "loopy-x2", "deep-x2"):
        assert {p.name for p in (root / name / "seed=1").iterdir()} == basic  # analyses: the first seed only
    assert {p.name for p in (root / "loopy-x2" / "seed=0").iterdir()} == basic | {
        "guided_conv1.png", "guided_conv2.png", "guided_conv3.png", "merge.png"}
    assert "merge.png" not in {p.name for p in (root / "vanilla" / "seed=0").iterdir()}  # no merge node

    s = summary(root, "loopy-x2")
    assert (s["method"], s["model"], s["unroll"], s["family"], s["tied"]) == ("loopy", "loopy", 2, "loopy_cnn", True)
    assert s["task"] == "classification" and s["loss"] == "cross_entropy" and s["status"] == "finished"
    assert set(s["probes"]["original"]) == {"loss", "accuracy"} and s["probes"]["skip_off"] is None
    counts = s["parameter_counts"]
    assert counts["total"] == s["parameters"] and counts["conv+fc"] == counts["conv"] + counts["fc"]
    vanilla, deep = summary(root, "vanilla"), summary(root, "deep-x2")
    assert counts["conv+fc"] == vanilla["parameter_counts"]["conv+fc"]  # the loop adds no weights
    assert deep["parameter_counts"]["conv"] == 2 * vanilla["parameter_counts"]["conv"]  # untied copies
    assert vanilla["probes"]["feedback_off"] is None and deep["probes"]["feedback_off"] is None
    assert vanilla["unroll"] == 1 and deep["tied"] is False and vanilla["extra"]["unroll_sweep"] is None
    extra = s["extra"]
    assert set(extra["train"]) == {"loss", "accuracy"}
    sweep = extra["unroll_sweep"]
    assert sweep["unrolls"] == [1, 2, 3, 4]
    assert sweep["accuracy"][1] == pytest.approx(s["probes"]["original"]["accuracy"])
    assert sweep["loss"][0] == pytest.approx(s["probes"]["feedback_off"]["loss"])
    assert extra["guided"]["layers"]["conv3"]["unrolls"] == 2 and extra["merge"]["images"] == 6
    assert summary(root, "loopy-x2", seed=1)["extra"]["guided"] is None
    assert len((root / "loopy-x2" / "seed=0" / "metrics.csv").read_text().splitlines()) == 2

    # the report reads these runs: feedback off only where there is a loop
    results = json.loads((root / "report" / "results.json").read_text())
    by_name = {v["variant"]: v for v in results["variants"]}
    assert by_name["deep-x2"]["probes"]["feedback_off"] is None and by_name["loopy-x2"]["probes"]["feedback_off"]
    # ... and gathers the first seed's analysis images into the report
    assert (root / "report" / "loopy-x2-merge.png").is_file() and (root / "report" / "loopy-x2-guided_conv1.png").is_file()
    assert "![loopy-x2-merge.png](loopy-x2-merge.png)" in (root / "report" / "report.md").read_text()

    # the feedback_off probe is the trained model evaluated with one pass
    run_exp = load_config(root / "loopy-x2" / "seed=0" / "config.toml")
    (variant,) = expand_variants(run_exp)
    assert variant == LoopyVariant("loopy-x2", "loopy", 2) and run_exp.train.seeds == [0]
    split = load_split(run_exp)
    model = ln.load(root / "loopy-x2" / "seed=0" / "model.lnet", model=build_model(run_exp, variant, split))
    with ln.unrolled(model, 1):
        one_pass = ln.evaluate(model, split.val, loss="cross_entropy")
    assert one_pass["loss"] == pytest.approx(s["probes"]["feedback_off"]["loss"], rel=1e-6)
    assert one_pass["accuracy"] == s["probes"]["feedback_off"]["accuracy"]
    assert ln.evaluate(model, split.val, loss="cross_entropy")["loss"] == pytest.approx(s["probes"]["original"]["loss"], rel=1e-6)

    # resuming skips finished runs
    assert main(["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report"]) == 0
    assert "0 to train" in capsys.readouterr().out


# ----------------------------------------------------------------------------- --data-dir


def write_cifar(folder: Path, per_file: int = 6) -> None:
    """CIFAR-10 batch files in the real python format (random pixels)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8),
                 b"labels": [int(c) for c in rng.integers(0, 10, per_file)]}
        (folder / name).write_bytes(pickle.dumps(batch))


def test_data_dir_missing_data_gives_the_loaders_message(tmp_path, capsys):
    config = ROOT / "configs" / "caswell" / "cifar10-batch32.toml"
    runs = tmp_path / "runs"
    assert main(["run", str(config), "--runs-dir", str(runs), "--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "CIFAR-10 not found" in err and "nowhere does not exist" in err and "Traceback" not in err
    assert main(["run", str(config), "--runs-dir", str(runs)]) == 2  # no folder given at all
    assert "no folder was given: run with --data-dir DIR" in capsys.readouterr().err
    assert not runs.exists()  # nothing written before the data is there
    assert main(["run", str(write(tmp_path)), "--runs-dir", str(runs), "--data-dir", str(tmp_path)]) == 2
    assert "--data-dir applies only to data sets read from files you give (cifar10, fashion_mnist, mnist_files)" in capsys.readouterr().err


def test_data_dir_reaches_the_cifar_loader(tmp_path):
    write_cifar(tmp_path / "cifar" / "cifar-10-batches-py")
    runs = tmp_path / "runs"
    args = ["run", str(ROOT / "configs" / "caswell" / "cifar10-batch5.toml"), "--runs-dir", str(runs), "--no-progress",
            "--no-report", "--data-dir", str(tmp_path / "cifar"), "data.options={train_size=12, val_size=6}",
            "train.epochs=1", "train.seeds=[0]", "model.loopy.filters=1", "train.analyses=[]", "variants=[{model='loopy', unroll=2}]"]
    assert main(args) == 0
    s = summary(runs / "caswell-cifar10-batch5", "loopy-x2")
    assert s["status"] == "finished" and s["parameter_counts"]["fc"] == 3 * 32 * 32 * 10 + 10
    recorded = tomllib.loads((runs / "caswell-cifar10-batch5" / "experiment.toml").read_text())
    assert recorded["data"]["options"]["data_dir"] == str(tmp_path / "cifar")


# ----------------------------------------------------------------------------- the reproduction page


def test_caswell_page_reports_our_numbers_from_the_runs(tmp_path):
    build_caswell = load_page_builder("docs/reproductions/build_caswell.py")
    runs = tmp_path / "runs"  # with its report: the page reads report/results.json
    args = ["run", str(write(tmp_path)), "--runs-dir", str(runs), "--no-progress",
            "name=caswell-synthetic-batch5", "train.seeds=[0]", "train.analyses=[]"]
    assert main(args) == 0
    page = build_caswell.build(runs, tmp_path / "caswell.md")
    loopy = summary(runs / "caswell-synthetic-batch5", "loopy-x2")
    row = next(line for line in page.splitlines() if line.startswith("| Loopy x2 |"))  # the stand-in table
    assert f"{100 * loopy['probes']['original']['accuracy']:.1f} ± n/a %" in row  # one seed: no sd
    assert f"{100 * loopy['extra']['train']['accuracy']:.1f} ± n/a %" in row
    assert "not run" in page and "loopnets run configs/caswell/mnist.toml" in page  # MNIST: no runs here
    assert "loopnets run configs/caswell/cifar10-batch32.toml --data-dir ~/cifar-10-batches-py" in page
    assert "| 57.4 % |" in page  # the paper's Loopy val acc at batch 5 beside an empty column of ours
