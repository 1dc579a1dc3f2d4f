"""Copy the compact results of finished experiments into docs/reproductions/results/ (committed).

    python docs/reproductions/collect.py RUNS_DIR [EXPERIMENT ...] [--out docs/reproductions/results]

For each experiment folder RUNS_DIR/<experiment>/ that has a report (report/results.json, written by
`loopnets run` / `loopnets report`), writes results/<experiment>/ with
- results.json: the report's per-variant statistics (probes, timing, seeds), as written;
- experiment.toml: the experiment's settings;
- <variant>/seed=<n>/summary.json: each run's summary (no checkpoint, no metrics.csv), so
  `loopnets.report.results.load_experiment` reads the folder like a run folder;
- data.json: the training and validation sets' sizes and the chance levels the verdicts need (classes, 1/classes and
  the majority class's share for classification; for Hershey's anomaly sequences the same for the anomaly's
  position (ACC_end) and the floor of ACC_seq; the sd of the validation targets, the RMSE of predicting their
  mean, for regression; the MSE of reconstructing every validation input as the mean training input, for
  autoencoding), read from the experiment's data at collect time;
- curves.json: per variant and seed, the validation loss (and accuracy) per epoch and the mean
  training seconds per epoch, rounded to 5 significant digits (the time-weighted convergence).
Kilobytes per experiment; the page builders read these instead of the run folders, so the pages
rebuild offline (`make pages`). An experiment without a report is refused with the command that
writes one; an existing results/<experiment>/ is replaced as a whole.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"
CURVE_COLUMNS = ("val_loss", "val_accuracy")
DIGITS = 5


def collect(runs_dir: Path, out_dir: Path, experiments: list[str] | None = None) -> list[str]:
    """Collect the experiments named (default: every RUNS_DIR/<name> with a report); their names."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs folder {runs_dir} does not exist; pass the folder `loopnets run` wrote (default runs)")
    names = experiments or sorted(p.parent.parent.name for p in runs_dir.glob("*/report/results.json"))
    if not names:
        raise FileNotFoundError(f"{runs_dir} holds no <experiment>/report/results.json; run `loopnets run CONFIG` "
                                "(or `loopnets report RUNS_DIR/<experiment>` for a finished sweep) first")
    for name in names:
        collect_one(runs_dir / name, out_dir / name)
    return names


def collect_one(src: Path, dst: Path) -> None:
    results = src / "report" / "results.json"
    if not results.is_file():
        raise FileNotFoundError(f"{results} is missing: run `loopnets report {src}` to write it")
    tmp = dst.with_name(dst.name + ".collecting")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(results, tmp / "results.json")
    if (src / "experiment.toml").is_file():
        shutil.copyfile(src / "experiment.toml", tmp / "experiment.toml")
    curves: dict[str, dict[str, dict]] = {}
    for summary in sorted(src.glob("*/seed=*/summary.json")):
        variant, seed = summary.parent.parent.name, summary.parent.name
        target = tmp / variant / seed
        target.mkdir(parents=True)
        (target / "summary.json").write_text(json.dumps(json.loads(summary.read_text()), sort_keys=True) + "\n")
        curve = curve_of(summary.parent / "metrics.csv")
        if curve:
            curves.setdefault(variant, {})[seed.removeprefix("seed=")] = curve
    (tmp / "curves.json").write_text(json.dumps(curves, sort_keys=True) + "\n")
    if (src / "experiment.toml").is_file():
        (tmp / "data.json").write_text(json.dumps(data_facts(src / "experiment.toml"), sort_keys=True) + "\n")
    shutil.rmtree(dst, ignore_errors=True)  # replaced whole only once the new copy is complete
    tmp.rename(dst)


def data_facts(experiment_toml: Path) -> dict:
    """The validation set's size and chance levels of the experiment's data (loads the data)."""
    from loopnets.experiments import load_config
    from loopnets.experiments.config import family_of
    from loopnets.experiments.runner import load_split

    exp = load_config(experiment_toml)
    own = family_of(exp).data_facts(exp)  # a family's own data (Hershey's anomaly sequences)
    if own is not None:
        return own
    split = load_split(exp)
    facts = {"task": split.task, "n_train": int(split.x_train.shape[0]), "n_val": int(split.x_val.shape[0])}
    if split.task == "classification":
        facts |= {"classes": len(split.classes), "chance_accuracy": 1 / len(split.classes),
                  "one_sample_accuracy": 1 / facts["n_val"],
                  # per element: targets (N,) or per-position (N, L) (the thinking family's strings and mazes)
                  "majority_accuracy": float(split.y_val.flatten().bincount().max()) / split.y_val.numel()}
    elif split.task == "regression":
        facts["mean_predictor_rmse"] = float(split.y_val.double().std(unbiased=False))
    elif split.task == "autoencoding":  # the floor: reconstruct every validation input as the mean training input
        facts["mean_input_mse"] = float(((split.y_val.double() - split.x_train.double().mean(0)) ** 2).mean())
    return facts


def curve_of(metrics: Path) -> dict | None:
    """One run's curves.json entry from its metrics.csv (None without one)."""
    if not metrics.is_file():
        return None
    frame = pd.read_csv(metrics)
    curve = {c: [_round(x) for x in frame[c]] for c in CURVE_COLUMNS if c in frame and frame[c].notna().any()}
    if "train_seconds" in frame and len(frame):
        curve["train_seconds_per_epoch"] = _round(float(frame["train_seconds"].mean()))
    return curve


def _round(x: float) -> float | None:
    return None if pd.isna(x) else float(f"{x:.{DIGITS}g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", type=Path, help="the folder `loopnets run` wrote into (e.g. runs)")
    parser.add_argument("experiments", nargs="*", help="experiment names (default: every one with a report)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        names = collect(args.runs_dir, args.out, args.experiments or None)
    except FileNotFoundError as error:
        print(f"collect: {error}", file=sys.stderr)
        return 2
    for name in names:
        print(f"collected {name} -> {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
