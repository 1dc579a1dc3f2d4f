"""One run, or one group of runs, trained in a worker and returned as its folder's files (bytes).

    <variant>/seed=<n>/{config.toml, metrics.csv, summary.json, model.lnet}

`train_one` trains a (variant, seed): its family builds the model (`Family.build_model`) and `ln.fit`
trains it (or the family trains its own way: `Family.train_run`); finished runs are probed,
evaluated at 1 .. T passes (`unroll_sweep`) and given the family's extra results. `train_group`
trains runs whose networks stack as one model (`ln.fit_many`). `run_task` never raises: a run
that fails gets the files of a failed run. The sweep around them: `loopnets.experiments.runner`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from loopnets.checkpoint import save
from loopnets.core.loop import Loop
from loopnets.core.probe import severed, unrolled
from loopnets.data.split import Split
from loopnets.experiments import rundir
from loopnets.experiments import workers as worker_pool
from loopnets.experiments.build import build_model, engine_settings, load_split, loss_name, optimizer_args, uses_engine
from loopnets.experiments.config import Experiment, dumps, family_of, from_dict
from loopnets.experiments.provenance import environment, mark_load
from loopnets.training.batched import fit_many
from loopnets.training.callbacks import logger
from loopnets.training.fit import History, TrainingDiverged, evaluate, fit

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy", "train_seconds", "val_seconds")
INJECT_FAULT = "LOOPNETS_INJECT_FAULT"  # fault injection for the reliability tests (see `_injected_fault`)


@dataclass(frozen=True)
class RunSpec:
    """One (variant, seed) of an experiment; plain data, so it can travel to a worker."""

    experiment: dict  # to_dict(Experiment)
    variant: Any  # the family's expanded variant
    seed: int

    @property
    def folder(self) -> str:
        return f"{self.variant.name}/seed={self.seed}"


# --- building ------------------------------------------------------------------------------


_EPOCH_SINK: Callable[[str], None] | None = None  # the driver's progress, when runs train in this process


def set_epoch_sink(sink: Callable[[str], None] | None) -> None:
    """Where `EpochReport` reports the epochs of runs training in this process (the sweep's progress)."""
    global _EPOCH_SINK
    _EPOCH_SINK = sink


class EpochReport:
    """A callback that reports every finished epoch of the run `folder` to the sweep's progress: over
    the worker's pipe in a worker process (`workers.report`), else to this process's `_EPOCH_SINK`."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_epoch_end(self, record) -> None:
        if not worker_pool.report(self.folder) and _EPOCH_SINK is not None:
            _EPOCH_SINK(self.folder)


def _logged_files(directory: Path) -> dict[str, bytes]:
    """The files the loggers wrote under `directory`, keyed by their path inside the run folder."""
    return {path.relative_to(directory).as_posix(): path.read_bytes()
            for path in sorted(directory.rglob("*")) if path.is_file()}

# --- one run, or one group of seeds ------------------------------------------------------------


def train_one(spec: RunSpec, threads: int | None = None) -> dict[str, bytes]:
    """Train one (variant, seed) and return its folder's files as bytes (runs in any worker)."""
    if threads:
        torch.set_num_threads(threads)
    mark_load()  # the load as this run starts (summary.json environment.load_average.start)
    started = time.perf_counter()
    exp = from_dict(spec.experiment)
    variant, seed = spec.variant, spec.seed
    with tempfile.TemporaryDirectory() as logs:  # the loggers' files (metrics.csv is the run's own record)
        callbacks = [EpochReport(spec.folder)] + [logger(name, logs) for name in exp.train.loggers if name != "csv"]
        engine = {**engine_settings(exp), "callbacks": callbacks}
        files = family_of(exp).train_run(exp, variant, seed, spec.experiment, started, engine)  # its own loops
        if files is None:
            split = load_split(exp)
            loss = loss_name(exp, split)
            torch.manual_seed(seed)
            model = build_model(exp, variant, split)
            error = None
            try:
                history = fit(model, split.train, split.val, seed=seed, **_fit_settings(exp, loss),
                              **family_of(exp).fit_settings(variant), **engine)
            except TrainingDiverged as err:
                history, error = err.history or History(), str(err)
            files = _run_files(spec, exp, split, loss, model, history, error,
                               {"path": "single", "seeds_together": [seed]}, started)
        return {**_logged_files(Path(logs)), **files}


def train_group(specs: tuple[RunSpec, ...], threads: int | None = None) -> list[tuple[RunSpec, dict[str, bytes]]]:
    """Train a group of runs as one stacked model (one `ln.fit_many` call); each run's files as `train_one`'s.

    Every run's model is built as `train_one` builds it (torch.manual_seed(seed), then
    build_model), and fit_many trains them as `fit` would one at a time, within rounding (or, for
    models it cannot stack, one after the other itself), so each run's metrics, probes and weights
    are those of `train_one`; only the timings differ: the group's training time is shared, a
    run's wall_seconds is the group's training divided by its runs plus its own evaluation
    (summary.json "training": path, seeds_together, models_together). A group of one run is `train_one`.
    """
    _injected_fault(specs)
    if len(specs) == 1:
        return [(specs[0], train_one(specs[0], threads))]
    if threads:
        torch.set_num_threads(threads)
    mark_load()
    started = time.perf_counter()
    first = specs[0]
    assert all(s.experiment == first.experiment for s in specs), "one experiment per group"
    exp = from_dict(first.experiment)
    split = load_split(exp)
    loss = loss_name(exp, split)
    models = []
    for spec in specs:
        torch.manual_seed(spec.seed)
        models.append(build_model(exp, spec.variant, split))
    histories = fit_many(models, split.train, split.val, seeds=[spec.seed for spec in specs], **_fit_settings(exp, loss))
    share = (time.perf_counter() - started) / len(specs)  # each run's part of the group's training
    results = []
    for spec, model, history, error in zip(specs, models, histories, histories.errors):
        training = {"path": histories.path, "seeds_together": [s.seed for s in specs if s.variant == spec.variant],
                    "models_together": len(specs), "reason": histories.reason}
        results.append((spec, _run_files(spec, exp, split, loss, model, history, None if error is None else str(error),
                                         training, time.perf_counter() - share)))
    return results


def run_task(specs: tuple[RunSpec, ...], threads: int | None = None) -> Iterator[tuple[RunSpec, dict[str, bytes]]]:
    """Train one task (`train_group`) and yield (spec, files) for each of its runs, as they finish.

    A run that raises gets the files of a failed run (failed.json with its error and traceback)
    instead of stopping the sweep. If a group of seeds raises, its runs are trained again one at a
    time, so only the runs that raise alone fail, and each is yielded the moment it finishes.
    """
    try:
        results = train_group(specs, threads)
    except Exception as err:
        if len(specs) == 1:
            yield specs[0], failed_run(specs[0], one_line(err), traceback.format_exc())
            return
        for spec in specs:  # find the run at fault: every other run of the group still lands
            try:
                yield from train_group((spec,), threads)
            except Exception as alone:
                yield spec, failed_run(spec, one_line(alone), traceback.format_exc())
        return
    yield from results


def run_task_list(specs: tuple[RunSpec, ...], threads: int | None = None) -> list[tuple[RunSpec, dict[str, bytes]]]:
    """`run_task` as a list (a Ray task returns its results at once)."""
    return list(run_task(specs, threads))


def failed_run(spec: RunSpec, error: str, details: str) -> dict[str, bytes]:
    """The files of a run that failed: failed.json with its error (`rundir.failure_record`)."""
    return rundir.failure_record(spec.experiment.get("name", ""), spec.variant.name, spec.seed, error, details)


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _injected_fault(specs: tuple[RunSpec, ...]) -> None:
    """Fault injection for the reliability tests: raise in the runs named by $LOOPNETS_INJECT_FAULT.

    The variable lists run folders, comma-separated (e.g. "ffn/seed=1"); a task holding one of
    them raises RuntimeError as it starts, as a run whose training crashes would. Unset (always,
    outside the tests) it costs one lookup per task.
    """
    named = os.environ.get(INJECT_FAULT)
    if named:
        hit = sorted({s.folder for s in specs} & {n.strip() for n in named.split(",")})
        if hit:
            raise RuntimeError(f"fault injected into {', '.join(hit)} (${INJECT_FAULT})")



def _fit_settings(exp: Experiment, loss: str) -> dict:
    """The arguments of fit / fit_many that every run of the experiment shares (all but the seed)."""
    return {"loss": loss, "optimizer": (exp.train.optimizer, optimizer_args(exp)), "epochs": exp.train.epochs,
            "batch_size": exp.train.batch_size, "progress": False, "early_stopping": exp.train.early_stopping}


def groupable(variant, exp: Experiment) -> bool:
    """Whether a variant's seeds may train as one fit_many call (`Family.groupable`).

    Families with sigmoids, buffers (batch norm) or their own training loops keep one run per
    task: fit_many would train them one at a time anyway, and their post-training analyses draw
    from the global RNG that `fit` leaves seeded. An experiment with `[train]` device, precision,
    scheduler, clip or loggers beyond csv (fit options fit_many does not take) trains alone.
    """
    return not uses_engine(exp) and family_of(exp).groupable(variant)


def _run_files(spec: RunSpec, exp: Experiment, split: Split, loss: str, model: torch.nn.Module, history: History,
               error: str | None, training: dict, started: float) -> dict[str, bytes]:
    """A trained run's folder as bytes: probes and analyses (finished runs), summary, metrics, config, model.

    Args:
        history: the run's History (a diverged run's epochs before it diverged).
        error: the TrainingDiverged message of a diverged run, else None.
        training: summary.json's "training" record (how the run trained: path, seeds_together).
        started: time.perf_counter() at the run's start, for its wall_seconds.
    """
    variant, seed = spec.variant, spec.seed
    status = "finished" if error is None else "diverged"
    family = family_of(exp)
    probes = extra = sweep = None
    figures: dict[str, bytes] = {}
    if status == "finished":
        probes = {"original": evaluate(model, split.val, loss=loss), "skip_off": None, "feedback_off": None}
        if variant.has_skip:
            with severed(model, skips=True):
                probes["skip_off"] = evaluate(model, split.val, loss=loss)
        if variant.has_loop:
            with severed(model, loops=True):  # every loop one pass (a timestepped net: one timestep)
                probes["feedback_off"] = evaluate(model, split.val, loss=loss)
        extra, figures = family.extra_results(exp, variant, model, split, loss, seed)
        sweep = unroll_sweep(exp, variant, model, split, loss, known=(extra or {}).get("unroll_sweep"))
    # compact parameters: COUPLE's extra copies are not counted
    compact = sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for loop in model.modules() if isinstance(loop, Loop) for c in loop.copies[1:] for p in c.parameters()
    )
    summary = {
        "experiment": exp.name, "variant": variant.name, "seed": seed, **variant.described(),
        "status": status, "task": split.task, "loss": loss,
        # the validation-set size and the class count: the report's one-sample and chance floors
        "val_samples": int(len(split.val[0])), "classes": len(split.classes) if split.task == "classification" else None,
        "epochs_run": len(history), "best_epoch": history.best_epoch, "stopped_early": history.stopped_early,
        "error": error, "probes": probes,
        "timing": {
            "train_ms_per_epoch": mean_ms(history["train_seconds"]),
            "val_ms_per_epoch": mean_ms(history["val_seconds"]),
            "wall_seconds": time.perf_counter() - started,
        },
        "training": training,
        "environment": environment(started, model),
        "parameters": compact,
    }
    if sweep is not None:
        summary["unroll_sweep"] = sweep
    summary.update(family.summary_extras(exp, variant, model, split, loss, status == "finished"))
    if extra is not None:
        summary["extra"] = extra
    # This run alone, as an experiment: `loopnets run <run folder>/config.toml` reproduces it.
    run_config = {**spec.experiment, "train": {**spec.experiment["train"], "seeds": [seed]},
                  "variants": [variant.table()]}
    files = {
        "config.toml": dumps(run_config).encode(),
        "metrics.csv": metrics_csv(history).encode(),
        "summary.json": json.dumps(summary, indent=2).encode(),
        **figures,
    }
    if status == "finished":
        with tempfile.TemporaryDirectory() as tmp:
            # a model without config(): weights only; load with ln.load(path, model=<built model>)
            save(model, Path(tmp) / "model.lnet", architecture=family.saves_architecture(model))
            files["model.lnet"] = (Path(tmp) / "model.lnet").read_bytes()
    return files


