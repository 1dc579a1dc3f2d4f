"""fit's per-step overhead cuts change nothing numerically: float64 histories and weights equal, bit for
bit, those of the per-batch loop it replaced (written out here as the reference); divergence is still
named by epoch and batch."""

import math

import pytest
import torch
from torch import nn

import loopnets as ln
import loopnets.training.supervised
from loopnets import layers
from loopnets.core.loop import cached_ties
from loopnets.core.modes import accumulation_weights
from loopnets.models.lavik.architectures import loop_network, thesis_mlp
from loopnets.training.losses import get_loss
from loopnets.training.optim import make_optimizer
from loopnets.training.fit import TrainingDiverged, fit, predict

D = torch.float64


def reference_fit(model, X, y, *, loss, optimizer, epochs, batch_size, seed, shuffle=True):
    """fit's training loop as it was (loopnets 0.1.0): index per batch, a finiteness check per batch,
    a module walk and a tensor-by-tensor re-tie per step. Returns the train losses."""
    loss = get_loss(loss)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    opt = make_optimizer(optimizer, model.parameters())
    n, batches, losses = len(X), math.ceil(len(X) / batch_size), []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        total, count = torch.zeros((), dtype=torch.float64), 0
        for batch in range(batches):
            index = order[batch * batch_size : (batch + 1) * batch_size]
            pred, from_logits = predict(model, X[index], loss)
            batch_sum, batch_count = loss.parts(pred, y[index], from_logits)
            value = loss.finish(batch_sum / batch_count)
            assert torch.isfinite(value)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            reference_tie(model)
            total += batch_sum.detach().double()
            count += batch_count
        losses.append(loss.finish(total / count).item())
    return losses


@torch.no_grad()
def reference_tie(model):
    """Loop.retie_ as it was: per tensor, sum(w * t for each copy), copied into every copy."""
    for m in model.modules():
        if isinstance(m, ln.Loop) and isinstance(m.backprop, ln.Couple):
            weights = accumulation_weights(m.backprop.accumulate, len(m.copies))
            for tensors in zip(*([*c.parameters(), *c.buffers()] for c in m.copies)):
                if tensors[0].is_floating_point():
                    tied = sum(w * t for w, t in zip(weights, tensors))
                    for t in tensors:
                        t.copy_(tied)


def data(n=23, inputs=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, inputs, generator=g, dtype=D), torch.randint(0, classes, (n,), generator=g)


def dropout_couple():
    body = nn.Sequential(nn.Linear(5, 5), nn.ReLU(), ln.Dropout(0.3))
    return nn.Sequential(nn.Linear(4, 5), ln.Loop(body, unroll=3, backprop=ln.Couple(accumulate="weighted")),
                         nn.Linear(5, 3))


def conv_combine():
    conv = layers.Conv(2, 3, padding=1, activation="tanh")
    return loop_network((1, 4), [conv, layers.Conv(1, 3, padding=1, activation="relu"), layers.Dense(6, "relu")],
                        (0, 1), 3, method="combine", unroll=3, skip=True)


