"""IterativeNetwork: one masked weight matrix applied again and again to [input; state] (Hershey 2023, ch 2).

Hershey's iterative neural network (INN) keeps the whole network in one weight matrix W over the
state s = [hidden; outputs] and iterates it. This is the Fig 2.6 form: the input x is re-inserted
before every iteration instead of being carried by identity rows, so W has shape
(depth, inputs + depth) and holds exactly the weight space:

    s^0 = 0
    s^t = act((W * M) [x^t; s^(t-1)] + b)        t = 1 .. T
    y^t = the last `outputs` rows of s^t

M is a fixed bool mask of trainable weights (False: an untrainable zero). With static input
x^t = x for every t (classification); with a sequence x^t is its t-th step (one iteration per
step; anomaly detection). A layered mask reproduces an MLP exactly after one iteration per layer
(eq 2.10, `from_mlp`); the full mask is a plain RNN (eq 2.11, `rnn`); anything in between (random
masks of density R, exchanged blocks, fixed identity blocks) is the thesis's design space.

Public: IterativeNetwork, KERNELS, AUTO_SPARSE_DENSITY.
"""

from __future__ import annotations

from itertools import count
from typing import Generator, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loopnets.core.protocol import first
from loopnets.models.inn.masks import layered_mask
from loopnets.models.inn.options import (
    ACTIVATIONS,
    INITS,
    activation_module,
    bias_count,
    bias_rows,
    check_int,
    checked_init_std,
    checked_fixed,
    checked_mask,
    mlp_layers,
)
from loopnets.models.inn.sparse import CSRMatmul, Pattern, SparseWeights

__all__ = ["ACTIVATIONS", "AUTO_SPARSE_DENSITY", "INITS", "KERNELS", "IterativeNetwork"]

KERNELS = ("dense", "sparse", "auto")

# kernel="auto" picks "sparse" on the CPU when at most this fraction of the weight space is
# non-zero (trainable or fixed), "dense" otherwise and on every other device. Measured with
# benchmarks/inn_kernels.py at the thesis scale (inputs 2500, depth 810, batch 64, 10 iterations):
# with one thread sparse won at R <= 0.2 by 30 % or more, dense won at R >= 0.5, R = 0.3 was close
# (fitted crossover 0.28-0.31 over three runs); 0.25 lies just below. See benchmarks/INN_KERNELS.md.
AUTO_SPARSE_DENSITY = 0.25



