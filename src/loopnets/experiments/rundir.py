"""Run folders on disk: atomic writes, the experiment lock, each run's state, the recorded config.

    runs/<experiment>/run.lock                        held by the process running the sweep
    runs/<experiment>/experiment.toml                 the resolved config
    runs/<experiment>/<variant>/seed=<n>/summary.json  a finished (or diverged) run
    runs/<experiment>/<variant>/seed=<n>/failed.json   a run that raised, or whose worker died

Promises (docs/reliability.md):
- A file is written to a temporary name in its folder, fsynced, and renamed into place
  (`write_atomic`); a run folder is written as `seed=<n>.partial-<id>/`, every file fsynced,
  and renamed to `seed=<n>/` (`write_run`). A crash leaves the old file, or a partial folder
  that the next sweep deletes, never half a file.
- A finished run's folder is never replaced. A failed or incomplete one (`seed=<n>/` without
  summary.json: a failed run, or one left by hand) is replaced when the run is trained again.
- One process at a time runs an experiment: `lock` creates run.lock with O_EXCL, holding the
  holder's pid, host, start time and command. A second process is refused with a message
  naming the holder; a lock whose pid is dead on this host is taken over.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from loopnets.experiments.config import ConfigError, Experiment, dumps, expand_variants, from_dict, to_dict
from loopnets.atomic import fsync_folder, write_atomic, write_new
from loopnets.faults import FileFault, about

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

FINISHED = "summary.json"
FAILED = "failed.json"
LOCK = "run.lock"


# --- cleaning up -------------------------------------------------------------------------


def _remove_quietly(path: Path) -> None:
    try:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def write_run(folder: Path, files: dict[str, bytes]) -> bool:
    """Write a run's files into `folder` (a `seed=<n>/`) at once; False if a finished run is there.

    The files go into `seed=<n>.partial-<id>/`, each fsynced, summary.json (or failed.json) last;
    then that folder is renamed to `seed=<n>/`. A `seed=<n>/` already there without summary.json
    (a failed or incomplete run) is moved aside first and deleted afterwards; one with
    summary.json (a finished run) is never touched.

    Raises:
        FileFault: the folder could not be written; nothing finished was touched, and the
            partial folder is removed.
    """
    folder = Path(folder)
    with about(folder, "write the run folder"):
        if (folder / FINISHED).is_file():
            return False
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = folder.with_name(f"{folder.name}.partial-{uuid.uuid4().hex[:8]}")
        last = [name for name in (FINISHED, FAILED) if name in files]
        try:
            partial.mkdir()
            for name in sorted(files, key=lambda n: n in last):  # the marker last
                (partial / name).parent.mkdir(parents=True, exist_ok=True)  # loggers' folders (tensorboard/)
                write_new(partial / name, files[name])
            fsync_folder(partial)
            old = None
            if folder.exists():  # failed or incomplete: replaced (a finished one returned above)
                old = folder.with_name(f"{folder.name}.partial-old-{uuid.uuid4().hex[:8]}")
                os.replace(folder, old)
            os.replace(partial, folder)
            fsync_folder(folder.parent)
        except BaseException:
            _remove_quietly(partial)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return True


def remove_partials(experiment_dir: Path) -> None:
    """Delete the partial folders an interrupted sweep left (`<variant>/seed=<n>.partial-*`)."""
    for stale in Path(experiment_dir).glob("*/seed=*.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in Path(experiment_dir).glob(".*.tmp-*"):
        _remove_quietly(stale)


def run_state(folder: Path) -> str:
    """"finished" (summary.json), "failed" (failed.json), "incomplete" (a folder with neither) or "absent"."""
    folder = Path(folder)
    if (folder / FINISHED).is_file():
        return "finished"
    if (folder / FAILED).is_file():
        return "failed"
    return "incomplete" if folder.exists() else "absent"


def failure_record(experiment: str, variant: str, seed: int, error: str, details: str) -> dict[str, bytes]:
    """The files of a run that failed: failed.json with its error (the same command retries it)."""
    record = {
        "experiment": experiment, "variant": variant, "seed": seed, "status": "failed",
        "error": error, "details": details,
        "host": socket.gethostname(), "time": _now(),
        "retry": "run the same `loopnets run` command again: failed runs are trained again",
    }
    return {FAILED: json.dumps(record, indent=2).encode()}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- the experiment lock -------------------------------------------------------------------


class ExperimentLocked(FileFault):
    """Another process holds the experiment folder's lock."""


def _read_lock(path: Path) -> dict | None:
    """The lock's holder; None if the file is gone; {} if it cannot be read as a lock."""
    try:
        holder = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _stale(holder: dict) -> bool:
    """Whether a lock's holder is a process of this host that no longer runs."""
    pid = holder.get("pid")
    return (holder.get("host") == socket.gethostname() and isinstance(pid, int) and pid > 0
            and pid != os.getpid() and not _alive(pid))


def _describe_holder(holder: dict) -> str:
    if not holder:
        return "a process whose lock file cannot be read"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
            + (f" ({holder['command']})" if holder.get("command") else ""))


