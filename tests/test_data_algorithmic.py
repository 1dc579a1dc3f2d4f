"""The algorithmic tasks: prefix sums against their definition, mazes against an independent search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loopnets.data.algorithmic import mazes, mazes_split, prefix_sums, prefix_sums_split


def test_prefix_sums_are_running_parities():
    x, y = prefix_sums(50, 17, seed=3)
    assert x.shape == (50, 1, 17) and y.shape == (50, 17) and y.dtype == torch.long
    bits = x[:, 0].long()
    assert set(bits.unique().tolist()) == {0, 1}
    for i in range(50):
        parity = 0
        for j in range(17):
            parity ^= int(bits[i, j])
            assert int(y[i, j]) == parity


def test_prefix_sums_are_seeded_and_any_length():
    a, b = prefix_sums(8, 512, seed=1), prefix_sums(8, 512, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], prefix_sums(8, 512, seed=2)[0])
    split = prefix_sums_split(n_train=10, n_val=4, bits=32, val_bits=128)
    assert split.input_shape == (1, 32) and split.x_val.shape == (4, 1, 128) and split.outputs == 2


def _neighbours(cell, size):
    r, c = cell
    return [(r + dr, c + dc) for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))
            if 0 <= r + dr < size and 0 <= c + dc < size]


@pytest.mark.parametrize("size", [5, 9, 13])
def test_mazes_are_perfect_and_the_target_is_the_only_path(size):
    x, y = mazes(20, size, seed=size)
    assert x.shape == (20, 3, size, size) and y.shape == (20, size, size)
    rooms = ((size - 1) // 2) ** 2
    for i in range(20):
        open_ = x[i, 0].bool().numpy()
        cells = {tuple(map(int, rc)) for rc in np.argwhere(open_)}
        edges = sum(1 for a in cells for b in _neighbours(a, size) if b in cells) // 2
        # a spanning tree over the rooms: rooms cells + (rooms - 1) carved walls, as many edges as a tree
        assert len(cells) == 2 * rooms - 1 and edges == len(cells) - 1
        assert not open_[0].any() and not open_[-1].any() and not open_[:, 0].any() and not open_[:, -1].any()
        start = tuple(map(int, np.argwhere(x[i, 1].numpy())[0]))
        end = tuple(map(int, np.argwhere(x[i, 2].numpy())[0]))
        assert start != end and start in cells and end in cells
        # independent check: depth-first search for all simple paths; a perfect maze has exactly one
        found = []
        stack = [(start, [start])]
        while stack:
            cell, path = stack.pop()
            if cell == end:
                found.append(path)
                continue
            stack.extend((n, path + [n]) for n in _neighbours(cell, size) if n in cells and n not in path)
        assert len(found) == 1
        target = {tuple(map(int, rc)) for rc in np.argwhere(y[i].numpy())}
        assert target == set(found[0])


def test_mazes_are_seeded_and_any_size():
    a, b = mazes(3, 33, seed=5), mazes(3, 33, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    split = mazes_split(n_train=4, n_val=2, size=9, val_size=25)
    assert split.input_shape == (3, 9, 9) and split.x_val.shape == (2, 3, 25, 25)


def test_mazes_drawn_with_pixels_per_cell_are_the_same_mazes_upsampled():
    x1, y1 = mazes(4, 9, seed=7)
    x2, y2 = mazes(4, 9, seed=7, pixels=2)
    assert x2.shape == (4, 3, 18, 18) and y2.shape == (4, 18, 18)
    for dr in (0, 1):  # every position of a 2 x 2 square is its cell
        for dc in (0, 1):
            assert torch.equal(x2[..., dr::2, dc::2], x1) and torch.equal(y2[:, dr::2, dc::2], y1)
    assert int(x2[:, 1].sum()) == 4 * 4 and int(y2.sum()) == 4 * int(y1.sum())  # start: 4 pixels per maze
    assert mazes_split(n_train=2, n_val=2, size=5, val_size=7, pixels=2).x_val.shape == (2, 3, 14, 14)


@pytest.mark.parametrize("call, message", [
    (lambda: mazes(2, 9, pixels=0), "pixels must be an integer >= 1"),
    (lambda: prefix_sums(4, 1), "bits must be an integer >= 2"),
    (lambda: prefix_sums(0, 8), "number of samples"),
    (lambda: prefix_sums_split(n_train=2, n_val=2, bits=8, val_bits=1), "val_bits must be"),
    (lambda: mazes(2, 3), "size must be an odd integer >= 5"),
    (lambda: mazes(2, 10), "odd integer"),
    (lambda: mazes_split(n_train=2, n_val=2, val_size=8), "val_size must be"),
])
def test_too_small_or_malformed_sizes_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
