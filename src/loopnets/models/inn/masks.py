"""Which weights of an iterative network train: masks, block exchange, fixed identity blocks, eq 3.1.

Every mask here covers the weight space of Hershey's Fig 2.6 form: a bool tensor of shape
(depth, inputs + depth), row r the state unit r, columns [0, inputs) the re-inserted input x and
columns [inputs, inputs + depth) the previous state. True marks a trainable weight, False an
untrainable zero. The identity rows above the weight space (Fig 2.4) are not stored: the input is
re-inserted before every iteration instead. So Hershey's restriction of block exchange to "component
matrices not located in a row horizontally aligned with the input" holds by construction.

"Sparsity" R in the thesis means density, the fraction of trainable weights (R = 1 is dense, sec
3.3-3.4); the functions here say `density`.

Public: layered_mask, random_mask, block_exchange, identity_blocks, weight_space, expected_trainable.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from loopnets.models.inn.options import bias_count, bias_rows

__all__ = ["block_exchange", "expected_trainable", "identity_blocks", "layered_mask", "random_mask", "weight_space"]


def layered_mask(inputs: int, sizes: Sequence[int]) -> Tensor:
    """The mask of an MLP written as an iterative network (Hershey eq 2.10, Fig 2.4 / 2.6).

    The state is the layers' outputs stacked: block k holds rows [o_k, o_k + sizes[k]) with
    o_k = sizes[0] + ... + sizes[k-1]. Block 0 reads the input x (W^0 in columns [0, inputs)),
    block k >= 1 reads block k - 1 (W^k in the columns of block k - 1). The last block is the
    output. With static input, len(sizes) iterations reproduce the MLP exactly.

    Args:
        inputs: input features In >= 1 (Hershey: 2500).
        sizes: output size of every layer, e.g. [500, 200, 100, 10]; depth = sum(sizes).

    Returns:
        bool tensor (depth, inputs + depth).
    """
    _check_count("inputs", inputs, minimum=1)
    sizes = _check_sizes(sizes)
    depth = sum(sizes)
    mask = torch.zeros(depth, inputs + depth, dtype=torch.bool)
    row, previous = 0, None  # previous: column span of the block read by this one
    for n in sizes:
        cols = (0, inputs) if previous is None else previous
        mask[row : row + n, cols[0] : cols[1]] = True
        previous = (inputs + row, inputs + row + n)
        row += n
    return mask


def random_mask(inputs: int, depth: int, density: float, seed: int | torch.Generator | None = None) -> Tensor:
    """Each weight of the weight space trainable independently with probability R (Hershey sec 3.3-3.4).

    As in the thesis: draw r ~ U[0, 1) per weight, trainable when r < R. So R = 1 is the dense
    (RNN, eq 2.11) mask and the expected number of trainable weights is R * depth * (inputs + depth).

    Args:
        inputs: input features >= 1.
        depth: state units (hidden + output) >= 1.
        density: R in (0, 1] (the thesis's "sparsity").
        seed: an int (the same mask every time), a torch.Generator (advanced by one draw), or None
            (torch's global generator, i.e. `torch.manual_seed`, advanced by one draw). The mask
            is drawn from a stream seeded by that one draw, not from the seed's own stream, so a
            network initialised after torch.manual_seed(s) does not read the numbers that placed
            the mask of seed s (it would otherwise: its weights would follow the mask).

    Returns:
        bool tensor (depth, inputs + depth).
    """
    _check_count("inputs", inputs, minimum=1)
    _check_count("depth", depth, minimum=1)
    _check_density(density)
    r = torch.rand(depth, inputs + depth, generator=_generator(seed))
    return r < density


def block_exchange(mask: Tensor, p: float, block: int = 100, seed: int | torch.Generator | None = None) -> Tensor:
    """Blocks of the mask swap trainability with random partners, each with probability p (Hershey sec 3.2).

    The weight space is cut into component blocks of block x block weights (Hershey: 100 x 100),
    smaller where a dimension runs out: rows in chunks of `block` from the top; columns in chunks
    of `block` over the input columns, then again over the state columns, so that no block mixes
    input and state columns and the state grid matches the row grid (diagonal blocks are the
    self-connections). With inputs = 2500 and depth = 810 this is the thesis's grid exactly:
    9 x 34 blocks, 10 x 100 along the bottom row, 100 x 10 in the last column, 10 x 10 in the corner.

    Every block must be all trainable or all zero (true for `layered_mask` when `block` divides
    the layer sizes and the input size). Then, visiting the blocks row by row, each block with
    probability p swaps its attribute (trainable / zero) with a partner drawn uniformly from all
    other blocks; a later block's swap sees the result of earlier ones. Open choice (the thesis
    does not say how a 10 x 100 block exchanges with a 100 x 100 one): only the attribute moves and
    every block keeps its own shape, so the number of trainable blocks is unchanged and the number
    of trainable weights changes only through blocks of different size ("largely unchanged", as
    in the thesis). Initial values follow the attribute: the network initialises whatever the mask
    marks trainable.

    Args:
        mask: bool (depth, inputs + depth), e.g. `layered_mask(2500, [500, 200, 100, 10])`.
        p: exchange probability per block in [0, 1] (Hershey: 0.2 and 0.5). p = 0 returns a copy.
        block: block side >= 1.
        seed: int, torch.Generator or None, as in `random_mask` (a stream of its own).

    Returns:
        a new bool tensor of the same shape.
    """
    _check_mask(mask)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p is a probability per block and must lie in [0, 1] (Hershey used 0.2 and 0.5); got {p!r}")
    _check_count("block", block, minimum=1)
    depth, width = mask.shape
    inputs = width - depth
    rows = _chunks(0, depth, block)
    cols = _chunks(0, inputs, block) + _chunks(inputs, width, block)

    attribute = torch.empty(len(rows), len(cols), dtype=torch.bool)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            part = mask[r0:r1, c0:c1]
            if part.any() != part.all():
                raise ValueError(_mixed_block_message(mask, block, (r0, r1), (c0, c1)))
            attribute[i, j] = bool(part.any())

    n = attribute.numel()
    flat = attribute.flatten()
    if n > 1:
        g = _generator(seed)
        # Draw everything up front so the stream does not depend on the outcomes.
        chosen = torch.rand(n, generator=g) < p
        partner = torch.randint(n - 1, (n,), generator=g)
        for k in range(n):
            if chosen[k]:
                q = int(partner[k]) + (int(partner[k]) >= k)  # uniform over the blocks other than k
                flat[k], flat[q] = flat[q].clone(), flat[k].clone()
    attribute = flat.view(len(rows), len(cols))

    out = torch.zeros_like(mask, dtype=torch.bool)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            if attribute[i, j]:
                out[r0:r1, c0:c1] = True
    return out


def identity_blocks(inputs: int, depth: int, spans: Sequence[tuple[int, int]] | None = None) -> Tensor:
    """Fixed identity weights on the state diagonal: persistent memory (Hershey sec 2.1.3).

    Untrainable identity blocks on the diagonal let a state region keep its value from one
    iteration to the next ("persistent memory ... allowing the network to perform when iterations
    exceed the number of layers"). Pass the result as `IterativeNetwork(..., fixed=...)`: it is
    added to the masked weights, never trained. With ReLU, a unit with a fixed self-weight 1 and
    no other input keeps a non-negative value forever.

    Args:
        inputs: input features >= 1.
        depth: state units >= 1.
        spans: state-row ranges (start, stop) that get an identity block, e.g. [(0, 500)] for
            the first hidden layer of the thesis MLP; None: the whole state.

    Returns:
        float tensor (depth, inputs + depth) (default dtype), 1 at (r, inputs + r) for every r in a
        span, 0 elsewhere.
    """
    _check_count("inputs", inputs, minimum=1)
    _check_count("depth", depth, minimum=1)
    spans = [(0, depth)] if spans is None else list(spans)
    fixed = torch.zeros(depth, inputs + depth)
    for span in spans:
        if (
            not isinstance(span, (tuple, list))
            or len(span) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)
            or not 0 <= span[0] < span[1] <= depth
        ):
            raise ValueError(
                f"each span is a state-row range (start, stop) of ints with 0 <= start < stop <= depth={depth}; got {span!r}"
            )
        r = torch.arange(span[0], span[1])
        fixed[r, inputs + r] = 1.0
    return fixed


def expected_trainable(inputs: int, depth: int, density: float, biases: str = "none") -> float:
    """Expected trainable count of a `random_mask` weight space: R * depth * (inputs + depth) + biases.

    `biases` is the counting rule of `IterativeNetwork(bias=...)`: "none" (weights only, as eq 3.1),
    "state" (+ depth) or "all" (+ inputs + depth, the authors' code). A single mask's count is
    binomial around the weight part, standard deviation sqrt(R (1 - R) depth (inputs + depth)).
    Table 3.1 (sizes 2500 -> 810 rows, R = 0.5): "all" gives 1,343,860, 229 above the thesis's
    average of 1,343,631 (0.3 standard deviations of one mask); "state" gives 1,341,360 and "none"
    1,340,550, 2.8 and 3.8 standard deviations below it.
    """
    _check_count("inputs", inputs, minimum=1)
    _check_count("depth", depth, minimum=1)
    _check_density(density)
    return density * depth * (inputs + depth) + bias_count(inputs, depth, biases)


def weight_space(
    trainable: int, density: float, inputs: int, outputs: int = 10, biases: str = "none"
) -> tuple[int, int]:
    """Width and depth of the square-constrained weight space holding `trainable` weights at density R (eq 3.1).

    The iterative matrix is square, so a weight space of depth D has width In + D, and
    R = W_train / (D (In + D)). Solving for the width (eq 3.1, with the printed I^2 read as In^2):

        width = (In + sqrt(In^2 + 4 W_train / R)) / 2,    depth = width - In

    With biases counted in W_train (`biases`, the rule of `expected_trainable`),
    W_train = R W (W - In) + a W - b In, with (a, b) = (1, 0) for "all" (one bias per row of the
    square matrix, W of them) and (1, 1) for "state" (W - In = D of them), so

        width = ((R In - a) + sqrt((R In - a)^2 + 4 R (b In + W_train))) / (2 R)

    which is eq 3.1 for "none" (a = b = 0). Table 3.1's 1,343,631 at R = 0.5 with "all" gives
    depth 810, the 2500-500-200-100-10 weight space the thesis says it used.

    Rounding: depth is rounded to the nearest integer (halves up) and width = In + depth, so the
    matrix stays square. R * depth * width (the expected trainable count of a `random_mask` of
    that size) then differs from W_train by at most about R * (width + depth) / 2.

    A weight space with depth <= outputs has no hidden unit: Hershey's "could no longer be
    defined" (sec 3.4.2, e.g. 10,000 weights at R > 0.2 with 10 outputs). It is refused.

    Args:
        trainable: W_train, the number of trainable weights >= 1.
        density: R in (0, 1].
        inputs: input features In >= 1 (Hershey: 2500).
        outputs: output units >= 0 (default 10, MNIST classes); depth must exceed it.
        biases: whether `trainable` counts biases: "none" (default, eq 3.1 as printed), "state"
            or "all" (the authors' count).

    Returns:
        (width, depth) as ints.

    Raises:
        ValueError: bad arguments, or depth <= outputs (the message gives the smallest W_train
            that works at this R).
    """
    _check_count("trainable", trainable, minimum=1)
    _check_density(density)
    _check_count("inputs", inputs, minimum=1)
    _check_count("outputs", outputs, minimum=0)
    rule = bias_rows(biases)
    a, b = {"none": (0, 0), "all": (1, 0), "state": (1, 1)}[rule]
    linear = density * inputs - a
    exact_width = (linear + math.sqrt(linear**2 + 4 * density * (b * inputs + trainable))) / (2 * density)
    depth = math.floor(exact_width - inputs + 0.5)
    if depth <= outputs:
        # depth d needs W_train >= R (d - 1/2)(In + d - 1/2) + biases to round up to d (>= outputs + 1).
        d = outputs + 0.5
        needed = math.ceil(density * d * (inputs + d) + a * (inputs + d) - b * inputs)
        raise ValueError(
            f"{trainable} trainable weights at density R={density} with {inputs} inputs give a weight space "
            f"of depth {depth}, which leaves no hidden unit beside the {outputs} outputs (the thesis's "
            f"'could no longer be defined'); use at least {needed} trainable weights at this R, or a lower R"
        )
    return inputs + depth, depth


# ----------------------------------------------------------------------------- helpers


def _chunks(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, stop)) for a in range(start, stop, size)]


def _mixed_block_message(mask: Tensor, block: int, rows: tuple[int, int], cols: tuple[int, int]) -> str:
    depth, width = mask.shape
    inputs = width - depth
    # Positions where the mask's rows or columns change, relative to the grid they belong to:
    # the block side must divide all of them for every block to be uniform.
    edges = [int(i) for i in (mask[1:] != mask[:-1]).any(1).nonzero().flatten() + 1]
    changes = (mask[:, 1:] != mask[:, :-1]).any(0).nonzero().flatten() + 1
    edges += [int(c) if c <= inputs else int(c) - inputs for c in changes if int(c) != inputs]
    g = math.gcd(*edges) if edges else block
    hint = (
        f"use block={g} (it divides every boundary of this mask)"
        if g > 1
        else "this mask is not block-structured (a random mask?); build a layered_mask whose layer sizes "
        "and input size are multiples of the block"
    )
    return (
        f"block exchange moves whole blocks, so every {block} x {block} block must be all trainable or all zero; "
        f"the block at rows [{rows[0]}, {rows[1]}), columns [{cols[0]}, {cols[1]}) is mixed; {hint}"
    )


def _generator(seed: int | torch.Generator | None) -> torch.Generator:
    """The generator a mask is drawn from: a stream of its own, seeded by one number drawn from `seed`.

    Not `seed`'s own stream: after torch.manual_seed(s), a network's init reads the stream of s from
    its start, so a mask drawn from that same stream would decide which weights train by the very
    numbers that become their initial values (with init "linear" and R = 0.5 every trainable weight
    would be negative). The runner seeds both with the run's seed.
    """
    if seed is not None and not isinstance(seed, torch.Generator):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, a torch.Generator or None; got {seed!r}")
        seed = torch.Generator().manual_seed(seed)
    derived = int(torch.randint(0, 2**62, (1,), generator=seed))  # advances `seed` (or the global stream) by one draw
    return torch.Generator().manual_seed(derived)


def _check_count(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _check_sizes(sizes) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) == 0:
        raise ValueError(f"sizes must be a non-empty list of layer output sizes, e.g. [500, 200, 100, 10]; got {sizes!r}")
    for n in sizes:
        _check_count("every layer size", n, minimum=1)
    return [int(n) for n in sizes]


def _check_density(density) -> None:
    if isinstance(density, bool) or not isinstance(density, numbers.Real) or not 0.0 < density <= 1.0:
        raise ValueError(
            f"density R is the fraction of trainable weights (the thesis's 'sparsity') and must lie in (0, 1]; "
            f"R=1 is dense; got {density!r}"
        )


def _check_mask(mask) -> None:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
        got = f"{mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"a mask is a bool tensor of shape (depth, inputs + depth); got {got}")
    if mask.shape[1] <= mask.shape[0]:
        raise ValueError(
            f"a mask has shape (depth, inputs + depth) with inputs >= 1, so more columns than rows; "
            f"got {tuple(mask.shape)}"
        )
