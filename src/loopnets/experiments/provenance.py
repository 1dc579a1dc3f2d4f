"""What a run trained on: software versions, machine, threads, device, load, source commit.

`environment(started, model)` is summary.json's "environment" record (docs/contract-runs.md). It
is computed in the worker that trained the run, at the end of the run, so the torch thread count
and the device are the ones training used. Nothing here raises: a value that cannot be read is
null (no /proc/cpuinfo, no `os.getloadavg`, no git, not a git checkout).

The load average at the start of a run comes from the latest mark this process took at or before
the run's start: a mark is taken when this module is imported (a worker imports it before its
first task) and at the end of every run (`environment` itself), which for a process training one
run after another is the start of the next. `load_average.start_age_seconds` says how long before
the run's start that mark was taken.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

GIT_TIMEOUT_SECONDS = 2.0
CPUINFO = "/proc/cpuinfo"
_marks: list[tuple[float, list[float] | None]] = []  # (time.perf_counter(), load average) in this process


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (runnable threads, all processes), or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # Windows; or unreadable
        return None


def mark_load() -> None:
    """Remember the load average now, as a candidate for the start of the next run in this process."""
    now = time.perf_counter()
    _marks.append((now, load_average()))
    del _marks[:-64]  # only the latest few are ever looked up


def load_at(started: float) -> tuple[list[float] | None, float | None]:
    """(the load average of the latest mark at or before `started`, its age in seconds before `started`)."""
    earlier = [m for m in _marks if m[0] <= started]
    if not earlier:
        return None, None
    at, load = earlier[-1]
    return load, round(started - at, 3)


def cpu_model() -> str | None:
    """The CPU's model name (/proc/cpuinfo's "model name"), else `platform.processor()`, else None."""
    try:
        with open(CPUINFO) as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")) and ":" in line:
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def usable_cores() -> int | None:
    """The CPUs this process may run on (`os.sched_getaffinity`; a container or taskset may allow fewer
    than the machine has), else `os.cpu_count()`."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def device_name(model: torch.nn.Module | None) -> str:
    """"cpu", or the CUDA device's name (e.g. "NVIDIA H100 80GB HBM3"), or the device type (mps) of
    the model's first parameter; "cpu" for a model without parameters."""
    param = next(iter(model.parameters()), None) if model is not None else None
    device = param.device if param is not None else torch.device("cpu")
    if device.type == "cuda":
        try:
            return torch.cuda.get_device_name(device)
        except (RuntimeError, AssertionError):
            return str(device)
    return device.type


@functools.lru_cache(maxsize=8)
def git_commit(source: str | Path | None = None) -> dict | None:
    """{"commit": HEAD, "dirty": tracked files changed} of the git checkout holding `source` (default:
    this package's folder), or None when it is not in one, git is missing, or git takes longer than
    GIT_TIMEOUT_SECONDS. An installed copy inside some other repository (a venv in a checkout) is
    not that repository's code: the package folder must hold files git tracks."""
    folder = Path(source) if source is not None else Path(__file__).resolve().parents[1]  # src/loopnets

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT_SECONDS, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit or not git("ls-files", "--", "."):
        return None
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def environment(started: float, model: torch.nn.Module | None = None) -> dict:
    """summary.json's "environment": the versions, machine, threads, device and load of a run.

    Args:
        started: time.perf_counter() at the run's start (this process's clock).
        model: the trained model, for its device.
    """
    from loopnets.version import __version__

    load_start, age = load_at(started)
    mark_load()  # the end of this run: the start of the next run in this process
    source = git_commit()
    return {
        "loopnets": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cores_usable": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "device": device_name(model),
        "load_average": {"start": load_start, "start_age_seconds": age, "end": _marks[-1][1]},
        "git_commit": None if source is None else source["commit"],
        "git_dirty": None if source is None else source["dirty"],
    }


mark_load()  # a worker imports this before its first run
