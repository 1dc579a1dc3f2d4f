"""Issue 13, class 1: a sweep neither loses nor repeats work when one part of it fails.

Real processes where the fault needs them: a worker killed with SIGKILL, two sweeps on one
folder, a lock left by a dead process. A run that crashes is injected with $LOOPNETS_INJECT_FAULT
(`runner._injected_fault`), so the failing code is the runner's own, in a real worker.
"""

import json
import re
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_IRIS

from loopnets.cli import main
from loopnets.experiments import load_config, rundir, run_experiment
from loopnets.experiments.runner import INJECT_FAULT, RunsFailed, threads_per_worker
from loopnets.faults import FileFault

TINY = TINY_IRIS


def write_config(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def runs_of(exp_dir: Path) -> dict[str, bytes]:
    """Every file of every run folder, by path: to check that finished runs are never touched."""
    return {str(p.relative_to(exp_dir)): p.read_bytes() for p in sorted(exp_dir.glob("*/seed=*/*"))}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "loopnets.cli", "run", *args, "--no-progress", "--no-report"]


def env(**extra: str) -> dict:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src, "PYTHONUNBUFFERED": "1", **extra}


# --- a run that raises --------------------------------------------------------------------------


def test_a_run_that_raises_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path)
    runs = tmp_path / "runs"
    exp_dir = runs / "tiny"
    args = ["run", str(config), "--runs-dir", str(runs), "--no-progress"]
    # seed 1 of the couple variant crashes; its seeds train as one group, so seed 0 must still land
    monkeypatch.setenv(INJECT_FAULT, "couple-x2/seed=1")
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert "1 of 4 runs failed in" in err and "couple-x2 seed=1: RuntimeError: fault injected" in out
    failed = json.loads((exp_dir / "couple-x2" / "seed=1" / "failed.json").read_text())
    assert failed["status"] == "failed" and "fault injected" in failed["error"] and "Traceback" in failed["details"]
    assert not (exp_dir / "couple-x2" / "seed=1" / "summary.json").exists()
    for folder in ("ffn/seed=0", "ffn/seed=1", "couple-x2/seed=0"):
        assert json.loads((exp_dir / folder / "summary.json").read_text())["status"] == "finished"
    assert (exp_dir / "report" / "report.md").is_file()  # the report of the runs that finished
    assert "couple-x2/seed=1: failed (RuntimeError: fault injected" in (exp_dir / "report" / "report.md").read_text()
    kept = runs_of(exp_dir)

    monkeypatch.delenv(INJECT_FAULT)
    assert main([*args, "--no-report"]) == 0
    assert "3 already finished, 1 to train (1 failed before)" in capsys.readouterr().out
    assert json.loads((exp_dir / "couple-x2" / "seed=1" / "summary.json").read_text())["status"] == "finished"
    assert not (exp_dir / "couple-x2" / "seed=1" / "failed.json").exists()
    after = runs_of(exp_dir)
    assert {k: v for k, v in after.items() if "seed=1/" not in k or "ffn" in k} == \
           {k: v for k, v in kept.items() if "seed=1/" not in k or "ffn" in k}  # finished runs untouched


def test_run_experiment_raises_runs_failed_after_every_other_run(tmp_path, monkeypatch):
    monkeypatch.setenv(INJECT_FAULT, "ffn/seed=0")
    exp = load_config(write_config(tmp_path), ["train.group_seeds=false"])
    with pytest.raises(RunsFailed) as failed:
        run_experiment(exp, tmp_path / "runs", progress=False, log=lambda line: None)
    assert [(f["variant"], f["seed"]) for f in failed.value.failed] == [("ffn", 0)]
    assert len(list((tmp_path / "runs" / "tiny").glob("*/seed=*/summary.json"))) == 3


# --- a worker that dies ------------------------------------------------------------------------