class IterativeNetwork(nn.Module):
    """Hershey's iterative neural network: s^t = act((W * M) [x^t; s^(t-1)] + b), s^0 = 0.

    Exact: the masked weights are exactly zero and get exactly zero gradient (W is zero there
    from the start and the forward pass uses torch.where(M, W, 0), whose gradient is zero where
    M is False even for inf / nan upstream gradients). Any optimizer whose update of a zero weight
    with zero gradient and zero state is zero keeps them zero: SGD (with momentum), Adam, Adam with
    L2 weight decay, AdamW (its decay shrinks w by lr * wd * w = 0).

    Choices the thesis text leaves open, and what the authors' code (github qbhershey/iterativenn,
    `MaskedLinear`) does:
      - Bias. The thesis folds the bias into W through a row of ones (eq 2.4-2.6) but its INN
        figure has a 2500 x 2500 input identity (Fig 3.1: no 2501st row for the ones). The
        authors' code gives every row of the square iterated matrix a dense bias, input rows
        included. Here each state row has one bias, a separate dense vector not subject to the
        mask (`bias=True` = "state", the default, so that `from_mlp` is exact for MLPs with
        biases). `bias="all"` is the authors' rule: the same state-row biases, and the In
        input-row biases counted too. Those are not allocated: in the authors' code the input
        insert (`z[:, x_index] = x`) overwrites the input rows before any row reads them, and
        here the input is re-inserted likewise (Fig 2.6), so no input-row bias can change an
        output or receive a gradient. They matter only for the trainable count, which is how
        Table 3.1's 1,343,631 fits R = 0.5 (`trainable_parameters`, `weight_space(biases=)`).
        `bias=False` = "none" drops the biases.
      - Output activation. Default: the hidden activation, as in eq 2.10, 2.13 and 2.15, which
        apply sigma / ReLU to Y, and as for an MLP ending in its activation. The authors' code
        makes the output rows linear (Identity): `output_activation="linear"`, also right when
        the outputs are logits for a cross-entropy loss (ReLU logits cannot go negative and get
        no gradient where they are clamped).
      - Initial values (not stated in the text): `init="linear"` is nn.Linear's rule with each
        row's fan-in = its number of trainable weights, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
        weights and bias, so a row of a layered mask starts like the nn.Linear it stands for and
        a sparse row is not scaled down by its zeros. `init="kaiming"`: N(0, 2 / fan_in)
        weights, zero bias. `init="normal"` is the authors' code: trainable weights N(0,
        init_std^2) (init_std 0.05 by default, theirs), whatever the fan-in; biases as their
        `MaskedLinear.reset_parameters`, U(-1/sqrt(width), 1/sqrt(width)) with width = inputs +
        depth, the full row of the square matrix.

    Cost per forward call with static input: one (batch, inputs) x (inputs, depth) product for
    the input part, computed once since x is the same in every iteration, then T - 1 products
    (batch, depth) x (depth, depth) (s^0 = 0, so the first iteration needs none). A sequence of
    length L computes its input part for all steps in one product. Memory: autograd keeps the T
    states, (batch, T, depth).

    Kernels (`kernel=`): "dense" multiplies the masked dense matrix; "sparse" multiplies a CSR
    matrix holding only the non-zero pattern (trainable and fixed weights), with a hand-written
    backward (transposed CSR product for the state gradient, torch.sparse.sampled_addmm for the
    weight gradient at the pattern only); "auto" takes "sparse" on the CPU when at most
    AUTO_SPARSE_DENSITY of the weight space is non-zero, else "dense" (the CPU crossover measured
    in benchmarks/INN_KERNELS.md; no other device has been measured, so they use "dense"). Both give
    the same outputs and gradients up to float rounding.

    Args:
        inputs: input features per step, >= 1 (Hershey: 2500, MNIST resized to 50 x 50).
        depth: state units (hidden + outputs), >= outputs.
        outputs: output units, the last `outputs` rows of the state, >= 1.
        mask: bool (depth, inputs + depth), True = trainable; None: all trainable (the dense
            RNN, eq 2.11). Build one with `layered_mask`, `random_mask`, `block_exchange`.
        activation: hidden activation: "relu" (default, the thesis's), "leaky_relu", "tanh",
            "sigmoid", "linear", or an elementwise activation module such as nn.ELU().
        output_activation: activation of the output rows; None (default) = `activation`.
        iterations: T for static input when `passes` / `forward` get none, >= 1 (default 2, the
            thesis's minimum for the gradient to reach the whole weight space, sec 3.4.4).
        bias: True / "state" (default): one trainable bias per state row; "all": the same, and
            the input rows' biases counted as the authors' code counts them (see above);
            False / "none": no bias.
        fixed: optional untrainable weights (depth, inputs + depth) added to W * M, e.g.
            `identity_blocks(...)` for persistent memory; zero wherever the mask is True.
        init: "linear" (default), "kaiming" or "normal" (the authors'), see above.
        init_std: standard deviation of init="normal" (> 0; None: 0.05, the authors'); only
            with init="normal".
        kernel: "dense" | "sparse" | "auto" (default).
        generator: the torch.Generator the initial values are drawn from (None: torch's global
            one), e.g. the one a mask was drawn from, to seed a network without touching the
            global generator. A mask must not be drawn from the stream the init then reads: the
            weights would follow the mask (with init="linear" and R = 0.5 every trainable weight
            would be negative: trainable means r < R, the weight is (2r - 1) / sqrt(fan_in)).
            `random_mask` and `block_exchange` draw from a stream of their own for that reason.
        device, dtype: of the parameters, as for nn.Linear.
    """

    def __init__(
        self,
        inputs: int,
        depth: int,
        outputs: int,
        mask: Tensor | None = None,
        activation: str | nn.Module = "relu",
        *,
        output_activation: str | nn.Module | None = None,
        iterations: int = 2,
        bias: bool | str = True,
        fixed: Tensor | None = None,
        init: str = "linear",
        init_std: float | None = None,
        kernel: str = "auto",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        check_int("inputs", inputs, 1)
        check_int("depth", depth, 1)
        check_int("outputs", outputs, 1)
        if outputs > depth:
            raise ValueError(
                f"the outputs are the last rows of the state, so outputs <= depth; got outputs={outputs}, depth={depth}"
            )
        check_int("iterations", iterations, 1)
        self.bias_rows = bias_rows(bias)  # "state" | "all" | "none"
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(map(repr, INITS))}")
        self.init_std = checked_init_std(init, init_std)
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(map(repr, KERNELS))}")
        shape = (depth, inputs + depth)
        mask = torch.ones(shape, dtype=torch.bool) if mask is None else checked_mask(mask, shape)
        factory = {"device": device, "dtype": dtype}

        self.inputs, self.depth, self.outputs = int(inputs), int(depth), int(outputs)
        self.iterations = int(iterations)
        self.probe_unroll: int | None = None  # set by ln.unrolled / ln.severed(loops=True)
        self.kernel = kernel
        self.init = init
        self.activation = activation_module(activation, "activation")
        self.output_activation = (
            None if output_activation is None else activation_module(output_activation, "output_activation")
        )
        self.weight = nn.Parameter(torch.empty(shape, **factory))  # (depth, inputs + depth)
        if self.bias_rows != "none":
            self.bias = nn.Parameter(torch.empty(depth, **factory))  # (depth,): the state rows' biases
        else:
            self.register_parameter("bias", None)
        self.register_buffer("mask", mask.to(device=self.weight.device).clone())
        if fixed is not None:
            fixed = checked_fixed(fixed, shape, mask).to(device=self.weight.device, dtype=self.weight.dtype)
        self.register_buffer("fixed", fixed)
        self._pattern_cache: tuple | None = None
        self.reset_parameters(generator)

    # -- construction ---------------------------------------------------------------------------

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw the trainable weights (and biases) by `init` from `generator` (None: torch's global
        one); masked weights are set to exactly 0."""
        fan_in = self.mask.sum(1, keepdim=True).clamp(min=1).to(self.weight.dtype)  # (depth, 1)
        g = generator
        if self.init == "normal":
            self.weight.normal_(0.0, self.init_std, generator=g)
            if self.bias is not None:
                self.bias.uniform_(-1, 1, generator=g).mul_((self.inputs + self.depth) ** -0.5)
        elif self.init == "linear":
            bound = fan_in.rsqrt()
            self.weight.uniform_(-1, 1, generator=g).mul_(bound)
            if self.bias is not None:
                self.bias.uniform_(-1, 1, generator=g).mul_(bound.squeeze(1))
        else:
            self.weight.normal_(generator=g).mul_((2 / fan_in).sqrt())
            if self.bias is not None:
                self.bias.zero_()
        self.weight.masked_fill_(~self.mask, 0.0)

    @classmethod
    def rnn(
        cls,
        inputs: int,
        hidden: int,
        outputs: int | None = None,
        *,
        activation: str | nn.Module = "relu",
        output_activation: str | nn.Module | None = None,
        iterations: int = 2,
        bias: bool | str = True,
        init: str = "linear",
        init_std: float | None = None,
        kernel: str = "auto",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> IterativeNetwork:
        """The dense special case, a plain RNN: H^t = ReLU(W^i X^t + W^h H^(t-1) + b) (Hershey eq 2.11).

        The whole weight space trains; W^i = weight[:, :inputs], W^h = weight[:, inputs:]. The
        outputs are the last `outputs` units of H (all of H by default: in the generalised model
        "the distinction between H^t and Y^t becomes purely notational", sec 2.1.4).

        Args:
            inputs: features per step. hidden: units of H. outputs: read-out units (default hidden).
            The rest: as for IterativeNetwork.
        """
        return cls(
            inputs,
            hidden,
            hidden if outputs is None else outputs,
            None,
            activation,
            output_activation=output_activation,
            iterations=iterations,
            bias=bias,
            init=init,
            init_std=init_std,
            kernel=kernel,
            generator=generator,
            device=device,
            dtype=dtype,
        )

    @classmethod
    def from_mlp(cls, mlp: nn.Sequential, *, kernel: str = "auto") -> IterativeNetwork:
        """The iterative network equal to an MLP (Hershey eq 2.10, Fig 2.4 / 2.6).

        `mlp` is an nn.Sequential of nn.Linear layers with one elementwise activation (the same
        one everywhere) between consecutive layers, and optionally one after the last layer. The
        result has the layered mask (`layered_mask(in_features, [out_features of each layer])`),
        the MLP's weights and biases copied into its blocks (same dtype and device), and
        iterations = the number of Linear layers: static input then gives exactly the MLP's output
        (and keeps giving it for more iterations, since every block then sees the exact value of
        the block before). A final activation becomes `output_activation`; a Sequential ending in
        Linear gives linear output rows. Between two Linear layers without an activation the
        hidden activation is linear (then every gap must be without one).

        Raises:
            ValueError: a module other than nn.Linear or a supported elementwise activation,
                two activations in a row, mismatched layer sizes, or different hidden activations.
        """
        linears, hidden_act, final_act = mlp_layers(mlp)
        sizes = [m.out_features for m in linears]
        inputs = linears[0].in_features
        first = linears[0].weight
        net = cls(
            inputs,
            sum(sizes),
            sizes[-1],
            layered_mask(inputs, sizes),
            hidden_act,
            output_activation=final_act,
            iterations=len(linears),
            bias=any(m.bias is not None for m in linears),
            kernel=kernel,
            device=first.device,
            dtype=first.dtype,
        )
        with torch.no_grad():
            net.weight.zero_()
            if net.bias is not None:
                net.bias.zero_()
            row, cols = 0, (0, inputs)
            for m, n in zip(linears, sizes):
                net.weight[row : row + n, cols[0] : cols[1]] = m.weight
                if m.bias is not None:
                    net.bias[row : row + n] = m.bias
                cols = (inputs + row, inputs + row + n)
                row += n
        return net

    # -- what it holds ----------------------------------------------------------------------------

    @property
    def trainable_weights(self) -> int:
        """Trainable weights: the mask's ones (weight-space entries; biases and fixed weights not counted)."""
        return int(self.mask.sum())

    @property
    def trainable_parameters(self) -> int:
        """Trainable weights plus biases, counted by the `bias` rule: + depth ("state"), + inputs +
        depth ("all": the authors' count, count_nonzero(mask) + out_features of the square matrix),
        + 0 ("none"). `trainable_weights` is the count without biases."""
        return self.trainable_weights + bias_count(self.inputs, self.depth, self.bias_rows)

    @property
    def density(self) -> float:
        """Fraction of the weight space that is trainable (the thesis's "sparsity" R)."""
        return self.trainable_weights / self.mask.numel()

    def effective_weight(self) -> Tensor:
        """The matrix the forward pass applies: W * M (+ fixed), (depth, inputs + depth)."""
        w = torch.where(self.mask, self.weight, 0.0)
        return w if self.fixed is None else w + self.fixed

    # -- forward ----------------------------------------------------------------------------------

    def forward(self, x: Tensor, iterations: int | None = None) -> Tensor:
        """The output of the last iteration, (batch, outputs). x and iterations as in `steps`."""
        return self.steps(x, iterations)[:, -1]

    def steps(self, x: Tensor, iterations: int | None = None) -> Tensor:
        """The outputs y^1 .. y^T of every iteration, stacked: (batch, T, outputs).

        Args:
            x: (batch, inputs): static input, re-inserted before every iteration; T = iterations,
                else `planned_passes` (probe_unroll under ln.unrolled / ln.severed, else
                self.iterations). (batch, L, inputs): a sequence, one step per iteration; T = L.
            iterations: T for static input (>= 1); for a sequence None or L.
        """
        return torch.stack(self.passes(x, iterations), 1)

    def states(self, x: Tensor, iterations: int | None = None) -> Tensor:
        """The whole state s^1 .. s^T of every iteration, (batch, T, depth); as `steps` otherwise."""
        x, steps = self._checked_input(x, iterations)
        return torch.stack(first(self._run(x), steps), 1)

    # -- the loop protocol (loopnets.core.protocol) -------------------------------------------------

    def passes(self, x: Tensor, iterations: int | None = None) -> list[Tensor]:
        """The outputs y^1 .. y^T of every iteration, one (batch, outputs) tensor each; x and
        iterations as in `steps` (which stacks them)."""
        x, steps = self._checked_input(x, iterations)
        rows = slice(self.depth - self.outputs, None)
        return [s[:, rows] for s in first(self._run(x), steps)]

    @property
    def planned_passes(self) -> int:
        """Iterations a static input runs without `iterations`: probe_unroll if set, else iterations."""
        return self.iterations if self.probe_unroll is None else self.probe_unroll

    def iterate(self, x: Tensor) -> Iterator[Tensor]:
        """y^1, y^2, ... one (batch, outputs) tensor at a time: without end for static input, L for a sequence."""
        sequence = isinstance(x, Tensor) and x.dim() == 3  # static input: any number of iterations
        x, _ = self._checked_input(x, x.shape[1] if sequence else 1)
        rows = slice(self.depth - self.outputs, None)
        return (s[:, rows] for s in self._run(x))

    def output_after(self, outputs: Sequence[Tensor]) -> Tensor:
        """The network's output after len(outputs) iterations: the last iteration's output."""
        if not outputs:
            raise ValueError("output_after needs the outputs of at least one iteration; got none")
        return outputs[-1]

    def _run(self, x: Tensor) -> Generator[Tensor, None, None]:
        """s^1, s^2, ... each (batch, depth): without end for static input, one per step for a sequence."""
        steps = count() if x.dim() == 2 else range(x.shape[1])
        if self.kernel_on(x.device) == "sparse":
            yield from self._run_sparse(x, steps)
            return
        w = self.effective_weight()
        w_x, w_s = w[:, : self.inputs], w[:, self.inputs :]  # (depth, inputs), (depth, depth)
        u = F.linear(x, w_x, self.bias)  # (batch, depth) or (batch, L, depth): the input part, once
        s = None
        for t in steps:
            z = u if x.dim() == 2 else u[:, t]
            if s is not None:  # s^0 = 0 adds nothing
                z = torch.addmm(z, s, w_s.t())
            s = self._activate(z, dim=1)  # (batch, depth)
            yield s

    def _run_sparse(self, x: Tensor, steps: Iterable[int]) -> Generator[Tensor, None, None]:
        # Column layout: the state is (depth, batch), so a CSR matrix multiplies from the left.
        px, ps = self._patterns()
        wx, ws = SparseWeights(px, self._pattern_values(px)), SparseWeights(ps, self._pattern_values(ps))
        if x.dim() == 2:
            u = CSRMatmul.apply(wx.values, wx, x.t())  # (depth, batch)
        else:
            batch, length, _ = x.shape
            flat = x.transpose(0, 1).reshape(length * batch, self.inputs)
            u = CSRMatmul.apply(wx.values, wx, flat.t()).view(self.depth, length, batch)
        if self.bias is not None:
            u = u + self.bias.view(-1, *[1] * (u.dim() - 1))
        s = None
        for t in steps:
            z = u if x.dim() == 2 else u[:, t]
            if s is not None:
                z = z + CSRMatmul.apply(ws.values, ws, s)
            s = self._activate(z, dim=0)  # (depth, batch)
            yield s.t()

    def _activate(self, z: Tensor, dim: int) -> Tensor:
        if self.output_activation is None:
            return self.activation(z)
        hidden, out = z.split([self.depth - self.outputs, self.outputs], dim=dim)
        return torch.cat([self.activation(hidden), self.output_activation(out)], dim=dim)

    def _checked_input(self, x: Tensor, iterations: int | None) -> tuple[Tensor, int]:
        if not isinstance(x, Tensor) or x.dim() not in (2, 3) or x.shape[-1] != self.inputs:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"IterativeNetwork(inputs={self.inputs}) takes x of shape (batch, {self.inputs}) (static input, "
                f"re-inserted every iteration) or (batch, L, {self.inputs}) (a sequence, one step per iteration); "
                f"got {got}"
            )
        if x.dim() == 3:
            length = x.shape[1]
            if length < 1:
                raise ValueError("a sequence input needs at least one step; got L=0")
            if iterations is not None and iterations != length:
                raise ValueError(
                    f"a sequence input runs one iteration per step: x has L={length} steps, so iterations must be "
                    f"None or {length}; got {iterations!r}"
                )
            if iterations is None and self.probe_unroll not in (None, length):
                raise ValueError(
                    f"ln.unrolled / ln.severed set this network to {self.probe_unroll} iterations, but a sequence "
                    f"input runs one iteration per step (L={length}); probe it with static input (batch, "
                    f"{self.inputs}) or a sequence of {self.probe_unroll} steps"
                )
            return x, length
        if iterations is None:
            return x, self.planned_passes
        check_int("iterations", iterations, 1)
        return x, int(iterations)

    # -- sparse kernel ------------------------------------------------------------------------------

    def kernel_on(self, device: torch.device) -> str:
        """The kernel ("dense" or "sparse") a forward call on `device` uses; resolves kernel="auto"."""
        if self.kernel != "auto":
            return self.kernel
        if device.type != "cpu":
            return "dense"
        support = self.mask if self.fixed is None else self.mask | (self.fixed != 0)
        return "sparse" if support.sum() <= AUTO_SPARSE_DENSITY * support.numel() else "dense"

    def _patterns(self) -> tuple[Pattern, Pattern]:
        """CSR patterns of the input part and the state part, cached until the mask or fixed changes."""
        key = tuple((t.data_ptr(), t._version) for t in (self.mask, self.fixed) if t is not None)
        if self._pattern_cache is None or self._pattern_cache[0] != key:
            support = self.mask if self.fixed is None else self.mask | (self.fixed != 0)
            parts = (
                Pattern(support, self.mask, self.fixed, 0, self.inputs),
                Pattern(support, self.mask, self.fixed, self.inputs, self.inputs + self.depth),
            )
            self._pattern_cache = (key, parts)
        return self._pattern_cache[1]

    def _pattern_values(self, p: Pattern) -> Tensor:
        values = self.weight.flatten()[p.flat]  # (nnz,)
        if p.fixed_values is None:
            return values
        return torch.where(p.trainable, values, p.fixed_values.to(values.dtype))

    def extra_repr(self) -> str:
        return (
            f"inputs={self.inputs}, depth={self.depth}, outputs={self.outputs}, "
            f"trainable_weights={self.trainable_weights} (density {self.density:.3g}), iterations={self.iterations}, "
            f"bias={self.bias_rows!r}, fixed={self.fixed is not None}, kernel={self.kernel!r}"
        )