def sweep_passes(exp: Experiment, training_unroll: int) -> list[int]:
    """The pass counts of the unroll sweep: 1 .. train.unroll_sweep (unset: max(8, 2 x training_unroll))."""
    last = exp.train.unroll_sweep if exp.train.unroll_sweep is not None else max(8, 2 * training_unroll)
    return list(range(1, last + 1))


def unroll_sweep(exp: Experiment, variant, model: torch.nn.Module, split: Split, loss: str,
                 known: dict | None = None) -> dict | None:
    """Validation loss / accuracy with every loop of `model` run for t = 1 .. T passes (`ln.unrolled`).

    Hershey's fixed-point test (Fig. 3.22): does a looped network keep its accuracy beyond the
    passes it was trained with? Evaluated in eval() mode, where a COUPLE loop runs passes beyond
    its copies with its last copy (`Loop._passes`). None for a model without loops (no module with
    `probe_unroll`, e.g. feedback "none", an unrolled deep net) or with train.unroll_sweep = 0.
    Costs T evaluations of the validation split.

    Args:
        known: a sweep already computed on the same split, {"unrolls": [...], "loss": [...],
            "accuracy": [...]} (a family's extra.unroll_sweep): its pass counts are not re-evaluated.

    Returns:
        {"passes": [1 .. T], "loss": [...], "accuracy": [...] or None (no classification),
         "training_unroll": the variant's unroll}.
    """
    if not variant.has_loop or not any(hasattr(m, "probe_unroll") for m in model.modules()):
        return None
    passes = sweep_passes(exp, variant.unroll)
    if not passes:
        return None
    done = {}
    if known:
        done = {t: {"loss": l, "accuracy": a} for t, l, a in zip(known["unrolls"], known["loss"], known["accuracy"])}
    results = []
    for t in passes:
        if t not in done:
            with unrolled(model, t):
                done[t] = evaluate(model, split.val, loss=loss)
        results.append(done[t])
    accuracy = [r.get("accuracy") for r in results]
    return {"passes": passes, "loss": [r["loss"] for r in results],
            "accuracy": None if all(a is None for a in accuracy) else accuracy, "training_unroll": variant.unroll}


