"""The one training loop: data sources, devices, callbacks / loggers, schedulers, clipping, loud evaluation."""

import csv
import math
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import loopnets as ln
from loopnets.models.inn import IterativeNetwork, fit_iterations, fit_sequences
from loopnets.training import CSVLogger, TensorBoardLogger, logger

D = torch.float64


def data(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    X = torch.randn(n, 4, generator=g, dtype=D) + y[:, None].to(D)
    return X, y


def model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6, dtype=D), nn.Tanh(), nn.Linear(6, 3, dtype=D))


def loopy(seed=0):
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Linear(6, 6, dtype=D), nn.Tanh())
    return nn.Sequential(nn.Linear(4, 6, dtype=D), ln.Loop(body, unroll=3, backprop=ln.Couple()), nn.Linear(6, 3, dtype=D))


KW = dict(loss="cross_entropy", optimizer=("adam", {"lr": 0.05}), epochs=3, batch_size=6, seed=3, progress=False)


def same_history(a, b, tol=1e-12):
    for column in ("train_loss", "val_loss", "val_accuracy"):
        for left, right in zip(a[column], b[column]):
            assert left == pytest.approx(right, rel=tol, abs=tol), column
    assert len(a) == len(b)


# --- data: tensors, Dataset, iterable of batches ------------------------------------------------


@pytest.mark.parametrize("build", [model, loopy])
def test_a_dataloader_with_the_same_batches_gives_the_same_history_as_tensors(build):
    X, y = data()
    val = data(9, seed=1)
    reference = build()
    expected = ln.fit(reference, (X, y), val, shuffle=False, **KW)
    net = build()
    loader = DataLoader(TensorDataset(X, y), batch_size=KW["batch_size"], shuffle=False)
    val_loader = DataLoader(TensorDataset(*val), batch_size=4)
    history = ln.fit(net, loader, val_loader, **KW)
    same_history(history, expected)
    for a, b in zip(reference.parameters(), net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


class Shuffled(IterableDataset):
    """Yields (X, y) batches in the order fit's own shuffling draws: the loader owns the shuffling."""

    def __init__(self, X, y, batch_size, seed):
        self.X, self.y, self.batch_size = X, y, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        order = torch.randperm(len(self.X), generator=self.generator)
        return zip(self.X[order].split(self.batch_size), self.y[order].split(self.batch_size))


def test_an_iterable_dataset_that_shuffles_as_fit_does_gives_the_same_history():
    X, y = data()
    expected = ln.fit(model(), (X, y), data(9, 1), **KW)
    history = ln.fit(model(), Shuffled(X, y, KW["batch_size"], KW["seed"]), data(9, 1), **KW)
    same_history(history, expected)


class Pairs(Dataset):
    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i], self.y[i]


def test_a_map_style_dataset_gets_the_batches_of_its_tensors_and_a_list_of_batches_evaluates():
    X, y = data()
    torch.manual_seed(0)
    dropout = nn.Sequential(nn.Linear(4, 6, dtype=D), nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, 3, dtype=D))
    start = {k: v.clone() for k, v in dropout.state_dict().items()}
    expected = ln.fit(dropout, (X, y), data(9, 1), **KW)
    dropout.load_state_dict(start)  # the same shuffling and the same dropout masks: the global RNG is untouched
    same_history(ln.fit(dropout, Pairs(X, y), Pairs(*data(9, 1)), **KW), expected)
    net = model()
    ln.fit(net, Pairs(X, y), **KW)
    batches = list(zip(X.split(7), y.split(7)))
    from_list = ln.evaluate(net, batches, loss="cross_entropy")
    from_tensors = ln.evaluate(net, (X, y), loss="cross_entropy", batch_size=5)
    assert from_list["loss"] == pytest.approx(from_tensors["loss"], rel=1e-12)
    assert from_list["accuracy"] == from_tensors["accuracy"]


def test_a_loader_whose_batches_are_not_pairs_is_a_clear_error():
    X, y = data()
    dicts = [{"x": X, "y": y}]
    with pytest.raises(TypeError, match=r"train: batch 1 of the list is dict.*\(inputs, targets\)"):
        ln.fit(model(), iter_of(dicts), **KW)
    triples = DataLoader(TensorDataset(X, y, y), batch_size=4)
    with pytest.raises(TypeError, match=r"batch 1 of the DataLoader is a list of length 3"):
        ln.fit(model(), triples, **KW)
    with pytest.raises(TypeError, match="batch 1 of the DataLoader"):
        ln.evaluate(model(), triples, loss="cross_entropy")


