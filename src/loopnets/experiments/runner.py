"""Run an experiment: every (variant, seed) trained into its own folder, resumable.

    runs/<experiment>/<variant>/seed=<n>/{config.toml, metrics.csv, summary.json, model.lnet}

A run trains in a worker (this process, local worker processes, or a Ray cluster) and returns
its files as bytes; the driver writes each run the moment it comes back (`rundir.write_run`:
a partial folder, fsynced, renamed to `seed=<n>/`). So a run folder with summary.json exists only
once its run finished, a re-run skips it, and an interrupted sweep resumes where it stopped
without repeating or losing finished runs. Workers need no shared file system: Ray workers on
other machines only return bytes. One sweep at a time runs an experiment folder (`rundir.lock`).

Nothing that fails stops the sweep. A run whose loss turns NaN / inf is recorded as diverged
(with the epochs it finished). A run that raises, or whose worker process dies, is recorded as
failed (`seed=<n>/failed.json` with its error) and trained again by the next sweep; the sweep
ends with the list of failed runs and raises `RunsFailed`. Faults of the disk (full, read-only)
stop the sweep with a `FileFault`; finished runs are never touched.

A task is one run, or (train.group_seeds, the default, in a family whose networks stack) every unfinished run whose
network stacks with the others' (the seeds of a variant, and variants that differ only in pass
counts and skips: `loopnets.builder.stacking.stack_key`), trained as one stacked model by one `ln.fit_many`
call with the results of one at a time within rounding; its runs come back when the task
finishes. If a group raises, its runs are trained again one at a time, so one bad run fails
alone. After training, every looped run is also evaluated at 1 .. T passes (`unroll_sweep`,
summary.json key "unroll_sweep"). Training one run or task: `loopnets.experiments.runs`; what it
is built from and the checks before it: `loopnets.experiments.build`.
"""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path
from typing import Callable, Iterator

import torch

from loopnets.builder.stacking import merged_keys, stack_key
from loopnets.experiments import rundir
from loopnets.experiments.build import build_model, load_split, loss_name, validate
from loopnets.experiments.config import Experiment, expand_variants, family_of, to_dict
from loopnets.experiments.progress import SweepProgress
from loopnets.experiments.provenance import usable_cores
from loopnets.experiments.rundir import FAILED, FINISHED
from loopnets.experiments.runs import (
    INJECT_FAULT,
    RunSpec,
    failed_run,
    groupable,
    one_line,
    run_task,
    run_task_list,
    set_epoch_sink,
    train_group,
    train_one,
)
from loopnets.experiments.user_data import require_data_dir

__all__ = ["INJECT_FAULT", "RunSpec", "RunsFailed", "build_model", "busy_cores", "cores", "groups", "load_split",
           "loss_name", "plan", "run_experiment", "threads_per_worker", "train_group", "train_one", "validate",
           "write_run"]


class RunsFailed(RuntimeError):
    """Some runs of a sweep failed (raised, or their worker died); every other run was trained and written.

    Attributes:
        experiment_dir: the experiment folder.
        failed: one dict per failed run: variant, seed, error (failed.json holds the details).
    """

    def __init__(self, experiment_dir: Path, failed: list[dict], total: int):
        self.experiment_dir, self.failed, self.total = experiment_dir, failed, total
        super().__init__(f"{len(failed)} of {total} runs failed in {experiment_dir}; each failed run's folder holds "
                         f"failed.json with its error, and the same command trains them again")


def write_run(folder: Path, files: dict[str, bytes]) -> bool:
    """Write a run's files atomically (`rundir.write_run`); False if a finished run is already there."""
    return rundir.write_run(folder, files)


# --- the sweep -----------------------------------------------------------------------------


def plan(exp: Experiment, experiment_dir: Path) -> tuple[list[RunSpec], list[RunSpec]]:
    """(runs still to do, runs already finished) for this experiment folder.

    A run is finished when its folder holds summary.json (finished or diverged); a failed run
    (failed.json) and an incomplete folder are still to do, and are replaced when they land.
    """
    data = to_dict(exp)
    todo, done = [], []
    for variant in expand_variants(exp):
        for seed in exp.train.seeds:
            spec = RunSpec(data, variant, seed)
            (done if rundir.run_state(experiment_dir / spec.folder) == "finished" else todo).append(spec)
    return todo, done


