"""The benchmarks stay runnable (tiny sizes; the numbers themselves are reported, not asserted here)."""

import json
import math
import sys
from pathlib import Path

import pytest
from conftest import TINY_IRIS_BASE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import grid  # noqa: E402
import memory  # noqa: E402
import results  # noqa: E402
import run  # noqa: E402
import targets  # noqa: E402


def test_memory_benchmark_runs_and_sees_tied_growth(capsys):
    rows = memory.main(["--width", "64", "--batch", "64", "--unrolls", "2", "16", "--modes", "combine", "tied"])
    saved = {(r["mode"], r["unroll"]): r["saved_bytes"] for r in rows}
    peak = {(r["mode"], r["unroll"]): r["peak_bytes"] for r in rows}
    assert saved["combine", 16] == saved["combine", 2]
    assert saved["tied", 16] > 4 * saved["tied", 2]
    assert peak["combine", 16] <= 1.2 * peak["combine", 2]  # bytes held, not time: deterministic
    assert peak["tied", 16] > 3 * peak["tied", 2]
    assert "peak / unroll=2" in capsys.readouterr().out


def test_quick_suite_writes_results_with_every_section_and_computed_targets(tmp_path, capsys):
    out, figure = tmp_path / "RESULTS.md", tmp_path / "unroll.png"
    result = run.main(["--quick", "--no-memory", "--out", str(out), "--figure", str(figure),
                       "--suites", "thesis", "unroll", "images"])  # the grid suite: test_grid_section below
    text = out.read_text()
    for section in ("# loopnets benchmarks", "## Targets:", "## Thesis workloads (cpu)", "## Unroll scaling (cpu)",
                    "## Image workload (cpu)"):
        assert section in text, section
    for fact in ("- Date:", "- Machine:", "torch 2.", "torch thread(s)", "--quick"):
        assert fact in text, fact
    assert figure.stat().st_size > 0
    # every thesis row has its three timings and a neurons ratio where the issue gives a figure
    assert {r["workload"] for r in result["thesis"]} == {"ftir_mlp", "ftir_cnn", "iris"}
    for r in result["thesis"]:
        assert all(r[k] > 0 for k in ("loopnets_ms", "handwritten_ms", "tuned_ms"))
        assert (r["neurons_speedup"] is not None) == (r["variant"] in ("ffn", "combine", "couple"))
    assert {r["mode"] for r in result["unroll"]} == {"tied", "couple", "combine"}
    kinds = {c.target for c in result["checks"]}
    assert {"3x faster than neurons", "at most 1.10x hand-written", "COMBINE backward time"} <= kinds
    printed = capsys.readouterr().out
    for c in result["checks"]:
        assert math.isfinite(c.value) and c.line() in printed and c.line() in text


def _thesis_row(workload, variant, unroll, loopnets_ms, handwritten_ms, neurons_ms):
    return {"workload": workload, "variant": variant, "unroll": unroll, "device": "cpu", "loopnets_ms": loopnets_ms,
            "handwritten_ms": handwritten_ms, "vs_handwritten": loopnets_ms / handwritten_ms, "neurons_ms": neurons_ms,
            "neurons_speedup": neurons_ms / loopnets_ms if neurons_ms else None}


def _unroll_row(mode, unroll, backward_ms, peak_bytes, ratio=1.0):
    return {"mode": mode, "unroll": unroll, "device": "cpu", "loopnets_backward_ms": backward_ms,
            "peak_bytes": peak_bytes, "vs_handwritten": ratio}


def test_targets_pass_and_fail_at_their_bounds():
    thesis = [
        _thesis_row("iris", "ffn", 1, 1.7, 2.0, 5.1),  # 3.0x faster: PASS
        _thesis_row("iris", "couple", 2, 4.0, 3.6, 11.4),  # 2.85x: FAIL; 1.11x hand-written: FAIL
        _thesis_row("iris", "tied", 2, 2.2, 2.0, None),  # 1.10x: PASS, no neurons figure
    ]
    unroll = [_unroll_row("combine", 2, 10.0, 100), _unroll_row("combine", 32, 13.0, 121),
              _unroll_row("tied", 2, 5.0, 100, ratio=0.9)]
    images = [{"workload": "loopy CNN", "image": 32, "unroll": 3, "device": "cpu", "vs_handwritten": 1.2}]
    got = {(c.target, c.case): (c.verdict, round(c.value, 2)) for c in targets.checks(thesis, unroll, images)}
    assert got == {
        ("3x faster than neurons", "iris FFN"): ("PASS", 3.0),
        ("3x faster than neurons", "iris COUPLE x2"): ("FAIL", 2.85),
        ("at most 1.10x hand-written", "iris COUPLE x2"): ("FAIL", 1.11),
        ("at most 1.10x hand-written", "iris TIED x2"): ("PASS", 1.1),
        ("at most 1.10x hand-written", "unroll suite tied x2"): ("PASS", 0.9),
        ("at most 1.10x hand-written", "loopy CNN 32x32 Tied x3"): ("FAIL", 1.2),
        ("COMBINE peak memory", "unroll 32 / unroll 2"): ("FAIL", 1.21),
        ("COMBINE backward time", "unroll 32 / unroll 2"): ("PASS", 1.3),
    }


