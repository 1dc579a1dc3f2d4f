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

A task is one run, or (family lavik, train.group_seeds, the default) every unfinished run whose
network stacks with the others' (the seeds of a variant, and variants that differ only in pass
counts and skips: `loopnets.builder.stacking.stack_key`), trained as one stacked model by one `ln.fit_many`
call with the results of one at a time within rounding; its runs come back when the task
finishes. If a group raises, its runs are trained again one at a time, so one bad run fails
alone. After training, every looped run is also evaluated at 1 .. T passes (`unroll_sweep`,
summary.json key "unroll_sweep").
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import statistics
import tempfile
import time
import traceback
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from loopnets.builder import layers
from loopnets.core.modes import MODES
from loopnets.training.batched import fit_many
from loopnets.builder.stacking import merged_keys, stack_key
from loopnets.checkpoint import save
from loopnets.experiments.modes import loop_training
from loopnets.experiments.provenance import environment, mark_load, usable_cores
from loopnets.core.passes import pass_plan
from loopnets.data import dataset_options, load_dataset
from loopnets.data.split import Split, autoencoding
from loopnets.experiments.budget import check_memory
from loopnets.experiments.config import (
    TASK_LOSSES,
    TASK_OUTPUT_ACTIVATIONS,
    ConfigError,
    Experiment,
    GatedVariant,
    Variant,
    dumps,
    expand_variants,
    from_dict,
    scheduler_spec,
    to_dict,
)
from loopnets.experiments import workers as worker_pool
from loopnets.experiments.progress import SweepProgress
from loopnets.experiments import loopy as loopy_family
from loopnets.experiments import rundir
from loopnets.experiments.rundir import FAILED, FINISHED
from loopnets.experiments import inn as inn_family
from loopnets.experiments.gated import build_gated_model, extra_results
from loopnets.models.lavik.architectures import init_uniform_, loop_network
from loopnets.core.loop import Loop
from loopnets.builder.network import Network
from loopnets.training.optim import make_optimizer
from loopnets.core.probe import severed, unrolled
from loopnets.training.fit import History, TrainingDiverged, evaluate, fit
from loopnets.training.callbacks import logger
from loopnets.training.device import check_precision, resolve_device

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy", "train_seconds", "val_seconds")
INJECT_FAULT = "LOOPNETS_INJECT_FAULT"  # fault injection for the reliability tests (see `_injected_fault`)


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


@dataclass(frozen=True)
class RunSpec:
    """One (variant, seed) of an experiment; plain data, so it can travel to a worker."""

    experiment: dict  # to_dict(Experiment)
    variant: Variant
    seed: int

    @property
    def folder(self) -> str:
        return f"{self.variant.name}/seed={self.seed}"


# --- building ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _load_split(name: str, split_seed: int, options: str) -> Split:
    seeded = "seed" in dataset_options(name)  # a fixed split (cifar10: the files' order) takes no seed
    return load_dataset(name, **({"seed": split_seed} if seeded else {}), **json.loads(options))


def load_split(exp: Experiment) -> Split:
    """The experiment's data (cached per process: every run of a sweep uses the same split).

    Family gated_autoencoder trains X -> X: the split's inputs are also its targets.
    """
    try:
        split = _load_split(exp.data.name, exp.data.split_seed, json.dumps(exp.data.options, sort_keys=True))
    except (ValueError, TypeError, FileNotFoundError) as err:  # FileNotFoundError: user files (cifar10) missing
        raise ConfigError(f"config key data: {err}") from None
    return autoencoding(split) if exp.model.family == "gated_autoencoder" else split


def loss_name(exp: Experiment, split: Split) -> str:
    return TASK_LOSSES[split.task] if exp.train.loss == "auto" else exp.train.loss