def groups(exp: Experiment, todo: list[RunSpec]) -> list[tuple[RunSpec, ...]]:
    """The runs to do, as tasks for `train_group`, largest first. With train.group_seeds (families that stack):
    every run whose network stacks with another's (`loopnets.builder.stacking.stack_key`: the same layers; COMBINE
    pass counts, FFN as one pass, and "add" skips may differ) in one task; else one task per run.
    Finished runs are never in `todo`, so never retrained."""
    keys: dict[str, object] = {}
    grouped = [spec for spec in todo if exp.train.group_seeds and groupable(spec.variant, exp)]
    if grouped:
        split = load_split(exp)
        variants = {spec.variant.name: spec.variant for spec in grouped}
        with torch.random.fork_rng():
            built = {name: build_model(exp, variant, split) for name, variant in variants.items()}
        keys = dict(zip(built, merged_keys([stack_key(model) for model in built.values()])))
    tasks: dict[object, list[RunSpec]] = {}
    for spec in todo:
        key = keys[spec.variant.name] if spec.variant.name in keys else (spec.variant.name, spec.seed)
        tasks.setdefault(key, []).append(spec)
    return sorted((tuple(specs) for specs in tasks.values()), key=len, reverse=True)


def cores() -> int:
    """The CPU cores this process may run on (at least 1)."""
    return usable_cores() or 1


def busy_cores() -> int:
    """Cores that other work is using right now: the processes running at this instant (the 4th
    field of /proc/loadavg, "running/total", counts this one too), at most the cores; 0 where the
    system does not say. An instant's count, not the 1-minute load average, which lags by a minute."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return min(cores() - 1, max(0, running - 1))


def threads_per_worker(workers: int, busy: int = 0) -> int:
    """torch threads for each of `workers` processes: the cores that `busy` other processes leave
    free, shared out, never oversubscribed. Intra-op threads that wait for a core held by another
    process wait for each other too: on 2 cores beside one CPU-bound process, the default iris
    experiment trained 4x slower with 2 threads than with 1 (`benchmarks/make_run.py`)."""
    return max(1, (cores() - busy) // max(1, workers))


def run_experiment(
    exp: Experiment,
    runs_dir: str | Path = "runs",
    *,
    workers: int = 1,
    ray_address: str | None = None,
    progress: bool = True,
    fresh: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Train every (variant, seed) not yet finished; return the experiment folder.

    torch runs max(1, cores // workers) threads in each worker (this process when workers = 1;
    its setting is restored afterwards), one per Ray task.

    Raises:
        ConfigError: the config cannot run, or the folder holds runs of another config.
        FileFault: the folder cannot be written (disk full, read-only, bad name), or another
            process is running this experiment (`rundir.ExperimentLocked`).
        RunsFailed: after the sweep, when some runs failed; all others were trained and written.
    """
    variants = validate(exp)
    if not family_of(exp).prepare(exp):  # a family's own data is generated now: a bad option fails before any folder
        require_data_dir(exp)
        load_split(exp)  # read user files (cifar10) now, before any folder is written: a missing file is a ConfigError
    experiment_dir = Path(runs_dir) / exp.name
    with rundir.lock(experiment_dir):
        rundir.prepare(exp, experiment_dir, fresh)
        return _sweep(exp, variants, experiment_dir, workers, ray_address, progress, log)


