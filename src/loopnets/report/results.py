"""Read an experiment's run folders (docs/contract-runs.md) into tidy per-variant structures.

Reads only what `loopnets run` leaves on disk, so a report can be rebuilt without retraining:

    runs/<experiment>/experiment.toml
    runs/<experiment>/<variant>/seed=<n>/{summary.json, metrics.csv}

Runs of different lengths (early stopping) and diverged runs are expected: per-epoch curves use
the seeds that reached that epoch, tables use the finished seeds only. Interrupted runs
(`seed=<n>.partial-<id>`) and unreadable folders are listed as problems, never fatal.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from loopnets.experiments import families
from loopnets.report.stats import Band, Stat, Timing, band, json_float, mean_sd, timing_over

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy", "train_seconds", "val_seconds")
PROBES = ("original", "skip_off", "feedback_off")
TIMINGS = ("train_ms_per_epoch", "val_ms_per_epoch")
METHOD_ORDER = ("ffn", "combine", "couple", "tied")  # the thesis tables' order; others follow
METHOD_NAMES = {"ffn": "FFN", "combine": "COMBINE", "couple": "COUPLE", "tied": "Tied"}
_SEED_DIR = re.compile(r"^seed=(\d+)$")
_PARTIAL_DIR = re.compile(r"^seed=(\d+)\.partial-.+$")


@dataclass(frozen=True)
class Run:
    """One (variant, seed) folder: its summary.json and its metrics.csv columns."""

    seed: int
    summary: dict
    metrics: dict[str, np.ndarray]  # column -> (epochs_run,) float array; NaN where empty

    @property
    def status(self) -> str:
        return self.summary["status"]

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def probe(self, probe: str, metric: str) -> float | None:
        probes = self.summary.get("probes") or {}  # null for a diverged run
        entry = probes.get(probe) or {}  # null when not applicable
        value = entry.get(metric)
        return None if value is None else float(value)

    def shared_group(self) -> tuple[int, ...] | None:
        """The seeds this run trained with in one batched computation (its timings are the group's / n),
        None when it was timed on its own (alone, or one after the other in a group)."""
        training = self.summary.get("training") or {}
        seeds = tuple(training.get("seeds_together") or ())
        return seeds if training.get("path") == "batched" and len(seeds) > 1 else None

    def load(self) -> tuple[float, int] | None:
        """(the highest 1-minute load average recorded at the run's start or end, the cores it could
        use), from summary.json's environment; None for a run without those records."""
        env = self.summary.get("environment") or {}
        cores = env.get("cores_usable") or env.get("cpu_count")
        loads = [(env.get("load_average") or {}).get(k) for k in ("start", "end")]
        ones = [float(x[0]) for x in loads if x]
        return (max(ones), int(cores)) if ones and cores else None

    def train_seconds_per_epoch(self) -> float | None:
        """The summary's train ms per epoch in seconds, else the mean of metrics.csv's column."""
        ms = (self.summary.get("timing") or {}).get("train_ms_per_epoch")
        if ms is not None:
            return float(ms) / 1000.0
        seconds = self.metrics["train_seconds"]
        seconds = seconds[np.isfinite(seconds)]
        return float(seconds.mean()) if seconds.size else None


@dataclass
class Variant:
    """All seeds of one variant folder, with the method / unroll / skip from its summaries."""

    name: str
    method: str
    unroll: int
    skip: bool
    runs: list[Run] = field(default_factory=list)  # sorted by seed
    missing: list[int] = field(default_factory=list)  # expected seeds without a finished folder
    label: str = ""  # table name as in the thesis, e.g. "COUPLE x2 w. skip"
    legend: str = ""  # figure legend name (the column says the skip), e.g. "COUPLE x2"
    feedback: str | None = None  # summary.json's feedback: "none" marks a variant without a loop
    model_family: str = families.DEFAULT  # summary.json's family (`loopnets.experiments.families`)

    def noise_curve(self) -> tuple[list[float], list[float]] | None:
        """(sigmas, mean validation loss over the finished seeds) from summary.json's extra.noise."""
        by_sigma: dict[float, list[float]] = {}
        for r in self.finished:
            noise = (r.summary.get("extra") or {}).get("noise") or {}
            for sigma, value in zip(noise.get("sigmas", []), noise.get("loss", [])):
                if value is not None and math.isfinite(value):
                    by_sigma.setdefault(float(sigma), []).append(float(value))
        if not by_sigma:
            return None
        sigmas = sorted(by_sigma)
        return sigmas, [float(np.mean(by_sigma[s])) for s in sigmas]

    def sweep(self, metric: str) -> tuple[Band, int | None] | None:
        """summary.json's unroll_sweep over the finished seeds: (band of `metric` by pass count, the
        training unroll); None when no finished seed has that metric swept (no loop, sweep off)."""
        curves, trained = [], None
        for r in self.finished:
            sweep = r.summary.get("unroll_sweep") or {}
            values = sweep.get(metric)
            if values:
                curves.append((sweep["passes"], [math.nan if v is None else float(v) for v in values]))
                trained = sweep.get("training_unroll", trained)
        if not curves:
            return None
        swept = band(curves)
        return (swept, trained) if swept.epochs.size else None

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.finished]

    @property
    def diverged(self) -> list[Run]:
        return [r for r in self.runs if r.status == "diverged"]

    @property
    def family(self) -> str:
        """Method name as in the thesis legends: FFN, COMBINE, COUPLE, Tied."""
        return METHOD_NAMES.get(self.method, self.method)

    def status_line(self) -> str:
        """E.g. "3 of 5 seeds finished, 2 diverged"."""
        total = len(self.runs) + len(self.missing)
        parts = [f"{len(self.finished)} of {total} seeds finished"]
        if self.diverged:
            parts.append(f"{len(self.diverged)} diverged")
        if self.missing:
            parts.append(f"{len(self.missing)} missing")
        return ", ".join(parts)

    def probe_applies(self, probe: str) -> bool:
        """skip_off needs a bypassing skip, feedback_off a loop; "original" always applies."""
        loops = self.method != "ffn" and self.feedback != "none"  # feedback "none": no loop
        return {"original": True, "skip_off": self.skip, "feedback_off": loops}[probe]

    def probe_stat(self, probe: str, metric: str) -> Stat | None:
        """Mean ± sd of a probe over the finished seeds; None if not applicable or no values."""
        if not self.probe_applies(probe):
            return None
        return mean_sd([v for r in self.finished if (v := r.probe(probe, metric)) is not None])

    def timing(self, key: str) -> Timing | None:
        """`Timing` of a summary timing (ms per epoch) over the finished seeds: seeds that trained
        together count as one measurement (see `Timing`)."""
        return timing_over([((r.summary.get("timing") or {})[key], r.shared_group()) for r in self.finished
                            if (r.summary.get("timing") or {}).get(key) is not None])

    def train_seconds_per_epoch(self) -> float | None:
        """The time-weighted x unit: mean over seeds of train seconds per epoch (thesis App. D).

        Uses the finished seeds (the timing table's numbers); all runs if none finished.
        """
        runs = self.finished or self.runs
        seconds = [s for r in runs if (s := r.train_seconds_per_epoch()) is not None]
        return float(np.mean(seconds)) if seconds else None

    def curves(self, column: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(epochs, values) per seed for a metrics.csv column, diverged runs' finished epochs included."""
        return [(r.metrics["epoch"], r.metrics[column]) for r in self.runs if r.metrics["epoch"].size]

    def band(self, column: str) -> Band:
        return band(self.curves(column))


@dataclass
class Experiment:
    """An experiment folder: its config (experiment.toml) and variants in thesis table order."""

    path: Path
    name: str
    config: dict[str, Any]
    task: str  # "classification" | "regression"
    loss: str
    variants: list[Variant]
    expected_seeds: list[int]
    absent_variants: list[str] = field(default_factory=list)  # in experiment.toml, no folder on disk
    problems: list[str] = field(default_factory=list)  # unreadable or interrupted run folders

    @property
    def runs(self) -> list[Run]:
        return [r for v in self.variants for r in v.runs]

    def status_line(self) -> str:
        finished = sum(len(v.finished) for v in self.variants)
        diverged = sum(len(v.diverged) for v in self.variants)
        missing = sum(len(v.missing) for v in self.variants)
        total = sum(len(v.runs) + len(v.missing) for v in self.variants)
        parts = [f"{finished} of {total} runs finished"]
        if diverged:
            parts.append(f"{diverged} diverged")
        if missing:
            parts.append(f"{missing} missing")
        return ", ".join(parts)

    def relative_to_ffn(self, variant: Variant, key: str) -> float | None:
        """Percent change of a timing mean against the FFN with the same skip setting, if any."""
        if variant.method == "ffn":
            return None
        ffn = next((v for v in self.variants if v.method == "ffn" and v.skip == variant.skip), None)
        mine, base = variant.timing(key), ffn.timing(key) if ffn else None
        if mine is None or base is None or base.mean == 0:
            return None
        return 100.0 * (mine.mean / base.mean - 1.0)

    def overloaded_runs(self) -> list[dict]:
        """Runs whose recorded 1-minute load average (start or end) exceeded the cores they could use:
        other work competed for the CPU, so their timings are not comparable with the others'."""
        out = []
        for v in self.variants:
            for r in v.runs:
                load = r.load()
                if load is not None and load[0] > load[1]:
                    out.append({"variant": v.name, "seed": r.seed, "load": load[0], "cores": load[1]})
        return out

    def warnings(self) -> list[str]:
        """Lines the report shows above its tables (results.json "warnings")."""
        overloaded = self.overloaded_runs()
        if not overloaded:
            return []
        runs = ", ".join(f"{o['variant']} seed={o['seed']} (load {o['load']:g} on {o['cores']} cores)" for o in overloaded)
        return [f"The load average exceeded the cores during {len(overloaded)} of {len(self.runs)} runs: {runs}. "
                "Other processes competed for the CPU, so the timings of these runs are not comparable with each "
                "other or with the rest; re-run them on a quiet machine to compare times."]

    def to_dict(self) -> dict:
        """The aggregated numbers behind the tables (results.json); non-finite numbers are null."""
        variants = []
        for v in self.variants:
            metrics = ("accuracy", "loss") if self.task == "classification" else ("loss",)
            probes = {p: ({m: _stat_dict(v.probe_stat(p, m)) for m in metrics} if v.probe_applies(p) else None)
                      for p in PROBES}
            timing = {k: (None if (t := v.timing(k)) is None else t.to_dict()) for k in TIMINGS}
            timing.update({f"{k}_vs_ffn_percent": json_float(self.relative_to_ffn(v, k)) for k in TIMINGS})
            epochs = [len(r.metrics["epoch"]) for r in v.runs]
            variants.append({
                "variant": v.name, "label": v.label, "method": v.method, "unroll": v.unroll, "skip": v.skip,
                "status": v.status_line(),
                "seeds": {"finished": [r.seed for r in v.finished], "diverged": [r.seed for r in v.diverged],
                          "missing": v.missing},
                "errors": {str(r.seed): r.summary.get("error") for r in v.diverged},
                "epochs_run": {str(r.seed): n for r, n in zip(v.runs, epochs)},
                "train_seconds_per_epoch": json_float(v.train_seconds_per_epoch()),
                "probes": probes, "timing": timing,
            })
            variants[-1]["unroll_sweep"] = _sweep_dict(v)
            family = family_of(v)
            if family is not None:
                variants[-1].update(family.variant_results(v))
        return {"experiment": self.name, "task": self.task, "loss": self.loss,
                "expected_seeds": self.expected_seeds, "status": self.status_line(),
                "absent_variants": self.absent_variants, "problems": self.problems,
                "warnings": self.warnings(), "overloaded_runs": self.overloaded_runs(), "variants": variants}


def load_experiment(experiment_dir: Path | str) -> Experiment:
    """Read `experiment_dir` (runs/<experiment>/) into an Experiment.

    Raises:
        FileNotFoundError: the folder does not exist or holds no `<variant>/seed=<n>/summary.json`.
    """
    root = Path(experiment_dir)
    expected_layout = ("expected run folders <variant>/seed=<n>/summary.json (written by `loopnets run`, "
                       "see docs/contract-runs.md)")
    if not root.is_dir():
        raise FileNotFoundError(f"experiment folder {root} does not exist; {expected_layout}")
    problems: list[str] = []
    config = _read_config(root, problems)
    by_variant: dict[str, list[Run]] = {}
    for variant_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "report"):
        for seed_dir in sorted(p for p in variant_dir.iterdir() if p.is_dir()):
            if _PARTIAL_DIR.match(seed_dir.name):
                problems.append(f"{variant_dir.name}/{seed_dir.name}: interrupted run (no summary), ignored")
                continue
            match = _SEED_DIR.match(seed_dir.name)
            if not match:
                continue
            failure = _failure(seed_dir)
            if failure is not None:
                problems.append(f"{variant_dir.name}/{seed_dir.name}: failed ({failure}); the same `loopnets run` "
                                f"command trains it again")
                continue
            try:
                run = _read_run(seed_dir, int(match.group(1)))
            except (OSError, ValueError, KeyError) as error:
                problems.append(f"{variant_dir.name}/{seed_dir.name}: unreadable ({error}), ignored")
                continue
            by_variant.setdefault(variant_dir.name, []).append(run)
    if not by_variant:
        raise FileNotFoundError(f"no runs in {root}: {expected_layout}")

    found_seeds = sorted({r.seed for runs in by_variant.values() for r in runs})
    configured_variants, configured_seeds = _configured_runs(root, config, problems)
    expected = sorted(set(configured_seeds) | set(found_seeds))
    variants = []
    for name, runs in by_variant.items():
        first = runs[0].summary
        runs.sort(key=lambda r: r.seed)
        seeds = {r.seed for r in runs}
        variants.append(Variant(name=name, method=str(first["method"]), unroll=int(first.get("unroll") or 1),
                                skip=bool(first.get("skip")), runs=runs,
                                missing=[s for s in expected if s not in seeds], feedback=first.get("feedback"),
                                model_family=str(first.get("family") or families.DEFAULT)))
    variants.sort(key=_table_order)
    _assign_labels(variants)
    summaries = [r.summary for v in variants for r in v.runs]
    tasks = [s.get("task") for s in summaries if s.get("task")]
    task = "classification" if "classification" in tasks else tasks[0] if tasks else "regression"
    loss = next((str(s["loss"]) for s in summaries if s.get("loss")), "loss")
    return Experiment(path=root, name=str(config.get("name") or summaries[0].get("experiment") or root.name),
                      config=config, task=task, loss=loss, variants=variants, expected_seeds=expected,
                      absent_variants=[n for n in configured_variants if n not in by_variant], problems=problems)


