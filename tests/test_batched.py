"""fit_many: seeds trained as one batched computation equal `fit`, one seed at a time, bit for bit."""

import pytest
import torch
from torch import nn

import loopnets as ln
from loopnets import layers
from loopnets.lavik import init_uniform_, loop_network, thesis_mlp
from loopnets.loop import Loop

SEEDS = [0, 1, 2]
ADAM = ("adam", {"lr": 1e-2, "betas": (0.95, 0.999), "eps": 1e-7})
COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy")  # all but the timings


def classes(n=24, features=4, seed=0):
    """Three noisy classes in `features` dimensions, in the default dtype."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    X = torch.randn(n, features, generator=g) + y[:, None].to(torch.get_default_dtype())
    return X, y


def lavik(variant, unroll=2, skip=False, hidden=5, inputs=4, bias=False):
    """A Table 4.1-style dense model (odd widths: per-seed blocks are not naturally aligned)."""

    def build(seed):
        torch.manual_seed(seed)
        model = thesis_mlp(inputs, (hidden, hidden, hidden), 3, variant=variant, unroll=unroll, skip=skip, bias=bias)
        init_uniform_(model)
        return model

    return build


def both(build, train, val=None, seeds=SEEDS, **settings):
    """(models, histories) trained one at a time with fit, and trained with fit_many."""
    settings = {"loss": "cross_entropy", "optimizer": ADAM, "epochs": 3, "batch_size": 1, "progress": False, **settings}
    single = [build(s) for s in seeds]
    histories = [ln.fit(m, train, val, seed=s, **settings) for m, s in zip(single, seeds)]
    batched = [build(s) for s in seeds]
    many = ln.fit_many(batched, train, val, seeds=seeds, **settings)
    return (single, histories), (batched, many)


def assert_same(one, many):
    (single, histories), (batched, result) = one, many
    assert len(result) == len(histories)
    for a, b in zip(histories, result):
        assert [[getattr(r, c) for c in COLUMNS] for r in a] == [[getattr(r, c) for c in COLUMNS] for r in b]
        assert (a.best_epoch, a.stopped_early, a.diverged) == (b.best_epoch, b.stopped_early, b.diverged)
    for a, b in zip(single, batched):
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(p, q), f"{name} differs by {(p - q).abs().max().item():.3g}"


# --- bit for bit -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize(
    "variant, unroll, skip",
    [("ffn", 1, False), ("tied", 2, False), ("couple", 2, False), ("combine", 2, False),
     ("tied", 3, True), ("couple", 3, True), ("combine", 3, True)],
)
def test_equals_fit_seed_by_seed(float64_and_seed, variant, unroll, skip, batch_size):
    X, y = classes()
    Xv, yv = classes(12, seed=1)
    one, many = both(lavik(variant, unroll, skip), (X, y), (Xv, yv), batch_size=batch_size)
    assert many[1].path == "batched" and many[1].reason is None and many[1].errors == [None] * 3
    assert_same(one, many)


@pytest.mark.parametrize("variant", ["ffn", "couple", "combine"])
def test_float32_with_fused_optimizer(variant):
    # fit builds fused Adam for float32 parameters; each seed's parameters reach it as tensors of their own
    X, y = (t.float() if t.is_floating_point() else t for t in classes())
    build = lavik(variant)

    def build32(seed):
        return build(seed).float()

    one, many = both(build32, (X, y), batch_size=3)
    assert_same(one, many)


def test_biases_tanh_mse_and_combine_grad_scale(float64_and_seed):
    # addmm and its bias gradient, the generic loss path, and COMBINE's rebuilt (unaligned) weights
    def build(seed):
        torch.manual_seed(seed)
        net = ln.Network(input_shape=(3,))
        net.dense(5, activation="tanh")
        first = net.dense(5, activation="tanh")
        last = net.dense(5, activation="leaky_relu")
        net.dense(2)
        net.loopback(outof=last, into=first, unroll=3, backprop=ln.Combine(grad_scale="1/k"))
        return net

    g = torch.Generator().manual_seed(3)
    X = torch.randn(20, 3, generator=g)
    y = torch.stack([X.sum(1), X[:, 0] * X[:, 1]], 1)
    for loss in ("mse", "rmse"):
        one, many = both(build, (X, y), (X[:6], y[:6]), loss=loss, batch_size=3, optimizer=("sgdm", {"lr": 0.05}))
        assert_same(one, many)


@pytest.mark.parametrize("batch_size, shuffle", [(1, True), (3, True), (1, False)])
def test_inputs_lie_like_fits_batches(float64_and_seed, batch_size, shuffle):
    # 25 features: fit's batch views start 200 bytes apart, so half of them are not 16-byte aligned,
    # which changes MKL's rounding; the validation data is an offset view too
    X, y = classes(18, features=25)
    storage = torch.empty(12 * 25 + 1)
    Xv = storage[1:].view(12, 25).copy_(classes(12, features=25, seed=1)[0])
    one, many = both(lavik("couple", inputs=25), (X, y), (Xv, y[:12]), batch_size=batch_size, shuffle=shuffle)
    assert_same(one, many)


def test_conv_layers(float64_and_seed):
    conv = layers.Conv(3, 3, padding=1, activation="relu")
    specs = [conv, conv, conv, layers.Dense(5, activation="relu")]

    def build(seed):
        torch.manual_seed(seed)
        return loop_network((1, 9), specs, (1, 2), 3, method="combine", output_bias=True)

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(12, 1, 9, generator=g), torch.arange(12) % 3
    one, many = both(build, (X, y), batch_size=2, epochs=2)
    assert_same(one, many)


def test_transposed_conv_layer(float64_and_seed):
    def build(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.ConvTranspose1d(2, 3, 3, stride=2, output_padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(3 * 12, 3))

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(10, 2, 5, generator=g), torch.arange(10) % 3
    one, many = both(build, (X, y), batch_size=3, epochs=2)
    assert_same(one, many)


# --- per-seed behaviour ----------------------------------------------------------------------


def test_early_stopping_per_seed(float64_and_seed):
    X, y = classes(30)
    Xv, yv = classes(15, seed=1)
    settings = {"epochs": 15, "early_stopping": 2, "batch_size": 2, "optimizer": ("adam", {"lr": 0.1})}
    one, many = both(lavik("combine"), (X, y), (Xv, yv), seeds=[0, 1, 2, 3], **settings)
    lengths = [len(h) for h in many[1]]
    # distinct stopping epochs (here 3, 4, 7 and 15): the stack shrinks to 3, 2, then 1 seed
    assert len(set(lengths)) == 4 and min(lengths) < 15, lengths
    assert all(h.stopped_early for h, n in zip(many[1], lengths) if n < 15)
    assert_same(one, many)  # each with its best epoch's weights restored


def test_couple_copies_equal_after_every_step(float64_and_seed, monkeypatch):
    retie = Loop.retie_
    calls = []

    def checked(loop):
        retie(loop)
        for copy in loop.copies[1:]:
            for a, b in zip(loop.body.parameters(), copy.parameters()):
                assert torch.equal(a, b)
        calls.append(loop.body[0][0].weight.shape[0])  # stacked: one weight per seed

    monkeypatch.setattr(Loop, "retie_", checked)
    X, y = classes(10)
    models = [lavik("couple", unroll=3)(s) for s in SEEDS]
    ln.fit_many(models, (X, y), seeds=SEEDS, loss="cross_entropy", optimizer=ADAM, epochs=2, batch_size=1, progress=False)
    assert calls == [3] * 20  # every step of both epochs, for the 3 seeds at once


def test_divergence_is_recorded_per_seed(float64_and_seed):
    X, y = classes()
    settings = {"loss": "cross_entropy", "optimizer": ADAM, "epochs": 3, "batch_size": 1, "progress": False}

    def build(seed):
        model = lavik("ffn")(seed)
        if seed == 1:
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1e120)  # logits beyond the float range: the loss is nan from the first step
        return model

    batched = [build(s) for s in SEEDS]
    many = ln.fit_many(batched, (X, y), seeds=SEEDS, **settings)
    assert [h.diverged for h in many] == [False, True, False]
    assert many.errors[0] is None and many.errors[2] is None
    diverging = build(1)
    with pytest.raises(ln.TrainingDiverged) as raised:
        ln.fit(diverging, (X, y), seed=1, **settings)
    assert str(many.errors[1]) == str(raised.value) and many.errors[1].history is many[1]
    for seed, model in zip(SEEDS, batched):
        reference = diverging if seed == 1 else build(seed)
        if seed != 1:
            ln.fit(reference, (X, y), seed=seed, **settings)
        for p, q in zip(reference.parameters(), model.parameters()):
            assert torch.equal(p, q) or (seed == 1 and torch.equal(p.isnan(), q.isnan()))


def test_fit_with_a_list_of_seeds_is_fit_many(float64_and_seed):
    X, y = classes(12)
    settings = {"loss": "cross_entropy", "optimizer": ADAM, "epochs": 2, "batch_size": 4, "progress": False}
    first = [lavik("tied")(s) for s in SEEDS]
    histories = ln.fit(first, (X, y), seed=SEEDS, **settings)
    second = [lavik("tied")(s) for s in SEEDS]
    expected = ln.fit_many(second, (X, y), seeds=SEEDS, **settings)
    assert isinstance(histories, ln.ManyHistories) and histories.path == "batched"
    assert [h["train_loss"] for h in histories] == [h["train_loss"] for h in expected]
    assert all(h["train_seconds"][0] > 0 for h in histories)


# --- fallback and errors ---------------------------------------------------------------------


@pytest.mark.parametrize("layer", [nn.Sigmoid(), ln.Dropout(0.2)])
def test_falls_back_to_one_at_a_time(float64_and_seed, layer):
    def build(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 6), layer, nn.Linear(6, 3))

    X, y = classes(12)
    one, many = both(build, (X, y), batch_size=4)
    assert many[1].path == "sequential" and type(layer).__name__ in many[1].reason
    assert_same(one, many)
    with pytest.raises(ValueError, match="cannot be trained as one exact batched computation"):
        ln.fit_many([build(s) for s in SEEDS], (X, y), seeds=SEEDS, loss="cross_entropy", batched=True, progress=False)


def test_refuses_mismatched_models_and_seeds(float64_and_seed):
    X, y = classes(12)
    fit = lambda models, seeds, **kw: ln.fit_many(models, (X, y), seeds=seeds, loss="cross_entropy", progress=False, **kw)
    models = [lavik("ffn")(s) for s in SEEDS]
    with pytest.raises(ValueError, match="several seeds need one model each"):
        ln.fit(models[0], (X, y), seed=[0, 1], loss="cross_entropy", progress=False)
    with pytest.raises(ValueError, match="got 3 models for 2 seeds"):
        fit(models, [0, 1])
    with pytest.raises(ValueError, match="models\\[2\\] differs from models\\[0\\]"):
        fit([*models[:2], lavik("ffn", hidden=6)(2)], SEEDS)
    with pytest.raises(ValueError, match="models\\[1\\] differs from models\\[0\\]"):
        fit([models[0], lavik("couple")(1)], [0, 1])
    with pytest.raises(ValueError, match="the same model object appears twice"):
        fit([models[0], models[0]], [0, 1])
    with pytest.raises(ValueError, match="seeds must be integers"):
        fit(models, [0, 1, 2.5])
    with pytest.raises(ValueError, match="callable optimizer"):
        fit(models, SEEDS, optimizer=lambda params: torch.optim.SGD(params, lr=0.1), batched=True)
    with pytest.raises(ValueError, match="early_stopping=2 watches the validation loss"):
        fit(models, SEEDS, early_stopping=2)


def test_linear_on_three_dimensional_input(float64_and_seed):
    def build(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Unflatten(1, (2, 3)), nn.Linear(3, 5), nn.ReLU(), nn.Flatten(), nn.Linear(10, 3))

    X, y = classes(12, features=6)
    one, many = both(build, (X, y), batch_size=3, epochs=2)
    assert many[1].path == "batched"
    assert_same(one, many)


def test_one_seed(float64_and_seed):
    X, y = classes()
    one, many = both(lavik("couple"), (X, y), classes(12, seed=1), seeds=[7], batch_size=5)
    assert many[1].path == "batched"
    assert_same(one, many)


@pytest.mark.parametrize("real, padded, bias", [(3, 3, True), (3, 5, True), (4, 4, False)])
def test_seed_linear_function_passes_gradcheck(real, padded, bias):
    """The hand-written per-seed linear (forward and backward) against finite differences, with and
    without padding rows (which get no gradient) and bias."""
    from loopnets.batched import _Rows, _SeedLinearFunction

    torch.manual_seed(0)
    S = 3
    rows = _Rows()
    rows.real = real
    x = torch.randn(S * padded, 4, dtype=torch.float64)
    for s in range(S):
        x[s * padded + real:(s + 1) * padded] = 0  # padding rows, as the stack lays them out
    x.requires_grad_(True)
    w = torch.randn(S, 2, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(S, 2, dtype=torch.float64, requires_grad=True) if bias else None
    inputs = (x, w, b) if bias else (x, w)
    assert torch.autograd.gradcheck(lambda *t: _SeedLinearFunction.apply(*t[:2], t[2] if bias else None, S, rows), inputs)
