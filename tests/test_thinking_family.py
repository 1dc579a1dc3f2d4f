"""Issue 18: the "thinking" family. Its configs parse (unknown keys and bad values refused with
errors naming the key), a tiny config trains and reports through `loopnets run`, the runs' extra
results are what the model computes (per-string accuracy at every (size, passes) pair, halting
against the fixed budget and early_exit), and the shipped configs (the GPU one included) validate."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import ROOT
from torch import nn

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import loopnets as ln
from loopnets.cli import main
from loopnets.core.loop import Loop
from loopnets.data.algorithmic import prefix_sums
from loopnets.experiments import ConfigError, families, load_config, validate
from loopnets.experiments.config import from_dict
from loopnets.models.thinking import experiments as X
from loopnets.models.thinking.recurrent import ResidualBlock, recurrent_conv
from loopnets.models.thinking.report import accuracy_at

CONFIGS = sorted((ROOT / "configs" / "thinking").glob("*.toml"))


def raw(**thinking) -> dict:
    """A tiny thinking experiment as parsed TOML; keyword arguments override [model.thinking]."""
    settings = {"train_size": 8, "train_examples": 64, "val_examples": 16, "test_sizes": [8, 16],
                "test_passes": [2, 6], "test_examples": 12, "width": 8, "max_iters": 4, **thinking}
    return {"name": "tiny-thinking", "model": {"family": "thinking", "thinking": settings},
            "train": {"epochs": 1, "batch_size": 32, "seeds": [0]},
            "variants": [{"name": "rp"}, {"name": "ff", "model": "feedforward"},
                         {"name": "halt", "backprop": "tied", "halting": True, "halting_prior": 0.3}]}


def test_the_family_is_built_in():
    assert "thinking" in families.names()
    assert families.get("thinking").table == "thinking"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    exp = load_config(path)
    variants = validate(exp)
    assert variants and all(v.name for v in variants)


def test_the_gpu_config_is_deepthinkings_full_scale():
    exp = load_config(ROOT / "configs" / "thinking" / "prefix-sums-gpu.toml")
    g = exp.model.thinking
    assert exp.train.device == "auto"
    assert (g.width, g.max_iters, exp.train.epochs) == (400, 30, 150)
    assert {v.name for v in validate(exp)} >= {"recall-progressive", "no-recall-progressive", "recall-tied",
                                                "feedforward"}


@pytest.mark.parametrize("change, words", [
    ({"model": {"family": "thinking", "thinking": {"widht": 8}}}, "unknown config key model.thinking.widht"),
    ({"variants": [{"name": "x", "recal": "add"}]}, "unknown config key variants[0].recal"),
    ({"model": {"family": "thinking", "thinking": {"recall": "both"}}}, "model.thinking.recall"),
])
def test_unknown_keys_and_choices_are_refused(change, words):
    config = {**raw(), **change}
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        from_dict(config)


@pytest.mark.parametrize("thinking, words", [
    ({"train_size": 1}, "model.thinking.train_size must be an integer >= 2"),
    ({"test_sizes": [8, 1]}, r"model.thinking.test_sizes\[1\] must be an integer >= 2"),
    ({"task": "mazes", "train_size": 3, "test_sizes": [9]}, "model.thinking.train_size must be an odd integer >= 5"),
    ({"task": "mazes", "train_size": 9, "test_sizes": [10]}, r"test_sizes\[0\] must be an odd integer"),
    ({"test_sizes": []}, "test_sizes is empty"),
    ({"test_examples": [5, 5, 5]}, "test_examples has 3 counts but test_sizes has 2"),
    ({"test_passes": [6, 2]}, "test_passes must be a non-empty increasing list"),
    ({"halting_prior": 0.0}, r"halting_prior must be in \(0, 1\)"),
    ({"halting_prior": 1.0}, r"halting_prior must be in \(0, 1\)"),
    ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
])
def test_bad_settings_get_clear_errors(thinking, words):
    with pytest.raises(ConfigError, match=words):
        from_dict(raw(**thinking))


@pytest.mark.parametrize("variant, words", [
    ({"halting": True, "backprop": "progressive"}, "or halting_pretrain = <epochs>"),
    ({"halting": True, "model": "feedforward"}, "needs a looped model"),
    ({"halting": True, "backprop": "tied", "halting_prior": 1.2}, r"variants\[0\].halting_prior must be in \(0, 1\)"),
    ({"model": "transformer", "width": 10, "heads": 4}, "must be divisible by heads = 4"),
    ({"halting": True, "halting_pretrain": 1}, r"halting_pretrain = 1 must be >= 0 and below train.epochs = 1"),
    ({"halting": True, "backprop": "tied", "halting_freeze": True}, "halting_pretrain = 0 leaves untrained"),
    ({"halting": True, "backprop": "tied", "halting_pool": "max"}, "halting_pool"),
    ({"window": 3}, "for model = 'transformer' only"),
    ({"model": "transformer", "window": 1}, "a sliding attention window of >= 2 positions"),
    ({"model": "transformer", "backprop": "truncated", "min_passes": 9}, "min_passes = 9 must be in 1..max_iters = 4"),
    ({"min_passes": 2}, "the progressive loss draws its own"),
])
def test_bad_variants_get_clear_errors(variant, words):
    config = {**raw(), "variants": [{"name": "v", **variant}]}
    with pytest.raises(ConfigError, match=words):
        from_dict(config)


def test_a_transformer_on_mazes_is_refused():
    config = {**raw(task="mazes", train_size=5, test_sizes=[7]), "variants": [{"name": "t", "model": "transformer"}]}
    with pytest.raises(ConfigError, match="runs on strings only"):
        from_dict(config)


def test_mazes_drawn_two_pixels_per_cell_are_the_same_mazes_upsampled():
    exp = from_dict({**raw(task="mazes", train_size=5, test_sizes=[7], pixels=2), "variants": [{"name": "rp"}]})
    (x, y), _ = X.training_data(exp)
    assert x.shape[-2:] == (10, 10) and y.shape[-2:] == (10, 10)
    xt, yt = X.test_set(exp, 7, 3)
    one, one_y = X.test_set(from_dict({**raw(task="mazes", train_size=5, test_sizes=[7]), "variants": [{}]}), 7, 3)
    assert torch.equal(xt[..., ::2, ::2], one) and torch.equal(yt[..., ::2, ::2], one_y)
    with pytest.raises(ConfigError, match="pixels = 2 draws each maze cell"):
        from_dict(raw(pixels=2))


def test_concat_recall_with_a_mismatched_projection_is_refused():
    body = nn.Sequential(ResidualBlock(1, 8))
    with pytest.raises(ValueError, match="projection returns width 6 but the body takes width 8"):
        Loop(body, unroll=3, merge="concat", project=nn.Conv1d(16, 6, 3, padding=1))
    with pytest.raises(ValueError, match="projection takes width 12"):
        Loop(body, unroll=3, merge="concat", project=nn.Conv1d(12, 8, 3, padding=1))


def test_exact_accuracy_is_the_unrolled_models_per_string_accuracy():
    torch.manual_seed(0)
    model = recurrent_conv(1, 1, width=8, recall="concat", unroll=3)
    x, y = prefix_sums(40, 6, seed=3)
    # a target the untrained net gets right for some strings: its own prediction, with one bit flipped in half
    with ln.unrolled(model, 5), torch.no_grad():
        model.eval()
        pred = model(x).argmax(1)
    y = pred.clone()
    y[::2, 0] = 1 - y[::2, 0]
    got = X.exact_accuracy(model, x, y, [2, 5], batch=7)
    with torch.no_grad():
        for passes, value in zip([2, 5], got):
            with ln.unrolled(model, passes):
                expected = (model(x).argmax(1) == y).all(1).float().mean().item()
            assert value == pytest.approx(expected)
    assert got[1] == pytest.approx(0.5)  # at 5 passes, exactly the unflipped half


def test_a_test_size_no_run_tested_is_a_clear_error():
    grid = {"sizes": [32, 128], "passes": [10, 100], "accuracy": [[0.5, 1.0], [0.0, 0.9]], "seeds": 2}
    assert accuracy_at(grid, 128, 100) == 0.9
    assert accuracy_at(grid, 128) == 0.9  # the best pass count
    with pytest.raises(ValueError, match="no run tested size 512.*tested sizes: 32, 128.*test_sizes"):
        accuracy_at(grid, 512, 100, where="variant 'rp'")
    with pytest.raises(ValueError, match="passes 1000"):
        accuracy_at(grid, 32, 1000)


def test_a_tiny_config_trains_and_reports(tmp_path):
    config = tmp_path / "tiny.toml"
    import tomli_w

    config.write_text(tomli_w.dumps(raw()))
    assert main(["run", str(config), "--runs-dir", str(tmp_path / "runs"), "--workers", "1"]) == 0
    root = tmp_path / "runs" / "tiny-thinking"
    summaries = {p.parent.parent.name: json.loads(p.read_text()) for p in root.glob("*/seed=0/summary.json")}
    assert set(summaries) == {"rp", "ff", "halt"}
    for name, s in summaries.items():
        test = s["extra"]["test"]
        assert s["status"] == "finished" and test["sizes"] == [8, 16] and test["passes"] == [2, 6]
        assert len(test["accuracy"]) == 2 and all(len(row) == 2 for row in test["accuracy"])
        assert test["fixed_depth"] is (name == "ff")
    ff = summaries["ff"]["extra"]["test"]["accuracy"]
    assert all(row[0] == row[1] for row in ff)  # one depth: the same number at every pass count
    halting = summaries["halt"]["extra"]["halting"]
    assert summaries["rp"]["extra"]["halting"] is None
    assert halting["sizes"] == [8, 16] and halting["max_passes"] == 6
    assert all(1 <= p <= 6 for p in halting["mean_passes"] + halting["early_exit"]["mean_passes"])
    assert halting["fixed_accuracy"] == [row[-1] for row in summaries["halt"]["extra"]["test"]["accuracy"]]
    report = (root / "report" / "report.md").read_text()
    assert "Accuracy vs test-time passes" in report and "Learned halting" in report
    results = json.loads((root / "report" / "results.json").read_text())
    assert set(results["thinking"]) == {"rp", "ff", "halt"}


def test_halting_after_pretraining_trains_the_net_then_only_the_frozen_nets_head():
    """halting_pretrain: the net's own epochs (progressive) first, then PonderNet's loss with the
    net frozen (halting_freeze): the net's weights after the first phase are its final ones, the
    head's are not, and the history numbers both phases' epochs in order."""
    exp = from_dict({**raw(), "train": {"epochs": 3, "batch_size": 32, "seeds": [0]},
                     "variants": [{"name": "h", "backprop": "progressive", "halting": True, "halting_pretrain": 2,
                                   "halting_freeze": True, "halting_pool": "min"}]})
    variant, = X.validate(exp)
    train, val = X.training_data(exp)
    torch.manual_seed(0)
    model = X.build_model(exp, variant)
    head_before = [p.detach().clone() for p in model.halt.parameters()]
    net_after = {}
    real_fit = X.fit

    def fit_and_keep(net, *args, **kwargs):
        history = real_fit(net, *args, **kwargs)
        net_after.update({k: v.detach().clone() for k, v in net.state_dict().items()})
        return history

    X.fit = fit_and_keep
    try:
        history = X.train_halting(model, variant, exp, train, val, seed=0, engine={})
    finally:
        X.fit = real_fit
    assert [r.epoch for r in history.records] == [1, 2, 3]
    assert history["val_passes"][:2] == [None, None] and history["val_passes"][2] is not None
    for key, value in model.model.state_dict().items():
        assert torch.equal(value, net_after[key]), key  # frozen through the PonderNet epoch
    assert any(not torch.equal(a, b) for a, b in zip(head_before, model.halt.parameters()))
    assert isinstance(model.model[1].backprop, ln.Progressive)  # its own mode is back after the halting phase
    assert all(p.requires_grad for p in model.parameters())


def test_halting_without_freeze_trains_the_net_in_the_ponder_phase_too():
    exp = from_dict({**raw(), "train": {"epochs": 2, "batch_size": 32, "seeds": [0]},
                     "variants": [{"name": "h", "backprop": "progressive", "halting": True, "halting_pretrain": 1}]})
    variant, = X.validate(exp)
    train, val = X.training_data(exp)
    torch.manual_seed(0)
    model = X.build_model(exp, variant)
    before = {k: v.detach().clone() for k, v in model.model.state_dict().items()}
    history = X.train_halting(model, variant, exp, train, val, seed=0, engine={})
    assert len(history) == 2
    assert any(not torch.equal(v, before[k]) for k, v in model.model.state_dict().items())


def test_a_windowed_transformer_variant_trains_with_random_pass_counts(monkeypatch):
    exp = from_dict({**raw(), "variants": [{"name": "t", "model": "transformer", "backprop": "truncated",
                                            "grad_passes": 2, "min_passes": 2, "window": 3, "heads": 2}]})
    variant, = X.validate(exp)
    model = X.build_model(exp, variant)
    assert model[2].body.window == 3 and model[2].unroll == 4
    seen = {}
    real_fit = X.fit

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(X, "fit", spy)
    from loopnets.experiments.config import to_dict

    files = X.train_run(exp, variant, 0, to_dict(exp), 0.0)
    summary = json.loads(files["summary.json"])
    assert seen["random_passes"] == (2, 4)
    assert summary["status"] == "finished" and summary["window"] == 3 and summary["min_passes"] == 2


def test_halting_results_are_the_halting_models_own_stops():
    torch.manual_seed(1)
    exp = from_dict(raw())
    variant = next(v for v in X.validate(exp) if v.halting)
    model = X.build_model(exp, variant)
    sets = {8: X.test_set(exp, 8, 12)}
    out = X.halting_results(exp, model, sets, {8: 0.25})
    stop = model.stop(sets[8][0], max_passes=6)
    assert out["mean_passes"] == [pytest.approx(stop.passes.double().mean().item())]
    assert out["accuracy"] == [pytest.approx((stop.output.argmax(1) == sets[8][1]).all(1).double().mean().item())]
    exit_ = ln.early_exit(model.model, sets[8][0], criterion="residual", threshold=1e-3, max_passes=6)
    assert out["early_exit"]["mean_passes"] == [pytest.approx(exit_.passes.double().mean().item())]
    assert out["fixed_accuracy"] == [0.25]
    assert out["sweep"] == []


def test_the_halting_sweep_stops_at_each_threshold():
    torch.manual_seed(1)
    exp = from_dict(raw(halting_sweep=[0.2, 0.9]))
    variant = next(v for v in X.validate(exp) if v.halting)
    model = X.build_model(exp, variant)
    sets = {8: X.test_set(exp, 8, 12)}
    out = X.halting_results(exp, model, sets, {8: 0.25})
    assert [row["threshold"] for row in out["sweep"]] == [0.2, 0.9]
    for row in out["sweep"]:
        stop = model.stop(sets[8][0], threshold=row["threshold"], max_passes=6)
        assert row["mean_passes"] == [pytest.approx(stop.passes.double().mean().item())]
    assert out["sweep"][0]["mean_passes"][0] <= out["sweep"][1]["mean_passes"][0]
    with pytest.raises(ConfigError, match=r"halting_sweep\[1\] must be in \(0, 1\]"):
        from_dict(raw(halting_sweep=[0.5, 1.5]))


def test_test_sets_are_seeded_by_size_only():
    exp = from_dict(raw())
    other = from_dict({**raw(), "name": "another", "train": {"epochs": 2, "batch_size": 8, "seeds": [5]}})
    a, b = X.test_set(exp, 16, 5), X.test_set(other, 16, 5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    train, val = X.training_data(exp)
    assert train[0].shape == (64, 1, 8) and val[0].shape == (16, 1, 8)


def test_configs_dir_holds_the_issue_configs():
    names = {p.name for p in CONFIGS}
    assert {"prefix-sums-recall-progressive.toml", "prefix-sums-no-recall.toml", "prefix-sums-no-progressive.toml",
            "prefix-sums-feedforward.toml", "prefix-sums-halting.toml", "prefix-sums-gpu.toml"} <= names
    target = load_config(ROOT / "configs" / "thinking" / "prefix-sums-recall-progressive.toml")
    assert len(target.train.seeds) >= 2
    assert {512, 1024} <= set(target.model.thinking.test_sizes)


# --- docs/thinking-longer.md (docs/build_thinking.py) ------------------------------------------------

import sys  # noqa: E402

sys.path.insert(0, str(ROOT / "docs"))
sys.path.insert(0, str(ROOT / "docs" / "reproductions"))
import build_lavik  # noqa: E402
import build_thinking as BT  # noqa: E402
from lavik_results import Exp  # noqa: E402
from test_pages import literals_in_tags, unexplained_numbers  # noqa: E402


def fake(accuracy: dict[int, list[list[float]]], halting: dict | None = None, sizes=(32, 512, 1024),
         passes=(10, 100, 1000)) -> Exp:
    """An experiment whose seeds have the given accuracy grids (sizes x passes)."""
    runs = {}
    for seed, grid in accuracy.items():
        extra = {"test": {"sizes": list(sizes), "passes": list(passes), "examples": [10] * len(sizes),
                          "accuracy": grid, "fixed_depth": False}, "halting": halting, "train_seconds": 60.0}
        runs[seed] = {"status": "finished", "extra": extra, "timing": {"wall_seconds": 90.0}}
    return Exp("x", {}, {}, {"v": runs}, {})


def test_accuracy_verdicts_follow_the_seeds_mean_at_the_best_pass_count():
    good = fake({0: [[1, 1, 1], [0.2, 0.99, 1.0], [0, 0.5, 0.96]], 1: [[1, 1, 1], [0.1, 0.9, 0.99], [0, 0.4, 0.94]]})
    v = BT.verdict_accuracy({"target": good}, "target", 512, 0.99)
    assert v["status"] == "hit" and "99.5 % at 1000 passes" in v["text"] and "2 seeds (0, 1)" in v["text"]
    assert "2 of 2 seeds reach it alone" in v["text"]
    assert "1 of 2 seeds reach it alone" in BT.verdict_accuracy({"target": good}, "target", 1024, 0.95)["text"]
    assert BT.verdict_accuracy({"target": good}, "target", 1024, 0.96)["status"] == "missed"  # mean 0.95
    assert BT.verdict_accuracy({}, "target", 512, 0.99)["status"] == "not run yet"
    with pytest.raises(ValueError, match="no run tested size 2048"):
        BT.verdict_accuracy({"target": good}, "target", 2048, 0.99)


def test_the_baselines_fail_visibly_only_when_both_stay_low():
    low = fake({0: [[0.3, 0.2, 0.1], [0.0, 0.0, 0.0], [0, 0, 0]]})
    high = fake({0: [[1, 1, 1], [0.0, 0.7, 0.2], [0, 0, 0]]})
    assert BT.verdict_fails({"feedforward": low, "no_recall": low}, 512, 0.5)["status"] == "hit"
    assert BT.verdict_fails({"feedforward": low, "no_recall": high}, 512, 0.5)["status"] == "missed"
    assert BT.verdict_fails({"feedforward": low}, 512, 0.5)["status"] == "not run yet"


def test_the_halting_verdict_needs_growing_passes_equal_accuracy_and_half_the_budget():
    def record(passes, acc, fixed):
        return {"sizes": [32, 512, 1024], "max_passes": 1000, "threshold": 0.5, "mean_passes": passes,
                "accuracy": acc, "fixed_accuracy": fixed,
                "early_exit": {"criterion": "residual", "threshold": 1e-3, "mean_passes": [1000] * 3,
                               "accuracy": [0, 0, 0]}}
    grid = {0: [[1, 1, 1]] * 3}
    ok = fake(grid, record([20, 300, 480], [1, 0.99, 0.9], [1, 0.995, 0.95]))
    assert BT.verdict_halting({"halting": ok}, 512, 0.01, 0.5)["status"] == "hit"
    flat = fake(grid, record([300, 300, 300], [1, 0.99, 0.9], [1, 0.995, 0.95]))
    assert BT.verdict_halting({"halting": flat}, 512, 0.01, 0.5)["status"] == "missed"
    costly = fake(grid, record([20, 600, 700], [1, 0.99, 0.9], [1, 0.995, 0.95]))
    assert BT.verdict_halting({"halting": costly}, 512, 0.01, 0.5)["status"] == "missed"
    worse = fake(grid, record([20, 300, 480], [1, 0.9, 0.9], [1, 0.995, 0.95]))
    assert "-9.5 points" in BT.verdict_halting({"halting": worse}, 512, 0.01, 0.5)["text"]
    late = fake({0: [[1, 1, 1], [0, 0.2, 1], [0, 0, 1]]}, record([20, 300, 480], [1, 1, 1], [1, 1, 1]))
    assert "within 1 point of the full budget's accuracy are 1000" in BT.verdict_halting({"halting": late}, 512, 0.01, 0.5)["text"]
    assert "accuracy are 10. Each seed at 512 bits: seed 0: halting 99.0 % with 300.0 passes, the fixed budget 99.5 %, " \
           "early_exit 0.0 % with 1000.0" in BT.verdict_halting({"halting": ok}, 512, 0.01, 0.5)["text"]


def test_the_prefix_table_aligns_experiments_tested_at_different_pass_counts():
    a = fake({0: [[1, 1, 1]] * 3}, passes=(10, 100, 1000))
    b = fake({0: [[0.5, 0.25]] * 3}, passes=(10, 50))
    header, rows = BT.table_rows({"target": a, "no_recall": b})
    assert header == [10, 50, 100, 1000]
    assert rows[0]["cells"] == ["100.0", "", "100.0", "100.0"] and rows[3]["cells"] == ["50.0", "25.0", "", ""]


def test_the_maze_verdict_and_the_papers_rows_read_the_maze_config():
    mazes = fake({0: [[1, 1, 1], [0.5, 0.92, 0.91], [0, 0.4, 0.3]], 1: [[1, 1, 1], [0.5, 0.9, 0.95], [0, 0.2, 0.3]]},
                 sizes=(9, 25, 33))
    v = BT.verdict_accuracy({"mazes": mazes}, "mazes", 25, 0.9)
    assert v["status"] == "hit" and "93.0 % at 1000 passes" in v["text"] and "2 of 2 seeds reach it alone" in v["text"]
    assert BT.verdict_accuracy({"mazes": mazes}, "mazes", 33, 0.5)["status"] == "missed"
    assert "mazes-recall-progressive.toml" in BT.verdict_accuracy({}, "mazes", 33, 0.5)["text"]
    rows = BT.paper_rows({"mazes": mazes}, [
        {"compare": "mazes", "test_size": 33, "train_size": 9, "model": "m", "task": "mazes", "unit": "side",
         "accuracy": 93.8, "where": "A.3", "quote": "q"},
        {"compare": "mazes", "test_size": 59, "train_size": 9, "model": "m", "task": "mazes", "unit": "side",
         "accuracy": 97.3, "spread": 0.68, "iterations": 984, "where": "Table 4", "quote": "q"},
        {"compare": "target", "test_size": 512, "train_size": 32, "model": "m", "task": "prefix sums", "unit": "bits",
         "accuracy": 97.12, "spread": 1.88, "where": "Table 3", "quote": "q"}])
    assert rows[0]["ours"] == "30.0 % at 100 passes" and rows[0]["theirs"] == "93.8 %"
    assert rows[1]["ours"] == "not tested at 59; at 33: 30.0 %" and rows[1]["theirs"] == "97.30 ± 0.68 %"
    assert rows[2]["ours"] == "not run yet" and rows[2]["iterations"] == "not stated"


def test_the_thinking_page_holds_no_typed_number(tmp_path):
    transcribed = build_lavik.thesis_numbers(BT.papers())
    page, computed = BT.render(BT.RESULTS, tmp_path / "page.md")
    assert not unexplained_numbers(page, computed, transcribed)
    typed = page.replace("## Runs", "## Runs\n\nThe target reached 97.25 %.")
    assert unexplained_numbers(typed, computed, transcribed) == ["97.25"]
    assert not literals_in_tags((ROOT / "docs" / "thinking-longer.md.j2").read_text())


def test_the_thinking_page_builds_from_run_folders(tmp_path):
    """A tiny run of the target and the halting configs, as run folders: their rows and verdicts appear."""
    import tomli_w

    runs = tmp_path / "runs"
    for key in ("target", "halting"):
        data = tomllib.loads((ROOT / BT.config_path(key)).read_text())
        data["model"]["thinking"].update(train_size=8, train_examples=64, val_examples=16, test_sizes=[8, 512, 1024],
                                         test_examples=4, test_passes=[2, 4], width=4, max_iters=3)
        data["train"].update(epochs=2, seeds=[0])
        data["train"].pop("scheduler", None)
        if key == "halting":
            data["variants"][0].update(halting_max_passes=3, halting_pretrain=1)
        path = tmp_path / f"{key}.toml"
        path.write_text(tomli_w.dumps(data))
        assert main(["run", str(path), "--runs-dir", str(runs), "--workers", "1"]) == 0
    page, computed = BT.render(runs, tmp_path / "page.md")
    assert "| recall + progressive | 512 | 1 | 4 |" in page
    assert "fail visibly at 512 bits**: not run yet" in page  # the baselines are missing
    assert "`thinking-prefix-sums-no-recall`: `nice -n 15 loopnets run" in page
    assert "least 99.0 %**: missed. 0.0 % at" in page  # one epoch of a width-4 net solves no 512-bit string
    assert "| 0.5 | 512 |" in page and "| 0.99 | 1024 |" in page  # the halting thresholds' trade-off rows
    assert (tmp_path / "thinking-longer-accuracy.png").is_file() and (tmp_path / "thinking-longer-halting.png").is_file()
    assert not unexplained_numbers(page, computed, build_lavik.thesis_numbers(BT.papers()))


def test_the_maze_verdict_reads_the_benchmarks_best_pass_count_and_the_page_shows_its_tables(tmp_path):
    runs = [{"key": "maze", "settings": {"size": 9},
             "raw": {"results": [{"size": 25, "n": 100, "accuracy": {"10": 0.2, "50": 0.93, "100": 0.91}}]}}]
    v = BT.verdict_maze(runs, 25, 0.9)
    assert v["status"] == "hit" and "93.0 % of 100 mazes at 50 passes" in v["text"]
    assert BT.verdict_maze(runs, 25, 0.95)["status"] == "missed"
    assert BT.verdict_maze(runs, 33, 0.5)["status"] == "not run yet"
    assert BT.verdict_maze([], 25, 0.9)["status"] == "not run yet"
    committed = {r["key"]: r for r in BT.benchmark_runs()}
    assert set(committed) == {"maze", "maze_no_recall", "transformer"}  # benchmarks/results/thinking/*.json
    page, _ = BT.render(BT.RESULTS, tmp_path / "page.md")
    for run in committed.values():
        assert f"`{run['file']}`" in page
    size_25 = next(r for r in committed["maze"]["raw"]["results"] if r["size"] == 25)
    assert f"| 25 | {size_25['n']} | {BT.pct(size_25['accuracy']['10'])} |" in page


def test_a_run_that_diverged_is_reported_as_such_not_as_not_run():
    diverged = BT.Exp("thinking-prefix-sums-halting", {}, {}, {"recall-halting": {0: {
        "status": "diverged", "error": "training diverged at epoch 10, batch 87 of 100: the ponder loss is nan. Try a lower rate"}}}, {})
    v = BT.verdict_halting({"halting": diverged}, 512, 0.01, 0.5)
    assert v["status"] == "no finished run"
    assert "seed 0 diverged: training diverged at epoch 10, batch 87 of 100: the ponder loss is nan" in v["text"]
    assert BT.verdict_halting({}, 512, 0.01, 0.5)["status"] == "not run yet"
    target = BT.Exp("thinking-prefix-sums-recall-progressive", {}, {}, {"recall-progressive": {1: {
        "status": "diverged", "error": "training diverged at epoch 3, batch 5 of 100: the loss is nan. Try"}}}, {})
    assert BT.verdict_accuracy({"target": target}, "target", 512, 0.99)["status"] == "no finished run"
    v = BT.verdict_fails({"no_recall": target}, 512, 0.5)
    assert v["status"] == "no finished run" and "seed 1 diverged" in v["text"] and "feedforward" in v["text"]