def test_loopnets_bench_runs_the_benchmark_script(capfd):
    from loopnets.cli import main

    assert main(["bench", "--help"]) == 0  # the options are benchmarks/run.py's
    assert "--quick" in capfd.readouterr().out


MAKE_RUN_TINY = 'name = "tiny-make-run"\n' + TINY_IRIS_BASE + '[[variants]]\nmethod = "ffn"\n'


def test_make_run_sample_runs_the_cli_and_stops_its_busy_process_even_on_failure(tmp_path, monkeypatch):
    import make_run

    config = tmp_path / "tiny.toml"
    config.write_text(MAKE_RUN_TINY)
    sample = make_run.run_once(str(config), ["train.epochs=2"], loaded=False)
    assert not sample["loaded"] and sample["runs"] == 2 and sample["paths"] == ["batched"]
    assert 0 < sample["training_seconds"] < sample["command_seconds"]
    assert sample["torch_threads"] and all(isinstance(t, int) and t >= 1 for t in sample["torch_threads"])
    assert len(sample["load_before"]) == 3 and sample["runs_load_1min_max"] >= 0
    started = []
    popen = make_run.subprocess.Popen
    monkeypatch.setattr(make_run.subprocess, "Popen", lambda *a, **k: started.append(popen(*a, **k)) or started[-1])
    monkeypatch.setattr(make_run.subprocess, "run", lambda command, **_: make_run.subprocess.CompletedProcess(
        command, 2, "", "loopnets: error: config key train.epochs"))  # the run fails: the busy loop still stops
    with pytest.raises(RuntimeError, match=r"failed \(2\):\s+loopnets: error: config key train.epochs"):
        make_run.run_once(str(config), ["train.epochs=-1"], loaded=True)
    (busy,) = started
    assert busy.args[-1] == make_run.BUSY_LOOP and busy.poll() is not None


def test_make_run_writes_its_result_and_renders_the_docs_block_from_it(tmp_path, monkeypatch, capsys):
    import make_run

    calls = []

    def fake_run(config, overrides, loaded):  # the subprocess is tested above; here: rounds, medians, files
        calls.append(loaded)
        seconds = 30.0 + len(calls) + (9.0 if loaded else 0.0)
        return {"loaded": loaded, "training_seconds": seconds, "command_seconds": seconds + 5, "runs": 30,
                "torch_threads": [1], "load_before": [0.5, 0.4, 0.3], "load_after": [1.5, 0.6, 0.4],
                "runs_load_1min_max": 1.5, "paths": ["batched"]}

    monkeypatch.setattr(make_run, "run_once", fake_run)
    out, docs = tmp_path / "make_run.json", tmp_path / "performance.md"
    page = "# Perf\n\n<!-- bench:make_run:start -->\nold numbers\n<!-- bench:make_run:end -->\n\nafter\n"
    docs.write_text(page)
    result = make_run.main(["--rounds", "2", "--out", str(out), "--docs", str(docs)])
    assert calls == [False, True, True, False]  # alternating: a b, b a
    assert result["quiet_training_seconds"] == 32.5 and result["loaded_training_seconds"] == 41.5  # medians
    assert result["ratio"] == 41.5 / 32.5 and result["passed"] == {"training_seconds": True, "ratio": True}
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    text = docs.read_text()
    assert "old numbers" not in text and text.startswith("# Perf\n") and text.endswith("after\n")
    assert f"| (b) / (a) | {41.5 / 32.5:.2f} |" in text and "| (a) quiet | 32.5 | 37.5 |" in text
    assert "Not the target's workload" not in text and "torch threads in the runs: 1" in text
    # the block is rendered from the result file alone
    again = tmp_path / "again.md"
    again.write_text(page)
    make_run.main(["--render", "--out", str(out), "--docs", str(again)])
    assert again.read_text() == text
    assert "ratio 1.28" in capsys.readouterr().out
    assert "busy machine" not in text
    busy = json.loads(out.read_text())
    busy["samples"]["loaded"][0]["runs_load_1min_max"] = busy["cores_usable"] + 3.5  # others competed for the CPU
    out.write_text(json.dumps(busy))
    make_run.main(["--render", "--out", str(out), "--docs", str(again)])
    assert f"**Measured on a busy machine** (the runs recorded 1-minute load averages up to " \
           f"{busy['cores_usable'] + 3.5:.2f}" in again.read_text()