def test_worker_killed_with_sigkill_fails_only_its_run(tmp_path, capsys):
    # three runs on two workers; the worker holding seed 0 is killed as soon as it holds it (the
    # kill lands while it starts or trains: deterministic), while the other worker trains seed 1,
    # which must land, as must seed 2 (on the survivor or a fresh worker)
    config = write_config(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [0, 1, 2], group_seeds = false")
                          .replace(', { method = "couple", unroll = 2 }', ""))
    runs = tmp_path / "runs"
    proc = subprocess.Popen(cli(str(config), "--runs-dir", str(runs), "--workers", "2"), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started, lines = {}, []
    for line in proc.stdout:
        lines.append(line)
        if ": started in worker pid " in line:
            started[line.split()[1]] = int(line.rsplit(" ", 1)[1])
        if len(started) == 2:
            break
    assert started.keys() == {"seed=0:", "seed=1:"}, lines
    os.kill(started["seed=0:"], 9)
    out, err = proc.communicate(timeout=240)
    out = "".join(lines) + out
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "BrokenProcessPool" not in err
    (said,) = re.findall(r"torch threads: (\d+) in each of 2 worker processes \(\d+ cores, (\d+) busy", out)
    assert int(said[0]) == threads_per_worker(2, int(said[1]))
    exp_dir = runs / "tiny"
    failed = json.loads((exp_dir / "ffn" / "seed=0" / "failed.json").read_text())
    assert f"worker pid {started['seed=0:']} killed by SIGKILL" in failed["error"]
    assert f"ffn seed=0: FAILED (its worker process died: worker pid {started['seed=0:']} killed by SIGKILL" in out
    for seed in (1, 2):
        assert json.loads((exp_dir / "ffn" / f"seed={seed}" / "summary.json").read_text())["status"] == "finished"
    kept = runs_of(exp_dir)

    assert main(["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report"]) == 0
    assert "2 already finished, 1 to train (1 failed before)" in capsys.readouterr().out
    assert (exp_dir / "ffn" / "seed=0" / "summary.json").is_file()
    assert {k: v for k, v in runs_of(exp_dir).items() if "seed=0" not in k} == \
           {k: v for k, v in kept.items() if "seed=0" not in k}


# --- one sweep at a time -------------------------------------------------------------------------


def test_a_second_sweep_on_the_same_folder_is_refused_naming_the_holder(tmp_path, capsys):
    config = write_config(tmp_path, TINY.replace("epochs = 2", "epochs = 5"))
    runs = tmp_path / "runs"
    first = subprocess.Popen(cli(str(config), "--runs-dir", str(runs)), env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = runs / "tiny" / rundir.LOCK
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None and not lock.is_file():
        time.sleep(0.02)
    assert first.poll() is None, "the first sweep should still hold its lock"
    assert main(["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report"]) == 2
    out, err = capsys.readouterr()
    assert f"the experiment folder is in use by pid {first.pid} on {socket.gethostname()}" in err
    assert str(lock) in err and "Traceback" not in err
    assert "seed=" not in out  # nothing trained by the refused sweep
    first_out, first_err = first.communicate(timeout=240)
    assert first.returncode == 0, first_err
    trained = [line for line in first_out.splitlines() if "seed=" in line and "val acc" in line]
    assert len(trained) == 4 and len(set(trained)) == 4  # every run once
    assert not lock.exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now names no process
    exp_dir = tmp_path / "runs" / "tiny"
    exp_dir.mkdir(parents=True)
    lock = exp_dir / rundir.LOCK
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "then"}))
    args = ["run", str(write_config(tmp_path)), "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--no-report"]
    assert main(args) == 0
    assert len(list(exp_dir.glob("*/seed=*/summary.json"))) == 4
    assert not lock.exists()

    # a live holder (this test's parent process) or one on another host is never taken over
    for holder in ({"pid": os.getppid(), "host": socket.gethostname()}, {"pid": dead.pid, "host": "elsewhere"}):
        lock.write_text(json.dumps({**holder, "started": "then"}))
        capsys.readouterr()
        assert main(args) == 2
        assert f"in use by pid {holder['pid']} on {holder['host']}" in capsys.readouterr().err
        assert lock.exists()


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with rundir.lock(tmp_path / "exp") as held:
        assert json.loads((tmp_path / "exp" / rundir.LOCK).read_text()) == held
        with pytest.raises(rundir.ExperimentLocked, match=f"in use by pid {os.getpid()}"):
            with rundir.lock(tmp_path / "exp"):
                pass
    assert not (tmp_path / "exp" / rundir.LOCK).exists()


# --- incomplete folders, damaged experiment.toml, atomic writes --------------------------------------


