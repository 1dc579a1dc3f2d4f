"""Learned halting (PonderNet): a halting head says after every pass how likely the loop is done.

Banino, Balaguer & Blundell 2021, "PonderNet: learning to ponder" (eqs. 1-6); Graves 2016's ACT
is the deterministic ancestor. After pass t a halting head reads the loop's state h_t and gives
lambda_t in (0, 1), the probability of halting at t given that the loop has not halted before:

    p_t = lambda_t prod_{s<t} (1 - lambda_s)      for t < T,
    p_T = prod_{s<T} (1 - lambda_s)               (the remainder on the last pass T = max passes),

so p is a distribution over the passes 1..T for every sample (sums to 1 exactly). Training
minimises the expected loss over the halting pass plus a KL term to a geometric prior,

    L = mean_batch [ sum_t p_t L_t + beta * KL(p || p_G) ],
    p_G(t) = lambda_p (1 - lambda_p)^(t-1) / (1 - (1 - lambda_p)^T),   t = 1..T

(the geometric truncated at T and renormalised, as PonderNet does). Its mean, about 1 / lambda_p
passes when that is well below T, sets how long the network is encouraged to think. Not the
geometric with its tail lumped on the last pass: that lump, (1 - lambda_p)^(T-1), is the largest
single weight whenever lambda_p T is small (0.135 at lambda_p = 0.1, T = 20, against 0.1 on the first
pass), so the KL term itself pulls every sample to run all T passes, and a head trained that way
never halts (measured on prefix sums, issue 18).

At inference a sample stops at the first pass where its cumulative halting probability
sum_{s<=t} p_s reaches `threshold` (0.5: the median of its halting distribution), and the loop stops
when every sample has; `Halting.stop` returns the same `EarlyExit` record as `ln.early_exit`, so
the learned rule and the fixed criteria (state residual, entropy, change) compare side by side.

Why core/ and not training/: the halting head is part of the model (it runs at inference, like
`early_exit`, which lives beside it in core/passes.py), and the loss is a formula on tensors; the
training loop plugs it in as a task (`loopnets.training.halting.fit_halting`).
"""

from __future__ import annotations

import math
from contextlib import closing
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from loopnets.core.loop import check_unroll
from loopnets.core.passes import EarlyExit, split_at_loop


def check_prior(lambda_p: object) -> float:
    """lambda_p, the geometric prior's halting probability per pass, strictly inside (0, 1)."""
    if isinstance(lambda_p, bool) or not isinstance(lambda_p, (int, float)) or not 0.0 < float(lambda_p) < 1.0:
        raise ValueError(
            f"the halting prior lambda_p must be a number strictly between 0 and 1 (the prior's halting probability "
            f"per pass; its mean is about 1 / lambda_p passes, e.g. 0.2 for ~5 passes); got {lambda_p!r}"
        )
    return float(lambda_p)


def halting_distribution(lambdas: Tensor) -> Tensor:
    """p (T, B) from the per-pass halting probabilities lambdas (T, B): p_t = lambda_t prod_{s<t}
    (1 - lambda_s), the remainder prod_{s<T} (1 - lambda_s) on the last pass (lambda_T is not used)."""
    if lambdas.dim() < 1 or len(lambdas) < 1:
        raise ValueError(f"halting probabilities need at least one pass, shape (passes, batch); got {tuple(lambdas.shape)}")
    ones = torch.ones_like(lambdas[:1])
    survive = torch.cumprod(torch.cat([ones, 1 - lambdas[:-1]]), dim=0)  # prod_{s<t} (1 - lambda_s)
    halt = torch.cat([lambdas[:-1], ones])  # the last pass takes everything left
    return survive * halt


def halting_log_distribution(logits: Tensor) -> Tensor:
    """log p (T, B) from the halting head's logits (T, B), lambda = sigmoid(logit), in log space:
    log p_t = log lambda_t + sum_{s<t} log(1 - lambda_s), with log lambda = logsigmoid(z) and
    log(1 - lambda) = logsigmoid(-z). Finite where `halting_distribution` underflows: once a pass's
    lambda rounds to 1, every later p_t is 0 in float32 and the KL term's p log p has an infinite
    gradient there (PonderNet training turns NaN); its log stays finite, about -sum of the logits."""
    if logits.dim() < 1 or len(logits) < 1:
        raise ValueError(f"halting logits need at least one pass, shape (passes, batch); got {tuple(logits.shape)}")
    zeros = torch.zeros_like(logits[:1])
    log_survive = torch.cumsum(torch.cat([zeros, F.logsigmoid(-logits[:-1])]), dim=0)
    log_halt = torch.cat([F.logsigmoid(logits[:-1]), zeros])  # the last pass takes everything left
    return log_survive + log_halt


def geometric_prior(lambda_p: float, passes: int, dtype: torch.dtype | None = None,
                    device: torch.device | None = None) -> Tensor:
    """(passes,) the geometric prior truncated at `passes` and renormalised (sums to 1)."""
    lambda_p = check_prior(lambda_p)
    check_unroll(passes)
    t = torch.arange(passes, dtype=dtype or torch.get_default_dtype(), device=device)
    weights = lambda_p * (1 - lambda_p) ** t
    return weights / weights.sum()


