"""Loopy CNNs (Caswell, Shen and Wang 2016, "Loopy Neural Nets"): the Vanilla, Loopy, Deep, +layer
and xlayer families of their CIFAR-10 table (Fig 8) and their MNIST model (Fig 4).

Every family is a stack of 3x3 "same" convolutions (stride 1, padding 1), each followed by batch
norm and a ReLU, read by one linear classifier on the flattened last feature map (no pooling, no
hidden FC; the model returns logits, the softmax belongs to the loss):

- `vanilla`: conv 64 -> conv 64 -> conv 3 -> FC. conv 3 outputs `in_channels` channels so that a
  loop can feed it back into the image.
- `loopy`: the same stack as one loop from conv 3 back to the input, additive merge, run
  `unroll` = k times with the conv weights tied. Pass 1 sees the image alone; pass t >= 2 sees
  image + conv 3's output of pass t - 1 (Caswell's code adds nothing in unroll 0, which is the same
  as adding zeros). The FC reads the last pass only.
- `deep`: Loopy unrolled with untied weights: k copies of the conv stack (3k convs), the image
  merges between the copies kept (the code's `scq_untied`, the paper's Fig 7).
- `plus_layer` / `times_layer` ("+layer", "xlayer"): two convs (64, 64) in the main stack and a
  conv with `in_channels` filters in the loop path, merged into the image by addition /
  multiplication; the FC reads conv 2 (64 channels) of the last pass.
- `mnist_loopy`: 16 -> 8 -> 1 filters on 1 x 28 x 28 digits, loop 3 -> 1 via addition.

Loopy against Deep at the same k is the matched-effective-depth comparison (tied vs untied
weights at equal depth; the recurrence-vs-depth protocol of Schwarzschild et al.); `deep_from_loopy`
gives the untied model that starts from a Loopy's weights, and `parameter_counts` the table.

Choices, from the authors' code (`/work/shared/reference/caswell-code-facts.md`):
- Batch norm after every conv (conv with bias -> BN -> ReLU), none on the FC (`batch_norm=True`).
- `bn_per_unroll=True`: in the code every unroll has its own BN layer (own gamma / beta and own
  running statistics) while the conv weights are tied. With False one BN per conv is shared by
  all passes. Per-unroll BN adds 2 x (channels) parameters per conv and unroll, so Loopy has the
  same conv + FC parameters as Vanilla but not the same total (`parameter_counts` reports both).
  Evaluated with more passes than it was built for (`ln.unrolled(model, k)`), a per-pass loop
  reuses its last pass's modules (BN statistics) for the extra passes.
- `init="glorot"`: every conv and FC weight ~ Glorot-uniform with the ReLU gain sqrt(2) (Lasagne's
  `GlorotUniform('relu')`, FC included), biases 0, BN gamma 1 and beta 0. `init="pytorch"` keeps
  PyTorch's default initialisation.
Deviations: the BN is `torch.nn.BatchNorm2d` with PyTorch's eps (1e-5 added to the variance) and
running-statistics momentum 0.1; the code added eps = 0.01 to the standard deviation and kept an
exponential average with weight 0.5. The code trained in float64; we follow the model's dtype.

Loops are `ln.Loop` where Loop suffices (Loopy and the MNIST model with `bn_per_unroll=False`).
Everything else uses `PassLoop`, a loop whose passes may use different modules: Loop calls one
body (and one feedback module) in every pass and requires the body to keep its input's shape, so
it cannot hold per-unroll BN around tied convs, untied Deep copies, or a loop layer whose output
(3 channels) differs from the body's (64). PassLoop follows Loop's semantics (pass 1 receives x,
pass t >= 2 receives merge(feedback(h), x), the last pass is returned, `probe_unroll` for
`ln.severed` / `ln.unrolled`) and trains with exact backprop through all passes, like `ln.Tied`.

Public: vanilla, loopy, deep, deep_from_loopy, loop_layer, plus_layer, times_layer, mnist_loopy,
parameter_counts, ParameterCounts, LoopyCNN, PassLoop, FAMILIES, INITS.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import count, islice

import torch
from torch import Tensor, nn

from loopnets.core.modes import Backprop, Tied
from loopnets.core.loop import MERGES, Loop, check_unroll
from loopnets.core.protocol import FeedbackLoop, planned

__all__ = [
    "FAMILIES",
    "INITS",
    "LoopyCNN",
    "PassLoop",
    "vanilla",
    "loopy",
    "deep",
    "deep_from_loopy",
    "loop_layer",
    "plus_layer",
    "times_layer",
    "mnist_loopy",
    "parameter_counts",
    "ParameterCounts",
]

FAMILIES = ("vanilla", "loopy", "deep", "plus_layer", "times_layer", "loop_layer")  # loop_layer: another merge
INITS = ("glorot", "pytorch")
LOOP_LAYER = "loop"  # name of the conv in the loop path of the +layer / xlayer models


# ----------------------------------------------------------------------------- modules


class PassLoop(nn.Module):
    """A loop whose pass t may use its own body and feedback module (Tied backprop through all passes).

    Pass 1 receives x; pass t >= 2 receives merge(feedbacks[t - 2](h), x), h the previous pass's
    output (as `ln.Loop`). Pass t (1-based) uses bodies[min(t, len(bodies)) - 1], so one body
    given once is used by every pass. Ties are plain module reuse: per-pass bodies that hold the
    same conv object share its weights (Loopy with per-unroll BN); bodies with their own convs are
    untied (Deep). Memory and time grow linearly with the number of passes.

    Args:
        bodies: per-pass modules, (batch, *in) -> (batch, *out); out may differ from in when a
            feedback module maps it back to x's shape.
        unroll: passes k >= 1 (also the default at inference); at least len(bodies).
        merge: "replace" | "add" | "sub" | "mul" | "mean", as for `ln.Loop`.
        feedbacks: optional per-pass modules for the loop path, used after passes 1..k-1
            (pass t >= 2 uses feedbacks[min(t - 1, len) - 1]); merge(feedback(h), x) must have x's shape.
    """

    def __init__(self, bodies: Sequence[nn.Module], unroll: int, merge: str = "add",
                 feedbacks: Sequence[nn.Module] | None = None):
        super().__init__()
        check_unroll(unroll)
        if merge not in MERGES:
            raise ValueError(f"unknown merge {merge!r}; choose one of {', '.join(MERGES)}")
        if not bodies or len(bodies) > unroll:
            raise ValueError(f"PassLoop needs 1..unroll={unroll} bodies (one per pass at most); got {len(bodies)}")
        if feedbacks is not None and not 1 <= len(feedbacks) <= max(unroll - 1, 1):
            raise ValueError(f"PassLoop needs 1..{max(unroll - 1, 1)} feedback modules (one per loop-back); got {len(feedbacks)}")
        self.bodies = nn.ModuleList(bodies)  # a module held by several entries is registered once
        self.feedbacks = None if feedbacks is None else nn.ModuleList(feedbacks)
        self.unroll = int(unroll)
        self.merge = merge
        self.probe_unroll: int | None = None  # set by ln.unrolled / ln.severed(loops=True)

    def forward(self, x: Tensor, unroll: int | None = None) -> Tensor:
        return self.passes(x, unroll)[-1]

    def passes(self, x: Tensor, unroll: int | None = None) -> list[Tensor]:
        """The output of every pass (per-iteration readout), k = unroll or `planned_passes`."""
        k = planned(self, unroll)
        check_unroll(k)
        return list(islice(self.iterate(x), k))

    @property
    def planned_passes(self) -> int:
        """Passes a call without a count runs: probe_unroll (ln.unrolled / ln.severed), else unroll."""
        return self.probe_unroll if self.probe_unroll is not None else self.unroll

    def iterate(self, x: Tensor) -> Iterator[Tensor]:
        """The pass outputs one at a time, without end (pass t beyond the bodies reuses the last)."""
        h = None
        for t in count():
            v = x if t == 0 else MERGES[self.merge](self._feed(h, x, t), x)
            h = self.bodies[min(t, len(self.bodies) - 1)](v)
            yield h

    def output_after(self, outputs: Sequence[Tensor]) -> Tensor:
        """The loop's output after len(outputs) passes: the last pass's output."""
        if not outputs:
            raise ValueError("output_after needs the outputs of at least one pass; got none")
        return outputs[-1]

    def _feed(self, h: Tensor, x: Tensor, t: int) -> Tensor:
        """The value fed back after pass t (1-based), checked to have the loop input's shape."""
        fed = h if self.feedbacks is None else self.feedbacks[min(t, len(self.feedbacks)) - 1](h)
        if fed.shape != x.shape:
            raise ValueError(
                f"the loop feeds back a tensor of shape {tuple(fed.shape)} into an input of shape "
                f"{tuple(x.shape)}; the last layer of the loop path must output {tuple(x.shape[1:])} per sample"
            )
        return fed

    def extra_repr(self) -> str:
        return f"unroll={self.unroll}, merge={self.merge!r}, bodies={len(self.bodies)}"