def iter_of(items):
    class Loader:
        def __iter__(self):
            return iter(items)

    loader = Loader()
    Loader.__name__ = "list"
    return loader


def test_an_exhausted_iterator_is_a_clear_error_not_an_empty_epoch():
    X, y = data()
    once = iter([(X, y)])  # a generator: empty from the second epoch on
    with pytest.raises(ValueError, match="no batches in epoch 2"):
        ln.fit(model(), once, **KW)


def test_inn_trainers_take_loaders_too():
    torch.manual_seed(0)
    net = IterativeNetwork(4, 8, 3, iterations=2).double()
    X, y = data()
    loader = DataLoader(TensorDataset(X, y), batch_size=5)
    history = fit_iterations(net, loader, (X, y), epochs=2, progress=False)
    assert len(history) == 2 and math.isfinite(history[-1].val_loss)
    x = torch.randn(6, 3, 4, dtype=D)
    flags = torch.zeros(6, 3, dtype=D)
    index = torch.tensor([0, 1, 0, 1, 0, 1])
    flags[torch.arange(6), index] = 1
    seq = IterativeNetwork(4, 8, 3).double()
    history = fit_sequences(seq, DataLoader(TensorDataset(x, flags, index), batch_size=3), (x, flags, index),
                            epochs=2, progress=False)
    assert len(history) == 2 and history[-1].val_acc_seq is not None
    with pytest.raises(TypeError, match=r"\(x, flags, index\)"):
        fit_sequences(seq, DataLoader(TensorDataset(x, flags), batch_size=3), epochs=1, progress=False)


# --- device and precision ------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_an_unavailable_device_is_a_clear_error_naming_it():
    X, y = data()
    for call in (lambda: ln.fit(model(), (X, y), device="cuda", **KW),
                 lambda: ln.evaluate(model(), (X, y), loss="cross_entropy", device="cuda:1")):
        with pytest.raises(ValueError, match=r"device='cuda(:1)?'.*CUDA is not available"):
            call()


def test_device_and_precision_arguments_are_checked():
    X, y = data()
    with pytest.raises(ValueError, match="device='tpu0' is not a device"):
        ln.fit(model(), (X, y), device="tpu0", **KW)
    with pytest.raises(ValueError, match="precision='bf16'.*needs a CUDA device"):
        ln.fit(model(), (X, y), device="cpu", precision="bf16", **KW)
    with pytest.raises(ValueError, match=r"precision must be None \(the model's own dtype\), 'bf16' or 'fp16'; got 'fp8'"):
        ln.evaluate(model(), (X, y), loss="cross_entropy", precision="fp8")


def test_device_cpu_and_auto_train_where_the_model_is():
    X, y = data()
    expected = ln.fit(model(), (X, y), **KW)
    assert ln.fit(model(), (X, y), device="cpu", **KW)["train_loss"] == expected["train_loss"]
    net = model()
    ln.fit(net, (X, y), device="auto", **KW)
    assert next(net.parameters()).device.type == ("cuda" if torch.cuda.is_available() else
                                                  "mps" if torch.backends.mps.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", [None, "bf16", "fp16"])
def test_cuda_training_matches_cpu(precision):
    X, y = data()
    cpu = ln.fit(model().float(), (X.float(), y), **KW)
    gpu = ln.fit(model().float(), (X.float(), y), device="cuda", precision=precision, **KW)
    tol = 1e-4 if precision is None else 5e-2
    for a, b in zip(cpu["train_loss"], gpu["train_loss"]):
        assert a == pytest.approx(b, rel=tol, abs=tol)


# --- callbacks and loggers -----------------------------------------------------------------------


class Recorder:
    def __init__(self):
        self.calls = []

    def on_train_start(self, model):
        self.calls.append(("start", type(model).__name__))

    def on_epoch_end(self, record):
        self.calls.append(("epoch", record.epoch, record.train_loss))

    def on_train_end(self, history):
        self.calls.append(("end", len(history)))


def test_callbacks_see_every_epoch_in_order_and_the_end_also_on_divergence():
    X, y = data()
    recorder = Recorder()
    history = ln.fit(model(), (X, y), callbacks=[recorder], **KW)
    assert recorder.calls == [("start", "Sequential"), *[("epoch", r.epoch, r.train_loss) for r in history],
                              ("end", 3)]
    broken = Recorder()
    bad = X.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ln.TrainingDiverged):
        ln.fit(model(), (bad, y), callbacks=broken, **KW)
    assert broken.calls == [("start", "Sequential"), ("end", 0)]
    with pytest.raises(TypeError, match="callback object has none of the hooks"):
        ln.fit(model(), (X, y), callbacks=[object()], **KW)
    with pytest.raises(TypeError, match=r"callback 'csv' is a name.*logger\('csv', directory\)"):
        ln.fit(model(), (X, y), callbacks=["csv"], **KW)


