"""Property-based tests of the public training API (Hypothesis): every generated call either is refused
with a ValueError / TypeError that explains itself, or trains and evaluates to finite numbers."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import loopnets as ln

MODES = {"tied": ln.Tied, "couple": ln.Couple, "combine": ln.Combine, "truncated": ln.Truncated}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "bool": torch.bool}
TARGETS = ("classes", "one_hot", "float_classes", "column", "too_few", "out_of_range", "regression")


def build(features, classes, unroll, mode):
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(5, 5, dtype=torch.float64), nn.Tanh())
    loop = ln.Loop(body, unroll=unroll, backprop=MODES[mode]())
    return nn.Sequential(nn.Linear(features, 5, dtype=torch.float64), loop, nn.Linear(5, classes, dtype=torch.float64))


def targets(kind, n, classes, g):
    labels = torch.randint(0, classes, (n,), generator=g)
    return {
        "classes": labels,
        "one_hot": nn.functional.one_hot(labels, classes).double(),
        "float_classes": labels.double(),
        "column": labels[:, None],
        "too_few": labels[: max(n - 1, 0)],
        "out_of_range": labels + classes,
        "regression": torch.randn(n, classes, generator=g, dtype=torch.float64),
    }[kind]


def refused_clearly(error):
    message = str(error)
    assert len(message) > 30, message  # says what was expected and what came in, not a bare word


@settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 7),
    features=st.integers(1, 3),
    given_features=st.integers(1, 3),
    classes=st.integers(2, 3),
    x_dtype=st.sampled_from(sorted(DTYPES)),
    target=st.sampled_from(TARGETS),
    loss=st.sampled_from(["cross_entropy", "mse", "binary_cross_entropy"]),
    unroll=st.integers(1, 3),
    mode=st.sampled_from(sorted(MODES)),
    batch_size=st.integers(-1, 4),
    form=st.sampled_from(["tensors", "numpy", "dataset", "loader"]),
)
@example(n=6, features=2, given_features=2, classes=3, x_dtype="float32", target="classes", loss="cross_entropy",
         unroll=2, mode="couple", batch_size=4, form="loader")  # always one call that must train
@example(n=5, features=1, given_features=1, classes=2, x_dtype="float64", target="regression", loss="mse",
         unroll=3, mode="combine", batch_size=2, form="dataset")
@example(n=6, features=2, given_features=2, classes=2, x_dtype="float64", target="one_hot",
         loss="binary_cross_entropy", unroll=2, mode="couple", batch_size=3, form="tensors")  # outputs outside [0, 1]
def test_fit_and_evaluate_refuse_clearly_or_give_finite_numbers(
    n, features, given_features, classes, x_dtype, target, loss, unroll, mode, batch_size, form
):
    g = torch.Generator().manual_seed(n * 7 + features)
    X = (torch.randn(n, given_features, generator=g, dtype=torch.float64) * 3).to(DTYPES[x_dtype])
    y = targets(target, n, classes, g)
    if target in ("classes", "out_of_range", "column") and loss == "binary_cross_entropy":
        y = y.double()
    if form == "numpy":
        data = (X.numpy(), y.numpy())
    elif form == "dataset" and len(y) == n:
        data = TensorDataset(X, y)
    elif form == "loader" and len(y) == n:
        data = DataLoader(TensorDataset(X, y), batch_size=max(batch_size, 1))
    else:
        data = (X, y)
    model = build(features, classes, unroll, mode)
    bad = n == 0 or batch_size < 1 or features != given_features or x_dtype in ("int64", "bool")
    good = not bad and (loss, target) in (("cross_entropy", "classes"), ("mse", "regression"))
    try:
        history = ln.fit(model, data, data, loss=loss, optimizer=("sgd", {"lr": 1e-3}), epochs=1,
                         batch_size=batch_size, progress=False)
    except (ValueError, TypeError) as error:
        assert not good, f"a valid call was refused: {error}"
        refused_clearly(error)
        if not bad and loss == "binary_cross_entropy" and target == "one_hot":  # a linear output: not probabilities
            assert isinstance(error, ValueError) and "sigmoid" in str(error) and "binary_cross_entropy" in str(error)
        return
    assert not bad, "a malformed call trained"
    assert len(history) == 1
    assert math.isfinite(history[-1].train_loss) and math.isfinite(history[-1].val_loss)
    metrics = ln.evaluate(model, data, loss=loss)
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    if "accuracy" in metrics:
        assert 0.0 <= metrics["accuracy"] <= 1.0


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    unroll=st.integers(1, 4),
    mode=st.sampled_from(sorted(MODES)),
    probe=st.integers(1, 5),
    batch=st.integers(1, 5),
    scheduler=st.sampled_from([None, "ExponentialLR", ("StepLR", {"step_size": 1}), ("StepLR", {"steps": 1}),
                               ("CosineAnnealingLR", {"T_max": 2}), "NoSuchLR"]),
    clip=st.sampled_from([None, ("value", 5.0), ("norm", 1.0), ("norm", -1.0), ("value", "5"), ("max", 1.0)]),
)
def test_unrolls_modes_schedulers_and_clipping_refuse_clearly_or_train(unroll, mode, probe, batch, scheduler, clip):
    g = torch.Generator().manual_seed(unroll)
    X = torch.randn(6, 2, generator=g, dtype=torch.float64)
    y = torch.arange(6) % 2
    model = build(2, 2, unroll, mode)
    if isinstance(scheduler, str) and scheduler == "ExponentialLR":
        scheduler = ("ExponentialLR", {"gamma": 0.9})
    try:
        history = ln.fit(model, (X, y), (X, y), loss="cross_entropy", epochs=2, batch_size=batch, progress=False,
                         scheduler=scheduler, clip=clip)
    except (ValueError, TypeError) as error:
        refused_clearly(error)
        assert scheduler in ("NoSuchLR", ("StepLR", {"steps": 1})) or clip in (("norm", -1.0), ("value", "5"), ("max", 1.0))
        return
    assert all(math.isfinite(v) for v in history["train_loss"] + history["val_loss"])
    with ln.unrolled(model, probe):
        metrics = ln.evaluate(model, (X, y), loss="cross_entropy")
    assert math.isfinite(metrics["loss"]) and 0.0 <= metrics["accuracy"] <= 1.0


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_])
def test_numpy_integer_inputs_are_refused_with_the_conversion(dtype):
    X = np.ones((4, 2), dtype=dtype)
    with pytest.raises(TypeError, match=r"convert the inputs with X.to\(torch.float64\)"):
        ln.fit(build(2, 2, 2, "tied"), (X, np.array([0, 1, 0, 1])), loss="cross_entropy", epochs=1, progress=False)