def ponder_loss(losses: Tensor, p: Tensor, lambda_p: float, beta: float, log_p: Tensor | None = None) -> Tensor:
    """mean over the batch of sum_t p_t L_t + beta * KL(p || geometric prior), a scalar.

    Args:
        losses: (T, B) the loss of each sample's prediction after each pass.
        p: (T, B) the halting distribution (`halting_distribution`).
        lambda_p: the prior's halting probability per pass, in (0, 1).
        beta: weight of the KL term, >= 0 (PonderNet uses 0.01).
        log_p: (T, B) log p from the logits (`halting_log_distribution`), for a KL term whose
            gradient stays finite where p underflows to 0 (training uses it: `Halting.loss`);
            None computes the KL from p alone, exact while no p_t is 0.
    """
    lambda_p = check_prior(lambda_p)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (beta >= 0 and math.isfinite(beta)):
        raise ValueError(f"beta (the weight of the KL term) must be a finite number >= 0; got {beta!r}")
    if losses.shape != p.shape:
        raise ValueError(f"losses and halting probabilities need the same shape (passes, batch); "
                         f"got {tuple(losses.shape)} and {tuple(p.shape)}")
    prior = geometric_prior(lambda_p, len(p), p.dtype, p.device)[:, None]  # (T, 1)
    if log_p is None:
        kl = (torch.special.xlogy(p, p) - p * prior.log()).sum(0)  # (B,); 0 log 0 = 0
    else:
        if log_p.shape != p.shape:
            raise ValueError(f"log_p and p need the same shape (passes, batch); got {tuple(log_p.shape)} and "
                             f"{tuple(p.shape)}")
        kl = (p * (log_p - prior.log())).sum(0)  # p = exp(log_p): d/dlog_p -> 0 as p -> 0, never inf * 0
    return ((p * losses).sum(0) + beta * kl).mean()


@dataclass
class Pondered:
    """`Halting.ponder`'s result: outputs T x (B, *out), lambdas (T, B), p (T, B) and its log (T, B)."""

    outputs: list[Tensor]
    lambdas: Tensor
    p: Tensor
    log_p: Tensor


