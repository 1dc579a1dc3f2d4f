"""Run the benchmarks (`loopnets bench`, `make bench`): loopnets beside hand-written PyTorch and `neurons`.

Suites (all by default):
- thesis: the thesis's timing workloads (FTIR MLP, FTIR CNN, iris) at their sizes, per epoch;
- unroll: time per step and memory versus unroll 1..32 for Tied, COUPLE and COMBINE;
- images: the loopy CNN on 32x32 images, batch 128, per step;
- grid: the thesis's iris grid (70 networks) stacked against one at a time through the runner, with
  its accuracies side by side, and ms per model-epoch of its stacked groups against `neurons`
  (minutes; `--suites grid` alone refreshes only its section of RESULTS.md and docs/performance.md).
- make_run (only when named): `make run`'s training time, quiet and beside a CPU-bound process
  (benchmarks/make_run.py: writes benchmarks/make_run.json and its block of docs/performance.md).
Prints PASS / FAIL per target with the measured ratio, and writes benchmarks/RESULTS.md (and the
unroll figure, docs/unroll_scaling.png). With CUDA available the suites run on the GPU too.

Run: python benchmarks/run.py [--quick] [--suites thesis unroll images make_run] [--rounds N] [--threads N]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the suites import each other by module name

SUITES = ("thesis", "unroll", "images", "grid")  # the default
OPTIONAL_SUITES = ("make_run",)  # minutes of `loopnets run` each: only when named


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="loopnets bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, one round: checks that everything runs (seconds)")
    p.add_argument("--suites", nargs="+", choices=SUITES + OPTIONAL_SUITES, default=list(SUITES),
                   help=f"which suites to run (default: {' '.join(SUITES)})")
    p.add_argument("--rounds", type=int, help="interleaved rounds per comparison (default: 5 thesis, 3 unroll / images)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per training call in the thesis suite "
                   "(the first is a warm-up and dropped; default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: on a shared "
                   "machine more threads mostly wait for each other; pass the core count on an idle one)")
    p.add_argument("--width", type=int, default=256, help="unroll suite: body width (default 256)")
    p.add_argument("--batch", type=int, default=256, help="unroll suite: batch size (default 256)")
    p.add_argument("--no-memory", action="store_true", help="unroll suite: skip the memory subprocesses")
    p.add_argument("--workers", type=int, default=2, help="grid suite: runner worker processes (default 2)")
    p.add_argument("--no-gpu", action="store_true", help="CPU only, even with CUDA available")
    p.add_argument("--out", help="the Markdown report (default benchmarks/RESULTS.md; with --quick a temp folder)")
    p.add_argument("--figure", help="the unroll figure, PNG (default docs/unroll_scaling.png; with --quick a temp "
                   "folder; '' for none)")
    p.add_argument("--docs", help="the page whose marked tables are refreshed (default docs/performance.md; "
                   "never with --quick unless given; '' for none)")
    args = p.parse_args(argv)
    if args.quick:  # tiny numbers must not overwrite the real ones
        scratch = Path(tempfile.gettempdir()) / "loopnets-bench-quick"
        scratch.mkdir(exist_ok=True)
        defaults = {"out": scratch / "RESULTS.md", "figure": scratch / "unroll_scaling.png", "docs": ""}
    else:
        defaults = {"out": HERE / "RESULTS.md", "figure": HERE.parent / "docs" / "unroll_scaling.png",
                    "docs": HERE.parent / "docs" / "performance.md"}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, str(value))
    import torch  # after parsing: --help answers without loading torch

    import grid
    import images
    import make_run
    import results
    import targets
    import thesis
    import unroll

    if args.quick:
        args.rounds, args.epochs = 1, 2
    started = time.perf_counter()
    timed = None
    if "make_run" in args.suites:  # subprocesses: the thread setting below does not reach them
        timed = make_run.main(["--quick"] if args.quick else ["--rounds", str(args.rounds or 1)])
        if not set(args.suites) & set(SUITES):
            print(f"({time.perf_counter() - started:.0f} s)")
            return {"make_run": timed}
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_gpu else [])
    rows: dict[str, list[dict]] = {suite: [] for suite in SUITES}
    for device in devices:
        print(f"== {device}, {torch.get_num_threads()} thread(s)", flush=True)
        if "thesis" in args.suites:
            rows["thesis"] += thesis.run(args.quick, args.rounds or 5, args.epochs, device, log=_log)
        if "unroll" in args.suites:
            rows["unroll"] += unroll.run(args.quick, args.width, args.batch, args.rounds or 3, device=device,
                                         memory_rows=not args.no_memory, log=_log)
        if "images" in args.suites:
            rows["images"] += images.run(args.quick, args.rounds or 3, device, log=_log)
    grid_result = grid.run(args.quick, args.workers, log=_log) if "grid" in args.suites else None  # CPU, runner
    grid_checks = targets.grid_checks(grid_result)
    checks = targets.checks(rows["thesis"], rows["unroll"], rows["images"]) + grid_checks
    print(f"\n== targets ({sum(c.passed for c in checks)} of {len(checks)} pass)")
    for c in checks:
        print(c.line())
    figure = None
    cpu_unroll = [r for r in rows["unroll"] if r["device"] == "cpu"]
    if args.figure and cpu_unroll:
        unroll.figure(cpu_unroll, args.figure)
        figure = _relative(args.figure)
    command = "loopnets bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    grid_block = results.grid_block(grid_result, grid_checks, command.strip(), args.quick) if grid_result else None
    only_grid = set(args.suites) - set(OPTIONAL_SUITES) == {"grid"}
    text = None  # the whole report, unless only the grid section is refreshed
    if only_grid:  # the other suites' numbers stay: refresh the grid's section only
        if args.out:
            out = Path(args.out)
            old = out.read_text() if out.is_file() else ""
            out.write_text(results.refresh_blocks(old, {"grid": grid_block}, append=True))
            print(f"refreshed the grid section of {args.out}")
    else:
        if grid_block is None and args.out:  # a run without the grid suite keeps the last grid section
            grid_block = results.kept_block(Path(args.out), "grid")
        text = results.markdown(results.machine(), command.strip(), args.quick, rows["thesis"], rows["unroll"],
                                rows["images"], checks, figure, grid_block)
        if args.out:
            Path(args.out).write_text(text)
            print(f"wrote {args.out}" + (f" and {args.figure}" if figure else ""))
    if args.docs and Path(args.docs).is_file():
        page = Path(args.docs)
        blocks = {"grid": grid_block} if only_grid else results.doc_blocks(checks, cpu_unroll, args.out)
        if grid_block and not only_grid:
            blocks["grid"] = grid_block
        page.write_text(results.refresh_blocks(page.read_text(), blocks))
        print(f"refreshed the tables of {args.docs}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return {**rows, "grid": grid_result, "checks": checks, "markdown": text, "make_run": timed}


def _log(message: str) -> None:
    print(message, flush=True)


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(HERE.parent))
    except ValueError:
        return path


if __name__ == "__main__":
    main()
