"""Shared test fixtures."""

import pytest
import torch


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