def test_csv_logger_writes_the_history(tmp_path):
    X, y = data()
    history = ln.fit(model(), (X, y), data(9, 1), callbacks=[logger("csv", tmp_path / "run")], **KW)
    with (tmp_path / "run" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [float(r["val_loss"]) for r in rows] == history["val_loss"]
    assert list(rows[0]) == list(ln.History.COLUMNS)


def test_tensorboard_logger_writes_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    X, y = data()
    history = ln.fit(model(), (X, y), data(9, 1), callbacks=[TensorBoardLogger(tmp_path / "tb")], **KW)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    losses = [e.value for e in events.Scalars("val_loss")]
    assert losses == pytest.approx(history["val_loss"], rel=1e-6)
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2, 3]


def test_tensorboard_logger_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"loopnets\[tensorboard\]"):
        TensorBoardLogger("tb")
    with pytest.raises(ValueError, match="unknown logger 'wandb'; choose one of csv, tensorboard"):
        logger("wandb", "runs")
    assert isinstance(logger("csv", "runs"), CSVLogger)


# --- schedulers and clipping ---------------------------------------------------------------------


def test_a_scheduler_by_name_changes_the_learning_rate():
    X, y = data()
    one = model()
    ln.fit(one, (X, y), **{**KW, "epochs": 1})
    frozen = model()  # lr 0 after the first epoch: the later epochs change nothing
    ln.fit(frozen, (X, y), scheduler=("StepLR", {"step_size": 1, "gamma": 0.0}), **KW)
    for a, b in zip(one.parameters(), frozen.parameters()):
        assert torch.equal(a, b)
    moving = model()
    ln.fit(moving, (X, y), scheduler=("StepLR", {"step_size": 1, "gamma": 0.5}), **KW)
    assert not torch.equal(next(moving.parameters()), next(frozen.parameters()))
    ln.fit(model(), (X, y), data(9, 1), scheduler="ReduceLROnPlateau", **KW)


def test_scheduler_mistakes_list_the_valid_choices():
    X, y = data()
    with pytest.raises(ValueError, match=r"unknown scheduler 'steplr' \(did you mean 'StepLR'\?\).*CosineAnnealingLR"):
        ln.fit(model(), (X, y), scheduler=("steplr", {"step_size": 1}), **KW)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) 'step' for scheduler 'StepLR' \(did you mean 'step_size'\?\); valid arguments: step_size, gamma"):
        ln.fit(model(), (X, y), scheduler=("StepLR", {"step": 1}), **KW)
    with pytest.raises(ValueError, match=r"scheduler 'StepLR' needs argument\(s\) 'step_size'"):
        ln.fit(model(), (X, y), scheduler="StepLR", **KW)


@pytest.mark.parametrize("kind", ["value", "norm"])
def test_gradient_clipping_bounds_each_sgd_step(kind):
    X, y = data()
    X = X * 100  # large gradients
    net = model()
    start = [p.detach().clone() for p in net.parameters()]
    kw = {**KW, "optimizer": ("sgd", {"lr": 1.0}), "epochs": 1, "batch_size": len(X)}  # one step
    ln.fit(net, (X, y), clip=(kind, 1e-3), **kw)
    steps = [p.detach() - s for p, s in zip(net.parameters(), start)]
    if kind == "value":
        assert max(s.abs().max() for s in steps) == pytest.approx(1e-3, rel=1e-9)
    else:
        assert torch.cat([s.flatten() for s in steps]).norm() == pytest.approx(1e-3, rel=1e-5)  # clip_grad_norm_ adds 1e-6
    free = model()
    ln.fit(free, (X, y), **kw)
    assert max((p.detach() - s).abs().max() for p, s in zip(free.parameters(), start)) > 1e-2
    with pytest.raises(ValueError, match=r"clip must be None, \('norm', max_norm\), \('value', max_value\) or \('output', max_value\)"):
        ln.fit(model(), (X, y), clip=("abs", 5), **KW)


