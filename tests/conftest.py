"""Shared test fixtures and helpers."""

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# a two-variant, two-seed iris experiment that trains in about a second (the reliability tests)
TINY_IRIS = """
name = "tiny"
variants = [{ method = "ffn" }, { method = "couple", unroll = 2 }]
data = { name = "iris" }
model = { layers = [{ type = "dense", units = 6, activation = "relu" }, { type = "dense", units = 6, activation = "relu" }], loop = [1, 1] }
train = { epochs = 2, batch_size = 16, seeds = [0, 1], unroll_sweep = 0 }
"""

# A lavik experiment on iris without name or variants, for tests that add their own ([[variants]]
# tables): two 4-unit layers, one loop, 1 epoch, 2 seeds (which train together), no unroll sweep.
TINY_IRIS_BASE = """
[data]
name = "iris"
[model]
layers = [{ type = "dense", units = 4, activation = "relu" }, { type = "dense", units = 4, activation = "relu" }]
loop = [0, 1]
[train]
epochs = 1
batch_size = 32
seeds = [0, 1]
unroll_sweep = 0
"""


def load_page_builder(relative: str):
    """A docs page builder script (e.g. "docs/build_modes.py") imported as a module."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def float64_and_seed():
    """Numbers are compared in float64 with seed 0; the default dtype is restored afterwards."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(before)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op thread for the whole suite: the tensors here are tiny, and on a busy 2-core
    machine intra-op threads mostly wait on each other (tests ran up to 4x slower with 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