class LoopyCNN(nn.Module):
    """A conv stack (`features`: plain, `ln.Loop` or `PassLoop`) read by one linear classifier.

    Build it with a family function (`vanilla`, `loopy`, ...). `layer_names` lists the convs that
    `layer_modules` (and `loopnets.viz.loopy`) address: "conv1", "conv2", ... in the main stack and
    "loop" for the conv in the loop path.

    Args:
        features: (batch, C, H, W) -> (batch, C', H, W), the last pass's feature map.
        head: nn.Linear(C' * H * W, classes).
        family: one of FAMILIES.
        layer_names: names of the convs in each pass (main stack first, then "loop" if any).
    """

    def __init__(self, features: nn.Module, head: nn.Linear, family: str, layer_names: Sequence[str]):
        super().__init__()
        self.features = features
        self.head = head
        self.family = family
        self.layer_names = tuple(layer_names)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))  # (batch, classes) logits

    def passes(self, x: Tensor) -> list[Tensor]:
        """Logits read from every pass's feature map (the trained FC reads only the last one)."""
        if not isinstance(self.features, FeedbackLoop):
            return [self(x)]
        return [self.head(h.flatten(1)) for h in self.features.passes(x)]

    def around_loop(self, x: Tensor, logits: bool = False) -> tuple[FeedbackLoop, Tensor, Callable[[Tensor], Tensor]]:
        """(features loop, x, head on flattened feature maps): the `LoopHost` hook for
        `ln.pass_outputs` / `ln.early_exit`. The model returns logits, so `logits` changes nothing."""
        if not isinstance(self.features, FeedbackLoop):
            raise ValueError(f"per-pass outputs need a loop; this {self.family} model has none (use loopy or +layer)")
        return self.features, x, lambda y: self.head(y.flatten(1))

    @property
    def unroll(self) -> int:
        """Passes the model runs by default (1 for Vanilla)."""
        return getattr(self.features, "unroll", 1)

    def pass_modules(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """(bodies, feedbacks): the modules pass t uses, as stored (index min(t, len) - 1)."""
        f = self.features
        if isinstance(f, PassLoop):
            return list(f.bodies), [] if f.feedbacks is None else list(f.feedbacks)
        if isinstance(f, Loop):
            return f.copies, [] if f.feedback is None else [f.feedback]
        return [f], []

    def layer_modules(self, layer: str) -> list[nn.Conv2d]:
        """The distinct conv modules computing `layer`, in pass order (one if tied, k if untied)."""
        if layer not in self.layer_names:
            raise ValueError(f"unknown layer {layer!r}; this {self.family} model has layers {', '.join(self.layer_names)}")
        bodies, feedbacks = self.pass_modules()
        if layer == LOOP_LAYER:
            convs = [fb.get_submodule("conv") for fb in feedbacks]
        else:
            convs = [body.get_submodule(f"{layer}.conv") for body in bodies]
        return list({id(c): c for c in convs}.values())

    def extra_repr(self) -> str:
        return f"family={self.family!r}, unroll={self.unroll}"


# ----------------------------------------------------------------------------- building blocks


def _block(conv: nn.Conv2d, batch_norm: bool) -> nn.Sequential:
    """conv (with bias) -> BN -> ReLU, as the code's `batch_norm(conv2d)` wrapper."""
    bn = nn.BatchNorm2d(conv.out_channels) if batch_norm else nn.Identity()
    return nn.Sequential(OrderedDict(conv=conv, bn=bn, relu=nn.ReLU()))


def _conv(in_channels: int, out_channels: int, init: str) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)  # 3x3 "same", stride 1
    _init_(conv, init)
    return conv


