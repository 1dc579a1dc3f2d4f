"""Configs, the runner and the CLI: shipped configs validate, runs land on disk, sweeps resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopnets.cli import main
from loopnets.experiments import ConfigError, Experiment, expand_variants, load_config, validate
from loopnets.experiments.config import from_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.toml"))

TINY = """
name = "tiny"
[data]
name = "iris"
[model]
layers = [
  { type = "dense", units = 6, activation = "relu" },
  { type = "dense", units = 6, activation = "relu" },
  { type = "dense", units = 6, activation = "relu" },
]
loop = [1, 2]
[train]
epochs = 3
batch_size = 16
seeds = [0, 1]
[[variants]]
method = "ffn"
[[variants]]
method = "couple"
unroll = 2
skip = true
"""


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_validates(path):
    exp = load_config(path)
    variants = validate(exp)  # builds every variant's network on the real data
    assert variants and exp.description and exp.notes


def test_shipped_configs_exist_for_the_thesis():
    names = {p.stem for p in CONFIGS}
    assert {"iris", "meats-dense-classification", "meats-conv-regression", "mnist-tiny-cnn", "bike"} <= names


def test_default_experiment_is_the_iris_comparison():
    exp = load_config(None)
    assert exp == Experiment()
    names = [v.name for v in expand_variants(exp)]
    assert names == ["ffn", "ffn-skip", "combine-x2", "combine-x2-skip", "couple-x2", "couple-x2-skip"]
    validate(exp)


def test_variant_lists_expand_and_overrides_apply(tmp_path):
    exp = load_config(write(tmp_path, TINY), ["train.epochs=7", "name=renamed", "train.optimizer_args.lr=0.5",
                                              "variants=[{method='tied', unroll=[2,3], skip=[false,true]}]"])
    assert exp.train.epochs == 7 and exp.name == "renamed" and exp.train.optimizer_args["lr"] == 0.5
    assert [v.name for v in expand_variants(exp)] == ["tied-x2", "tied-x2-skip", "tied-x3", "tied-x3-skip"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"epochz": 3}, r"unknown config key epochz; valid keys: name, description"),
        ({"train": {"epochz": 3}}, r"unknown config key train.epochz; valid keys in train: loss, optimizer"),
        ({"train": {"epochs": "ten"}}, r"config key train.epochs must be int; got str 'ten'"),
        ({"train": {"epochs": 0}}, r"train.epochs must be >= 1"),
        ({"train": {"seeds": [1, 1]}}, r"train.seeds must be a non-empty list of distinct integers"),
        ({"model": {"loop": [2, 5]}}, r"model.loop = \[2, 5\] must be \[into, outof\]"),
        ({"variants": [{"method": "loopy"}]}, r"variants\[0\].method = 'loopy' is not one of ffn, combine, couple, tied"),
        ({"variants": [{"method": "ffn"}, {"method": "ffn"}]}, r"two variants are both named 'ffn'"),
        ({"variants": [{"method": "couple", "unroll": 0}]}, r"variants\[0\].unroll must be an integer >= 1"),
    ],
)
def test_bad_configs_name_the_key_and_the_fix(change, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(change)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"model": {"layers": [{"type": "dense", "units": 25}, {"type": "dense", "units": 24}], "loop": [0, 1]}},
         r"variant 'combine-x2'.*cannot be built: loopback 1 -> 0 needs layer 1's output shape to equal layer 0's input shape \(4,\); got \(24,\)"),
        ({"model": {"layers": [{"type": "dense", "unitz": 25}], "loop": [0, 0]}}, r"model.layers\[0\]: dense: unknown keys \['unitz'\]"),
        ({"variants": [{"method": "couple", "grad_scale": 0.5}]}, r"grad_scale applies only to combine"),
        ({"variants": [{"method": "couple", "accumulate": "sum"}]}, r"Couple\(accumulate='sum'\) is not supported"),
        ({"data": {"name": "cifar100"}}, r"config key data: .*cifar100"),
        ({"data": {"options": {"colour": 1}}}, r"config key data: .*colour"),
        ({"train": {"optimizer": "adamz"}}, r"train.optimizer.*adamz"),
        ({"train": {"loss": "rmse"}}, r"train.loss = 'rmse' does not fit the classification data"),
    ],
)
def test_impossible_experiments_fail_before_training(change, message):
    base = {"variants": [{"method": "combine"}]}
    with pytest.raises(ConfigError, match=message):
        validate(from_dict({**base, **change}))


def test_cli_run_writes_runs_and_report(tmp_path, capsys):
    config = write(tmp_path, TINY)
    runs = tmp_path / "runs"
    assert main(["run", str(config), "--runs-dir", str(runs), "--no-progress"]) == 0
    exp_dir = runs / "tiny"
    assert (exp_dir / "experiment.toml").is_file()
    for variant in ("ffn", "couple-x2-skip"):
        for seed in (0, 1):
            run = exp_dir / variant / f"seed={seed}"
            assert {p.name for p in run.iterdir()} == {"config.toml", "metrics.csv", "summary.json", "model.lnet"}
            summary = json.loads((run / "summary.json").read_text())
            assert summary["status"] == "finished" and summary["epochs_run"] == 3
            assert len((run / "metrics.csv").read_text().splitlines()) == 4
            # the run folder reproduces its run: its config loads and names this variant and seed
            again = load_config(run / "config.toml")
            assert [v.name for v in expand_variants(again)] == [variant]
    couple = json.loads((exp_dir / "couple-x2-skip" / "seed=0" / "summary.json").read_text())
    assert couple["probes"]["skip_off"] is not None and couple["probes"]["feedback_off"] is not None
    ffn = json.loads((exp_dir / "ffn" / "seed=0" / "summary.json").read_text())
    assert ffn["probes"]["skip_off"] is None and ffn["probes"]["feedback_off"] is None
    report = exp_dir / "report"
    assert (report / "report.html").is_file() and (report / "report.md").is_file()
    assert "report.html" in capsys.readouterr().out
    # a second run skips every finished run
    before = {p: p.stat().st_mtime_ns for p in exp_dir.glob("*/seed=*/summary.json")}
    assert main(["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report"]) == 0
    assert "4 already finished, 0 to train" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in exp_dir.glob("*/seed=*/summary.json")}


def test_changed_config_is_refused_unless_fresh(tmp_path, capsys):
    config = write(tmp_path, TINY)
    runs = tmp_path / "runs"
    args = ["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report", "train.seeds=[0]"]
    assert main(args) == 0
    assert main([*args, "train.epochs=2"]) == 2
    assert "holds runs of a different config" in capsys.readouterr().err
    assert main([*args, "train.epochs=2", "--fresh"]) == 0


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml does not exist" in capsys.readouterr().err
    assert main(["run", "train.epochz=3"]) == 2
    assert "unknown config key train.epochz" in capsys.readouterr().err


def test_diverging_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    # plain SGD (Adam would normalise the blown-up gradient away) and a huge COMBINE grad_scale
    config = write(tmp_path, TINY.replace('method = "couple"', 'method = "combine"\ngrad_scale = 1e30')
                   .replace("skip = true", "skip = false").replace("epochs = 3", "epochs = 5")
                   .replace("[train]", "[train]\noptimizer = 'sgd'\noptimizer_args = { lr = 0.1 }"))
    runs = tmp_path / "runs"
    assert main(["run", str(config), "--runs-dir", str(runs), "--no-progress"]) == 0
    diverged = json.loads((runs / "tiny" / "combine-x2" / "seed=0" / "summary.json").read_text())
    assert diverged["status"] == "diverged" and "diverged at epoch" in diverged["error"]
    assert diverged["probes"] is None
    assert not (runs / "tiny" / "combine-x2" / "seed=0" / "model.lnet").exists()
    ffn = json.loads((runs / "tiny" / "ffn" / "seed=1" / "summary.json").read_text())
    assert ffn["status"] == "finished"
    assert "diverged" in (runs / "tiny" / "report" / "report.md").read_text()


SLOW = TINY.replace("epochs = 3", "epochs = 60").replace("batch_size = 16", "batch_size = 4").replace(
    "seeds = [0, 1]", "seeds = [0, 1, 2, 3]")


def test_interrupted_sweep_resumes_without_losing_or_repeating_runs(tmp_path):
    config = write(tmp_path, SLOW)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "loopnets.cli", "run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300  # generous: a loaded 2-core CI machine can take minutes to start and train
    while time.time() < deadline and proc.poll() is None and len(list(runs.glob("tiny/*/seed=*/summary.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-sweep, possibly mid-write
    proc.wait()
    finished = {p.parent: p.stat().st_mtime_ns for p in runs.glob("tiny/*/seed=*/summary.json")}
    assert 2 <= len(finished) < 8, "the kill should land mid-sweep"
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} already finished, {8 - len(finished)} to train" in result.stdout
    after = {p.parent: p.stat().st_mtime_ns for p in runs.glob("tiny/*/seed=*/summary.json")}
    assert len(after) == 8
    assert all(after[folder] == mtime for folder, mtime in finished.items())  # not repeated
    assert not list(runs.glob("tiny/*/*.partial-*"))


def test_parallel_workers_train_every_run(tmp_path):
    config = write(tmp_path, TINY)
    runs = tmp_path / "runs"
    assert main(["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report", "--workers", "2"]) == 0
    assert len(list(runs.glob("tiny/*/seed=*/summary.json"))) == 4


def test_ray_backend_runs_a_two_run_sweep_on_a_local_cluster(tmp_path):
    import ray  # noqa: F401  (the optional extra loopnets[ray]; `make test` installs it)

    config = write(tmp_path, TINY)
    runs = tmp_path / "runs"
    args = ["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report", "--ray", "local",
            "train.seeds=[0]"]
    assert main(args) == 0
    summaries = sorted(runs.glob("tiny/*/seed=*/summary.json"))
    assert len(summaries) == 2
    assert all(json.loads(p.read_text())["status"] == "finished" for p in summaries)


def test_reproduction_page_sets_our_runs_beside_the_thesis(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_lavik", ROOT / "docs" / "reproductions" / "build_lavik.py")
    build_lavik = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_lavik)
    runs = tmp_path / "runs"
    assert main(["run", str(write(tmp_path, TINY)), "--runs-dir", str(runs), "--no-progress", "name=lavik-iris"]) == 0
    page = build_lavik.build(runs, tmp_path / "lavik.md")
    assert "| FFN | 0.9067 ± 0.1062 |" in page  # the thesis's Table B.1 beside ours
    ours = json.loads((runs / "lavik-iris" / "report" / "results.json").read_text())
    ffn = next(v for v in ours["variants"] if v["variant"] == "ffn")
    assert f"{ffn['probes']['original']['accuracy']['mean']:.4f}" in page
    assert "Not run yet: `loopnets run configs/lavik/bike.toml`" in page
