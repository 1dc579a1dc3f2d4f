"""The thinking family's config schema: `[model.thinking]`, its variants' keys, their expansion.

Networks that think longer (issue 18, `loopnets.models.thinking`): DeepThinking's recurrent conv
nets with recall, their feedforward baseline and the looped transformer, trained on small
algorithmic instances (`loopnets.data.algorithmic`: prefix sums, mazes) and tested with more
passes on larger ones. Settings in `[model.thinking]`; each `[[variants]]` table overrides any of
VARIANT_KEYS (one value each, no lists: a thinking variant is one network).

    [model]
    family = "thinking"
    [model.thinking]
    task = "prefix_sums"          # prefix_sums | mazes
    train_size = 32               # bits (prefix sums) or maze side (odd)
    test_sizes = [32, 128, 512]
    test_passes = [10, 50, 200]
    [[variants]]
    name = "recall-progressive"
    recall = "concat"             # concat | add | none
    backprop = "progressive"      # progressive | tied | truncated
    alpha = 1.0
    [[variants]]
    name = "halting"
    backprop = "tied"
    halting = true                # PonderNet: halting_prior, halting_beta, halting_max_passes

How the runs train and what they record: `loopnets.models.thinking.experiments`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Union

from loopnets.data.algorithmic import MIN_BITS, MIN_MAZE, check_bits, check_maze_size
from loopnets.experiments.schema import ConfigError

FAMILY = "thinking"
TASKS = ("prefix_sums", "mazes")
MODELS = ("recurrent", "feedforward", "transformer")
RECALLS = ("concat", "add", "none")
BACKPROPS = ("progressive", "tied", "truncated")
EARLY_EXIT_CRITERIA = ("residual", "entropy", "change")
DIMS = {"prefix_sums": 1, "mazes": 2}  # conv dimension of each task
IN_CHANNELS = {"prefix_sums": 1, "mazes": 3}
# variant keys that override [model.thinking]'s setting of the same name
VARIANT_KEYS = ("model", "recall", "backprop", "alpha", "grad_passes", "max_iters", "min_passes", "width", "blocks",
                "heads", "window",
                "halting", "halting_prior", "halting_beta", "halting_max_passes", "halting_pool", "halting_pretrain",
                "halting_freeze")
HALTING_POOLS = ("mean", "min")


@dataclass(frozen=True)
class ThinkingConfig:
    """`[model.thinking]`: easy-to-hard extrapolation with networks that think longer, family "thinking".

    Data (generated from data.split_seed, `loopnets.data.algorithmic`): `task` prefix_sums (n-bit
    strings -> running parity) or mazes (odd side, drawn `pixels` x `pixels` positions per cell; -> the
    solution path). Training on
    `train_examples` instances of `train_size` (bits / maze side), validation during training on
    `val_examples` of the same size, and after training per-instance (exact: every position right)
    accuracy on `test_examples` fresh instances of each of `test_sizes` at each of `test_passes`
    (the test sets are seeded by data.split_seed and the size only, so every run sees the same
    ones; `test_examples` is one count or one per test size).

    Model (each variant may override): `model` recurrent (`recurrent_conv`: projection, `blocks`
    residual blocks of `width` channels looped, head), feedforward (`feedforward_conv`, the same
    depth untied: max_iters x blocks blocks, no recall, one depth at test) or transformer
    (`looped_transformer`, prefix sums only: d_model = width, `heads` heads, one prelude and one coda
    layer, the core looped; `window` > 0: every layer attends to a sliding causal window of that
    many positions with a learned bias per offset, 0: to every earlier position). `recall` concat
    (DeepThinking) | add | none. Training passes `max_iters`, or with `min_passes` > 0 a pass count
    drawn per step from min_passes..max_iters (`ln.fit(random_passes=...)`, the recurrent-depth
    transformers' scheme); `backprop` progressive (`ln.Progressive(alpha)`, DeepThinking's
    progressive loss), tied (full graph) or truncated (`ln.Truncated(grad_passes)`).

    Learned halting (a variant with `halting = true`): PonderNet's halting head on the recurrent
    net (`ln.Halting`, `ln.fit_halting`), trained for `halting_max_passes` passes (default max_iters)
    with the geometric prior `halting_prior` (in (0, 1), about 1 / prior expected passes) and KL
    weight `halting_beta`; the head pools the state by `halting_pool` (mean, or min: one logit per
    position, the sample's the least ready one's). `halting_pretrain` epochs (of train.epochs) first
    train the net alone with its `backprop` (e.g. progressive), the rest with PonderNet's loss, the
    net frozen there if `halting_freeze` (only the head learns when the loop is done). At test it
    stops by halting probability (cumulative >= `halting_threshold`)
    within max(test_passes) passes (and at each of `halting_sweep`'s thresholds: passes against
    accuracy), and is compared with the fixed budget and `ln.early_exit`
    (`early_exit_criterion` below `early_exit_threshold`).
    """

    task: Literal[TASKS] = "prefix_sums"
    train_size: int = 32
    train_examples: int = 10_000
    val_examples: int = 200
    test_sizes: list[int] = field(default_factory=lambda: [32, 128, 512])
    test_passes: list[int] = field(default_factory=lambda: [10, 20, 50, 100, 200])
    test_examples: Union[int, list[int]] = 200
    pixels: int = 1  # mazes: positions per cell side (DeepThinking's images: 2)
    eval_batch: int = 100  # test instances per forward at evaluation
    model: Literal[MODELS] = "recurrent"
    width: int = 32
    blocks: int = 2
    heads: int = 4  # transformer only
    window: int = 0  # transformer only: 0 every earlier position, w >= 2 a sliding causal window of w
    recall: Literal[RECALLS] = "concat"
    backprop: Literal[BACKPROPS] = "progressive"
    alpha: float = 1.0  # progressive only
    grad_passes: int = 1  # truncated only
    max_iters: int = 20
    min_passes: int = 0  # > 0: each step trains min_passes..max_iters passes, drawn at random
    halting: bool = False
    halting_prior: float = 0.1
    halting_beta: float = 0.01
    halting_max_passes: Union[int, None] = None  # None: max_iters
    halting_pool: Literal[HALTING_POOLS] = "mean"
    halting_pretrain: int = 0  # epochs of train.epochs that train the net alone first, with its backprop
    halting_freeze: bool = False  # the PonderNet epochs train the halting head only
    halting_threshold: float = 0.5
    halting_sweep: list[float] = field(default_factory=list)  # more thresholds to test halting at
    early_exit_criterion: Literal[EARLY_EXIT_CRITERIA] = "residual"
    early_exit_threshold: float = 1e-3


@dataclass(frozen=True)
class ThinkingVariantConfig:
    """One `[[variants]]` table of the thinking family; unset keys take `[model.thinking]`'s values."""

    name: Union[str, None] = None  # default: <model>[-<recall>-<backprop>][-halting]
    model: Union[Literal[MODELS], None] = None
    recall: Union[Literal[RECALLS], None] = None
    backprop: Union[Literal[BACKPROPS], None] = None
    alpha: Union[float, None] = None
    grad_passes: Union[int, None] = None
    max_iters: Union[int, None] = None
    min_passes: Union[int, None] = None
    width: Union[int, None] = None
    blocks: Union[int, None] = None
    heads: Union[int, None] = None
    window: Union[int, None] = None
    halting: Union[bool, None] = None
    halting_prior: Union[float, None] = None
    halting_beta: Union[float, None] = None
    halting_max_passes: Union[int, None] = None
    halting_pool: Union[Literal[HALTING_POOLS], None] = None
    halting_pretrain: Union[int, None] = None
    halting_freeze: Union[bool, None] = None