@torch.no_grad()
def _init_(module: nn.Conv2d | nn.Linear, init: str) -> None:
    if init == "glorot":  # Lasagne GlorotUniform('relu'): limit sqrt(2) * sqrt(6 / (fan_in + fan_out))
        nn.init.xavier_uniform_(module.weight, gain=nn.init.calculate_gain("relu"))
        nn.init.zeros_(module.bias)


def _check(in_channels, classes, image_size, filters, init, batch_norm, bn_per_unroll) -> tuple[int, int]:
    for name, value in (("in_channels", in_channels), ("classes", classes), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    pair = (filters, filters) if isinstance(filters, int) else tuple(filters)
    if len(pair) != 2 or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in pair):
        raise ValueError(f"filters must be an integer >= 1 or a pair (conv 1, conv 2) of them, e.g. 64 or (16, 8); got {filters!r}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    for name, value in (("batch_norm", batch_norm), ("bn_per_unroll", bn_per_unroll)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False; got {value!r}")
    return pair


def _head(channels: int, image_size: int, classes: int, init: str) -> nn.Linear:
    head = nn.Linear(channels * image_size * image_size, classes)
    _init_(head, init)
    return head


def _stack(channels: Sequence[int], init: str, batch_norm: bool, convs: Sequence[nn.Conv2d] | None = None) -> nn.Sequential:
    """conv1 -> conv2 -> ... over `channels` (in, out1, out2, ...); reuses `convs` (tied) when given."""
    if convs is None:
        convs = [_conv(a, b, init) for a, b in zip(channels[:-1], channels[1:])]
    return nn.Sequential(OrderedDict((f"conv{i + 1}", _block(c, batch_norm)) for i, c in enumerate(convs)))