def _failure(seed_dir: Path) -> str | None:
    """The error of a run the sweep recorded as failed (failed.json and no summary.json), else None."""
    path = seed_dir / "failed.json"
    if (seed_dir / "summary.json").exists() or not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text()).get("error") or "no error recorded")
    except (OSError, ValueError, AttributeError) as error:
        return f"failed.json unreadable: {error}"


def _read_run(seed_dir: Path, seed: int) -> Run:
    summary = json.loads((seed_dir / "summary.json").read_text())
    for key in ("method", "status"):
        if key not in summary:
            raise KeyError(f"summary.json has no {key!r}")
    metrics_path = seed_dir / "metrics.csv"
    rows: list[dict[str, str]] = []
    if metrics_path.exists():
        with metrics_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    metrics = {c: np.asarray([_float(row.get(c)) for row in rows], dtype=float) for c in METRIC_COLUMNS}
    return Run(seed=seed, summary=summary, metrics=metrics)


def _read_config(root: Path, problems: list[str]) -> dict[str, Any]:
    path = root / "experiment.toml"
    if not path.exists():
        problems.append("experiment.toml is missing; the summary lacks the experiment's settings")
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        problems.append(f"experiment.toml is not valid TOML ({error}); settings not shown")
        return {}


def _configured_runs(root: Path, config: dict[str, Any], problems: list[str]) -> tuple[list[str], list[int]]:
    """Variant names and seeds that experiment.toml asks for, to tell missing runs from absent ones.

    Read through the experiment schema (`loopnets.experiments.load_config`, which expands
    `unroll` / `skip` lists into named variants). A file the current schema rejects still gets a
    report: its seeds are read as written and absent variants are not listed.
    """
    if not config:
        return [], []
    # Imported here: the runner may import the report, and the report needs only this function.
    from loopnets.experiments.config import ConfigError, expand_variants, load_config

    try:
        experiment = load_config(root / "experiment.toml")
        return [v.name for v in expand_variants(experiment)], list(experiment.train.seeds)
    except ConfigError as error:
        problems.append(f"experiment.toml does not match the current config schema ({error}); "
                        "variants never run are not listed")
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    seeds = train.get("seeds")
    if isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        return [], list(seeds)
    return [], []


