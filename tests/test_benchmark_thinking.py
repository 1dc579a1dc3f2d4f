"""benchmarks/thinking.py stays runnable (tiny sizes; its numbers are reported, not asserted)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import thinking  # noqa: E402


def test_thinking_benchmark_runs_and_prints_its_table(capsys):
    rows = thinking.main(["--epochs", "1", "--n-train", "40", "--n-test", "8", "--test-bits", "8", "12",
                          "--passes", "1", "3", "--unroll", "3", "--width", "4"])
    assert [(r["model"], r["bits"]) for r in rows] == [(m, b) for m in ("recall+progressive", "no recall", "feedforward")
                                                       for b in (8, 12)]
    assert all(0.0 <= r[k] <= 1.0 for r in rows for k in (1, 3))
    ff = [r for r in rows if r["model"] == "feedforward"]
    assert all(r[1] == r[3] for r in ff)  # one depth: the same in every column
    out = capsys.readouterr().out
    assert "| recall+progressive | 12 |" in out and "epoch 1: train loss" in out