def test_make_run_refuses_a_page_without_its_block(tmp_path):
    import make_run

    out = tmp_path / "r.json"
    out.write_text("{}")
    (tmp_path / "p.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="bench:make_run:start"):
        make_run.main(["--render", "--out", str(out), "--docs", str(tmp_path / "p.md")])


def test_bench_runs_the_make_run_suite_only_when_named(monkeypatch, tmp_path):
    import make_run

    calls = []
    monkeypatch.setattr(make_run, "main", lambda argv: calls.append(argv) or {"ratio": 1.0})
    assert run.main(["--suites", "make_run", "--quick"]) == {"make_run": {"ratio": 1.0}}
    assert calls == [["--quick"]]
    assert "make_run" not in run.SUITES  # the default suites leave it out: minutes of `loopnets run`


def _summary(variant, seed, loss, accuracy, epochs=5):
    probe = {"loss": loss, "accuracy": accuracy}
    return {"variant": variant, "seed": seed, "status": "finished", "epochs_run": epochs,
            "probes": {"original": probe, "skip_off": None, "feedback_off": dict(probe)}}


def test_grid_section_compares_both_ways_and_checks_the_targets(tmp_path):
    stacked = {"summaries": {("combine-x2", 0): _summary("combine-x2", 0, 0.5, 0.9),
                             ("ffn", 0): _summary("ffn", 0, 0.4, 0.8)}}
    single = {"summaries": {("combine-x2", 0): _summary("combine-x2", 0, 0.55, 0.9),
                            ("ffn", 0): _summary("ffn", 0, 0.4, 0.8, epochs=6)}}
    fidelity = grid.compare(stacked, single)
    assert fidelity["max_accuracy_diff"] == 0 and fidelity["epochs_differ"] == 1
    assert abs(fidelity["max_loss_rel_diff"] - 0.05 / 0.55) < 1e-12
    assert "combine-x2 seed=0" in fidelity["worst_loss"]["original"][1]
    timing = {"workers": 2, "load_before": 1.0, "load_after": 1.5, "runs": 2, "model_epochs": 10, "group_sizes": [2]}
    result = {"stacked": {**timing, "wall_s": 30.0, "cpu_s": 40.0}, "single": {**timing, "wall_s": 90.0, "cpu_s": 80.0},
              "fidelity": fidelity, "threads": 1,
              "groups": [{"group": "FFN, COMBINE x2", "models": 2, "wall_ms": 4.0, "cpu_ms": 4.0, "step_ms": 1.0,
                          "neurons_ms": 5.1, "neurons_speedup": 5.1 / 4.0}]}
    checks = targets.grid_checks(result)
    assert [c.passed for c in checks] == [True, True, True, True]
    slow = targets.grid_checks({**result, "stacked": {**result["stacked"], "wall_s": 40.0}})
    assert not slow[0].passed and slow[0].target == "iris grid wall time"
    text = "\n".join(grid.markdown(result))
    assert "| stacked | 30.0 | 40.0 |" in text and "3.00x wall" in text and "| combine-x2 |" in text
    # a grid-only run refreshes its section and keeps the rest of RESULTS.md
    out = tmp_path / "RESULTS.md"
    out.write_text("# loopnets benchmarks\n\nother suites\n")
    out.write_text(results.refresh_blocks(out.read_text(), {"grid": "first"}, append=True))
    out.write_text(results.refresh_blocks(out.read_text(), {"grid": "second"}, append=True))
    assert "other suites" in out.read_text() and results.kept_block(out, "grid") == "second"
    assert out.read_text().count("bench:grid:start") == 1