def _sweep(exp: Experiment, variants: list, experiment_dir: Path, workers: int, ray_address: str | None,
           progress: bool, log: Callable[[str], None]) -> Path:
    todo, done = plan(exp, experiment_dir)
    tasks = groups(exp, todo)
    together = f" (in {len(tasks)} tasks: runs whose networks stack train as one model)" if len(tasks) < len(todo) else ""
    states = [rundir.run_state(experiment_dir / spec.folder) for spec in todo]
    again = ", ".join(f"{states.count(s)} {s} before" for s in ("failed", "incomplete") if s in states)
    log(f"{exp.name}: {len(variants)} variants x {len(exp.train.seeds)} seeds = {len(todo) + len(done)} runs; "
        f"{len(done)} already finished, {len(todo)} to train{f' ({again})' if again else ''}{together} -> {experiment_dir}")
    if not tasks:
        return experiment_dir
    workers = max(1, min(workers, len(tasks)))  # no idle worker holding threads
    busy = busy_cores()
    threads = 1 if ray_address is not None else threads_per_worker(workers, busy)
    where = ("each Ray task" if ray_address is not None else
             "this process" if workers <= 1 else f"each of {workers} worker processes")
    log(f"torch threads: {threads} in {where} ({cores()} cores, {busy} busy with other work)")
    bar = SweepProgress(exp.name, len(todo), exp.train.epochs, progress, log=log)
    say = bar.write
    failed = []
    before = torch.get_num_threads()
    set_epoch_sink(bar.epoch)
    try:
        with closing(_execute(tasks, workers, ray_address, threads, say, bar.epoch)) as results:  # stops workers on any exit
            for spec, files in results:
                write_run(experiment_dir / spec.folder, files)
                record = json.loads(files[FINISHED if FINISHED in files else FAILED])
                if record["status"] == "failed":
                    failed.append({"variant": spec.variant.name, "seed": spec.seed, "error": record["error"]})
                say(_describe(record))
                bar.landed(spec.folder)
    finally:
        set_epoch_sink(None)
        bar.close()
        torch.set_num_threads(before)
    if failed:
        log(f"{len(failed)} of {len(todo)} runs failed (their folders hold failed.json with the error; "
            f"the same command trains them again):")
        for run in failed:
            log(f"  {run['variant']} seed={run['seed']}: {run['error']}")
        raise RunsFailed(experiment_dir, failed, len(todo))
    return experiment_dir


def _execute(tasks: list[tuple[RunSpec, ...]], workers: int, ray_address: str | None, threads: int,
             say: Callable[[str], None], epoch: Callable[[str], None] = lambda folder: None
             ) -> Iterator[tuple[RunSpec, dict[str, bytes]]]:
    """Yield (spec, files) for every run as it finishes, on the chosen backend; a run whose task
    raised outside its own handling, or whose worker died, gets the files of a failed run.
    `epoch(run folder)` is called for each epoch a worker process reports (`EpochReport`)."""
    if ray_address is not None:
        from loopnets.experiments.ray_backend import run_on_ray

        for task, outcome in run_on_ray(tasks, ray_address, run_task_list):
            if isinstance(outcome, BaseException):
                for spec in task:
                    yield spec, failed_run(spec, f"the Ray task failed: {one_line(outcome)}", repr(outcome))
            else:
                yield from outcome
    elif workers <= 1:
        torch.set_num_threads(threads)
        for task in tasks:
            yield from run_task(task)
    else:
        from loopnets.experiments.workers import run_tasks

        def started(index: int, pid: int) -> None:
            task = tasks[index]
            seeds = ", ".join(str(s.seed) for s in task)
            say(f"{task[0].variant.name} seed{'s' if len(task) > 1 else ''}={seeds}: started in worker pid {pid}")

        landed: set[tuple[str, int]] = set()
        with closing(run_tasks(run_task, tasks, workers, threads, started)) as outcomes:
            for kind, index, payload in outcomes:
                if kind == "progress":
                    epoch(payload)
                    continue
                if kind == "item":
                    landed.add((payload[0].variant.name, payload[0].seed))
                    yield payload
                    continue
                error = (f"its worker process died: {payload}" if kind == "died"
                         else "its task raised outside the run")
                for spec in tasks[index]:
                    if (spec.variant.name, spec.seed) not in landed:
                        yield spec, failed_run(spec, error, payload)


def _describe(summary: dict) -> str:
    head = f"{summary['variant']} seed={summary['seed']}"
    if summary["status"] == "failed":
        return f"{head}: FAILED ({summary['error']})"
    if summary["status"] == "diverged":
        return f"{head}: DIVERGED after {summary['epochs_run']} epochs ({summary['error'].split(':')[0]})"
    original = summary["probes"]["original"]
    metric = f"val acc {original['accuracy']:.4f}" if "accuracy" in original else f"val loss {original['loss']:.4g}"
    return f"{head}: {metric}, {summary['timing']['wall_seconds']:.1f} s"