# --- the API speaks: non-finite outputs, dtypes ----------------------------------------------------


def test_evaluate_on_nan_outputs_gives_nan_metrics_and_a_warning():
    X, y = data()
    net = model()
    with torch.no_grad():
        net[0].weight[0, 0] = math.nan
    with pytest.warns(RuntimeWarning, match="nan / inf outputs"):
        metrics = ln.evaluate(net, (X, y), loss="cross_entropy")
    assert math.isnan(metrics["loss"]) and math.isnan(metrics["accuracy"])


def test_integer_inputs_are_refused_at_the_entry_with_the_conversion():
    X, y = data()
    with pytest.raises(TypeError, match=r"train X has dtype torch.int64.*X.to\(torch.float64\).*X.float\(\)"):
        ln.fit(model(), (X.long(), y), **KW)
    with pytest.raises(TypeError, match=r"data X has dtype torch.bool"):
        ln.evaluate(model(), (X > 0, y), loss="cross_entropy")
    embedding = nn.Sequential(nn.Embedding(10, 3, dtype=D), nn.Flatten(), nn.Linear(3, 3, dtype=D))
    history = ln.fit(embedding, (torch.arange(20)[:, None] % 10, y), **KW)  # indices are the inputs here
    assert len(history) == 3


# --- benchmarks/gpu_check.py ---------------------------------------------------------------------


def gpu_check():
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gpu_check

    return gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_check_says_no_cuda_device_and_exits_0(capsys):
    assert gpu_check().main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out


def test_gpu_check_runs_its_checks_on_the_cpu(tmp_path, capsys):
    import json

    assert gpu_check().main(["--quick", "--device", "cpu", "--out", str(tmp_path / "check.json")]) == 0
    result = json.loads((tmp_path / "check.json").read_text())
    assert [row["mode"] for row in result["modes"]] == ["tied", "truncated", "couple", "combine", "implicit", "onestep"]
    assert all(row["loss_rel_diff"] == 0.0 for row in result["modes"])  # cpu against cpu: the same numbers
    assert result["throughput"]["loopnets_images_per_s"] > 0 and "all checks passed" in capsys.readouterr().out


def test_a_model_without_trainable_parameters_is_refused_by_every_front():
    X, y = data()
    frozen = model().requires_grad_(False)
    with pytest.raises(ValueError, match="Sequential has no trainable parameters"):
        ln.fit(frozen, (X, y), **KW)
    net = IterativeNetwork(4, 8, 3, iterations=2).double().requires_grad_(False)
    with pytest.raises(ValueError, match="IterativeNetwork has no trainable parameters"):
        fit_iterations(net, (X, y), epochs=1, progress=False)


def test_fit_many_refuses_integer_inputs_at_the_entry_too():
    X, y = data()
    with pytest.raises(TypeError, match=r"train X has dtype torch.int64.*X.float\(\)"):
        ln.fit_many([model(0), model(1)], (X.long(), y), seeds=[0, 1], loss="cross_entropy", epochs=1, progress=False)


def test_one_cycle_schedules_are_stepped_after_every_optimizer_step():
    X, y = data()  # 20 samples, batch 6: 4 steps per epoch, 12 in 3 epochs
    ln.fit(model(), (X, y), scheduler=("OneCycleLR", {"max_lr": 0.1, "total_steps": 12}), **KW)
    with pytest.raises(ValueError, match="Tried to step 12 times"):  # stepped per batch, not per epoch
        ln.fit(model(), (X, y), scheduler=("OneCycleLR", {"max_lr": 0.1, "total_steps": 11}), **KW)