def build_model(exp: Experiment, variant: Variant | GatedVariant, split: Split) -> Network:
    """The variant's network for this data; errors name the config key at fault."""
    if isinstance(variant, GatedVariant):
        return build_gated_model(exp, variant, split)
    if isinstance(variant, loopy_family.LoopyVariant):
        return loopy_family.build_loopy_model(exp, variant, split)
    specs = []
    for i, table in enumerate(exp.model.layers):
        if not isinstance(table, dict) or "type" not in table:
            raise ConfigError(f"config key model.layers[{i}] must be a table with a type, e.g. {{type = \"dense\", units = 25}}")
        try:
            specs.append(layers.spec_from_config({"kind": table["type"], **{k: v for k, v in table.items() if k != "type"}}))
        except (ValueError, TypeError) as err:
            raise ConfigError(f"config key model.layers[{i}]: {err}") from None
    where = f"variant {variant.name!r} (config [[variants]] method = {variant.method!r})"
    backprop = None
    if variant.method not in ("combine", "couple") and (variant.accumulate is not None or variant.grad_scale is not None):
        raise ConfigError(f"{where}: accumulate and grad_scale apply only to combine / couple")
    if variant.method == "couple" and variant.grad_scale is not None:
        raise ConfigError(f"{where}: grad_scale applies only to combine")
    try:
        if variant.method != "ffn":
            backprop = _backprop(variant, where)
        output_activation = exp.model.output_activation
        if output_activation == "auto":
            output_activation = TASK_OUTPUT_ACTIVATIONS[split.task]
        net = loop_network(
            split.input_shape, specs, tuple(exp.model.loop), split.outputs,
            method=variant.method, unroll=variant.unroll, skip=variant.skip,
            output_activation=output_activation, output_bias=exp.model.output_bias,
            backprop=backprop, merge=variant.merge, output=variant.output,
        )
    except ValueError as err:
        raise ConfigError(f"{where} cannot be built: {err} (check model.layers, model.loop and the variant's options)") from None
    if exp.model.init == "uniform":
        init_uniform_(net)
    return net


def _backprop(variant: Variant, where: str):
    """The variant's backprop mode: its method's class with accumulate / grad_scale / backprop_args."""
    args = dict(variant.backprop_args or {})
    for key in ("accumulate", "grad_scale"):
        if getattr(variant, key) is not None:
            if key in args:
                raise ConfigError(f"{where}: {key} is given twice, as a variant key and in backprop_args")
            args[key] = getattr(variant, key)
    try:
        return MODES[variant.method](**args)
    except TypeError:
        valid = ", ".join(f.name for f in dataclasses.fields(MODES[variant.method])) or "none"
        raise ConfigError(f"{where}: backprop_args {variant.backprop_args!r} has a key {variant.method} does not take; "
                          f"its settings: {valid}") from None


def validate(exp: Experiment) -> list[Variant]:
    """Check everything that can be checked without training; return the expanded variants.

    A data set read from the user's files (cifar10) is not loaded: the models are built for its
    known shape (`loopy_family.placeholder_split`), so a config validates before the data is there.
    """
    check_engine(exp)  # an unavailable device or a missing logger package: refused before anything is built
    check_memory(exp, load_split, build_model)  # an absurd unroll or width: refused with its estimate, nothing built
    if exp.model.family == inn_family.FAMILY:  # its own data sets and models, checked without generating data
        return inn_family.validate(exp)
    variants = expand_variants(exp)
    split = loopy_family.placeholder_split(exp) or load_split(exp)
    loss = loss_name(exp, split)
    from loopnets.training.losses import get_loss

    try:
        get_loss(loss)
    except ValueError as err:
        raise ConfigError(f"config key train.loss: {err}") from None
    if split.task == "autoencoding":
        if loss in ("cross_entropy", "kl_divergence"):
            raise ConfigError(f"config key train.loss = {loss!r} does not fit autoencoding (X -> X with a sigmoid "
                              f"output); use \"auto\" (mse) or binary_cross_entropy")
    elif (loss in ("cross_entropy", "binary_cross_entropy")) != (split.task == "classification"):
        raise ConfigError(f"config key train.loss = {loss!r} does not fit the {split.task} data {exp.data.name!r}; use \"auto\"")
    for variant in variants:
        net = build_model(exp, variant, split)
        try:
            if _pass_settings(variant):
                pass_plan(net, **_pass_settings(variant), seed=0)
        except ValueError as err:
            raise ConfigError(f"variant {variant.name!r}: {err} (config keys pass_weights / random_passes)") from None
        try:
            make_optimizer((exp.train.optimizer, _optimizer_args(exp)), net.parameters())
        except (ValueError, TypeError) as err:
            raise ConfigError(f"config keys train.optimizer / train.optimizer_args: {err}") from None
    return variants


