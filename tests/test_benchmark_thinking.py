"""benchmarks/thinking.py stays runnable (tiny sizes; its numbers are reported, not asserted), and its
accuracy reader counts what `ln.unrolled` computes."""

import json
import sys
from pathlib import Path

import pytest
import torch

import loopnets as ln
from loopnets.data.algorithmic import mazes, prefix_sums
from loopnets.models.thinking import feedforward_conv, looped_transformer, recurrent_conv

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import thinking  # noqa: E402


def test_thinking_benchmark_runs_prints_its_table_and_saves_json(capsys, tmp_path):
    rows = thinking.main(["--epochs", "1", "--n-train", "40", "--n-test", "8", "--test-bits", "8", "12",
                          "--passes", "1", "3", "--unroll", "3", "--width", "4", "--results", str(tmp_path)])
    assert [r["variant"] for r in rows] == ["recall+progressive", "no recall", "feedforward"]
    assert all([r["size"] for r in row["results"]] == [8, 12] for row in rows)
    assert all(0.0 <= a <= 1.0 for row in rows for r in row["results"] for a in r["accuracy"].values())
    ff = rows[2]["results"]
    assert all(r["accuracy"]["1"] == r["accuracy"]["3"] for r in ff)  # one depth: the same in every column
    out = capsys.readouterr().out
    assert "| recall+progressive | 12 |" in out and "epoch 1: train loss" in out
    saved = json.loads((tmp_path / "prefix_sums-no-recall.json").read_text())
    assert saved["settings"]["width"] == 4 and saved["results"] == rows[1]["results"]
    assert len(saved["epochs_log"]) == 1


def test_mazes_and_transformer_runs_and_checkpoint_reload(tmp_path):
    ckpt = tmp_path / "m.pt"
    common = ["--n-train", "20", "--n-test", "4", "--passes", "1", "2", "--unroll", "2", "--results", str(tmp_path)]
    first = thinking.main(["--task", "mazes", "--variants", "recall+progressive", "--epochs", "1", "--width", "4",
                           "--test-sizes", "5", "7", "--checkpoint", str(ckpt), *common])
    assert ckpt.exists() and first[0]["train_s"] is not None
    again = thinking.main(["--task", "mazes", "--variants", "recall+progressive", "--epochs", "1", "--width", "4",
                           "--test-sizes", "5", "7", "--checkpoint", str(ckpt), *common])
    numbers = lambda row: [(r["accuracy"], r["position_accuracy"]) for r in row["results"]]  # noqa: E731
    assert again[0]["train_s"] is None and numbers(again[0]) == numbers(first[0])  # loaded, not retrained
    rows = thinking.main(["--model", "transformer", "--epochs", "1", "--size", "6", "--test-sizes", "6", "9",
                          "--d-model", "8", "--nhead", "2", "--ff", "8", "--grad-passes", "1", *common])
    assert rows[0]["variant"] == "transformer" and rows[0]["settings"]["grad_passes"] == 1
    assert (tmp_path / "prefix_sums-transformer.json").exists()


def test_transformer_on_mazes_is_refused():
    with pytest.raises(SystemExit):
        thinking.main(["--task", "mazes", "--model", "transformer"])


@pytest.mark.parametrize("make", [
    lambda: (recurrent_conv(2, 3, width=4, unroll=2), mazes(6, 7, seed=3)),
    lambda: (looped_transformer(1, d_model=8, nhead=2, ff=8, unroll=2), prefix_sums(6, 10, seed=3)),
    lambda: (feedforward_conv(1, 1, width=4, depth=2), prefix_sums(6, 10, seed=3)),
])
def test_exact_accuracy_matches_unrolled_models(make):
    torch.manual_seed(0)
    model, (x, y) = make()
    # a few samples right, the rest wrong, so a count that reads the wrong pass would show
    model.eval()
    passes = [1, 2, 5]
    got = thinking.exact_accuracy(model, x, y, passes, batch=4)
    for k in passes:
        with torch.no_grad(), ln.unrolled(model, k):
            pred = model(x).argmax(1)
        y_k = y.clone()
        y_k[:3] = pred[:3]  # the first 3 samples are right at k passes, exactly
        assert thinking.exact_accuracy(model, x, y_k, [k], batch=4)[k] == pytest.approx(
            (pred == y_k).flatten(1).all(1).float().mean().item())
        assert got[k] == pytest.approx((pred == y).flatten(1).all(1).float().mean().item())
        per_position = thinking.accuracies(model, x, y, [k], batch=4)[1][k]
        assert per_position == pytest.approx((pred == y).float().mean().item())
