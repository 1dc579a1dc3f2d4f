"""The thinking family in the runner: generate the task, build and train a variant, test it larger and longer.

Data (`loopnets.data.algorithmic`, generated, never downloaded): training instances of
`train_size` from data.split_seed, validation instances of the same size from split_seed + 1, and
one test set per test size from split_seed and the size alone (`test_seed`), so every run and
every variant of every config sees the same test instances.

Training: `loopnets.fit` with cross-entropy per position (`ln.Progressive(alpha)` / `ln.Tied()` /
`ln.Truncated(grad_passes)` as the loop's mode), or for a halting variant `ln.fit_halting`
(PonderNet's expected loss over `halting_max_passes` passes + beta KL to the geometric prior),
after `halting_pretrain` epochs of `fit` with the loop's own mode when it has any; the PonderNet
epochs run the loop as `ln.Tied` (a graph at every pass) and, with `halting_freeze`, train the
halting head alone. The run's history is both phases, one after the other.

summary.json `extra` (docs/contract-runs.md, family "thinking"):

    {"task": ..., "train_size": ..., "max_iters": ...,
     "test": {"sizes": [...], "passes": [...], "examples": [...],
              "accuracy": [[per-instance accuracy at each test pass count] for each size],
              "fixed_depth": false},          # feedforward: true, its one depth in every column
     "halting": null | {"threshold", "max_passes", "sizes": [...],
              "mean_passes": [...], "accuracy": [...],          # stopping by halting probability
              "sweep": [{"threshold", "mean_passes", "accuracy"}, ...],   # halting_sweep's thresholds
              "fixed_accuracy": [...],                          # max(test_passes) passes for all
              "early_exit": {"criterion", "threshold", "mean_passes": [...], "accuracy": [...]}}}

Accuracy is per instance (exact): a string / maze counts only when every position is right.
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager
from dataclasses import asdict

import torch
from torch import nn

from loopnets.core.loop import Loop
from loopnets.core.modes import Backprop, Progressive, Tied, Truncated
from loopnets.core.halting import Halting, halting_head
from loopnets.core.passes import early_exit, split_at_loop
from loopnets.data.algorithmic import mazes, prefix_sums
from loopnets.data.split import Split
from loopnets.experiments.budget import Estimate
from loopnets.experiments.config import Experiment
from loopnets.experiments.runs import own_run_files, own_run_record
from loopnets.experiments.schema import ConfigError
from loopnets.models.thinking.recurrent import feedforward_conv, recurrent_conv
from loopnets.models.thinking.schema import DIMS, IN_CHANNELS, ThinkingVariant, expand, test_examples
from loopnets.models.thinking.transformer import looped_transformer
from loopnets.training.fit import History, TrainingDiverged, evaluate, fit
from loopnets.training.device import resolve_device
from loopnets.training.halting import HaltingHistory, fit_halting
from loopnets.training.optim import make_optimizer

GENERATORS = {"prefix_sums": prefix_sums, "mazes": mazes}
TEST_SEED_OFFSET = 1_000  # test sets: split_seed + 1000 + size, apart from training (+0) and validation (+1)


def test_seed(split_seed: int, size: int) -> int:
    """The seed of the test set of `size`: the same for every run, variant and config of a split seed."""
    return split_seed + TEST_SEED_OFFSET + size


def generate(task: str, n: int, size: int, seed: int, pixels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` instances of `task` at `size` from `seed` (mazes drawn `pixels` x `pixels` per cell)."""
    if task == "mazes":
        return mazes(n, size, seed=seed, pixels=pixels)
    return GENERATORS[task](n, size, seed=seed)


_generate = functools.lru_cache(maxsize=4)(generate)  # training and validation sets, per process


def training_data(exp: Experiment) -> tuple[tuple, tuple]:
    """((x, y) training, (x, y) validation) at model.thinking.train_size (cached per process)."""
    g, seed = exp.model.thinking, exp.data.split_seed
    return (_generate(g.task, g.train_examples, g.train_size, seed, g.pixels),
            _generate(g.task, g.val_examples, g.train_size, seed + 1, g.pixels))


def split_of(exp: Experiment) -> Split:
    """`training_data` as a `Split` (per-position class targets, classes "0" / "1")."""
    (x, y), (xv, yv) = training_data(exp)
    return Split(x, y, xv, yv, classes=("0", "1"))


