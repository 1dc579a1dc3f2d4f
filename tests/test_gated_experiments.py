"""Kemmerling's gated autoencoder as experiments: configs, a tiny run through the CLI, the report."""

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_page_builder

import loopnets as ln
from loopnets.cli import main
from loopnets.experiments import ConfigError, expand_variants, load_config, validate
from loopnets.experiments.config import dumps, from_dict, to_dict
from loopnets.models.gated.schema import GatedVariant
from loopnets.experiments.runner import build_model, load_split

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
KEMMERLING = sorted((ROOT / "configs" / "kemmerling").glob("*.toml"))

# digits (1,797 8x8 images) instead of MNIST: same code path, a fraction of the cost
TINY = """
name = "gtiny"
description = "tiny gated autoencoder"
notes = "test"
[data]
name = "digits"
[model]
family = "gated_autoencoder"
[model.gated]
hidden = 32
bottleneck = 8
[train]
optimizer_args = { lr = 3e-3 }
epochs = 2
batch_size = 64
seeds = [0, 1]
noise_sigmas = [0, 1]
[[variants]]
feedback = ["none", "partial"]
timesteps = 2
[[variants]]
feedback = "partial"
mode = "constant"
timesteps = 1
"""


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def tiny_raw(**changes) -> dict:
    """TINY as parsed TOML, with dotted keys changed (a number indexes a list: variants.0.feedback)."""
    return changed(tomllib.loads(TINY), **changes)


def changed(raw: dict, **changes) -> dict:
    """`raw` (a parsed config) with dotted keys set in place (a number indexes a list)."""
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[last] = value
    return raw


def test_kemmerling_configs_exist():
    assert {p.stem for p in KEMMERLING} >= {"feedback", "timesteps", "constant-gain", "threshold", "grid"}


@pytest.mark.parametrize("path", KEMMERLING, ids=lambda p: p.stem)
def test_every_kemmerling_config_validates(path):
    exp = load_config(path)
    variants = validate(exp)  # builds every variant's GatedNetwork on the real MNIST shape
    assert variants and exp.description and exp.notes
    assert exp.model.family == "gated_autoencoder" and all(isinstance(v, GatedVariant) for v in variants)
    assert exp.model.gated.beta_max == 0.95 and exp.model.gated.eta == 5.0  # the paper's choice (grid: overridden)
    assert from_dict(to_dict(exp)) == exp  # the resolved config reads back as itself


def test_timesteps_config_matches_the_paper():
    exp = load_config(ROOT / "configs" / "kemmerling" / "timesteps.toml")
    assert [v.timesteps for v in expand_variants(exp)] == [1, 2, 4, 6, 8]
    assert len(exp.train.seeds) >= 5 and "10 runs" in exp.description  # scaled from the paper's 10, and says so


def test_gated_variant_names_and_expansion(tmp_path):
    exp = load_config(write(tmp_path, TINY), ["variants=[{feedback=['none','partial','comprehensive'], timesteps=[1,2]},"
                                              "{mode=['threshold','both']}, {beta_max=[0.5,0.9], eta=2}]"])
    names = [v.name for v in expand_variants(exp)]
    assert names == ["none-t1", "partial-t1", "partial-t2", "comprehensive-t1", "comprehensive-t2",
                     "partial-t2-threshold", "partial-t2-both",
                     "partial-t2-b0.5-eta2", "partial-t2-b0.9-eta2"]
    both = expand_variants(exp)[6]
    assert both.alpha == 1.0 and both.constant_gain is None and both.mode == "both"
    validate(exp)


def test_lavik_resolved_configs_have_no_gated_keys():
    # resolved configs of existing (lavik) experiments must not change, or their sweeps would not resume
    text = dumps(to_dict(load_config(None)))
    for key in ("family", "gated", "noise_sigmas", "feedback", "timesteps"):
        assert key not in text