@dataclass(frozen=True)
class ThinkingVariant:
    """One expanded variant of the thinking family, every setting resolved."""

    name: str
    model: str
    recall: str
    backprop: str
    alpha: float
    grad_passes: int
    max_iters: int
    width: int
    blocks: int
    heads: int
    halting: bool
    halting_prior: float
    halting_beta: float
    halting_max_passes: int
    min_passes: int = 0
    window: int = 0
    halting_pool: str = "mean"
    halting_pretrain: int = 0
    halting_freeze: bool = False
    overrides: tuple = ()  # the variant keys set in [[variants]] (for the run's own config.toml)

    method = "thinking"  # summary.json's method (class attribute, not a field)
    has_skip = False

    @property
    def has_loop(self) -> bool:
        return self.model != "feedforward"

    @property
    def unroll(self) -> int:
        """Training passes (the feedforward net: its depth in passes)."""
        return self.halting_max_passes if self.halting else self.max_iters

    def described(self) -> dict:
        """What summary.json records about this variant."""
        out = {"method": self.method, "unroll": self.unroll, "skip": False, "family": FAMILY, "model": self.model,
               "recall": self.recall, "backprop": self.backprop, "max_iters": self.max_iters, "width": self.width,
               "blocks": self.blocks, "halting": self.halting}
        if self.backprop == "progressive":
            out["alpha"] = self.alpha
        if self.backprop == "truncated":
            out["grad_passes"] = self.grad_passes
        if self.min_passes:
            out["min_passes"] = self.min_passes
        if self.model == "transformer":
            out.update(heads=self.heads, window=self.window)
        if self.halting:
            out.update(halting_prior=self.halting_prior, halting_beta=self.halting_beta,
                       halting_max_passes=self.halting_max_passes, halting_pool=self.halting_pool,
                       halting_pretrain=self.halting_pretrain, halting_freeze=self.halting_freeze)
        return out

    def table(self) -> dict:
        """This variant as one [[variants]] table that expands to exactly it."""
        out: dict[str, Any] = {"name": self.name}
        for key in self.overrides:
            out[key] = getattr(self, key)
        return out