def test_output_clip_clamps_the_loss_gradient_at_the_output_as_its_formula():
    """clip=("output", c): one full-batch SGD step in float64 equals W - lr * clamp(dL/dy, -c, c)^T X."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(6, 2, generator=g, dtype=torch.float64) * 5  # far from the start: large dL/dy
    c, lr = 0.2, 0.1

    def net():
        torch.manual_seed(0)
        return nn.Linear(3, 2, bias=False, dtype=torch.float64)

    model = net()
    W = model.weight.detach().clone()
    dy = 2 * (X @ W.T - y) / y.numel()  # d mse / d output (mean over every element)
    assert dy.abs().max() > c  # the clamp binds
    expected = W - lr * dy.clamp(-c, c).T @ X
    ln.fit(model, (X, y), loss="mse", optimizer=("sgd", {"lr": lr}), epochs=1, batch_size=6, shuffle=False,
           progress=False, clip=("output", c))
    torch.testing.assert_close(model.weight.detach(), expected, rtol=0, atol=1e-12)
    plain = net()
    ln.fit(plain, (X, y), loss="mse", optimizer=("sgd", {"lr": lr}), epochs=1, batch_size=6, shuffle=False,
           progress=False)
    assert (plain.weight - model.weight).abs().max() > 1e-3  # without the clamp: another step


def test_output_clip_is_refused_where_the_training_has_no_output_hook_and_malformed_clips_are_refused():
    with pytest.raises(ValueError, match="output"):
        ln.fit(nn.Linear(2, 1), (torch.randn(4, 2), torch.randn(4, 1)), loss="mse", epochs=1, progress=False,
               clip=("output", -1.0))
    model = IterativeNetwork(2, 4, 3)
    x, y = torch.randn(8, 2), torch.randint(0, 3, (8,))
    with pytest.raises(ValueError, match="does not expose"):
        fit_iterations(model, (x, y), iterations=2, epochs=1, progress=False, clip=("output", 5.0))


def test_a_tracker_ends_the_epochs_of_the_one_loop(monkeypatch):
    """engine.train's epoch end plugs in: the tracker gets every epoch's loss and validation
    metrics, stops the loop, has the seconds divided by its live models, and is closed at the end."""
    import itertools
    import types

    from loopnets.training import engine
    from loopnets.training.engine import train
    from loopnets.training.supervised import SupervisedTask, as_tensors
    from loopnets.training.data import batches
    from loopnets.training.losses import get_loss

    class Stopper:
        live, postfix, watched = 4, {}, None

        def __init__(self):
            self.seen, self.closed, self.result = [], False, "the tracker's result"

        def start(self):
            self.seen.append("start")

        def train_loss(self, epoch, losses, sums):
            assert losses.dim() == 0 and sums.shape == (3,)  # 3 batches of 4
            return losses.item()

        def end_epoch(self, epoch, train_loss, metrics, train_seconds, val_seconds, sums):
            self.seen.append((epoch, train_loss, metrics["loss"], train_seconds, val_seconds))
            return epoch == 2

        def close(self):
            self.closed = True

    torch.manual_seed(0)
    model, loss = nn.Linear(2, 2).double(), get_loss("cross_entropy")
    X, y = torch.randn(12, 2, dtype=torch.float64), torch.arange(12) % 2
    prepare = lambda pair: as_tensors(pair, "train", torch.device("cpu"), torch.float64)  # noqa: E731
    data = batches((X, y), "train", prepare, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    task = SupervisedTask(loss, model, False, None, None)
    tracker = Stopper()
    clock = itertools.count()  # every perf_counter() call is 1 s later
    monkeypatch.setattr(engine, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    result = train(model, task, data, batches((X, y), "val", prepare), optimizer="sgd", epochs=5, seed=0,
                   progress=False, tracker=tracker)
    assert result == "the tracker's result" and tracker.closed
    assert tracker.seen[0] == "start" and [s[0] for s in tracker.seen[1:]] == [1, 2]  # stopped after epoch 2
    torch.manual_seed(0)
    reference = ln.fit(nn.Linear(2, 2).double(), (X, y), (X, y), loss="cross_entropy", optimizer="sgd", epochs=2,
                       batch_size=4, progress=False)
    for (_, train_loss, val_loss, train_seconds, val_seconds), record in zip(tracker.seen[1:], reference):
        assert train_loss == record.train_loss and val_loss == record.val_loss
        assert train_seconds == val_seconds == 1 / 4  # 1 s each, per model-epoch of the 4 live models
    with pytest.raises(ValueError, match="not beside it"):
        train(model, task, data, None, optimizer="sgd", epochs=1, seed=0, progress=False, tracker=Stopper(),
              early_stopping=2)
