"""Compare two run folders of one experiment seed for seed: every probe, sweep and epoch number.

    python benchmarks/compare_runs.py BEFORE_DIR AFTER_DIR [--tolerance 1e-6]

Used to check that a refactor changes no result (issue 16: `make run` before and after the move).
Reads each `<variant>/seed=<n>/summary.json` and `metrics.csv`; timings, environment and
provenance are left out (they differ between any two runs). Prints one line per difference
(fields only AFTER records are listed, not counted) and a count; exits 1 if any value differs by more than the tolerance, or a run is missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

SKIP = {"timing", "environment", "training", "peak_bytes", "wall_seconds", "train_seconds", "val_seconds", "seconds"}


def flat(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in SKIP:
                yield from flat(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from flat(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


def read_run(folder: Path) -> dict:
    values = dict(flat(json.loads((folder / "summary.json").read_text())))
    with open(folder / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            for key, cell in row.items():
                if "second" not in key and "_ms" not in key:
                    values[f"metrics[{row.get('epoch')}].{key}"] = cell
    return values


def differs(a, b, tolerance: float) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return a != b
    if math.isnan(x) and math.isnan(y):
        return False
    return abs(x - y) > tolerance * max(1.0, abs(x), abs(y))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--tolerance", type=float, default=1e-6, help="relative tolerance (default 1e-6)")
    args = p.parse_args(argv)
    runs = sorted(s.relative_to(args.before) for s in args.before.glob("*/seed=*") if (s / "summary.json").exists())
    if not runs:
        print(f"no finished runs in {args.before}", file=sys.stderr)
        return 1
    problems, added, compared = [], set(), 0
    for run in runs:
        if not (args.after / run / "summary.json").exists():
            problems.append(f"{run}: missing in {args.after}")
            continue
        before, after = read_run(args.before / run), read_run(args.after / run)
        added |= {key.split("[")[0] for key in set(after) - set(before)}  # new fields are not differences
        for key in sorted(before):
            compared += 1
            if key not in after or differs(before[key], after[key], args.tolerance):
                problems.append(f"{run}: {key}: {before.get(key)!r} -> {after.get(key)!r}")
    for line in problems:
        print(line)
    if added:
        print(f"fields only the second run folder records: {', '.join(sorted(added))}")
    print(f"{len(runs)} runs, {compared} values compared, {len(problems)} differ (relative tolerance {args.tolerance:g})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