def _number(key: str, value: Any, low: float, high: float, closed: tuple[bool, bool], why: str) -> None:
    lo_ok = value >= low if closed[0] else value > low
    hi_ok = value <= high if closed[1] else value < high
    if not (lo_ok and hi_ok):
        span = f"{'[' if closed[0] else '('}{low:g}, {high:g}{']' if closed[1] else ')'}"
        raise ConfigError(f"config key {key} must be in {span} ({why}); got {value!r}")


def check_size(task: str, key: str, size: int) -> int:
    """A bit length (prefix sums) or maze side (mazes) that the generator takes; ConfigError naming `key`."""
    try:
        return check_bits(size, key) if task == "prefix_sums" else check_maze_size(size, key)
    except ValueError as err:
        smallest = MIN_BITS if task == "prefix_sums" else MIN_MAZE
        raise ConfigError(f"config key {err} (task {task!r}: the smallest is {smallest})") from None


def test_examples(settings: ThinkingConfig) -> list[int]:
    """The number of test instances of each test size."""
    n = settings.test_examples
    return list(n) if isinstance(n, list) else [n] * len(settings.test_sizes)


def check(exp: Any) -> None:
    """[model.thinking]'s values (the variants': `expand`)."""
    g = exp.model.thinking
    where = "model.thinking."
    check_size(g.task, where + "train_size", g.train_size)
    for key in ("train_examples", "val_examples", "eval_batch", "width", "blocks", "heads", "grad_passes",
                "max_iters", "pixels"):
        if getattr(g, key) < 1:
            raise ConfigError(f"config key {where}{key} must be >= 1; got {getattr(g, key)}")
    if g.pixels != 1 and g.task != "mazes":
        raise ConfigError(f"config key {where}pixels = {g.pixels} draws each maze cell as pixels x pixels positions; "
                          f"task {g.task!r} has no cells: remove it")
    if not g.test_sizes:
        raise ConfigError(f"config key {where}test_sizes is empty; give the sizes to test, e.g. [32, 128, 512]")
    for i, size in enumerate(g.test_sizes):
        check_size(g.task, f"{where}test_sizes[{i}]", size)
    if len(set(g.test_sizes)) != len(g.test_sizes):
        raise ConfigError(f"config key {where}test_sizes = {g.test_sizes} repeats a size; list each once")
    if not g.test_passes or any(p < 1 for p in g.test_passes) or sorted(set(g.test_passes)) != list(g.test_passes):
        raise ConfigError(f"config key {where}test_passes must be a non-empty increasing list of pass counts >= 1, "
                          f"e.g. [10, 50, 200]; got {g.test_passes}")
    counts = g.test_examples
    if isinstance(counts, list) and len(counts) != len(g.test_sizes):
        raise ConfigError(f"config key {where}test_examples has {len(counts)} counts but test_sizes has "
                          f"{len(g.test_sizes)} sizes; give one count, or one per test size")
    if any(n < 1 for n in test_examples(g)):
        raise ConfigError(f"config key {where}test_examples must be >= 1 (instances per test size); got {counts}")
    _number(where + "halting_threshold", g.halting_threshold, 0, 1, (False, True),
            "a sample stops once its cumulative halting probability reaches it; 0.5 is the median")
    for i, threshold in enumerate(g.halting_sweep):
        _number(f"{where}halting_sweep[{i}]", threshold, 0, 1, (False, True),
                "a halting threshold, like halting_threshold")
    if g.early_exit_threshold < 0:
        raise ConfigError(f"config key {where}early_exit_threshold must be >= 0; got {g.early_exit_threshold}")
    _check_variant_values(where, g, g.task, exp.train.epochs)


