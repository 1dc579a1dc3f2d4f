"""Command line.

    loopnets run [CONFIG] [key=value ...] [--workers N | --ray ADDRESS] [--runs-dir runs] [--data-dir DIR]
    loopnets report RUNS_DIR
    loopnets check CONFIG [CONFIG ...]
    loopnets bench [--quick] [--suites thesis unroll images] [...]   (a source checkout's benchmarks/run.py)

`loopnets run` with no CONFIG runs the bundled default experiment (iris; see
`loopnets.experiments.config.Experiment`).

Exit status: 0 done; 1 some runs failed (the others were trained and written; re-running the same
command trains the failed ones again); 2 a usage error, a bad config, or a fault of the environment
or of a file (disk full, read-only folder, a name the file system refuses, a missing, empty or
corrupt file, an experiment folder another sweep holds). Every error is one line,
`loopnets: error: <what happened>: <which file>; <what to do>`, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from loopnets.experiments.config import ConfigError, expand_variants, load_config
from loopnets.faults import FileFault, about, explain


def _load_config(path: str | None, overrides: list[str] = ()):
    """load_config, with a config file that cannot be read (not UTF-8, unreadable) a FileFault naming it."""
    with about(path or "the default config", "read the config file"):
        return load_config(path, overrides)


def _run(args: argparse.Namespace) -> int:
    from loopnets.experiments.runner import RunsFailed, run_experiment

    config, overrides = _split_config_and_overrides(args.items)
    exp = _load_config(config, overrides)
    if args.device is not None:  # checked with the config: an unavailable device is refused before any folder
        overrides = [*overrides, f"train.device={json.dumps(args.device)}"]
        exp = _load_config(config, overrides)
    if args.data_dir is not None:
        _check_data_dir(exp.data.name)
        exp = _load_config(config, [*overrides, f"data.options.data_dir={json.dumps(args.data_dir, ensure_ascii=False)}"])
    try:
        experiment_dir = run_experiment(exp, args.runs_dir, workers=args.workers, ray_address=args.ray,
                                        progress=not args.no_progress, fresh=args.fresh)
    except RunsFailed as failed:
        if not args.no_report and _has_runs(failed.experiment_dir):
            _report(failed.experiment_dir)
        print(f"loopnets: {failed}", file=sys.stderr)
        return 1
    if not args.no_report:
        _report(experiment_dir)
    return 0


def _has_runs(experiment_dir: Path) -> bool:
    return any(experiment_dir.glob("*/seed=*/summary.json"))


def _check_data_dir(name: str) -> None:
    """--data-dir sets the loader's `data_dir` option: only data sets read from the user's files have one."""
    from loopnets.data import DATASETS, dataset_options

    takes = [n for n in DATASETS if "data_dir" in dataset_options(n)]
    if "data_dir" not in dataset_options(name):
        raise ConfigError(f"--data-dir applies only to data sets read from files you give ({', '.join(takes)}); "
                          f"this config's data set {name!r} is bundled or built in and takes no folder: drop --data-dir")


def _report(experiment_dir: Path) -> Path:
    from loopnets.report import build_report

    if not _has_runs(experiment_dir):
        raise FileFault("no finished runs to report in the experiment folder", experiment_dir,
                        f"train them first: loopnets run {experiment_dir / 'experiment.toml'} --runs-dir {experiment_dir.parent}")
    with about(experiment_dir, "write the report"):
        report_dir = build_report(experiment_dir)
    probes = report_dir / "probes.md"
    if probes.is_file():
        print("\n" + probes.read_text())
    print(f"report: {report_dir / 'report.html'} (and report.md, figures, LaTeX tables)")
    return report_dir


def _report_command(args: argparse.Namespace) -> int:
    root = Path(args.runs_dir)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder; give runs/<experiment> as written by `loopnets run`")
    folders = [root] if (root / "experiment.toml").is_file() else sorted(p.parent for p in root.glob("*/experiment.toml"))
    if not folders:
        raise ConfigError(f"{root} holds no experiment (no experiment.toml in it or its subfolders)")
    for folder in folders:
        _report(folder)
    return 0


def _check(args: argparse.Namespace) -> int:
    from loopnets.experiments.runner import validate

    for path in args.configs:
        exp = _load_config(path)
        variants = validate(exp)
        print(f"{path}: ok, experiment {exp.name!r}: {len(variants)} variants x {len(exp.train.seeds)} seeds "
              f"({', '.join(v.name for v in expand_variants(exp))})")
    return 0


def _bench(argv: list[str]) -> int:
    """`loopnets bench ...`: run benchmarks/run.py of the source checkout (not part of the installed package)."""
    import subprocess

    candidates = [Path(__file__).resolve().parents[2] / "benchmarks" / "run.py", Path.cwd() / "benchmarks" / "run.py"]
    script = next((c for c in candidates if c.is_file()), None)
    if script is None:
        raise ConfigError("loopnets bench runs the benchmarks of a source checkout (benchmarks/run.py), and none was "
                          f"found at {candidates[0]} or {candidates[1]}: run it from the loopnets repository")
    return subprocess.call([sys.executable, str(script), *argv])


def _split_config_and_overrides(items: list[str]) -> tuple[str | None, list[str]]:
    config = None
    overrides = []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif config is None:
            config = item
        else:
            raise ConfigError(f"two config files given ({config}, {item}); run them one at a time")
    return config, overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loopnets", description="Neural networks with feedback connections.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train every (variant, seed) of an experiment and write its report")
    run.add_argument("items", nargs="*", metavar="CONFIG | key=value",
                     help="a TOML experiment (default: the bundled iris experiment) and key=value overrides, "
                          "e.g. train.epochs=20 'train.seeds=[0,1]'")
    run.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    run.add_argument("--data-dir", metavar="DIR", help="folder of a data set read from your own files (cifar10: the "
                                                       "extracted cifar-10-batches-py); sets data.options.data_dir")
    backend = run.add_mutually_exclusive_group()
    backend.add_argument("--workers", type=int, default=1, help="parallel worker processes on this machine")
    backend.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster at ADDRESS, or 'local' to start one here")
    run.add_argument("--fresh", action="store_true", help="delete this experiment's earlier runs first")
    run.add_argument("--no-report", action="store_true", help="do not build the report afterwards")
    run.add_argument("--device", metavar="DEVICE", help="train on cpu, cuda, cuda:N, mps or auto (sets train.device)")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress (a bar over epochs on a terminal, plain lines otherwise)")
    run.set_defaults(func=_run)

    report = sub.add_parser("report", help="rebuild the report of runs/<experiment> from its run folders")
    report.add_argument("runs_dir", metavar="RUNS_DIR", help="runs/<experiment>, or runs/ for every experiment in it")
    report.set_defaults(func=_report_command)

    check = sub.add_parser("check", help="validate configs (and build every variant) without training")
    check.add_argument("configs", nargs="+", metavar="CONFIG")
    check.set_defaults(func=_check)

    sub.add_parser("bench", add_help=False, help="time loopnets against hand-written PyTorch and the thesis's "
                   "framework, write benchmarks/RESULTS.md (`loopnets bench --help` for its options)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # every option after it belongs to benchmarks/run.py
        try:
            return _bench(argv[1:])
        except ConfigError as err:
            print(f"loopnets: error: {err}", file=sys.stderr)
            return 2

    # config and key=value items may come after options too (`run --workers 2 train.epochs=5`)
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command != "run" or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.items = [*args.items, *extra]
    if getattr(args, "workers", 1) < 1:
        parser.error("--workers must be >= 1")
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"loopnets: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # FileFault, and any fault of the environment that no code above named
        print(f"loopnets: error: {explain(err)}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as err:  # a text file read outside `about`: name what we know
        print(f"loopnets: error: a file is not UTF-8 text ({err}); save it as UTF-8", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