def mean_ms(seconds: list[float]) -> float | None:
    return 1000 * statistics.mean(seconds) if seconds else None


def metrics_csv(history: History) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(METRIC_COLUMNS)
    for record in history:
        writer.writerow(["" if getattr(record, c) is None else getattr(record, c) for c in METRIC_COLUMNS])
    return out.getvalue()


def own_run_files(experiment: dict, variant: Any, seed: int, summary: dict, history: History,
                  model: torch.nn.Module | None) -> dict[str, bytes]:
    """The folder files of a run a family trained its own way (`Family.train_run`): config.toml (this
    run alone, so `loopnets run <run folder>/config.toml` reproduces it), metrics.csv, summary.json
    and, for a finished run (`model` not None), model.lnet with its weights only (load them into the
    family's built network with `ln.load(path, model=...)`)."""
    run_config = {**experiment, "train": {**experiment["train"], "seeds": [seed]}, "variants": [variant.table()]}
    files = {"config.toml": dumps(run_config).encode(), "metrics.csv": metrics_csv(history).encode(),
             "summary.json": json.dumps(summary, indent=2).encode()}
    if model is not None:
        with tempfile.TemporaryDirectory() as tmp:
            save(model, Path(tmp) / "model.lnet", architecture=False)
            files["model.lnet"] = (Path(tmp) / "model.lnet").read_bytes()
    return files


def own_run_record(history: History, seed: int, started: float, model: torch.nn.Module) -> dict:
    """summary.json's keys on how a run a family trained its own way went: epochs_run, best_epoch,
    stopped_early, timing (per-epoch means, wall seconds since `started`), training (one seed alone)
    and environment."""
    return {"epochs_run": len(history), "best_epoch": history.best_epoch, "stopped_early": history.stopped_early,
            "timing": {"train_ms_per_epoch": mean_ms(history["train_seconds"]),
                       "val_ms_per_epoch": mean_ms(history["val_seconds"]),
                       "wall_seconds": time.perf_counter() - started},
            "training": {"path": "single", "seeds_together": [seed]},
            "environment": environment(started, model)}
