"""The modes comparison (issue 8): new modes and per-pass options in configs, the runner's
loop_training record, and the docs/modes.md builder on a small run."""

import json
import statistics
from pathlib import Path

import pytest
from conftest import load_page_builder

import loopnets as ln
from loopnets.cli import main
from loopnets.experiments import ConfigError, load_config, validate
from loopnets.experiments.config import expand_variants, from_dict
from loopnets.experiments.runner import build_model, load_split

# An implicit loop that misses its tolerance warns (and records converged = false); that is an
# outcome these runs report, not a failure.
pytestmark = pytest.mark.filterwarnings("ignore::loopnets.core.solvers.NotConvergedWarning")

ROOT = Path(__file__).resolve().parents[1]
MODES = sorted((ROOT / "configs" / "modes").glob("*.toml"))

SMALL = """
name = "modes-iris"
description = "a small modes comparison"
[data]
name = "iris"
[model]
layers = [
  { type = "dense", units = 8, activation = "tanh" },
  { type = "dense", units = 8, activation = "tanh" },
  { type = "dense", units = 8, activation = "tanh" },
]
init = "default"
loop = [1, 2]
[train]
optimizer_args = { lr = 1e-2 }
epochs = 2
batch_size = 16
seeds = [0, 1]
group_seeds = false
unroll_sweep = 8
[[variants]]
method = "tied"
unroll = [2, 4, 8]
merge = "add"
[[variants]]
method = "truncated"
unroll = [2, 8]
merge = "add"
backprop_args = { grad_passes = 1 }
[[variants]]
method = "combine"
unroll = [2, 8]
merge = "add"
[[variants]]
name = "implicit-ift"
method = "implicit"
unroll = 4
merge = "add"
backprop_args = { max_passes = 30 }
[[variants]]
name = "tied-x4-deep"
method = "tied"
unroll = 4
merge = "add"
pass_weights = "mean"
[[variants]]
name = "tied-random"
method = "tied"
unroll = 4
merge = "add"
random_passes = [1, 8]
"""


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("modes")
    (root / "modes-iris.toml").write_text(SMALL)
    assert main(["run", str(root / "modes-iris.toml"), "--runs-dir", str(root / "runs"), "--no-progress",
                 "--no-report"]) == 0
    return root / "runs"


def summaries(runs: Path, variant: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((runs / "modes-iris" / variant).glob("seed=*/summary.json"))]


@pytest.mark.parametrize("path", MODES, ids=lambda p: p.stem)
def test_modes_configs_build_every_mode(path):
    exp = load_config(path)
    split = load_split(exp)
    loops = {}
    for variant in expand_variants(exp):
        net = build_model(exp, variant, split)
        loops[variant.name] = [m for m in net.modules() if isinstance(m, ln.Loop)]
    assert loops["ffn"] == []
    assert loops["truncated-x8"][0].backprop == ln.Truncated(grad_passes=1) and loops["truncated-x8"][0].unroll == 8
    assert loops["implicit-phantom"][0].backprop.backward == "phantom"
    assert isinstance(loops["onestep"][0].backprop, ln.OneStep)
    assert isinstance(loops["couple-x4"][0].backprop, ln.Couple) and isinstance(loops["combine-x4"][0].backprop, ln.Combine)
    assert all(loop.merge == "add" for name, found in loops.items() for loop in found)  # re-injection everywhere


def small_exp(**changes) -> dict:
    import tomllib

    raw = tomllib.loads(SMALL)
    raw["variants"] = [dict({"method": "tied", "unroll": 2, "merge": "add"}, **changes)]
    return raw


@pytest.mark.parametrize("change, message", [
    ({"backprop_args": {"grad_steps": 1}, "method": "truncated"}, "its settings: grad_passes"),
    ({"backprop_args": {"solver": "newton"}, "method": "implicit"}, "unknown solver 'newton'"),
    ({"pass_weights": "first"}, "pass_weights = 'first' is not one of mean, linear, last"),
    ({"pass_weights": [1, 1, 1]}, "one weight per pass: the loop runs 2 passes"),
    ({"pass_weights": "mean", "method": "combine"}, "use Combine(accumulate=...)"),
    ({"random_passes": [4, 1]}, "random_passes must be [lo, hi] with 1 <= lo <= hi"),
    ({"random_passes": [1, 4], "method": "couple"}, "cannot train 4 passes"),
    ({"random_passes": [1, 4], "method": "implicit"}, "its solver chooses the number of passes"),
    ({"pass_weights": "mean", "method": "ffn"}, "needs a loop"),
])
def test_bad_mode_settings_are_refused_before_training(change, message):
    with pytest.raises(ConfigError, match=None) as err:
        validate(from_dict(small_exp(**change)))
    assert message in str(err.value)


def test_runs_record_memory_and_solver_statistics(small_runs):
    saved = {name: [s["loop_training"]["memory"]["saved_bytes"] for s in summaries(small_runs, name)]
             for name in ("tied-x2", "tied-x8", "truncated-x2", "truncated-x8", "combine-x2", "combine-x8")}
    assert saved["tied-x8"][0] > saved["tied-x2"][0]  # Tied keeps every pass for backward
    assert saved["truncated-x8"] == saved["truncated-x2"]  # one pass with a graph, whatever the unroll
    assert saved["combine-x8"] == saved["combine-x2"]
    for summary in summaries(small_runs, "implicit-ift"):
        solver = summary["loop_training"]["solver"]["loop"]
        assert solver["eval_forward"]["passes"] >= 1 and solver["train_backward"]["passes"] >= 1
        assert solver["eval_forward"]["converged"] == (solver["eval_forward"]["residual"] < 1e-4)
    assert summaries(small_runs, "tied-x2")[0]["loop_training"]["solver"] is None