def test_an_incomplete_seed_folder_is_replaced(tmp_path, capsys):
    config = write_config(tmp_path)
    runs = tmp_path / "runs"
    args = ["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report"]
    assert main(args) == 0
    exp_dir = runs / "tiny"
    (exp_dir / "ffn" / "seed=1" / "summary.json").unlink()  # as left by a crash, or by hand
    (exp_dir / "ffn" / "seed=1" / "stray.txt").write_text("left behind")
    kept = {k: v for k, v in runs_of(exp_dir).items() if not k.startswith("ffn/seed=1")}
    capsys.readouterr()
    assert main(args) == 0
    assert "3 already finished, 1 to train (1 incomplete before)" in capsys.readouterr().out
    assert (exp_dir / "ffn" / "seed=1" / "summary.json").is_file()
    assert not (exp_dir / "ffn" / "seed=1" / "stray.txt").exists()
    assert {k: v for k, v in runs_of(exp_dir).items() if not k.startswith("ffn/seed=1")} == kept
    assert not list(exp_dir.glob("*/*.partial-*"))


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"\xff\xfe" + b, lambda b: b""],
                         ids=["truncated", "not-utf8", "empty"])
def test_a_damaged_experiment_toml_is_rewritten_when_the_runs_are_this_configs(tmp_path, capsys, damage):
    config = write_config(tmp_path)
    runs = tmp_path / "runs"
    args = ["run", str(config), "--runs-dir", str(runs), "--no-progress", "--no-report", "train.seeds=[0]"]
    assert main(args) == 0
    recorded = runs / "tiny" / "experiment.toml"
    good = recorded.read_bytes()
    recorded.write_bytes(damage(good))
    capsys.readouterr()
    assert main(args) == 0
    assert "2 already finished, 0 to train" in capsys.readouterr().out
    assert recorded.read_bytes() == good
    # damaged again, and a different config: its runs are not this config's, so it is refused
    recorded.write_bytes(damage(good))
    assert main([*args, "train.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "holds runs of a different config" in err and "--fresh" in err and "Traceback" not in err
    assert main([*args, "train.epochs=3", "--fresh"]) == 0


def test_write_atomic_leaves_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "experiment.toml"
    rundir.write_atomic(path, b"old")
    real_write = os.write

    def half_then_full(fd, data):  # one byte lands, then the disk is full
        real_write(fd, bytes(data[:1]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(FileFault, match="no space left on the device"):
        rundir.write_atomic(path, b"new contents")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["experiment.toml"]  # no temporary file left


def test_write_run_is_all_or_nothing_and_never_replaces_a_finished_run(tmp_path, monkeypatch):
    folder = tmp_path / "ffn" / "seed=0"
    files = {"metrics.csv": b"epoch\n", "model.lnet": b"x" * 100, "summary.json": b'{"status": "finished"}'}
    calls = []
    real_write = rundir.write_new

    def fail_on_third(path, data):
        calls.append(path.name)
        if len(calls) == 3:
            raise OSError(30, "Read-only file system", str(path))
        real_write(path, data)

    monkeypatch.setattr(rundir, "write_new", fail_on_third)
    with pytest.raises(FileFault, match="read-only"):
        rundir.write_run(folder, files)
    assert calls[-1] == "summary.json"  # the marker of a finished run is written last
    monkeypatch.undo()
    assert not folder.exists() and list((tmp_path / "ffn").iterdir()) == []  # no partial folder left
    assert rundir.write_run(folder, files) is True
    assert rundir.run_state(folder) == "finished"
    before = runs_of(tmp_path)
    assert rundir.write_run(folder, {"summary.json": b"{}"}) is False
    assert runs_of(tmp_path) == before


def test_a_single_process_sweep_sets_torch_threads_to_the_cores_and_restores_them(tmp_path):
    seen = []
    exp = load_config(write_config(tmp_path), ["train.seeds=[0]"])
    before = torch.get_num_threads()
    lines = []
    run_experiment(exp, tmp_path / "runs", progress=False,
                   log=lambda line: (lines.append(line), seen.append(torch.get_num_threads())))
    (said,) = re.findall(r"torch threads: (\d+) in this process \(\d+ cores, (\d+) busy", "\n".join(lines))
    expected = threads_per_worker(1, int(said[1]))
    assert int(said[0]) == expected
    assert seen[-1] == expected  # the line logged after the last run
    assert torch.get_num_threads() == before


def test_threads_leave_the_cores_that_other_work_is_using(monkeypatch):
    from loopnets.experiments import runner

    monkeypatch.setattr(runner, "cores", lambda: 4)  # a 4-core machine
    assert [runner.threads_per_worker(1, busy) for busy in (0, 1, 3)] == [4, 3, 1]
    assert [runner.threads_per_worker(2, busy) for busy in (0, 1, 3)] == [2, 1, 1]
    assert 0 <= runner.busy_cores() <= 3  # this machine's /proc/loadavg, this process not counted