def check_engine(exp: Experiment) -> None:
    """What `[train] device / precision / loggers / clip` need of this machine and family: the device
    available, precision on CUDA, the tensorboard package, an output clip where the training has an
    output hook. ConfigErrors naming the key; run before any run folder is written."""
    try:
        device = resolve_device(exp.train.device or "cpu", torch.nn.Module())
        check_precision(exp.train.precision, device)
    except ValueError as err:
        key = "train.precision" if "precision" in str(err).split(":")[0] else "train.device"
        raise ConfigError(f"config key {key}: {err} (loopnets run --device DEVICE sets train.device)") from None
    if "tensorboard" in exp.train.loggers:
        try:
            logger("tensorboard", ".")
        except ImportError as err:
            raise ConfigError(f"config key train.loggers = {exp.train.loggers!r}: {err}") from None
    if exp.train.clip is not None and exp.train.clip[0] == "output" and exp.model.family == inn_family.FAMILY:
        raise ConfigError("config key train.clip = [\"output\", ...] clamps dLoss/dOutput, which the inn family's "
                          "sequence / iteration losses do not expose; use [\"value\", c] or [\"norm\", c]")


def engine_settings(exp: Experiment) -> dict:
    """fit's device / precision / scheduler / clip from `[train]` (None where unset: fit's defaults)."""
    clip = None if exp.train.clip is None else tuple(exp.train.clip)
    return {"device": exp.train.device, "precision": exp.train.precision,
            "scheduler": scheduler_spec(exp.train.scheduler), "clip": clip}


def _uses_engine(exp: Experiment) -> bool:
    """Whether `[train]` sets anything only `fit` takes (fit_many trains neither on a device nor with these)."""
    return any(value is not None for value in engine_settings(exp).values()) or exp.train.loggers != ["csv"]


_EPOCH_SINK: Callable[[str], None] | None = None  # the driver's progress, when runs train in this process


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


def _optimizer_args(exp: Experiment) -> dict:
    # TOML has arrays, torch wants tuples (betas)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in exp.train.optimizer_args.items()}


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
        if isinstance(variant, inn_family.INNVariant):  # its own training loops and summary extras
            files = inn_family.train_run(exp, variant, seed, spec.experiment, started, engine=engine)
        else:
            split = load_split(exp)
            loss = loss_name(exp, split)
            torch.manual_seed(seed)
            model = build_model(exp, variant, split)
            error = None
            try:
                history = fit(model, split.train, split.val, seed=seed, **_fit_settings(exp, loss),
                              **_pass_settings(variant), **engine)
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
            yield specs[0], failed_run(specs[0], _one_line(err), traceback.format_exc())
            return
        for spec in specs:  # find the run at fault: every other run of the group still lands
            try:
                yield from train_group((spec,), threads)
            except Exception as alone:
                yield spec, failed_run(spec, _one_line(alone), traceback.format_exc())
        return
    yield from results


def run_task_list(specs: tuple[RunSpec, ...], threads: int | None = None) -> list[tuple[RunSpec, dict[str, bytes]]]:
    """`run_task` as a list (a Ray task returns its results at once)."""
    return list(run_task(specs, threads))


def failed_run(spec: RunSpec, error: str, details: str) -> dict[str, bytes]:
    """The files of a run that failed: failed.json with its error (`rundir.failure_record`)."""
    return rundir.failure_record(spec.experiment.get("name", ""), spec.variant.name, spec.seed, error, details)


def _one_line(err: BaseException) -> str:
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
    return {"loss": loss, "optimizer": (exp.train.optimizer, _optimizer_args(exp)), "epochs": exp.train.epochs,
            "batch_size": exp.train.batch_size, "progress": False, "early_stopping": exp.train.early_stopping}


def _pass_settings(variant) -> dict:
    """fit's deep-supervision / random-pass options of a lavik variant (none for the other families)."""
    if type(variant) is not Variant:
        return {}
    random_passes = None if variant.random_passes is None else tuple(variant.random_passes)
    return {"pass_weights": variant.pass_weights, "random_passes": random_passes}