@pytest.mark.parametrize(
    "change,message",
    [
        ({"variants.0.unroll": 3}, r"variants\[0\]\.unroll applies only to model.family = 'lavik'"),
        ({"variants.0.method": "couple"}, r"unknown config key variants\[0\]\.method; valid keys in variants\[0\]: feedback, timesteps.*variants\[0\]\.method applies only to model.family = 'lavik'"),
        ({"model.layers": []}, r"model\.layers applies only to model.family = 'lavik'"),
        ({"model.gated.hiden": 3}, r"unknown config key model\.gated\.hiden; valid keys in model\.gated: architecture, hidden"),
        ({"model.gated.architecture": "rnn"}, r"model\.gated\.architecture = 'rnn' is not one of dense, conv"),
        ({"model.gated.beta_max": 1.0}, r"model\.gated\.beta_max must be a number in \(0, 1\)"),
        ({"model.gated.hidden": "big"}, r"model\.gated\.hidden must be int"),
        ({"variants.0.feedback": "some"}, r"variants\[0\]\.feedback = 'some' is not one of none, partial"),
        ({"variants.1.mode": "gain", "variants.1.constant_gain": 5.0},
         r"variants\[1\]\.constant_gain applies only to mode = 'constant'"),
        ({"variants.0.eta": [0.0]}, r"variants\[0\]\.eta must be a number > 0"),
        ({"variants.0.timesteps": 0}, r"variants\[0\]\.timesteps must be an integer >= 1"),
        ({"train.noise_sigmas": [-1]}, r"train\.noise_sigmas must be a non-empty list of numbers >= 0"),
        ({"train.analyses": ["gain"]}, r"train\.analyses must be a list of analyses from histograms, contrast, tsne"),
        ({"train.analyses": ["tsne", "tsne"]}, r"train\.analyses names an analysis twice"),
        ({"model.family": "hopfield"}, r"model\.family = 'hopfield' is not one of lavik, gated_autoencoder"),
        ({"model.gated.architecture": "conv"}, r"needs images .* set data\.options\.layout = \"image\""),
        ({"train.loss": "cross_entropy"}, r"train\.loss = 'cross_entropy' does not fit autoencoding"),
    ],
)
def test_bad_gated_configs_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        validate(from_dict(tiny_raw(**change)))


def test_gated_keys_refused_in_lavik_family():
    with pytest.raises(ConfigError, match=r"variants\[0\]\.timesteps applies only to model.family = 'gated_autoencoder'"):
        from_dict({"variants": [{"method": "couple", "timesteps": 2}]})
    with pytest.raises(ConfigError, match=r"model\.gated applies only to model.family = 'gated_autoencoder'"):
        from_dict({"model": {"gated": {"hidden": 3}}})
    with pytest.raises(ConfigError, match=r"train\.noise_sigmas applies only"):
        from_dict({"train": {"noise_sigmas": [1.0]}})
    with pytest.raises(ConfigError, match=r"train\.analyses applies only"):
        from_dict({"train": {"analyses": ["contrast"]}})
    with pytest.raises(ConfigError, match=r"needs its own \[\[variants\]\]"):
        from_dict({"model": {"family": "gated_autoencoder"}})


