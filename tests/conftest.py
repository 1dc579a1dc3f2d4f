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
