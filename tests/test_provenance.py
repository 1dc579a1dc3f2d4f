"""summary.json's "environment": versions, machine, threads, device, load and commit of every run."""

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

import loopnets
from loopnets.experiments import load_config, provenance
from loopnets.experiments import runner
from loopnets.experiments.runner import run_experiment, threads_per_worker

from conftest import TINY_IRIS_BASE

ROOT = Path(__file__).resolve().parents[1]

TINY = 'name = "prov"\n' + TINY_IRIS_BASE + """
[[variants]]
method = "ffn"
[[variants]]
method = "tied"
unroll = 2
"""

TYPES = {"loopnets": str, "torch": str, "python": str, "platform": str, "cpu": str, "cpu_count": int,
         "cores_usable": int, "torch_threads": int, "device": str, "load_average": dict}


def check_environment(env: dict, threads: int) -> None:
    assert set(env) == set(TYPES) | {"git_commit", "git_dirty"}
    for key, kind in TYPES.items():
        assert isinstance(env[key], kind), (key, env[key])
    assert env["loopnets"] == loopnets.__version__ and env["torch"] == torch.__version__
    assert env["torch_threads"] == threads and env["device"] == "cpu"
    assert 1 <= env["cores_usable"] <= env["cpu_count"]
    load = env["load_average"]
    assert set(load) == {"start", "start_age_seconds", "end"}
    for key in ("start", "end"):
        assert len(load[key]) == 3 and all(isinstance(x, float) and x >= 0 for x in load[key])
    assert 0 <= load["start_age_seconds"] < 600
    assert env["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])
    assert env["git_dirty"] in (None, True, False)


def test_every_run_records_its_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "busy_cores", lambda: 0)  # the thread count below must not depend on other work
    config = tmp_path / "prov.toml"
    config.write_text(TINY)
    threads = threads_per_worker(1)  # what the sweep gives torch in its one process
    root = run_experiment(load_config(config), tmp_path / "runs", progress=False, log=lambda _: None)
    summaries = [json.loads(p.read_text()) for p in sorted(root.glob("*/seed=*/summary.json"))]
    assert len(summaries) == 4
    for summary in summaries:
        check_environment(summary["environment"], threads)


def test_environment_fields_and_a_start_load_from_the_latest_mark(monkeypatch):
    loads = iter([[3.0, 2.0, 1.0], [4.0, 2.5, 1.5]])
    monkeypatch.setattr(provenance, "load_average", lambda: next(loads))
    monkeypatch.setattr(provenance, "_marks", [])
    provenance.mark_load()  # at 3.0: the start of the run below
    started = time.perf_counter()
    env = provenance.environment(started, torch.nn.Linear(2, 2))  # marks 4.0: the end, and the next run's start
    check_environment({**env, "load_average": {"start": [0.0] * 3, "start_age_seconds": 0, "end": [0.0] * 3}},
                      torch.get_num_threads())
    assert env["load_average"]["start"] == [3.0, 2.0, 1.0] and env["load_average"]["end"] == [4.0, 2.5, 1.5]
    assert provenance.load_at(time.perf_counter())[0] == [4.0, 2.5, 1.5]
    assert provenance.load_at(started - 3600) == (None, None)  # no mark before: unknown, not a guess


def test_missing_sources_give_null_not_an_exception(monkeypatch, tmp_path):
    def no_loadavg():
        raise OSError("no load average here")

    monkeypatch.setattr(provenance.os, "getloadavg", no_loadavg)
    assert provenance.load_average() is None
    monkeypatch.setattr(provenance, "CPUINFO", str(tmp_path / "missing"))
    assert provenance.cpu_model() == (provenance.platform.processor() or provenance.platform.machine() or None)
    monkeypatch.delattr(provenance.os, "sched_getaffinity", raising=False)
    assert provenance.usable_cores() == provenance.os.cpu_count()
    assert provenance.device_name(None) == "cpu" and provenance.device_name(torch.nn.ReLU()) == "cpu"


def test_git_commit_is_null_outside_a_repository(tmp_path, monkeypatch):
    assert provenance.git_commit(tmp_path) is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    provenance.git_commit.cache_clear()
    assert provenance.git_commit(tmp_path / "elsewhere") is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_git_commit_of_a_checkout_and_not_of_an_untracked_copy_inside_one(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", "pkg")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    assert provenance.git_commit(tmp_path / "pkg") == {"commit": git("rev-parse", "HEAD").strip(), "dirty": False}
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    provenance.git_commit.cache_clear()
    assert provenance.git_commit(tmp_path / "pkg")["dirty"] is True
    (tmp_path / "venv" / "loopnets").mkdir(parents=True)  # an installed copy in a venv inside the checkout
    (tmp_path / "venv" / "loopnets" / "b.py").write_text("")
    assert provenance.git_commit(tmp_path / "venv" / "loopnets") is None


INN_TINY = """
name = "prov-inn"
[data]
name = "hershey_mnist"
options = { sizes = [60, 20, 20] }
[model]
family = "inn"
[model.inn]
hidden = [4]
iterations = 2
eval_iterations = [1, 2]
[train]
epochs = 1
batch_size = 20
seeds = [0]
unroll_sweep = 0
[[variants]]
model = "inn"
density = 0.3
"""


def test_inn_runs_record_their_environment_too(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "busy_cores", lambda: 0)
    config = tmp_path / "inn.toml"
    config.write_text(INN_TINY)
    root = run_experiment(load_config(config), tmp_path / "runs", progress=False, log=lambda _: None)
    (path,) = root.glob("*/seed=0/summary.json")
    check_environment(json.loads(path.read_text())["environment"], threads_per_worker(1))