@contextmanager
def lock(experiment_dir: Path) -> Iterator[dict]:
    """Hold `experiment_dir/run.lock` for the block (creating the folder); yield the lock's record.

    Raises:
        ExperimentLocked: another live process holds it (the message names it and how to proceed).
        FileFault: the folder cannot be created or written (read-only, disk full, bad name).
    """
    experiment_dir = Path(experiment_dir)
    path = experiment_dir / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(),
          "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) if sys.argv else ""}
    with about(path, "lock the experiment folder"):
        experiment_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read_lock(path)
                if holder is None:  # released meanwhile: try again
                    continue
                if not _stale(holder):
                    raise ExperimentLocked(
                        f"the experiment folder is in use by {_describe_holder(holder)}", path,
                        "wait for that sweep to finish (its runs are not trained twice); if no such process "
                        "runs any more, delete the lock file") from None
                _take_over(path, holder)
                continue
            try:
                os.write(fd, json.dumps(me).encode())
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise
            os.close(fd)
            break
        else:
            raise ExperimentLocked("the experiment folder's lock keeps changing hands", path,
                                   "another process is starting on it; try again")
    try:
        yield me
    finally:
        if _read_lock(path) == me:  # never remove a lock another process took over
            path.unlink(missing_ok=True)


def _take_over(path: Path, holder: dict) -> None:
    """Remove a stale lock, unless another process replaced it since it was read."""
    aside = path.with_name(f"{LOCK}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another process took it over first
        return
    if _read_lock(aside) != holder:  # a live lock came between the read and the rename: put it back
        try:
            os.link(aside, path)
        except OSError:
            pass
    aside.unlink(missing_ok=True)


def clear(experiment_dir: Path) -> None:
    """Delete everything in the experiment folder but its lock (`loopnets run --fresh`)."""
    for child in Path(experiment_dir).iterdir():
        if child.name != LOCK:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


# --- the recorded config ----------------------------------------------------------------------


def prepare(exp: Experiment, experiment_dir: Path, fresh: bool) -> None:
    """Check experiment.toml against this config (or clear the folder with `fresh`), then record it."""
    resolved = dumps(to_dict(exp))
    recorded = experiment_dir / "experiment.toml"
    if fresh:
        clear(experiment_dir)
    problem = _recorded_differs(exp, experiment_dir, resolved)
    if problem:
        raise ConfigError(f"{experiment_dir} holds runs of a different config than this one ({problem}); "
                          f"give the experiment another name (name=...), or pass --fresh to delete those runs")
    with about(recorded, "read the recorded config"):
        current = recorded.read_bytes() if recorded.is_file() else None
    if current != resolved.encode():
        write_atomic(recorded, resolved.encode())
    remove_partials(experiment_dir)  # left by an interrupted sweep


def _recorded_differs(exp: Experiment, experiment_dir: Path, resolved: str) -> str | None:
    """How the runs already in the folder differ from this config; None if they match (or there are none).

    Compared with experiment.toml; when that file is unreadable (not UTF-8, not TOML, or a table
    short: truncated), with the config.toml of every finished run instead, so a damaged experiment.toml is rewritten
    when its runs are this config's, and refused when they are not.
    """
    recorded = experiment_dir / "experiment.toml"
    with about(recorded, "read the recorded config"):
        if not recorded.is_file():
            return None
        raw = recorded.read_bytes()
    try:
        text = raw.decode("utf-8")
        complete = set(tomllib.loads(resolved)) <= set(tomllib.loads(text))  # else truncated at a table
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        complete = False
    if complete:
        return None if _same_config(text, resolved) else _first_difference(text, resolved)
    names = {v.name for v in expand_variants(exp)}
    wanted = _comparable(to_dict(exp))
    for config in sorted(experiment_dir.glob("*/seed=*/config.toml")):
        if not (config.parent / FINISHED).is_file():
            continue
        try:
            run = tomllib.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            return f"experiment.toml and {config} are unreadable ({err})"
        variant = config.parent.parent.name
        if variant not in names or _comparable(run) != wanted:
            return f"experiment.toml is unreadable, and the run {config.parent} is not one of this config's"
    return None


def _comparable(config: dict) -> dict:
    """A config as far as every run shares it: without seeds, variants and train.group_seeds."""
    config = {k: v for k, v in config.items() if k != "variants"}
    config["train"] = {k: v for k, v in config.get("train", {}).items() if k not in ("seeds", "group_seeds")}
    return config


def _same_config(recorded: str, resolved: str) -> bool:
    """Whether two resolved configs ask for the same runs.

    - train.group_seeds only changes how they train (the same results within rounding), so folders
      written before the key existed, or with the other setting, resume;
    - a key the schema gained after the folder was written counts as its default: the recorded config
      is resolved again by today's schema, which fills it in (a key that was removed, or a value
      today's schema refuses, still differs);
    - train.seeds may grow: the recorded seeds' runs are runs of the longer list too."""
    if recorded == resolved:
        return True
    old, new = tomllib.loads(recorded), tomllib.loads(resolved)
    try:
        old = tomllib.loads(dumps(to_dict(from_dict(old))))
    except ConfigError:
        pass
    for config in (old, new):
        config.get("train", {}).pop("group_seeds", None)
    old_seeds = old.get("train", {}).pop("seeds", None)
    new_seeds = new.get("train", {}).pop("seeds", None)
    seeds_grew = old_seeds == new_seeds or (isinstance(old_seeds, list) and isinstance(new_seeds, list)
                                            and set(old_seeds) <= set(new_seeds))
    return seeds_grew and old == new


def _first_difference(old: str, new: str) -> str:
    for a, b in zip(old.splitlines(), new.splitlines()):
        if a != b:
            return f"recorded: {a.strip()!r}, now: {b.strip()!r}"
    return "different lengths"
