"""The architecture: the import-linter contracts hold, the `_`-name contract catches what it claims,
and the public API is exactly the listed names (a move inside the package must not change it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import loopnets as ln

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from lint_private_names import private_uses  # noqa: E402

PUBLIC = {
    "ln": [
        "CheckpointError", "Combine", "Couple", "Dropout", "EarlyExit", "Halting", "History", "Implicit", "Loop",
        "ManyHistories", "Network", "NotConvergedWarning", "OneStep", "PerPass", "Progressive", "SolverStats", "Tied", "TrainingDiverged",
        "Truncated", "early_exit", "evaluate", "fit", "fit_halting", "fit_many", "gated", "inn", "layers", "load", "loopy",
        "pass_outputs", "save", "severed", "thinking", "tie_", "unrolled", "viz",
    ],
    "thinking": ["RECALLS", "ResidualBlock", "feedforward_conv", "looped_transformer", "recurrent_conv"],
    "gated": [
        "FeedbackGatedReLU", "GatedNetwork", "GatedPass", "MODES", "conv_autoencoder", "dense_autoencoder",
        "feedback_gain", "feedback_gated_relu",
    ],
    "loopy": [
        "FAMILIES", "INITS", "LoopyCNN", "ParameterCounts", "PassLoop", "deep", "deep_from_loopy", "loop_layer",
        "loopy", "mnist_loopy", "parameter_counts", "plus_layer", "times_layer", "vanilla",
    ],
    "inn": [
        "AUTHORS_INIT_STD", "AUTO_SPARSE_DENSITY", "BIASES", "INITS", "IterativeNetwork", "KERNELS", "LSTMBaseline",
        "SequenceHistory", "acc_end", "acc_seq", "accuracy_by_iterations", "accuracy_by_position", "block_exchange",
        "confusion_matrix", "expected_trainable", "fit_iterations", "fit_sequences", "identity_blocks", "layered_mask", "lstm_hidden_for", "lstm_parameters",
        "multitask_loss", "per_iteration_loss", "predict_index", "random_mask", "sequence_outputs", "weight_space",
    ],
    "viz": [
        "bottleneck_tsne", "contrast_sweep", "feedback_histograms", "guided_backprop", "guided_relus", "image_grid",
        "image_strip", "merge_images", "noise_curves",
    ],
}
LAYER_SPECS = ["Conv", "Deconv", "Dense", "Dropout", "MaxPool", "Reshape", "UnfoldConv1d", "build", "describe"]


@pytest.mark.parametrize("namespace", sorted(PUBLIC))
def test_public_api_is_exactly_the_listed_names(namespace):
    module = ln if namespace == "ln" else getattr(ln, namespace)
    assert sorted(module.__all__) == sorted(PUBLIC[namespace])
    for name in module.__all__:
        assert getattr(module, name) is not None, f"ln.{namespace}.{name} is listed but missing"


def test_layer_specs_stay_public():
    for name in LAYER_SPECS:
        assert callable(getattr(ln.layers, name)), f"ln.layers.{name} is gone"
    assert ln.__version__


def test_import_contracts_hold():
    """`lint-imports` (import-linter, configured in pyproject.toml) exits 0: layers, model code apart from
    experiments and reports, no cycles, no `_`-names across modules. Its output names each break."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "lint-imports is missing: install the dev extra (pip install -e '.[dev]')"
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tools'}", "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


KNOWN = {"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub._hidden", "pkg.sub.c"}


@pytest.mark.parametrize("source, expected", [
    ("from pkg.a import _helper\n", ["pkg.a._helper"]),
    ("from pkg.a import (\n    public,\n    _helper,\n)\n", ["pkg.a._helper"]),
    ("import pkg.a as a\nx = a._helper\n", ["pkg.a._helper"]),
    ("from pkg import a\na._helper()\n", ["pkg.a._helper"]),
    ("import pkg.a\npkg.a._helper()\n", ["pkg.a._helper"]),
    ("from .a import _helper\n", ["pkg.a._helper"]),
    ("from pkg.sub import _hidden\n", ["pkg.sub._hidden"]),
    ("from pkg.a import public, __version__\nfrom pkg.b import thing\n", []),
    ("import torch\ntorch._C\n", []),
    ("def _mine():\n    pass\n_mine()\n", []),
])
def test_private_names_contract_finds_each_form(source, expected):
    uses = private_uses("pkg.b", KNOWN, source, is_package=False)
    assert sorted(u.name for u in uses) == expected


def test_private_module_may_be_used_inside_its_own_package():
    assert private_uses("pkg.sub.c", KNOWN, "from pkg.sub import _hidden\n", is_package=False) == []