def _groupable(variant, exp: Experiment | None = None) -> bool:
    """Whether a variant's seeds may train as one fit_many call: family lavik (plain `Variant`) only.

    The gated, loopy_cnn and inn families keep one run per task: their networks have sigmoids,
    buffers (batch norm) or their own training loops, which fit_many would train one at a time
    anyway, and their post-training analyses draw from the global RNG that `fit` leaves seeded.
    A variant with pass_weights / random_passes, or an experiment with `[train]` device, precision,
    scheduler, clip or loggers beyond csv (fit options fit_many does not take), trains alone.
    """
    if exp is not None and _uses_engine(exp):
        return False
    return type(variant) is Variant and variant.pass_weights is None and variant.random_passes is None


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
    gated = isinstance(variant, GatedVariant)
    probes = extra = sweep = extra_loop = None
    figures: dict[str, bytes] = {}
    if status == "finished":
        probes = {"original": evaluate(model, split.val, loss=loss), "skip_off": None, "feedback_off": None}
        if variant.has_skip:
            with severed(model, skips=True):
                probes["skip_off"] = evaluate(model, split.val, loss=loss)
        if variant.has_loop:
            with severed(model, loops=True):  # every loop one pass; a gated net one timestep
                probes["feedback_off"] = evaluate(model, split.val, loss=loss)
        if gated:
            extra, figures = extra_results(exp, model, split, loss, seed)
        elif isinstance(variant, loopy_family.LoopyVariant):
            extra, figures = loopy_family.extra_results(exp, variant, model, split, loss, seed)
        sweep = unroll_sweep(exp, variant, model, split, loss, known=(extra or {}).get("unroll_sweep"))
        if type(variant) is Variant:  # the modes comparison's memory and solver numbers
            extra_loop = loop_training(model, split, loss, exp.train.batch_size, variant.pass_weights)
    # compact parameters: COUPLE's extra copies are not counted
    compact = sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for loop in model.modules() if isinstance(loop, Loop) for c in loop.copies[1:] for p in c.parameters()
    )
    summary = {
        "experiment": exp.name, "variant": variant.name, "seed": seed, **variant.described(),
        "status": status, "task": split.task, "loss": loss,
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
    if extra_loop is not None:
        summary["loop_training"] = extra_loop
    if gated:
        summary["extra"] = extra
    if isinstance(variant, loopy_family.LoopyVariant):  # a LoopyCNN is saved as weights only (no config())
        summary["parameter_counts"] = loopy_family.parameter_counts(model)
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
            # a GatedNetwork has no config(): weights only; load with ln.load(path, model=<built model>)
            save(model, Path(tmp) / "model.lnet", architecture=not gated)
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
    `probe_unroll`; gated feedback "none", loopy vanilla / deep) or with train.unroll_sweep = 0.
    Costs T evaluations of the validation split.

    Args:
        known: a sweep already computed on the same split, {"unrolls": [...], "loss": [...],
            "accuracy": [...]} (loopy_cnn's extra.unroll_sweep): its pass counts are not re-evaluated.

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
    """The runs to do, as tasks for `train_group`, largest first. Family lavik with train.group_seeds:
    every run whose network stacks with another's (`loopnets.builder.stacking.stack_key`: the same layers; COMBINE
    pass counts, FFN as one pass, and "add" skips may differ) in one task; else one task per run.
    Finished runs are never in `todo`, so never retrained."""
    keys: dict[str, object] = {}
    grouped = [spec for spec in todo if exp.train.group_seeds and _groupable(spec.variant, exp)]
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
    if exp.model.family == inn_family.FAMILY:
        inn_family.load_data(exp)  # generate the data now: a bad data option is a ConfigError before any folder
    else:
        loopy_family.require_data_dir(exp)
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
    global _EPOCH_SINK
    _EPOCH_SINK = bar.epoch
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
        _EPOCH_SINK = None
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
                    yield spec, failed_run(spec, f"the Ray task failed: {_one_line(outcome)}", repr(outcome))
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
