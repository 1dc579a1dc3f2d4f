"""Issue 14 in configs and the CLI: [train] device / precision / loggers / scheduler / clip, --device, progress."""

import csv
import importlib.util
from pathlib import Path

import pytest
import torch

from loopnets.cli import main
from loopnets.experiments import ConfigError, runner
from loopnets.experiments.config import from_dict
from loopnets.experiments.progress import SweepProgress

TINY = """
name = "tiny"
[train]
epochs = 3
seeds = [0]
{extra}
[[variants]]
method = "ffn"
"""


def write(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(TINY.format(extra=extra))
    return path


def val_losses(run: Path) -> list[float]:
    with (run / "metrics.csv").open() as f:
        return [float(row["val_loss"]) for row in csv.DictReader(f)]


def test_each_engine_key_trains_and_shows_its_effect(tmp_path):
    """A scheduler that sets the lr to 0 after epoch 1 freezes the weights (the val loss stops moving);
    the tensorboard logger writes into the run folder; clip and device train."""
    extra = ('scheduler = { name = "StepLR", step_size = 1, gamma = 0.0 }\nclip = ["value", 5.0]\n'
             'device = "cpu"\nloggers = ["csv", "tensorboard"]')
    args = ["run", str(write(tmp_path, extra)), "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--no-report"]
    assert main(args) == 0
    run = tmp_path / "runs" / "tiny" / "ffn" / "seed=0"
    frozen = val_losses(run)
    assert frozen[1] == frozen[2]  # lr 0 from epoch 2: nothing moves
    plain_args = ["run", str(write(tmp_path)), "--runs-dir", str(tmp_path / "plain"), "--no-progress", "--no-report"]
    assert main(plain_args) == 0
    plain = val_losses(tmp_path / "plain" / "tiny" / "ffn" / "seed=0")
    assert plain[1] != plain[2]  # without the scheduler it keeps learning
    assert plain[0] == frozen[0]  # the same first epoch (clip 5 does not bind on iris)
    if importlib.util.find_spec("tensorboard") is not None:
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "metrics.csv").read_text().count("\n") == 4  # csv written once: a header and 3 epochs


def test_output_clip_in_a_config_trains_and_changes_the_steps(tmp_path):
    args = ["run", str(write(tmp_path, 'clip = ["output", 1e-4]')), "--runs-dir", str(tmp_path / "runs"),
            "--no-progress", "--no-report"]
    assert main(args) == 0
    clipped = val_losses(tmp_path / "runs" / "tiny" / "ffn" / "seed=0")
    assert main(["run", str(write(tmp_path)), "--runs-dir", str(tmp_path / "plain"), "--no-progress", "--no-report"]) == 0
    assert clipped != val_losses(tmp_path / "plain" / "tiny" / "ffn" / "seed=0")


@pytest.mark.parametrize("train, words", [
    ({"device": "gpu"}, ["train.device", "cuda:N"]),
    ({"precision": "fp32"}, ["train.precision", "bf16"]),
    ({"loggers": ["csv", "tensorbord"]}, ["train.loggers[1]", "did you mean 'tensorboard'"]),
    ({"loggers": ["csv", "csv"]}, ["train.loggers", "twice"]),
    ({"scheduler": "StpLR"}, ["train.scheduler", "did you mean 'StepLR'", "CosineAnnealingLR"]),
    ({"scheduler": {"name": "StepLR", "step_sise": 3}}, ["did you mean 'step_size'", "valid arguments: step_size"]),
    ({"scheduler": {"name": "StepLR"}}, ["needs argument", "step_size"]),
    ({"scheduler": {"step_size": 3}}, ["train.scheduler", "name ="]),
    ({"clip": ["valu", 5.0]}, ["train.clip", "did you mean 'value'", "output"]),
    ({"clip": ["norm", -1.0]}, ["train.clip", "> 0"]),
    ({"clip": 5}, ["train.clip", "list"]),
])
def test_bad_engine_keys_are_config_errors_naming_the_key(train, words):
    with pytest.raises(ConfigError) as caught:
        from_dict({"train": train})
    for word in words:
        assert word in str(caught.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_is_refused_before_any_folder(tmp_path, capsys):
    args = ["run", str(write(tmp_path)), "--runs-dir", str(tmp_path / "runs"), "--no-report", "--device", "cuda"]
    assert main(args) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_progress_prints_epoch_lines_when_not_a_terminal_and_nothing_with_no_progress(tmp_path, capsys):
    path = tmp_path / "exp.toml"
    path.write_text(TINY.format(extra="").replace("seeds = [0]", "seeds = [0, 1]"))
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "a"), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "tiny: 3/6 epochs (50%), runs 1/2" in out and "tiny: 6/6 epochs (100%), runs 2/2" in out
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "b"), "--no-report", "--no-progress"]) == 0
    assert "epochs (" not in capsys.readouterr().out


def test_plain_progress_counts_epochs_and_gives_an_eta_from_them():
    lines = []
    progress = SweepProgress("x", runs=2, epochs_per_run=4, log=lines.append, interval=0.0)
    progress.epoch("a")
    progress.epoch("a")
    assert lines[-1].startswith("x: 2/8 epochs (25%), runs 0/2") and "ETA 0:00" in lines[-1]
    progress.landed("a")  # stopped early: its remaining 2 epochs count as done
    assert lines[-1].startswith("x: 4/8 epochs (50%), runs 1/2")
    progress.epoch("b")
    progress.landed("b")
    assert lines[-1].startswith("x: 8/8 epochs (100%), runs 2/2")
    quiet = []
    off = SweepProgress("x", runs=1, epochs_per_run=1, enabled=False, log=quiet.append)
    off.epoch("a")
    off.landed("a")
    assert quiet == []


def test_workers_report_every_epoch_to_the_driver(tmp_path, monkeypatch):
    seen = []
    original = SweepProgress.epoch
    monkeypatch.setattr(SweepProgress, "epoch", lambda self, run: (seen.append(run), original(self, run)))
    path = tmp_path / "exp.toml"
    path.write_text(TINY.format(extra="group_seeds = false").replace("seeds = [0]", "seeds = [0, 1]"))
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--no-report", "--workers", "2"]) == 0
    assert sorted(seen) == ["ffn/seed=0"] * 3 + ["ffn/seed=1"] * 3