def family_of(v: Variant) -> families.Family | None:
    """The family of a variant's runs; None when no family of that name is registered here."""
    try:
        return families.get(v.model_family)
    except families.UnknownFamily:
        return None


def family_sections(experiment: Experiment, out: Path, results: dict) -> list:
    """The report sections of the experiment's model families, in the order their variants appear:
    (heading, table or figure, caption) items; a family's numbers are added to `results`."""
    items = []
    for name in dict.fromkeys(v.model_family for v in experiment.variants):
        try:
            family = families.get(name)
        except families.UnknownFamily:  # runs of a family not registered in this process: the common report only
            continue
        section = family.report_section(experiment, out)
        if section:
            results.update(family.report_results(experiment) or {})
        items += section
    return items


def _table_order(v: Variant) -> tuple:
    """Without skip before with skip; then ffn, combine, couple, tied (others after); then unroll."""
    rank = METHOD_ORDER.index(v.method) if v.method in METHOD_ORDER else len(METHOD_ORDER)
    return (v.skip, rank, v.method, v.unroll, v.name)


def _assign_labels(variants: list[Variant]) -> None:
    """Thesis-style names; variants that would share one (other loop options) add their folder name."""
    # some families name their variants by their settings already, e.g. "partial-t2"
    short = {id(v): v.name if getattr(family_of(v), "label_by_name", False) else v.family if v.method == "ffn" else f"{v.family} x{v.unroll}"
             for v in variants}
    counts: dict[tuple[str, bool], int] = {}
    for v in variants:
        counts[short[id(v)], v.skip] = counts.get((short[id(v)], v.skip), 0) + 1
    for v in variants:
        v.legend = short[id(v)] if counts[short[id(v)], v.skip] == 1 else f"{short[id(v)]} ({v.name})"
        v.label = short[id(v)] + (" w. skip" if v.skip else "")
        if counts[short[id(v)], v.skip] > 1:
            v.label += f" ({v.name})"