def _looped(channels: Sequence[int], unroll: int, merge: str, *, tied: bool, init: str, batch_norm: bool,
            bn_per_unroll: bool, backprop: Backprop | None, loop_channels: tuple[int, int] | None) -> nn.Module:
    """The looped conv stack: `ln.Loop` when it suffices, otherwise a `PassLoop`."""
    check_unroll(unroll)
    per_pass = bn_per_unroll and batch_norm  # without BN there is nothing per-unroll to keep apart
    if tied and not per_pass and loop_channels is None:
        return Loop(_stack(channels, init, batch_norm), unroll=unroll, backprop=backprop, merge=merge)
    if backprop is not None and backprop != Tied():  # only the one exact mode
        raise ValueError(
            f"backprop={backprop!r} needs one body for all passes (ln.Loop); this model has per-pass modules "
            "(per-unroll BN, untied copies or a loop layer), which train with exact backprop through all passes "
            "(ln.Tied). Use backprop=ln.Tied(), or bn_per_unroll=False for a Loopy model"
        )
    first = _stack(channels, init, batch_norm)
    if tied and not per_pass:
        bodies = [first]
    elif tied:  # the same conv objects, a new BN per pass
        shared = [block.conv for block in first]
        bodies = [first] + [_stack(channels, init, batch_norm, convs=shared) for _ in range(unroll - 1)]
    else:
        bodies = [first] + [_stack(channels, init, batch_norm) for _ in range(unroll - 1)]
    feedbacks = None
    if loop_channels is not None:
        loop_conv = _conv(*loop_channels, init)
        feedbacks = [_block(loop_conv, batch_norm)]
        if per_pass:  # one BN per loop-back; the code builds the loop layer after unrolls 1..k-1 only
            feedbacks += [_block(loop_conv, batch_norm) for _ in range(unroll - 2)]
    return PassLoop(bodies, unroll=unroll, merge=merge, feedbacks=feedbacks)