class Halting(nn.Module):
    """A looped model with a PonderNet halting head (see the module docstring).

    Args:
        model: a loop, or a model with one loop that `ln.pass_outputs` takes (an nn.Sequential
            with one top-level loop, an ln.Network with one loop, ...).
        halt: the halting head, the loop's state h_t (B, *state) -> (B,) or (B, 1) logits;
            lambda_t = sigmoid(logit). For conv states, e.g. nn.Sequential(nn.AdaptiveAvgPool1d(1),
            nn.Flatten(), nn.Linear(width, 1)) (`halting_head`).
        max_passes: T, the passes of training and the most at inference (default: the loop's own).
        threshold: inference stops a sample once its cumulative halting probability reaches this, in (0, 1].
    """

    def __init__(self, model: nn.Module, halt: nn.Module, max_passes: int | None = None, threshold: float = 0.5):
        super().__init__()
        if not isinstance(halt, nn.Module):
            raise TypeError(f"halt must be an nn.Module mapping the loop state to one logit per sample; "
                            f"got {type(halt).__name__}")
        if max_passes is not None:
            check_unroll(max_passes)
        self.model, self.halt, self.max_passes = model, halt, max_passes
        self.threshold = check_threshold(threshold)

    def passes_for(self, loop) -> int:
        return self.max_passes if self.max_passes is not None else loop.planned_passes

    def lambdas(self, h: Tensor) -> Tensor:
        """(B,) lambda = sigmoid(halt(h)) for the loop state h (B, *)."""
        return torch.sigmoid(self.logits(h))

    def logits(self, h: Tensor) -> Tensor:
        """(B,) the halting head's logit for the loop state h (B, *)."""
        logit = self.halt(h)
        if logit.dim() == 2 and logit.shape[1] == 1:
            logit = logit[:, 0]
        if logit.shape != h.shape[:1]:
            raise ValueError(f"the halting head must give one logit per sample, shape ({len(h)},) or ({len(h)}, 1); "
                             f"got {tuple(logit.shape)}: end it in a layer with one output, e.g. nn.Linear(width, 1)")
        return logit

    def ponder(self, x: Tensor, passes: int | None = None, logits: bool = False) -> Pondered:
        """Every pass's model output, lambdas and p, with the graph (for `ponder_loss`)."""
        loop, loop_input, after = split_at_loop(self.model, x, logits)
        T = passes if passes is not None else self.passes_for(loop)
        check_unroll(T)
        mode = getattr(loop, "backprop", None)  # ln.Loop's mode; the other loop classes have none
        if mode is not None and loop.training:  # every pass's output, with its graph, for the expected loss
            mode.require("pass_readout", "learned halting (ln.Halting: a loss at every pass)")
        raw = loop.passes(loop_input, T)
        outs = [loop.output_after(raw[:t]) for t in range(1, T + 1)]
        if after is not None:
            outs = list(after(torch.cat(outs)).split(len(loop_input)))
        logits = torch.stack([self.logits(h) for h in raw])  # (T, B)
        log_p = halting_log_distribution(logits)
        return Pondered(outs, torch.sigmoid(logits), log_p.exp(), log_p)

    def loss(self, x: Tensor, y: Tensor, per_sample: Callable[[Tensor, Tensor], Tensor], lambda_p: float,
             beta: float = 0.01, passes: int | None = None) -> Tensor:
        """PonderNet's loss of a batch: `ponder_loss` with L_t = per_sample(output after pass t, y), (B,)."""
        check_prior(lambda_p)
        run = self.ponder(x, passes)
        losses = torch.stack([per_sample(out, y) for out in run.outputs])  # (T, B)
        return ponder_loss(losses, run.p, lambda_p, beta, log_p=run.log_p)

    @torch.no_grad()
    def stop(self, x: Tensor, threshold: float | None = None, max_passes: int | None = None) -> EarlyExit:
        """Inference: each sample exits at the first pass where sum_{s<=t} p_s >= threshold (at the
        last pass otherwise); passes run one at a time until every sample has exited. Returns the
        `EarlyExit` record of `ln.early_exit` with criterion "halting" and values (passes run, B) =
        the cumulative halting probability after each pass."""
        threshold = self.threshold if threshold is None else check_threshold(threshold)
        loop, loop_input, after = split_at_loop(self.model, x, logits=False)
        T = max_passes if max_passes is not None else self.passes_for(loop)
        check_unroll(T)
        batch = len(loop_input)
        exited = torch.zeros(batch, dtype=torch.bool, device=loop_input.device)
        passes = torch.full((batch,), T, dtype=torch.long, device=loop_input.device)
        survive = torch.ones(batch, dtype=loop_input.dtype, device=loop_input.device)  # prod_{s<t} (1 - lambda_s)
        cumulative, values, raw, chosen = 0.0, [], [], None
        with closing(loop.iterate(loop_input)) as stream:
            for t, h in zip(range(T), stream):
                raw.append(h)
                y = loop.output_after(raw)
                lam = self.lambdas(h) if t < T - 1 else torch.ones_like(survive)
                cumulative = cumulative + survive * lam
                survive = survive * (1 - lam)
                values.append(cumulative)
                chosen = y.clone() if chosen is None else chosen
                leaving = ~exited & (cumulative >= threshold) if t < T - 1 else ~exited
                chosen[leaving] = y[leaving]
                passes[leaving] = t + 1
                exited |= leaving
                if bool(exited.all()):
                    break
        output = chosen if after is None else after(chosen)
        return EarlyExit(output, passes, "halting", threshold, torch.stack(values))

    def forward(self, x: Tensor) -> Tensor:
        """The output at each sample's halting pass (`stop`); train with `loss`, not through this."""
        return self.stop(x).output


def check_threshold(threshold: object) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"the halting threshold must be a number in (0, 1] (a sample stops once its cumulative "
                         f"halting probability reaches it; 0.5 is the median); got {threshold!r}")
    return float(threshold)


POOLS = ("mean", "min")


class PositionMin(nn.Module):
    """(B, 1, *S) per-position logits -> (B,) their minimum: the sample halts only when its least
    ready position would."""

    def forward(self, z: Tensor) -> Tensor:
        return z.flatten(1).amin(1)


def halting_head(width: int, dim: int = 1, pool: str = "mean") -> nn.Module:
    """A halting head for a conv state (B, width, *S) (dim 0: a vector state (B, width)).

    pool "mean": global average pool, then one linear logit. "min": one logit per position (a
    convolution of kernel 3, ReLU, a 1 x 1 convolution to one channel), the sample's logit their
    minimum, so it halts only once every position is ready; a mean over positions dilutes one
    unfinished position by the size, so a head trained on short inputs halts too early on long ones,
    and the minimum does not (conv states only). The hidden layer lets a position compare itself with
    its neighbours: a single 1 x 1 convolution could not tell a finished position from a waiting one
    on prefix sums (its halting pass did not grow with the length, issue 18)."""
    if dim not in (0, 1, 2):
        raise ValueError(f"dim must be 0 (vector state), 1 or 2 (conv states); got {dim!r}")
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}; got {pool!r}")
    if pool == "min":
        if dim == 0:
            raise ValueError("pool='min' takes the minimum over positions, which a vector state (dim 0) has none "
                             "of: use pool='mean' (a linear logit of the state)")
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        return nn.Sequential(conv(width, width, 3, padding=1), nn.ReLU(), conv(width, 1, 1), PositionMin())
    avg = {0: [], 1: [nn.AdaptiveAvgPool1d(1), nn.Flatten()], 2: [nn.AdaptiveAvgPool2d(1), nn.Flatten()]}
    return nn.Sequential(*avg[dim], nn.Linear(width, 1))
