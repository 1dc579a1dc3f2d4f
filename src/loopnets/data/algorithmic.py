"""Algorithmic tasks for easy-to-hard extrapolation, generated offline from a seed, at any size.

Schwarzschild et al. 2021 and Bansal et al. 2022 ("DeepThinking") train recurrent networks on small
instances and test them, with more passes, on much larger ones. Both tasks are per-position
classification: the target has one class index per input position.

- `prefix_sums(n, bits)`: an n-bit string -> its running parity, y[i] = (x[0] + ... + x[i]) mod 2.
  x: (n, 1, bits) float in {0, 1}; y: (n, bits) long.
- `mazes(n, size)`: a `size` x `size` grid (odd size; rooms on odd coordinates, walls between
  them) carved by a randomised depth-first search, so exactly one path joins any two rooms; a
  random start and end room. x: (n, 3, size, size) float, channels open cells / start / end;
  y: (n, size, size) long, 1 on the cells of the path from start to end (both included).
  One grid position per cell by default. `pixels=2` draws each cell as 2 x 2 positions, as
  DeepThinking's data do (easy-to-hard-data: a "9x9" maze is our size 9, drawn 2 x 2 per cell with a
  3-pixel wall border, 24 x 24 pixels); it carries no more information, costs 4x per conv pass and
  about 2x the passes (a path is twice as long in positions), so the CPU configs use 1.

`Split` pairs a training size with a validation size (`prefix_sums_split`, `mazes_split`), so
that a model trained on 32-bit strings is validated on, say, 64-bit ones.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from loopnets.data.split import Split

MIN_BITS = 2  # a running parity of one bit is the identity
MIN_MAZE = 5  # 2 x 2 rooms: the smallest maze with a choice in it


def check_bits(bits: object, where: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < MIN_BITS:
        raise ValueError(f"{where} must be an integer >= {MIN_BITS} (the string length); got {bits!r}")
    return bits


def check_maze_size(size: object, where: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_MAZE or size % 2 == 0:
        raise ValueError(
            f"{where} must be an odd integer >= {MIN_MAZE} (grid side: (size - 1) / 2 rooms per side, walls "
            f"between them, e.g. 9, 13, 33); got {size!r}"
        )
    return size


def _check_count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of samples must be an integer >= 1; got {n!r}")
    return n


def prefix_sums(n: int, bits: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` random `bits`-bit strings and their running parities: x (n, 1, bits) float, y (n, bits) long."""
    _check_count(n)
    check_bits(bits)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=(n, bits), dtype=np.int64)
    y = np.cumsum(x, axis=1) % 2
    return torch.from_numpy(x).float().unsqueeze(1), torch.from_numpy(y)


def carve(size: int, rng: np.random.Generator) -> np.ndarray:
    """A perfect maze: (size, size) bool, True on open cells, carved by randomised depth-first search."""
    rooms = (size - 1) // 2
    open_ = np.zeros((size, size), dtype=bool)
    seen = np.zeros((rooms, rooms), dtype=bool)
    start = (int(rng.integers(rooms)), int(rng.integers(rooms)))
    stack = [start]
    seen[start] = True
    open_[2 * start[0] + 1, 2 * start[1] + 1] = True
    steps = ((0, 1), (1, 0), (0, -1), (-1, 0))
    while stack:
        r, c = stack[-1]
        choices = [(r + dr, c + dc) for dr, dc in steps
                   if 0 <= r + dr < rooms and 0 <= c + dc < rooms and not seen[r + dr, c + dc]]
        if not choices:
            stack.pop()
            continue
        nr, nc = choices[int(rng.integers(len(choices)))]
        seen[nr, nc] = True
        open_[2 * nr + 1, 2 * nc + 1] = True
        open_[r + nr + 1, c + nc + 1] = True  # the wall between the two rooms
        stack.append((nr, nc))
    return open_


def path_between(open_: np.ndarray, start: tuple[int, int], end: tuple[int, int]) -> np.ndarray:
    """(size, size) bool: the cells of the shortest open path from start to end (breadth-first search)."""
    size = open_.shape[0]
    parent = {start: start}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == end:
            break
        r, c = cell
        for nxt in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nxt[0] < size and 0 <= nxt[1] < size and open_[nxt] and nxt not in parent:
                parent[nxt] = cell
                queue.append(nxt)
    if end not in parent:
        raise ValueError(f"no open path from {start} to {end}")
    path = np.zeros_like(open_)
    cell = end
    while True:
        path[cell] = True
        if cell == start:
            return path
        cell = parent[cell]


def mazes(n: int, size: int, seed: int = 0, pixels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` mazes of side `size` and their solutions: x (n, 3, size * pixels, size * pixels) float,
    y (n, size * pixels, size * pixels) long; each cell is `pixels` x `pixels` positions (the same
    mazes, from the same seed, for every `pixels`)."""
    _check_count(n)
    check_maze_size(size)
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 1:
        raise ValueError(f"pixels must be an integer >= 1 (positions per cell side; DeepThinking's images: 2); "
                         f"got {pixels!r}")
    rng = np.random.default_rng(seed)
    rooms = (size - 1) // 2
    x = np.zeros((n, 3, size, size), dtype=np.float32)
    y = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        open_ = carve(size, rng)
        a, b = rng.choice(rooms * rooms, size=2, replace=False)
        start = (2 * int(a // rooms) + 1, 2 * int(a % rooms) + 1)
        end = (2 * int(b // rooms) + 1, 2 * int(b % rooms) + 1)
        x[i, 0] = open_
        x[i, 1][start] = 1.0
        x[i, 2][end] = 1.0
        y[i] = path_between(open_, start, end)
    if pixels > 1:  # each cell -> a pixels x pixels square
        x = x.repeat(pixels, axis=-2).repeat(pixels, axis=-1)
        y = y.repeat(pixels, axis=-2).repeat(pixels, axis=-1)
    return torch.from_numpy(x), torch.from_numpy(y)


def prefix_sums_split(n_train: int = 10_000, n_val: int = 1_000, bits: int = 32, val_bits: int | None = None,
                      seed: int = 0) -> Split:
    """Train on `bits`-bit strings, validate on `val_bits`-bit ones (default: the same length)."""
    x_train, y_train = prefix_sums(n_train, bits, seed=seed)
    x_val, y_val = prefix_sums(n_val, bits if val_bits is None else check_bits(val_bits, "val_bits"), seed=seed + 1)
    return Split(x_train, y_train, x_val, y_val, classes=("0", "1"))


def mazes_split(n_train: int = 5_000, n_val: int = 500, size: int = 9, val_size: int | None = None,
                seed: int = 0, pixels: int = 1) -> Split:
    """Train on `size` x `size` mazes, validate on `val_size` ones (default: the same size); `pixels`
    positions per cell side (see `mazes`)."""
    x_train, y_train = mazes(n_train, size, seed=seed, pixels=pixels)
    x_val, y_val = mazes(n_val, size if val_size is None else check_maze_size(val_size, "val_size"), seed=seed + 1,
                         pixels=pixels)
    return Split(x_train, y_train, x_val, y_val, classes=("off path", "on path"))