# ----------------------------------------------------------------------------- families


def vanilla(in_channels: int = 3, classes: int = 10, image_size: int = 32, filters: int | tuple[int, int] = 64, *,
            batch_norm: bool = True, init: str = "glorot") -> LoopyCNN:
    """Caswell's Vanilla (Fig 5): conv `filters` -> conv `filters` -> conv `in_channels` -> FC, no loop.

    Args:
        in_channels: image channels C (3 for CIFAR-10, 1 for MNIST); conv 3 has C filters.
        classes: FC outputs (logits).
        image_size: height = width S of the input, (batch, C, S, S).
        filters: filters of conv 1 and conv 2, one number or a pair.
        batch_norm: BN after every conv (the code's `use_batchnorm=True`).
        init: "glorot" (the code's) or "pytorch".
    """
    f1, f2 = _check(in_channels, classes, image_size, filters, init, batch_norm, True)
    features = _stack((in_channels, f1, f2, in_channels), init, batch_norm)
    return LoopyCNN(features, _head(in_channels, image_size, classes, init), "vanilla", ("conv1", "conv2", "conv3"))


def loopy(in_channels: int = 3, classes: int = 10, image_size: int = 32, filters: int | tuple[int, int] = 64, *,
          unroll: int = 3, merge: str = "add", backprop: Backprop | None = None, bn_per_unroll: bool = True,
          batch_norm: bool = True, init: str = "glorot") -> LoopyCNN:
    """Caswell's Loopy (Fig 6): Vanilla's stack with a loop from conv 3 back to the input, k passes.

    The conv weights are tied (one conv object per layer), so the conv and FC parameters equal
    Vanilla's. With `bn_per_unroll` (default, as the code) every pass has its own BN.

    Args:
        unroll: passes k (the paper's k = 3); 1 is Vanilla.
        merge: "add" (the paper's), "mul", ... as for `ln.Loop`.
        backprop: `ln.Tied()` (default); other modes need `bn_per_unroll=False` (one body for `ln.Loop`).
        bn_per_unroll: a BN (gamma, beta, running statistics) per pass (True, a `PassLoop`) or one
            shared by all passes (False, an `ln.Loop`); without batch_norm it has no effect.
        in_channels, classes, image_size, filters, batch_norm, init: as `vanilla`.
    """
    f1, f2 = _check(in_channels, classes, image_size, filters, init, batch_norm, bn_per_unroll)
    features = _looped((in_channels, f1, f2, in_channels), unroll, merge, tied=True, init=init,
                       batch_norm=batch_norm, bn_per_unroll=bn_per_unroll, backprop=backprop, loop_channels=None)
    return LoopyCNN(features, _head(in_channels, image_size, classes, init), "loopy", ("conv1", "conv2", "conv3"))


def deep(in_channels: int = 3, classes: int = 10, image_size: int = 32, filters: int | tuple[int, int] = 64, *,
         unroll: int = 3, merge: str = "add", batch_norm: bool = True, init: str = "glorot") -> LoopyCNN:
    """Caswell's Deep (Fig 7): Loopy unrolled k times with untied weights (3k convs), merges kept.

    Same depth and merges as Loopy; k times its conv parameters (each copy initialised on its own,
    as the code's `tie_weights=False`). Its layers keep Loopy's names: "conv1" of pass t is copy t's.

    Args: as `loopy`.
    """
    f1, f2 = _check(in_channels, classes, image_size, filters, init, batch_norm, True)
    features = _looped((in_channels, f1, f2, in_channels), unroll, merge, tied=False, init=init,
                       batch_norm=batch_norm, bn_per_unroll=True, backprop=None, loop_channels=None)
    return LoopyCNN(features, _head(in_channels, image_size, classes, init), "deep", ("conv1", "conv2", "conv3"))


