"""step_memory: autograd's saved bytes and the malloc peak of one training step."""

import torch
from torch import nn

import loopnets as ln
from loopnets.training.memory import step_memory


def loop_step(backprop, unroll: int):
    torch.manual_seed(0)
    loop = ln.Loop(nn.Sequential(nn.Linear(64, 64), nn.Tanh()), unroll=unroll, backprop=backprop)
    x = torch.randn(256, 64)
    return lambda: loop(x).square().mean().backward()


def test_saved_bytes_grow_with_the_unroll_for_tied_and_stay_flat_for_combine():
    tied = [step_memory(loop_step(ln.Tied(), k)).saved_bytes for k in (2, 8)]
    combine = [step_memory(loop_step(ln.Combine(), k)).saved_bytes for k in (2, 8)]
    activation = 256 * 64 * 4  # one (batch, width) float32 tensor
    # Tied keeps every pass's tanh output (which is the next pass's Linear input: one storage):
    # 6 more passes, 6 activations more.
    assert tied[1] - tied[0] == 6 * activation
    assert combine[1] == combine[0]


def test_peak_counts_the_step_allocations():
    usage = step_memory(loop_step(ln.Tied(), 8))
    if usage.peak_bytes is not None:  # glibc: malloc's counters are readable
        assert usage.peak_bytes >= 8 * 256 * 64 * 4  # at least the 8 passes' outputs were held at once


def test_nothing_saved_without_a_graph():
    x = torch.randn(8, 4)
    layer = nn.Linear(4, 4)

    def step():
        with torch.no_grad():
            layer(x)

    assert step_memory(step).saved_bytes == 0