MODELS = {
    "ffn": lambda: thesis_mlp(4, (5, 6, 5), 3),
    "combine x3 + skip": lambda: thesis_mlp(4, (5, 6, 5), 3, variant="combine", unroll=3, skip=True, bias=True),
    "couple x3": lambda: thesis_mlp(4, (5, 6, 5), 3, variant="couple", unroll=3),
    "tied x2": lambda: thesis_mlp(4, (5, 6, 5), 3, variant="tied", unroll=2, activation="tanh"),
    "weighted couple with dropout": dropout_couple,
    "conv combine": conv_combine,
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("batch_size, shuffle", [(1, True), (5, True), (4, False)])
def test_fit_equals_the_per_batch_reference_bit_for_bit(name, batch_size, shuffle):
    X, y = data()
    if name == "conv combine":
        X = X[:, None, :]  # (n, 1, 4)
    torch.manual_seed(0)
    model = MODELS[name]().to(D)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = dict(loss="cross_entropy", optimizer=("adam", {"lr": 0.05}), epochs=3, batch_size=batch_size,
                  seed=7, shuffle=shuffle)
    history = fit(model, (X, y), progress=False, **kwargs)
    trained = model.state_dict()
    model.load_state_dict(reference)
    expected = reference_fit(model, X, y, **kwargs)
    assert history["train_loss"] == expected
    for key, value in model.state_dict().items():
        assert torch.equal(trained[key], value), key


@pytest.mark.parametrize("loss, target", [("rmse", "regression"), ("cross_entropy", "one-hot"),
                                          ("mae", "regression")])
def test_other_losses_and_large_data_gathered_per_batch_equal_the_reference(monkeypatch, loss, target):
    X, labels = data(n=17)
    y = torch.randn(17, 3, dtype=D) if target == "regression" else nn.functional.one_hot(labels, 3).to(D)
    kwargs = dict(loss=loss, optimizer=("sgdm", {"lr": 0.05}), epochs=2, batch_size=4, seed=1)
    for gather_bytes in (loopnets.training.supervised.GATHER_BYTES, 0):  # 0: every data set counts as large
        monkeypatch.setattr(loopnets.training.supervised, "GATHER_BYTES", gather_bytes)
        torch.manual_seed(0)
        model = thesis_mlp(4, (5, 6, 5), 3, variant="couple", output_activation="linear").to(D)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        history = fit(model, (X, y), progress=False, **kwargs)
        model.load_state_dict(start)
        assert history["train_loss"] == reference_fit(model, X, y, **kwargs)


class NanFrom(nn.Module):
    """A linear model whose training forward calls return nan from call `after` on."""

    def __init__(self, after):
        super().__init__()
        self.linear = nn.Linear(2, 1, dtype=D)
        self.calls, self.after = 0, after

    def forward(self, x):
        self.calls += self.training
        out = self.linear(x)
        return out * math.nan if self.training and self.calls >= self.after else out


def test_divergence_is_found_at_the_end_of_its_epoch_and_names_the_first_bad_batch():
    X, y = torch.randn(9, 2, dtype=D), torch.randn(9, 1, dtype=D)
    model = NanFrom(after=5)  # 3 batches per epoch: call 5 is epoch 2, batch 2
    with pytest.raises(TrainingDiverged, match=r"epoch 2, batch 2 of 3: the mse loss is nan") as info:
        fit(model, (X, y), (X, y), loss="mse", epochs=5, batch_size=3, progress=False)
    assert info.value.history["epoch"] == [1] and info.value.history.diverged
    assert model.calls == 6  # the epoch ran to its end: the check is once per epoch
    # with early stopping the best epoch's (finite) weights come back
    model = NanFrom(after=5)
    with pytest.raises(TrainingDiverged):
        fit(model, (X, y), (X, y), loss="mse", epochs=5, batch_size=3, early_stopping=2, progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fit_reads_from_the_device_once_per_epoch(monkeypatch):
    reads = []
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, real=real: reads.append(1) or real(self, *a))
    X, y = data(n=12)
    model = thesis_mlp(4, (5, 6, 5), 3, variant="couple").to(D)
    # SGD: torch's unfused Adam reads its step counters itself (float64 is not fused)
    fit(model, (X, y), loss="cross_entropy", optimizer="sgd", epochs=3, batch_size=2, progress=False)
    assert len(reads) == 3 + 1  # one per epoch (6 steps each), plus the class-range check of all targets


def test_class_indices_out_of_range_anywhere_are_refused_before_training():
    X, y = data(n=10)
    y[7] = 3  # the model has 3 outputs
    model = thesis_mlp(4, (5, 6, 5), 3).to(D)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\].*got indices in \[0, 3\]"):
        fit(model, (X, y), loss="cross_entropy", epochs=1, batch_size=2, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_named_optimizers_are_fused_for_float32_only():
    f32, f64 = list(nn.Linear(2, 2).parameters()), list(nn.Linear(2, 2, dtype=D).parameters())
    for name in ("adam", "adamw", "sgd", "sgdm"):
        assert make_optimizer(name, f32).defaults["fused"] is True
        assert not make_optimizer(name, f64).defaults["fused"]
    assert not make_optimizer("rmsprop", f32).defaults.get("fused")  # no fused RMSprop in torch
    assert not make_optimizer(("adam", {"foreach": True}), f32).defaults["fused"]  # an explicit choice wins
    assert not make_optimizer(("adam", {"fused": False}), f32).defaults["fused"]
    groups = [{"params": f32[:1]}, {"params": f32[1:], "lr": 0.1}]
    assert make_optimizer("adam", groups).defaults["fused"] is True


def test_tie_accepts_the_cached_loop_list_and_the_cache_ends_with_the_block():
    torch.manual_seed(0)
    model = thesis_mlp(4, (5, 6, 5), 3, variant="couple", unroll=3).to(D)
    loop = model.loops()[0]
    with torch.no_grad():
        for i, c in enumerate(loop.copies):
            for p in c.parameters():
                p.add_(i)
    expected = [sum(ps) / 3 for ps in zip(*(c.parameters() for c in loop.copies))]
    with cached_ties(model) as loops:
        assert loops == [loop] and "_tie_groups" in loop.__dict__
        ln.tie_(loops)
    assert "_tie_groups" not in loop.__dict__
    for c in loop.copies:
        for p, e in zip(c.parameters(), expected):
            torch.testing.assert_close(p, e, rtol=1e-15, atol=1e-15)