def loop_layer(in_channels: int = 3, classes: int = 10, image_size: int = 32, filters: int | tuple[int, int] = 64, *,
               unroll: int = 3, merge: str = "add", bn_per_unroll: bool = True, batch_norm: bool = True,
               init: str = "glorot") -> LoopyCNN:
    """Caswell's loop with parameters: conv 1 -> conv 2 in the main stack, conv 2 -> loop conv -> merge into the image.

    The loop conv (3x3, `in_channels` filters, BN, ReLU; layer name "loop") runs after passes 1..k-1
    only and is tied across them. The FC reads conv 2's `filters[1]` channels of the last pass, so
    the FC is `filters[1] / in_channels` times Vanilla's (21x for CIFAR: about 697k parameters
    against Vanilla's 71k; the paper's "same number of parameters" holds for the convs only).

    Args: as `loopy`; merge "add" is the paper's "+layer", "mul" its "xlayer".
    """
    f1, f2 = _check(in_channels, classes, image_size, filters, init, batch_norm, bn_per_unroll)
    features = _looped((in_channels, f1, f2), unroll, merge, tied=True, init=init, batch_norm=batch_norm,
                       bn_per_unroll=bn_per_unroll, backprop=None, loop_channels=(f2, in_channels))
    family = {"add": "plus_layer", "mul": "times_layer"}.get(merge, "loop_layer")
    return LoopyCNN(features, _head(f2, image_size, classes, init), family, ("conv1", "conv2", LOOP_LAYER))


def plus_layer(in_channels: int = 3, classes: int = 10, image_size: int = 32, filters: int | tuple[int, int] = 64, *,
               unroll: int = 3, bn_per_unroll: bool = True, batch_norm: bool = True, init: str = "glorot") -> LoopyCNN:
    """Caswell's "+layer": `loop_layer` with an additive merge."""
    return loop_layer(in_channels, classes, image_size, filters, unroll=unroll, merge="add",
                      bn_per_unroll=bn_per_unroll, batch_norm=batch_norm, init=init)


def times_layer(in_channels: int = 3, classes: int = 10, image_size: int = 32, filters: int | tuple[int, int] = 64, *,
                unroll: int = 3, bn_per_unroll: bool = True, batch_norm: bool = True, init: str = "glorot") -> LoopyCNN:
    """Caswell's "xlayer": `loop_layer` with a multiplicative merge (image * loop conv output)."""
    return loop_layer(in_channels, classes, image_size, filters, unroll=unroll, merge="mul",
                      bn_per_unroll=bn_per_unroll, batch_norm=batch_norm, init=init)


def mnist_loopy(unroll: int = 3, *, merge: str = "add", backprop: Backprop | None = None, bn_per_unroll: bool = True,
                batch_norm: bool = True, init: str = "glorot") -> LoopyCNN:
    """Caswell's MNIST model (Fig 4; the code's `mnist_c3_c3_c1_fc+loop`): 1 x 28 x 28 input,
    conv 16 -> conv 8 -> conv 1 (3x3), loop conv 3 -> input via addition, FC 784 -> 10.

    The paper unrolls it 1, 2 and 3 times (`unroll`); 1 is the plain network. Args: as `loopy`.
    """
    return loopy(1, 10, 28, (16, 8), unroll=unroll, merge=merge, backprop=backprop, bn_per_unroll=bn_per_unroll,
                 batch_norm=batch_norm, init=init)


