"""`make run`'s training time, on a quiet machine and beside one CPU-bound process (issue 14's target).

Times what `make run` trains, the default experiment (iris), as a subprocess:

    python -m loopnets.cli run --runs-dir <fresh temp folder> --no-report --no-progress

(a) quiet: nothing else started by this script; (b) loaded: with one other CPU-bound process
running beside it (a Python busy loop: one thread, always runnable), started before the run and
stopped after it. With --rounds N the two alternate (a b, b a, ...) and the medians are compared.

Training time is the sum of the runs' `wall_seconds` from their summary.json (one worker: the
runs train one after another; a group of seeds counts its shared training once); the command's
wall time (imports, data, validation, writing) is reported beside it. The torch thread count
and the load averages come from the runs' own summary.json "environment" records, and the
machine's load average is read before and after every measurement.

Targets: training <= 60 s on a 2-core machine; loaded / quiet <= 1.3.

Writes benchmarks/make_run.json and refreshes the `<!-- bench:make_run:start/end -->` block of
docs/performance.md from it (`--render` re-renders that block from the JSON without measuring).

Run: python benchmarks/make_run.py [--rounds N] [--config PATH] [key=value ...]
     or: loopnets bench --suites make_run
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loopnets.experiments.provenance import load_average, usable_cores

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT = HERE / "make_run.json"
DOCS = ROOT / "docs" / "performance.md"
TRAINING_TARGET_SECONDS = 60.0
LOADED_RATIO_TARGET = 1.3
BUSY_LOOP = "while True:\n    pass\n"  # one CPU-bound thread, as another user's job would be
QUICK = ["train.epochs=1", "train.seeds=[0]", "train.unroll_sweep=0"]


def run_once(config: str | None, overrides: list[str], loaded: bool) -> dict:
    """One `loopnets run` in a fresh runs folder; beside a busy-loop process when `loaded`."""
    busy = None
    with tempfile.TemporaryDirectory(prefix="loopnets-make-run-") as tmp:
        command = [sys.executable, "-m", "loopnets.cli", "run", *([config] if config else []),
                   "--runs-dir", str(Path(tmp) / "runs"), "--no-report", "--no-progress", *overrides]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
        try:
            if loaded:
                busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
                time.sleep(1.0)  # let it start spinning
            load_before = load_average()
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            wall = time.perf_counter() - started
            load_after = load_average()
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        if done.returncode != 0:
            raise RuntimeError(f"`{shlex.join(command)}` failed ({done.returncode}):\n{done.stderr[-3000:]}")
        summaries = [json.loads(p.read_text()) for p in sorted((Path(tmp) / "runs").glob("*/*/seed=*/summary.json"))]
    if not summaries:
        raise RuntimeError(f"`{shlex.join(command)}` wrote no run folders:\n{done.stdout[-3000:]}")
    envs = [s.get("environment") or {} for s in summaries]
    loads = [x[0] for e in envs for x in ((e.get("load_average") or {}).get(k) for k in ("start", "end")) if x]
    return {
        "loaded": loaded,
        "training_seconds": sum(s["timing"]["wall_seconds"] for s in summaries),
        "command_seconds": wall,
        "runs": len(summaries),
        "torch_threads": sorted({e["torch_threads"] for e in envs if "torch_threads" in e}),
        "load_before": load_before, "load_after": load_after,
        "runs_load_1min_max": max(loads) if loads else None,
        "paths": sorted({(s.get("training") or {}).get("path") for s in summaries} - {None}),
    }


def measure(rounds: int, config: str | None, overrides: list[str], log=print) -> dict:
    """Alternate quiet and loaded runs for `rounds` rounds; medians, the ratio and the verdicts."""
    samples: dict[str, list[dict]] = {"quiet": [], "loaded": []}
    for r in range(rounds):
        for loaded in ((False, True) if r % 2 == 0 else (True, False)):
            sample = run_once(config, overrides, loaded)
            samples["loaded" if loaded else "quiet"].append(sample)
            log(f"  {'loaded' if loaded else 'quiet '}: training {sample['training_seconds']:.1f} s, command "
                f"{sample['command_seconds']:.1f} s, torch threads {sample['torch_threads']}, load before / after "
                f"{sample['load_before']} / {sample['load_after']}")
    quiet, loaded = (statistics.median(s["training_seconds"] for s in samples[k]) for k in ("quiet", "loaded"))
    cores = usable_cores()
    return {
        "command": None,  # set by main: the command line that measured
        "machine": _machine(),
        "cores_usable": cores,
        "config": config or "the default experiment (iris)",
        "overrides": overrides,
        "rounds": rounds,
        "runs": samples["quiet"][0]["runs"],
        "quiet_training_seconds": quiet,
        "loaded_training_seconds": loaded,
        "ratio": loaded / quiet,
        "quiet_command_seconds": statistics.median(s["command_seconds"] for s in samples["quiet"]),
        "loaded_command_seconds": statistics.median(s["command_seconds"] for s in samples["loaded"]),
        "torch_threads": sorted({t for s in samples["quiet"] + samples["loaded"] for t in s["torch_threads"]}),
        "targets": {"training_seconds": f"<= {TRAINING_TARGET_SECONDS:g} on a 2-core machine",
                    "ratio": f"<= {LOADED_RATIO_TARGET:g}"},
        "passed": {"training_seconds": quiet <= TRAINING_TARGET_SECONDS, "ratio": loaded / quiet <= LOADED_RATIO_TARGET},
        "samples": samples,
    }


def docs_block(result: dict, result_path: Path) -> str:
    """The docs/performance.md section's body, from a result file's contents."""
    m = result["machine"]
    verdict = {True: "PASS", False: "FAIL"}
    samples = result["samples"]["quiet"] + result["samples"]["loaded"]
    loads = [s["load_before"][0] for s in samples if s["load_before"]]
    recorded = [s["runs_load_1min_max"] for s in samples if s["runs_load_1min_max"] is not None]
    busy = max(loads + recorded, default=0.0) > (result["cores_usable"] or 1) + 1  # + 1: our own busy loop
    caveat = (f" **Measured on a busy machine** (the runs recorded 1-minute load averages up to {max(recorded):.2f} on "
              f"{result['cores_usable']} cores): other work competed for the CPU, so these numbers say that the "
              f"benchmark runs, not whether the targets are met; re-run on a quiet machine." if busy else "")
    scope = "" if not result["overrides"] and result["config"].startswith("the default") else (
        f" **Not the target's workload**: config {result['config']}, overrides `{' '.join(result['overrides'])}`.")
    return "\n".join([
        f"From `{result['command'].strip()}` on {m['date']}: {m['cpu']}, {result['cores_usable']} usable cores, torch "
        f"{m['torch']}, {result['runs']} runs per measurement, {result['rounds']} round(s), torch threads in the runs: "
        f"{', '.join(map(str, result['torch_threads']))}; machine load average (1 min) before the measurements "
        f"{', '.join(f'{x:.2f}' for x in loads)}; highest recorded by the runs "
        f"{max(recorded, default=float('nan')):.2f}. Numbers: `{_relative(result_path)}`.{scope}{caveat}",
        "",
        "| measurement | training s (sum of runs' wall_seconds) | command s | target | verdict |",
        "|---|---:|---:|---|---|",
        f"| (a) quiet | {result['quiet_training_seconds']:.1f} | {result['quiet_command_seconds']:.1f} | "
        f"{result['targets']['training_seconds']} | {verdict[result['passed']['training_seconds']]} |",
        f"| (b) beside one CPU-bound process | {result['loaded_training_seconds']:.1f} | "
        f"{result['loaded_command_seconds']:.1f} | | |",
        f"| (b) / (a) | {result['ratio']:.2f} | {result['loaded_command_seconds'] / result['quiet_command_seconds']:.2f}"
        f" | {result['targets']['ratio']} | {verdict[result['passed']['ratio']]} |",
    ])


def render(result_path: Path, docs: Path) -> None:
    """Refresh docs' make_run block from the result file."""
    from results import refresh_blocks  # benchmarks/results.py (imports torch)

    result = json.loads(result_path.read_text())
    text = docs.read_text()
    if "<!-- bench:make_run:start -->" not in text:
        raise ValueError(f"{docs} has no `<!-- bench:make_run:start -->` ... `<!-- bench:make_run:end -->` block to fill")
    docs.write_text(refresh_blocks(text, {"make_run": docs_block(result, result_path)}))


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="key=value overrides passed to `loopnets run` (none: the target's workload)")
    p.add_argument("--config", help="a config file instead of the default experiment")
    p.add_argument("--rounds", type=int, default=1, help="quiet / loaded pairs, alternating (default 1)")
    p.add_argument("--quick", action="store_true", help=f"1 epoch, 1 seed, no unroll sweep ({' '.join(QUICK)}): "
                   "checks that it runs; writes to a temp folder and leaves the docs alone unless --out / --docs")
    p.add_argument("--out", type=Path, help=f"the result file (default {_relative(RESULT)})")
    p.add_argument("--docs", help=f"the page whose make_run block is refreshed (default {_relative(DOCS)}; '' for none)")
    p.add_argument("--render", action="store_true", help="only refresh the docs block from the result file")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1; got {args.rounds}")
    overrides = [*QUICK, *args.overrides] if args.quick else list(args.overrides)
    out = args.out or (Path(tempfile.gettempdir()) / "loopnets-make-run.json" if args.quick else RESULT)
    docs = Path(args.docs) if args.docs else None if args.docs == "" or args.quick else DOCS
    if args.render:
        render(out, docs or DOCS)
        print(f"refreshed the make_run block of {docs or DOCS} from {out}")
        return None
    print(f"== make run: {args.config or 'default experiment'} {' '.join(overrides)}".rstrip(), flush=True)
    result = measure(args.rounds, args.config, overrides, log=lambda m: print(m, flush=True))
    result["command"] = ("python benchmarks/make_run.py " + shlex.join(argv if argv is not None else sys.argv[1:])).strip()
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"training: quiet {result['quiet_training_seconds']:.1f} s, loaded {result['loaded_training_seconds']:.1f} s, "
          f"ratio {result['ratio']:.2f} (target <= {LOADED_RATIO_TARGET:g}); torch threads {result['torch_threads']}; "
          f"wrote {out}")
    if docs is not None:
        render(out, docs)
        print(f"refreshed the make_run block of {docs}")
    return result


def _machine() -> dict:
    from results import machine  # benchmarks/results.py: date, CPU, torch, ...

    return machine()


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    main()