def _sweep_dict(v: Variant) -> dict | None:
    """A variant's unroll sweep for results.json: per metric, mean and 20-80 % band over finished seeds."""
    swept = {metric: v.sweep(metric) for metric in ("loss", "accuracy")}
    if not any(swept.values()):
        return None
    out: dict[str, Any] = {"training_unroll": next(s[1] for s in swept.values() if s)}
    for metric, s in swept.items():
        out[metric] = None if s is None else {
            "passes": s[0].epochs.tolist(), "mean": [json_float(x) for x in s[0].mean],
            "low": [json_float(x) for x in s[0].low], "high": [json_float(x) for x in s[0].high],
            "n": s[0].n.tolist()}
    return out


def _float(text: str | None) -> float:
    return float(text) if text not in (None, "") else math.nan


def _stat_dict(stat: Stat | None) -> dict | None:
    return None if stat is None else stat.to_dict()


def page_cli(build: Callable[[Path, Path], Any], doc: str, default_out: Path, argv: list[str] | None = None) -> None:
    """The command line of a docs page builder (docs/build_modes.py, docs/reproductions/build_*.py):
    `--runs-dir` (default runs) and `--out` (default: the page beside the script); `build(runs_dir,
    out)` writes the page."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    build(args.runs_dir, args.out)
    print(f"wrote {args.out}")