def deep_from_loopy(model: LoopyCNN) -> LoopyCNN:
    """The Deep (untied) model equal to `model` unrolled: pass t gets its own copy of the modules pass t used.

    Every copy starts with `model`'s values, so the forward outputs match exactly (in eval mode,
    and in train mode as long as BN was per unroll; shared BN copies update their running
    statistics separately). The sum of the copies' gradients is the tied model's gradient. Works
    for Loopy, the MNIST model and the loop-layer models; the result is a new model (same dtype,
    device and train / eval mode), `model` is unchanged.
    """
    if not isinstance(model, LoopyCNN) or model.family in ("vanilla", "deep"):
        what = model.family if isinstance(model, LoopyCNN) else type(model).__name__
        raise ValueError(f"deep_from_loopy needs a looped LoopyCNN (loopy, plus_layer, times_layer); got {what}")
    k = model.unroll
    bodies, feedbacks = model.pass_modules()
    merge = model.features.merge
    new_bodies = [copy.deepcopy(bodies[min(t, len(bodies) - 1)]) for t in range(k)]
    new_feedbacks = None
    if feedbacks:  # one copy per loop-back (k = 1: one unused copy, as the source holds)
        new_feedbacks = [copy.deepcopy(feedbacks[min(t, len(feedbacks) - 1)]) for t in range(max(k - 1, 1))]
    features = PassLoop(new_bodies, unroll=k, merge=merge, feedbacks=new_feedbacks)
    deep_model = LoopyCNN(features, copy.deepcopy(model.head), "deep", model.layer_names)
    return deep_model.train(model.training)


# ----------------------------------------------------------------------------- parameter counts


COLUMNS = ("conv", "bn", "fc", "conv+fc", "total", "bn_stats", "total+bn_stats")


@dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts per model; `str()` prints them as a table.

    Columns: "conv" (conv weights and biases), "bn" (BN gamma and beta), "fc", "conv+fc",
    "total" (all trainable parameters; a tied weight counts once), "bn_stats" (BN running mean and
    variance, not trained) and "total+bn_stats", the number Caswell's code logged as "Model has N
    total parameters" (71,705 / 72,753 / 153,655 for Vanilla / Loopy / Deep on CIFAR-10).
    """

    rows: dict[str, dict[str, int]]

    def __getitem__(self, name: str) -> dict[str, int]:
        return self.rows[name]

    def __str__(self) -> str:
        width = max([5, *(len(n) for n in self.rows)])
        lines = [f"{'model':<{width}}" + "".join(f"{c:>16}" for c in COLUMNS)]
        for name, row in self.rows.items():
            lines.append(f"{name:<{width}}" + "".join(f"{row[c]:>16,}" for c in COLUMNS))
        return "\n".join(lines)


def parameter_counts(models: Mapping[str, nn.Module]) -> ParameterCounts:
    """Count each model's parameters by kind (see `ParameterCounts`); tied parameters count once.

    With the defaults, Loopy's "conv+fc" equals Vanilla's (the loop adds no weights), its "total"
    exceeds it by the per-unroll BN parameters (2 x 131 per extra pass on CIFAR-10), and Deep's
    "conv" is k times Vanilla's.

    Args:
        models: name -> model, e.g. {"vanilla": vanilla(), "loopy": loopy(), "deep": deep()}.
    """
    rows = {}
    for name, model in models.items():
        row = dict.fromkeys(COLUMNS, 0)
        seen: set[int] = set()
        for module in model.modules():
            kind = ("conv" if isinstance(module, nn.modules.conv._ConvNd) else
                    "bn" if isinstance(module, nn.modules.batchnorm._BatchNorm) else
                    "fc" if isinstance(module, nn.Linear) else None)
            for p in module.parameters(recurse=False):
                if id(p) not in seen and kind is not None:
                    seen.add(id(p))
                    row[kind] += p.numel()
            if kind == "bn":
                row["bn_stats"] += sum(b.numel() for b in (module.running_mean, module.running_var) if b is not None)
        row["conv+fc"] = row["conv"] + row["fc"]
        row["total"] = sum(p.numel() for p in model.parameters())
        row["total+bn_stats"] = row["total"] + row["bn_stats"]
        rows[name] = row
    return ParameterCounts(rows)
