"""Configs, the runner and the CLI: shipped configs validate, runs land on disk, sweeps resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import pytest
import tomli_w
from conftest import load_page_builder

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
            assert summary["val_samples"] == 30 and summary["classes"] == 3  # the report's noise and chance floors
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


def test_a_folder_resumes_with_more_seeds_and_keys_the_schema_gained_but_not_with_fewer_seeds(tmp_path, capsys):
    """More seeds run beside the finished ones; an experiment.toml written before a schema key existed
    (the key missing, its default today) is the same config; a seed list that drops a finished seed is not."""
    config = write(tmp_path, TINY)
    runs = tmp_path / "runs"
    args = ["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report"]
    assert main([*args, "train.seeds=[0]"]) == 0
    recorded = runs / "tiny" / "experiment.toml"
    data = tomllib.loads(recorded.read_text())
    assert data["train"]["loss"] == "auto"  # the default
    del data["train"]["loss"]  # as a loopnets from before the key would have written it
    recorded.write_text(tomli_w.dumps(data))
    capsys.readouterr()
    assert main([*args, "train.seeds=[0, 1]"]) == 0
    assert "2 already finished, 2 to train" in capsys.readouterr().out
    assert main([*args, "train.seeds=[1]"]) == 2
    assert "holds runs of a different config" in capsys.readouterr().err


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


def finished_runs(runs: Path) -> dict[Path, int]:
    """{run folder: summary.json's mtime} of the finished runs (a partial folder, killed before its
    rename, is not one)."""
    return {p.parent: p.stat().st_mtime_ns for p in runs.glob("tiny/*/seed=*/summary.json") if ".partial" not in p.parent.name}


def test_interrupted_sweep_resumes_without_losing_or_repeating_runs(tmp_path):
    config = write(tmp_path, SLOW)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "loopnets.cli", "run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300  # generous: a loaded 2-core CI machine can take minutes to start and train
    while time.time() < deadline and proc.poll() is None and len(finished_runs(runs)) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-sweep, possibly mid-write
    proc.wait()
    finished = finished_runs(runs)
    assert 2 <= len(finished) < 8, "the kill should land mid-sweep"
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} already finished, {8 - len(finished)} to train" in result.stdout
    after = finished_runs(runs)
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
    build_lavik = load_page_builder("docs/reproductions/build_lavik.py")
    runs = tmp_path / "runs"
    assert main(["run", str(write(tmp_path, TINY)), "--runs-dir", str(runs), "--no-progress", "name=lavik-iris"]) == 0
    page = build_lavik.build(runs, tmp_path / "lavik.md")
    assert "| FFN | 0.9067 ± 0.1062 |" in page  # the thesis's Table B.1 beside ours
    ours = json.loads((runs / "lavik-iris" / "report" / "results.json").read_text())
    ffn = next(v for v in ours["variants"] if v["variant"] == "ffn")
    assert f"{ffn['probes']['original']['accuracy']['mean']:.4f}" in page
    assert "Not run yet: `loopnets run configs/lavik/bike.toml`" in page


# --- seeds trained together (train.group_seeds) and the test-time unroll sweep ---------------

GROUPED = ["variants=[{method='ffn'}, {method='combine', unroll=3}, {method='couple', unroll=2, skip=true}]",
           "train.seeds=[0, 1, 2]"]
TIMING_COLUMNS = {"train_seconds", "val_seconds"}


def read_run(folder: Path) -> tuple[dict, list[dict]]:
    """(summary without its timing / training / environment records and measured peak memory,
    metrics.csv rows without the timing columns)."""
    import csv

    summary = json.loads((folder / "summary.json").read_text())
    training = summary.pop("training")
    summary.pop("timing")
    summary.pop("environment")  # load averages, measured like the timings
    summary["loop_training"]["memory"].pop("peak_bytes")  # malloc's peak depends on the allocator's state
    with (folder / "metrics.csv").open() as f:
        rows = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]
    return {**summary, "_training": training}, rows


def assert_close(a, b, tol=1e-4, where="") -> None:
    """Equal structures whose numbers agree within `tol` relative (strings that hold numbers too)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_close(a[k], b[k], tol, f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, tol, f"{where}[{i}]")
    elif isinstance(a, str) and a != b:
        assert_close(float(a), float(b), tol, where)
    elif isinstance(a, float) and not isinstance(b, bool):
        assert abs(a - b) <= tol * max(abs(a), abs(b), 1e-12) or a == b, f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def test_grouped_seeds_give_the_results_of_one_at_a_time(tmp_path):
    import torch

    from loopnets import load as load_model

    config = write(tmp_path, TINY)
    grouped, single = tmp_path / "grouped", tmp_path / "single"
    assert main(["run", str(config), "--runs-dir", str(grouped), "--no-progress", "--no-report", *GROUPED]) == 0
    assert main(["run", str(config), "--runs-dir", str(single), "--no-progress", "--no-report", *GROUPED,
                 "train.group_seeds=false"]) == 0
    folders = sorted(p.parent.relative_to(grouped) for p in grouped.glob("tiny/*/seed=*/summary.json"))
    assert len(folders) == 9
    for folder in folders:
        (a, rows_a), (b, rows_b) = read_run(grouped / folder), read_run(single / folder)
        assert len(rows_a) == 3
        assert_close(rows_a, rows_b)
        together = 6 if "couple" not in str(folder) else 3  # FFN and COMBINE x3 stack: 6 models in one group
        assert a.pop("_training") == {"path": "batched", "seeds_together": [0, 1, 2], "models_together": together,
                                      "reason": None}
        assert b.pop("_training") == {"path": "single", "seeds_together": [a["seed"]]}
        assert_close(a, b)  # probes, unroll sweep, epochs, parameters: every number but the timings, within rounding
        weights_a = load_model(grouped / folder / "model.lnet").state_dict()
        weights_b = load_model(single / folder / "model.lnet").state_dict()
        assert weights_a.keys() == weights_b.keys()
        assert all(torch.allclose(weights_a[k], weights_b[k], rtol=1e-4, atol=1e-6) for k in weights_a)


