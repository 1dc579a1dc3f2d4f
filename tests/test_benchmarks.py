"""The benchmarks stay runnable (tiny sizes; the numbers themselves are reported, not asserted here)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import memory  # noqa: E402


def test_memory_benchmark_runs_and_sees_tied_growth(capsys):
    rows = memory.main(["--width", "64", "--batch", "64", "--unrolls", "2", "16", "--modes", "combine", "tied"])
    saved = {(r["mode"], r["unroll"]): r["saved_bytes"] for r in rows}
    assert saved["combine", 16] == saved["combine", 2]
    assert saved["tied", 16] > 4 * saved["tied", 2]
    assert "peak / unroll=2" in capsys.readouterr().out