def test_tiny_gated_run_through_the_cli(tmp_path, capsys):
    config = write(tmp_path, TINY)
    runs = tmp_path / "runs"
    assert main(["run", str(config), "--runs-dir", str(runs), "--no-progress"]) == 0
    root = runs / "gtiny"
    names = ["none-t1", "partial-t2", "partial-t1-constant"]
    for name in names:
        for seed in (0, 1):
            folder = root / name / f"seed={seed}"
            assert {p.name for p in folder.iterdir()} == {"config.toml", "metrics.csv", "summary.json", "model.lnet"}
    s = json.loads((root / "partial-t2" / "seed=0" / "summary.json").read_text())
    assert s["method"] == "gated" and s["family"] == "gated_autoencoder" and s["task"] == "autoencoding"
    assert s["loss"] == "mse" and s["timesteps"] == 2 and s["feedback"] == "partial" and s["status"] == "finished"
    assert set(s["probes"]["original"]) == {"loss"} and s["probes"]["skip_off"] is None
    assert s["probes"]["feedback_off"]["loss"] > 0
    assert len(s["extra"]["pass_loss"]) == 2 and s["extra"]["pass_loss"][-1] == pytest.approx(s["probes"]["original"]["loss"])
    assert s["extra"]["pass_loss"][0] == pytest.approx(s["probes"]["feedback_off"]["loss"])
    noise = s["extra"]["noise"]
    assert noise["sigmas"] == [0.0, 1.0] and noise["loss"][0] == pytest.approx(s["probes"]["original"]["loss"])
    assert noise["loss"][1] > noise["loss"][0]
    none = json.loads((root / "none-t1" / "seed=0" / "summary.json").read_text())
    assert none["probes"]["feedback_off"] is None and none["timesteps"] == 1
    metrics = (root / "partial-t2" / "seed=0" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3 and metrics[1].split(",")[3] == ""  # no accuracy

    # the report: no crash, no accuracy or skip columns, a noise figure
    report = root / "report"
    assert {"report.html", "report.md", "val_loss.png", "noise.png", "results.json"} <= {p.name for p in report.iterdir()}
    assert not (report / "val_accuracy.png").exists()
    probes = (report / "probes.md").read_text()
    assert "Skip off" not in probes and "acc" not in probes and "partial-t2" in probes
    results = json.loads((report / "results.json").read_text())
    assert results["task"] == "autoencoding"
    by_name = {v["variant"]: v for v in results["variants"]}
    assert by_name["none-t1"]["probes"]["feedback_off"] is None
    assert by_name["partial-t2"]["noise"]["sigmas"] == [0.0, 1.0]

    # a run folder reproduces its own run; the checkpoint loads into the rebuilt network
    run_exp = load_config(root / "partial-t2" / "seed=0" / "config.toml")
    (variant,) = expand_variants(run_exp)
    assert variant == expand_variants(load_config(config))[1] and run_exp.train.seeds == [0]
    model = ln.load(root / "partial-t2" / "seed=0" / "model.lnet", model=build_model(run_exp, variant, load_split(run_exp)))
    x = load_split(run_exp).x_val[:5]
    assert model(x).shape == (5, 64)

    # resuming skips finished runs
    assert main(["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report"]) == 0
    assert "0 to train" in capsys.readouterr().out


def test_tiny_conv_gated_run(tmp_path):
    raw = tiny_raw(**{"model.gated.architecture": "conv", "model.gated.filters": 4, "data.options": {"layout": "image"},
                      "train.epochs": 1, "train.seeds": [0]})
    raw["variants"] = [{"feedback": "partial", "timesteps": 2}]
    raw["name"] = "gconv"
    from loopnets.experiments.runner import run_experiment

    root = run_experiment(from_dict(raw), tmp_path, progress=False, log=lambda _: None)
    s = json.loads((root / "partial-t2" / "seed=0" / "summary.json").read_text())
    assert s["status"] == "finished" and len(s["extra"]["pass_loss"]) == 2 and s["extra"]["noise"]["loss"][0] > 0
    assert torch.isfinite(torch.tensor(s["probes"]["original"]["loss"]))


def test_analyses_write_numbers_and_figures_and_the_report_gathers_them(tmp_path):
    from loopnets.experiments.runner import run_experiment

    raw = tiny_raw(**{"train.epochs": 1, "train.seeds": [0, 1], "train.analyses": ["histograms", "contrast", "tsne", "strips"]})
    raw["variants"] = [{"feedback": ["none", "partial"], "timesteps": 2}]
    root = run_experiment(from_dict(raw), tmp_path, progress=False, log=lambda _: None)
    folder = root / "partial-t2" / "seed=0"
    assert {"histograms.png", "contrast.png", "tsne.png", "strip.png", "strip_noise.png", "strip_contrast.png"} <= {
        p.name for p in folder.iterdir()}
    extra = json.loads((folder / "summary.json").read_text())["extra"]
    h = extra["histograms"]
    assert h["layer"] == 0 and h["max_gain"] == pytest.approx(20.0) and 0 <= h["fraction_max_gain"] <= 1
    assert 1.0 <= h["mean_gain"] <= 20.0 and sum(h["gain_histogram"]["counts"]) > 0
    c = extra["contrast"]
    assert c["factors"] == [round(0.1 * i, 1) for i in range(11)]
    assert c["last"][-1] == pytest.approx(extra["pass_loss"][-1], rel=1e-4)  # c = 1: the clean last-pass loss
    assert c["first"][-1] == pytest.approx(extra["pass_loss"][0], rel=1e-4)
    assert extra["tsne"] == {"layer": 1, "passes": [1, 2], "samples": 360}
    assert extra["strips"]["noise_sigma"] == 2.0
    # t-SNE runs for the first seed only; the histograms need feedback
    second = json.loads((root / "partial-t2" / "seed=1" / "summary.json").read_text())["extra"]
    assert second["tsne"] is None and not (root / "partial-t2" / "seed=1" / "tsne.png").exists()
    none = json.loads((root / "none-t1" / "seed=0" / "summary.json").read_text())["extra"]
    assert none["histograms"] is None and none["contrast"]["last"] == none["contrast"]["first"]

    report = ln_report(root)
    names = {p.name for p in report.iterdir()}
    assert {"contrast.png", "partial-t2-histograms.png", "partial-t2-tsne.png", "none-t1-strip_noise.png"} <= names
    md = (report / "report.md").read_text()
    assert "## Loss per pass" in md and "## Feedback and gain" in md and "## Reduced contrast" in md
    gated = json.loads((report / "results.json").read_text())["gated"]
    mean_first = sum(json.loads((root / "partial-t2" / f"seed={s}" / "summary.json").read_text())["extra"]["pass_loss"][0]
                     for s in (0, 1)) / 2
    assert gated["partial-t2"]["pass_loss_mean"][0] == pytest.approx(mean_first)
    assert gated["partial-t2"]["histograms"]["fraction_max_gain"] == pytest.approx(
        (h["fraction_max_gain"] + second["histograms"]["fraction_max_gain"]) / 2)


def ln_report(root: Path) -> Path:
    from loopnets.report import build_report

    return build_report(root)


def test_kemmerling_reproduction_page_computes_claims_from_runs(tmp_path):
    build_kemmerling = load_page_builder("docs/reproductions/build_kemmerling.py")
    runs = tmp_path / "runs"  # with its report: the page reads report/results.json
    args = ["run", str(write(tmp_path, TINY)), "--runs-dir", str(runs), "--no-progress",
            "name=kemmerling-feedback", "train.epochs=1", "train.seeds=[0]"]
    assert main(args) == 0
    page = build_kemmerling.build(runs, tmp_path / "kemmerling.md")
    final = {v: json.loads((runs / "kemmerling-feedback" / v / "seed=0" / "summary.json").read_text())["probes"]["original"]["loss"]
             for v in ("none-t1", "partial-t2")}
    row = next(line for line in page.splitlines() if line.startswith("| 1 |"))
    assert f"partial {final['partial-t2']:.4f} ± n/a vs standard {final['none-t1']:.4f} ± n/a" in row
    assert "**inconclusive**" in row  # one seed: no noise estimate, so no verdict either way
    assert "| 2 |" in page and "not run yet: `loopnets run configs/kemmerling/timesteps.toml --workers 2" in page
    assert page.count("| **") == 11  # one verdict per finding