def test_pass_options_reach_fit(small_runs):
    """tied-x4-deep and tied-random train other weights than tied-x4 from the same start (same seed)."""
    def val_losses(name):
        return [s["probes"]["original"]["loss"] for s in summaries(small_runs, name)]

    plain = val_losses("tied-x4")
    assert val_losses("tied-x4-deep") != plain and val_losses("tied-random") != plain
    deep = summaries(small_runs, "tied-x4-deep")[0]
    assert deep["pass_weights"] == "mean" and summaries(small_runs, "tied-random")[0]["random_passes"] == [1, 8]


def test_modes_page_numbers_come_from_the_runs(small_runs, tmp_path):
    builder = load_page_builder("docs/build_modes.py")
    page = builder.build(small_runs, tmp_path / "modes.md")
    assert (tmp_path / "modes-iris.png").is_file()
    builder.main(["--runs-dir", str(small_runs), "--out", str(tmp_path / "cli.md")])  # the page_cli command line
    assert (tmp_path / "cli.md").read_text() == page
    accuracy = [100 * s["probes"]["original"]["accuracy"] for s in summaries(small_runs, "tied-x8")]
    assert f"| tied-x8 | {statistics.mean(accuracy):.1f} ± {statistics.stdev(accuracy):.1f} |" in page
    tied = [[s["loop_training"]["memory"]["saved_bytes"] for s in summaries(small_runs, f"tied-x{k}")] for k in (2, 8)]
    assert f"tied {statistics.mean(tied[1]) / statistics.mean(tied[0]):.2f}; truncated 1.00" in page
    assert f"Not run yet: `{builder.produce_command('meats')}`" in page  # the other tasks were not run
    implicit = summaries(small_runs, "implicit-ift")
    converged = sum(s["loop_training"]["solver"]["loop"]["eval_forward"]["converged"] for s in implicit)
    assert f"implicit-ift {converged} / 2 seeds converged" in page


def test_step_memory_counts_the_batch_not_the_whole_data_set():
    from loopnets import layers
    from loopnets.data import load_dataset
    from loopnets.experiments.modes import loop_training
    from loopnets.models.lavik.architectures import loop_network

    split = load_dataset("digits")
    net = loop_network(split.input_shape, [layers.Dense(8, activation="tanh")] * 3, (1, 2), split.outputs,
                       method="tied", unroll=2)
    saved = loop_training(net, split, "cross_entropy", batch_size=16)["memory"]["saved_bytes"]
    X = split.train[0]
    batch_input = 16 * X[0].numel() * X.element_size()
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    assert batch_input < saved < batch_input + weights + 64 * 1024  # the batch, the weights, small activations
    assert X.numel() * X.element_size() > 10 * saved  # not the whole training set's storage


# --- the page from committed results (issue 17) -------------------------------------------------------------

def test_modes_page_from_collected_results_equals_the_run_folders(small_runs, tmp_path):
    import shutil

    from test_pages import collected_page_equals_run_folders

    runs, out = tmp_path / "runs", tmp_path / "results"
    shutil.copytree(small_runs / "modes-iris", runs / "modes-iris")  # the shared fixture stays as it is
    assert main(["report", str(runs / "modes-iris")]) == 0
    collect = load_page_builder("docs/reproductions/collect.py")
    assert collect.main([str(runs), "--out", str(out)]) == 0
    page = collected_page_equals_run_folders(load_page_builder("docs/build_modes.py"), runs, out, tmp_path, set())
    assert "Validation set: 30 samples (one sample = 0.033 accuracy); chance 0.333." in page
    assert "- `modes-meats`: `loopnets run configs/modes/meats.toml" in page  # listed with its command
    assert "within noise of it:" in page and "n = 2" in page  # the accuracy finding is paired over the 2 seeds


def test_committed_modes_page_is_its_builders_output_and_holds_no_typed_number():
    from test_pages import RESULTS, literals_in_tags, unexplained_numbers

    builder = load_page_builder("docs/build_modes.py")
    page, computed = builder.render(RESULTS)
    assert page == (ROOT / "docs" / "modes.md").read_text(), "docs/modes.md: run `make pages`"
    assert not unexplained_numbers(page, computed, set())
    typed = page.replace("## Which to pick when", "Tied is 4.2x slower.\n\n## Which to pick when")
    assert unexplained_numbers(typed, computed, set()) == ["4.2"]
    assert not literals_in_tags((ROOT / "docs" / "modes.md.j2").read_text())
    assert f"Not run yet: `{builder.produce_command('hershey')}`" in page  # not committed yet
    assert f"Not run yet: `{builder.produce_command('mnist-cnn')}`" not in page and "## MNIST tiny CNN" in page


def test_modes_results_are_committed_and_compact():
    from test_pages import RESULTS

    for task in ("iris", "meats", "mnist-cnn"):
        folder = RESULTS / f"modes-{task}"
        assert (folder / "results.json").is_file() and (folder / "data.json").is_file(), f"modes-{task}: collect it"
        assert not list(folder.rglob("*.lnet")) and not list(folder.rglob("metrics.csv"))
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        assert size < 600_000, f"modes-{task}: {size} bytes of results; collect.py keeps them compact"