def _check_variant_values(where: str, v: Any, task: str, epochs: int) -> None:
    """The keys a variant may override, as `where` + key (model.thinking. or variants[i].)."""
    _number(where + "alpha", v.alpha, 0, 1, (True, True), "the weight of the progressive term; 1: progressive only")
    _number(where + "halting_prior", v.halting_prior, 0, 1, (False, False),
            "PonderNet's geometric prior halts with this probability per pass, about 1 / prior passes expected; "
            "e.g. 0.1")
    if v.halting_beta < 0:
        raise ConfigError(f"config key {where}halting_beta must be >= 0 (the weight of the KL term; PonderNet uses "
                          f"0.01); got {v.halting_beta}")
    if v.halting_max_passes is not None and v.halting_max_passes < 1:
        raise ConfigError(f"config key {where}halting_max_passes must be >= 1; got {v.halting_max_passes}")
    if v.model == "transformer" and task != "prefix_sums":
        raise ConfigError(f"config key {where}model = 'transformer' runs on strings only (task prefix_sums); "
                          f"task is {task!r}: use model = 'recurrent' for mazes")
    if v.window and (v.model != "transformer" or v.window < 2):
        raise ConfigError(f"config key {where}window = {v.window}: a sliding attention window of >= 2 positions "
                          f"(itself and the previous), for model = 'transformer' only; 0 attends to every earlier "
                          f"position (model is {v.model!r})")
    if v.min_passes and not 1 <= v.min_passes <= v.max_iters:
        raise ConfigError(f"config key {where}min_passes = {v.min_passes} must be in 1..max_iters = {v.max_iters} "
                          f"(each step draws its pass count from min_passes..max_iters), or 0 for max_iters always")
    if v.min_passes and (v.backprop == "progressive" or v.model == "feedforward" or v.halting):
        raise ConfigError(f"config key {where}min_passes draws a random pass count per step for backprop = 'tied' "
                          f"or 'truncated' on a looped net without halting; the progressive loss draws its own "
                          f"(alpha), a feedforward net has one depth and halting trains on halting_max_passes: "
                          f"remove min_passes or change backprop")
    if v.model == "transformer" and v.width % v.heads:
        raise ConfigError(f"config key {where}width = {v.width} (the transformer's d_model) must be divisible by "
                          f"heads = {v.heads}")
    if v.halting and v.model == "feedforward":
        raise ConfigError(f"config key {where}halting = true needs a looped model; model = 'feedforward' has one "
                          f"depth: use model = 'recurrent'")
    if v.halting_pretrain < 0 or (v.halting and v.halting_pretrain >= epochs):
        raise ConfigError(f"config key {where}halting_pretrain = {v.halting_pretrain} must be >= 0 and below "
                          f"train.epochs = {epochs}: the last train.epochs - halting_pretrain epochs train with "
                          f"PonderNet's loss, at least one")
    if v.halting and v.backprop == "progressive" and not v.halting_pretrain:
        raise ConfigError(f"config key {where}halting = true trains with PonderNet's expected loss over every pass, "
                          f"which needs each pass's output with its graph; backprop = 'progressive' runs its passes "
                          f"without one: set backprop = 'tied' (or 'truncated'), or halting_pretrain = <epochs> to "
                          f"train the net with the progressive loss first and PonderNet's loss after")
    if v.halting and v.halting_freeze and not v.halting_pretrain:
        raise ConfigError(f"config key {where}halting_freeze = true trains only the halting head, on a net that "
                          f"halting_pretrain = 0 leaves untrained: set halting_pretrain to the net's epochs")


def expand(exp: Any) -> list[ThinkingVariant]:
    """One variant per `[[variants]]` table, its unset keys from `[model.thinking]`."""
    g = exp.model.thinking
    out, names = [], set()
    for i, v in enumerate(exp.variants):
        where = f"variants[{i}]."
        set_keys = tuple(k for k in VARIANT_KEYS if getattr(v, k) is not None)
        values = {k: getattr(v, k) if getattr(v, k) is not None else getattr(g, k) for k in VARIANT_KEYS}
        for key in ("grad_passes", "max_iters", "width", "blocks", "heads"):
            if values[key] < 1:
                raise ConfigError(f"config key {where}{key} must be >= 1; got {values[key]}")
        resolved = replace(g, **values)
        _check_variant_values(where, resolved, g.task, exp.train.epochs)
        if values["halting_max_passes"] is None:
            values["halting_max_passes"] = values["max_iters"]
        name = v.name or _default_name(values)
        if name in names:
            raise ConfigError(f"two variants are named {name!r}; give each [[variants]] table its own name")
        names.add(name)
        out.append(ThinkingVariant(name=name, overrides=set_keys, **values))
    return out


def _default_name(values: dict) -> str:
    if values["model"] == "feedforward":
        return f"feedforward-d{values['max_iters']}"
    name = f"{values['model']}-{values['recall']}-{values['backprop']}"
    return name + ("-halting" if values["halting"] else "")


__all__ = ["BACKPROPS", "DIMS", "FAMILY", "HALTING_POOLS", "IN_CHANNELS", "MODELS", "RECALLS", "TASKS",
           "ThinkingConfig", "ThinkingVariant", "ThinkingVariantConfig", "check", "check_size", "expand",
           "test_examples"]