def test_set(exp: Experiment, size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` fresh test instances of `size` (seeded by data.split_seed and the size)."""
    g = exp.model.thinking
    return generate(g.task, n, size, test_seed(exp.data.split_seed, size), g.pixels)


# --------------------------------------------------------------------------- models


def backprop_of(variant: ThinkingVariant) -> Backprop:
    if variant.backprop == "progressive":
        return Progressive(variant.alpha)
    if variant.backprop == "truncated":
        return Truncated(variant.grad_passes)
    return Tied()


def build_model(exp: Experiment, variant: ThinkingVariant) -> nn.Module:
    """The variant's network (a `Halting` around the recurrent net for a halting variant)."""
    g = exp.model.thinking
    dim, channels = DIMS[g.task], IN_CHANNELS[g.task]
    where = f"variant {variant.name!r} (model = {variant.model!r})"
    try:
        if variant.model == "feedforward":
            return feedforward_conv(dim, channels, width=variant.width, blocks=variant.blocks, depth=variant.max_iters)
        if variant.model == "transformer":
            return looped_transformer(channels, d_model=variant.width, nhead=variant.heads, ff=2 * variant.width,
                                      unroll=variant.max_iters, backprop=backprop_of(variant),
                                      window=variant.window or None)
        recall = None if variant.recall == "none" else variant.recall
        net = recurrent_conv(dim, channels, width=variant.width, blocks=variant.blocks, recall=recall,
                             unroll=variant.max_iters, backprop=backprop_of(variant))
        if variant.halting:
            return Halting(net, halting_head(variant.width, dim, variant.halting_pool),
                           max_passes=variant.halting_max_passes,
                           threshold=g.halting_threshold)
        return net
    except ValueError as err:
        raise ConfigError(f"{where} cannot be built: {err} (check [model.thinking] and the variant's keys)") from None


def _optimizer_args(exp: Experiment) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in exp.train.optimizer_args.items()}


def validate(exp: Experiment) -> list[ThinkingVariant]:
    """Every variant expanded, built (small: no data generated) and given its optimizer."""
    variants = expand(exp)
    for variant in variants:
        net = build_model(exp, variant)
        try:
            make_optimizer((exp.train.optimizer, _optimizer_args(exp)), net.parameters())
        except (ValueError, TypeError) as err:
            raise ConfigError(f"config keys train.optimizer / train.optimizer_args: {err}") from None
    return variants


def memory_estimates(exp: Experiment) -> list:
    """Parameters of the built net; activations: batch x width x positions per conv, 2 per block, every pass."""
    g = exp.model.thinking
    positions = (g.train_size * g.pixels) ** DIMS[g.task]
    out = []
    for variant in expand(exp):
        params = sum(p.numel() for p in build_model(exp, variant).parameters())
        passes = variant.unroll
        acts = exp.train.batch_size * variant.width * positions * (2 * variant.blocks + 2) * passes
        out.append((variant, Estimate(params, acts, 4, passes, exp.train.batch_size)))
    return out


# --------------------------------------------------------------------------- evaluation


def _loop_of(model: nn.Module):
    """The net's looped part (None: a feedforward net)."""
    net = model.model if isinstance(model, Halting) else model
    return None if not any(isinstance(m, Loop) for m in net.modules()) else net


@torch.no_grad()
def exact_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, passes: list[int],
                   batch: int = 100) -> list[float]:
    """Per-instance accuracy (every position right) after each of `passes` passes, in one run of
    max(passes) passes per batch; a feedforward net's one output counts for every pass count."""
    net = model.model if isinstance(model, Halting) else model
    was = net.training
    net.eval()
    right = dict.fromkeys(passes, 0)
    wanted, last = set(passes), max(passes)
    try:
        for xb, yb in zip(x.split(batch), y.split(batch)):
            if _loop_of(net) is None:
                ok = _exact(net(xb), yb)
                right = {k: right[k] + ok for k in passes}
                continue
            loop, loop_input, after = split_at_loop(net, xb, logits=False)
            stream = loop.iterate(loop_input)
            for t in range(1, last + 1):
                h = next(stream)
                if t in wanted:
                    out = loop.output_after([h])
                    right[t] += _exact(out if after is None else after(out), yb)
            stream.close()
    finally:
        net.train(was)
    return [right[k] / len(x) for k in passes]


def _exact(scores: torch.Tensor, y: torch.Tensor) -> int:
    """How many instances have every position's argmax class right."""
    return int((scores.argmax(1) == y).reshape(len(y), -1).all(1).sum())


def _stopped(stop_batch, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, float]:
    """(accuracy, mean passes) of an early stop: `stop_batch(xb)` gives each batch's `EarlyExit`."""
    right = used = 0
    for xb, yb in zip(x.split(batch), y.split(batch)):
        stop = stop_batch(xb)
        right += _exact(stop.output, yb)
        used += int(stop.passes.sum())
    return right / len(x), used / len(x)


@torch.no_grad()
def halting_results(exp: Experiment, model: Halting, sets: dict, fixed: dict) -> dict:
    """Stopping by halting probability (at halting_threshold and each of halting_sweep) vs the fixed
    budget (max(test_passes)) and `ln.early_exit`."""
    g = exp.model.thinking
    budget = max(g.test_passes)
    out = {"threshold": g.halting_threshold, "max_passes": budget, "sizes": [], "mean_passes": [], "accuracy": [],
           "sweep": [{"threshold": t, "mean_passes": [], "accuracy": []} for t in g.halting_sweep],
           "fixed_accuracy": [], "early_exit": {"criterion": g.early_exit_criterion,
                                                "threshold": g.early_exit_threshold, "mean_passes": [], "accuracy": []}}
    model.eval()
    exit_early = functools.partial(early_exit, model.model, criterion=g.early_exit_criterion,
                                   threshold=g.early_exit_threshold, max_passes=budget)
    for size, (x, y) in sets.items():
        out["sizes"].append(size)
        out["fixed_accuracy"].append(fixed[size])
        rows = [(out, g.halting_threshold), *((row, row["threshold"]) for row in out["sweep"])]
        for row, threshold in rows:
            stop = functools.partial(model.stop, threshold=threshold, max_passes=budget)
            accuracy, passes = _stopped(stop, x, y, g.eval_batch)
            row["accuracy"].append(accuracy)
            row["mean_passes"].append(passes)
        accuracy, passes = _stopped(exit_early, x, y, g.eval_batch)
        out["early_exit"]["accuracy"].append(accuracy)
        out["early_exit"]["mean_passes"].append(passes)
    return out


def extra_results(exp: Experiment, variant: ThinkingVariant, model: nn.Module) -> dict:
    """summary.json's `extra` (see the module docstring)."""
    g = exp.model.thinking
    device = next(model.parameters()).device
    sets = {size: tuple(t.to(device) for t in test_set(exp, size, n)) for size, n in zip(g.test_sizes, test_examples(g))}
    grid = [exact_accuracy(model, x, y, list(g.test_passes), g.eval_batch) for x, y in sets.values()]
    extra = {"task": g.task, "train_size": g.train_size, "max_iters": variant.max_iters,
             "test": {"sizes": list(g.test_sizes), "passes": list(g.test_passes), "examples": test_examples(g),
                      "seeds": [test_seed(exp.data.split_seed, s) for s in g.test_sizes],
                      "accuracy": grid, "fixed_depth": not variant.has_loop},
             "halting": None}
    if variant.halting:
        fixed = {size: row[-1] for size, row in zip(g.test_sizes, grid)}
        extra["halting"] = halting_results(exp, model, sets, fixed)
    return extra


# --------------------------------------------------------------------------- one run


@contextmanager
def graph_at_every_pass(net: nn.Module):
    """The net's loops run as `ln.Tied` inside (PonderNet's loss needs every pass's output with its
    graph, which e.g. the progressive loss's passes lack); their own modes come back after."""
    loops = [m for m in net.modules() if isinstance(m, Loop) and not m.backprop.pass_readout]
    before = [loop.backprop for loop in loops]
    try:
        for loop in loops:
            loop.backprop = Tied()
            loop.backprop.attach(loop)
        yield net
    finally:
        for loop, mode in zip(loops, before):
            loop.backprop = mode


def train_halting(model: Halting, variant: ThinkingVariant, exp: Experiment, train: tuple, val: tuple, seed: int,
                  engine: dict) -> HaltingHistory:
    """A halting variant's training: `halting_pretrain` epochs of the net alone with its own mode
    (`fit`, with train.scheduler), then PonderNet's loss (`fit_halting`) for the rest, the net frozen
    if `halting_freeze`. One history, the halting epochs numbered after the net's."""
    model.to(resolve_device(engine.get("device"), model))  # fit_halting trains where the model is
    first = HaltingHistory()
    if variant.halting_pretrain:
        done = fit(model.model, train, val, loss="cross_entropy", optimizer=(exp.train.optimizer, _optimizer_args(exp)),
                   epochs=variant.halting_pretrain, batch_size=exp.train.batch_size, seed=seed, progress=False,
                   **engine)
        first = HaltingHistory(records=[HaltingHistory.RECORD(**asdict(r)) for r in done.records],
                               best_epoch=done.best_epoch)
    if variant.halting_freeze:
        model.model.requires_grad_(False)
    try:
        with graph_at_every_pass(model.model):
            second = fit_halting(model, train, val, loss="cross_entropy", prior=variant.halting_prior,
                                 beta=variant.halting_beta, optimizer=(exp.train.optimizer, _optimizer_args(exp)),
                                 epochs=exp.train.epochs - variant.halting_pretrain, batch_size=exp.train.batch_size,
                                 seed=seed, progress=False, clip=engine.get("clip"))
    except TrainingDiverged as err:
        err.history = _joined(first, err.history or HaltingHistory())
        raise
    finally:
        model.model.requires_grad_(True)
    return _joined(first, second)


def _joined(first: HaltingHistory, second: HaltingHistory) -> HaltingHistory:
    offset = len(first)
    records = first.records + [HaltingHistory.RECORD(**{**asdict(r), "epoch": r.epoch + offset})
                               for r in second.records]
    best = second.best_epoch + offset if second.best_epoch is not None else first.best_epoch
    return HaltingHistory(records=records, stopped_early=second.stopped_early, best_epoch=best,
                          diverged=second.diverged)


def train_run(exp: Experiment, variant: ThinkingVariant, seed: int, experiment: dict, started: float,
              engine: dict | None = None) -> dict[str, bytes]:
    """Train one (variant, seed); return its run folder's files (the runner's contract)."""
    train, val = training_data(exp)
    torch.manual_seed(seed)
    model = build_model(exp, variant)
    engine = dict(engine or {})
    optimizer = (exp.train.optimizer, _optimizer_args(exp))
    status, error = "finished", None
    try:
        if variant.halting:
            history = train_halting(model, variant, exp, train, val, seed, engine)
        else:
            random = (variant.min_passes, variant.max_iters) if variant.min_passes else None
            history = fit(model, train, val, loss="cross_entropy", optimizer=optimizer, epochs=exp.train.epochs,
                          batch_size=exp.train.batch_size, seed=seed, progress=False,
                          early_stopping=exp.train.early_stopping, random_passes=random, **engine)
    except TrainingDiverged as err:
        history, status, error = err.history or History(), "diverged", str(err)
    probes = extra = None
    train_seconds = time.perf_counter() - started
    if status == "finished":
        net = model.model if isinstance(model, Halting) else model
        original = evaluate(net, val, loss="cross_entropy")
        probes = {"original": original, "skip_off": None, "feedback_off": None}
        extra = extra_results(exp, variant, model)  # on the training device (a GPU config tests there too)
        extra["train_seconds"] = train_seconds
    model = model.cpu()
    summary = {
        "experiment": exp.name, "variant": variant.name, "seed": seed, **variant.described(),
        "status": status, "task": "classification", "loss": "ponder(cross_entropy)" if variant.halting else "cross_entropy",
        "val_samples": int(len(val[0])), "classes": 2,
        "error": error, "probes": probes, **own_run_record(history, seed, started, model),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if extra is not None:
        summary["extra"] = extra
    return own_run_files(experiment, variant, seed, summary, history, model if status == "finished" else None)


__all__ = ["build_model", "exact_accuracy", "extra_results", "memory_estimates", "test_seed", "test_set",
           "train_run", "training_data", "validate"]