def test_resume_trains_only_the_unfinished_seeds_of_a_group(tmp_path, capsys):
    import shutil

    config = write(tmp_path, TINY)
    runs = tmp_path / "runs"
    args = ["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report", *GROUPED]
    assert main(args) == 0
    first = {p.parent: read_run(p.parent) for p in runs.glob("tiny/*/seed=*/summary.json")}
    for seed in (1, 2):  # as if the sweep had stopped before these two seeds of one variant finished
        shutil.rmtree(runs / "tiny" / "combine-x3" / f"seed={seed}")
    kept = {p: p.stat().st_mtime_ns for p in runs.glob("tiny/*/seed=*/summary.json")}
    capsys.readouterr()
    assert main(args) == 0
    assert "7 already finished, 2 to train" in capsys.readouterr().out
    assert kept == {p: p.stat().st_mtime_ns for p in kept}  # finished folders are never rewritten
    for seed in (1, 2):
        again = read_run(runs / "tiny" / "combine-x3" / f"seed={seed}")
        assert again[0].pop("_training") == {"path": "batched", "seeds_together": [1, 2], "models_together": 2,
                                             "reason": None}
        before = first[runs / "tiny" / "combine-x3" / f"seed={seed}"]
        before[0].pop("_training")
        assert_close(again, before)


def test_experiment_folders_without_group_seeds_resume(tmp_path, capsys):
    config = write(tmp_path, TINY)
    runs = tmp_path / "runs"
    args = ["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report", "train.seeds=[0]"]
    assert main(args) == 0
    recorded = runs / "tiny" / "experiment.toml"
    recorded.write_text(recorded.read_text().replace("group_seeds = true\n", ""))  # written before the key existed
    assert main([*args, "train.group_seeds=false"]) == 0
    assert "2 already finished, 0 to train" in capsys.readouterr().out


def test_unroll_sweep_is_the_model_evaluated_at_each_unroll(tmp_path):
    import loopnets as ln
    from loopnets.experiments.runner import load_split

    config = write(tmp_path, TINY)
    runs = tmp_path / "runs"
    assert main(["run", str(config), "--runs-dir", str(runs), "--no-progress", *GROUPED, "train.seeds=[0]"]) == 0
    exp = load_config(runs / "tiny" / "experiment.toml")
    split = load_split(exp)
    for variant, trained in (("combine-x3", 3), ("couple-x2-skip", 2)):
        folder = runs / "tiny" / variant / "seed=0"
        sweep = json.loads((folder / "summary.json").read_text())["unroll_sweep"]
        assert sweep["passes"] == list(range(1, max(8, 2 * trained) + 1)) and sweep["training_unroll"] == trained
        model = ln.load(folder / "model.lnet")
        for t, loss, accuracy in zip(sweep["passes"], sweep["loss"], sweep["accuracy"]):
            with ln.unrolled(model, t):  # COUPLE x2 in eval mode: passes beyond 2 reuse its last copy
                assert ln.evaluate(model, split.val, loss="cross_entropy") == {"loss": loss, "accuracy": accuracy}
    assert "unroll_sweep" not in json.loads((runs / "tiny" / "ffn" / "seed=0" / "summary.json").read_text())
    report = runs / "tiny" / "report"
    assert (report / "unroll_sweep.png").is_file()
    assert "unroll_sweep.png" in (report / "report.md").read_text()
    results = {v["variant"]: v["unroll_sweep"] for v in json.loads((report / "results.json").read_text())["variants"]}
    assert results["ffn"] is None
    couple = json.loads((runs / "tiny" / "couple-x2-skip" / "seed=0" / "summary.json").read_text())["unroll_sweep"]
    assert results["couple-x2-skip"]["training_unroll"] == 2
    assert results["couple-x2-skip"]["accuracy"]["mean"] == couple["accuracy"]
    assert results["couple-x2-skip"]["accuracy"]["passes"] == couple["passes"]


def test_unroll_sweep_zero_writes_none(tmp_path):
    config = write(tmp_path, TINY)
    runs = tmp_path / "runs"
    assert main(["run", str(config), "--runs-dir", str(runs), "--no-progress", "train.seeds=[0]",
                 "train.unroll_sweep=0"]) == 0
    assert not any("unroll_sweep" in json.loads(p.read_text()) for p in runs.glob("tiny/*/seed=*/summary.json"))
    assert not (runs / "tiny" / "report" / "unroll_sweep.png").exists()
    assert "unroll_sweep.png" not in (runs / "tiny" / "report" / "report.md").read_text()
