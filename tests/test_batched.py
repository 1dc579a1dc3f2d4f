"""fit_many: models trained as one stacked model equal `fit`, one model at a time, within rounding."""

import logging

import pytest
import torch
from torch import nn

import loopnets as ln
from loopnets import layers
from loopnets.models.lavik.architectures import init_uniform_, loop_network, thesis_mlp
from loopnets.core.loop import Loop

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


def relative(a, b) -> float:
    """max |a - b| / max |a| (0 for equal tensors)."""
    scale = a.abs().max().item() or 1.0
    return (a - b).abs().max().item() / scale


def assert_same(one, many, tol=1e-10):
    """Histories (all columns but the timings) and final weights equal within `tol` relative."""
    (single, histories), (batched, result) = one, many
    assert len(result) == len(histories)
    for a, b in zip(histories, result):
        assert len(a) == len(b) and [r.epoch for r in a] == [r.epoch for r in b]
        for c in COLUMNS[1:]:
            left, right = [getattr(r, c) for r in a], [getattr(r, c) for r in b]
            assert (left[0] is None) == (right[0] is None), c
            if left[0] is not None:
                assert relative(torch.tensor(left), torch.tensor(right)) <= tol, (c, left, right)
        assert (a.best_epoch, a.stopped_early, a.diverged) == (b.best_epoch, b.stopped_early, b.diverged)
    for a, b in zip(single, batched):
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            assert relative(p, q) <= tol, f"{name} differs by {relative(p, q):.3g} relative"


# --- equal to one at a time, within rounding ---------------------------------------------------

FIFTY = {"epochs": 2, "batch_size": 1}  # 25 samples: 50 optimizer steps


@pytest.mark.parametrize("variant", ["tied", "couple", "combine", "truncated"])
@pytest.mark.parametrize("skip", [False, True])
def test_float64_fifty_steps_within_1e10(float64_and_seed, variant, skip):
    X, y = classes(25)
    Xv, yv = classes(12, seed=1)
    one, many = both(lavik(variant, 3, skip), (X, y), (Xv, yv), **FIFTY)
    assert many[1].path == "batched" and many[1].reason is None and many[1].errors == [None] * 3
    assert_same(one, many, tol=1e-10)
    # the tolerance is not vacuous: training moved the weights far beyond it
    initial = lavik(variant, 3, skip)(SEEDS[0])
    assert max(relative(p, q) for p, q in zip(initial.parameters(), many[0][0].parameters())) > 1e-3


@pytest.mark.parametrize("variant", ["tied", "couple", "combine", "truncated", "ffn"])
def test_float32_fifty_steps_within_1e5(variant):
    X, y = (t.float() if t.is_floating_point() else t for t in classes(25))
    build = lavik(variant, 3)

    def build32(seed):
        return build(seed).float()

    one, many = both(build32, (X, y), (X[:10], y[:10]), **FIFTY)
    assert many[1].path == "batched"
    assert_same(one, many, tol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize(
    "variant, unroll, skip",
    [("ffn", 1, False), ("tied", 2, False), ("couple", 2, True), ("combine", 3, True)],
)
def test_equals_fit_model_by_model(float64_and_seed, variant, unroll, skip, batch_size):
    X, y = classes()
    Xv, yv = classes(12, seed=1)
    one, many = both(lavik(variant, unroll, skip), (X, y), (Xv, yv), batch_size=batch_size)
    assert many[1].path == "batched"
    assert_same(one, many)


def test_biases_tanh_mse_and_combine_grad_scale(float64_and_seed):
    # baddbmm and its bias gradient, the generic loss path, and COMBINE's scaled weights
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


def test_conv2d_with_groups_and_no_shuffle(float64_and_seed):
    # the S models' convolutions are one grouped convolution: groups of the layer itself must stay apart
    def build(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 9, 3))

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(10, 2, 3, 3, generator=g), torch.arange(10) % 3
    one, many = both(build, (X, y), batch_size=3, epochs=2, shuffle=False)
    assert many[1].path == "batched"
    assert_same(one, many)


# --- per-seed behaviour ----------------------------------------------------------------------


def test_early_stopping_per_seed(float64_and_seed):
    X, y = classes(30)
    Xv, yv = classes(15, seed=1)
    settings = {"epochs": 15, "early_stopping": 2, "batch_size": 2, "optimizer": ("adam", {"lr": 0.1})}
    one, many = both(lavik("combine"), (X, y), (Xv, yv), seeds=[0, 1, 2, 3], **settings)
    lengths = [len(h) for h in many[1]]
    # distinct stopping epochs: a stopped model is masked in the stack while the others go on
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
            if seed == 1:
                assert torch.equal(p.isfinite(), q.isfinite())
            else:
                assert relative(p, q) <= 1e-10


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


@pytest.mark.parametrize("layer", [lambda: nn.BatchNorm1d(6), lambda: ln.Dropout(0.2), lambda: nn.ConvTranspose1d(6, 6, 1)])
def test_falls_back_to_one_at_a_time_with_one_logged_line(float64_and_seed, layer, caplog):
    layer_type = type(layer())

    def build(seed):
        torch.manual_seed(seed)
        middle = layer()
        if isinstance(middle, nn.ConvTranspose1d):
            return nn.Sequential(nn.Linear(4, 6), nn.Unflatten(1, (6, 1)), middle, nn.Flatten(), nn.Linear(6, 3))
        return nn.Sequential(nn.Linear(4, 6), middle, nn.Linear(6, 3))

    X, y = classes(12)
    with caplog.at_level(logging.WARNING, logger="loopnets.training.batched"):
        one, many = both(build, (X, y), batch_size=4)
    assert many[1].path == "sequential" and layer_type.__name__ in many[1].reason
    lines = [r.getMessage() for r in caplog.records if r.name == "loopnets.training.batched"]
    assert len(lines) == 1 and "one after the other" in lines[0] and layer_type.__name__ in lines[0]
    assert_same(one, many, tol=0.0)  # the sequential path is fit itself
    with pytest.raises(ValueError, match="cannot be trained as one stacked model"):
        ln.fit_many([build(s) for s in SEEDS], (X, y), seeds=SEEDS, loss="cross_entropy", batched=True, progress=False)


def test_sigmoid_is_stacked(float64_and_seed):
    def build(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 6), nn.Sigmoid(), nn.Linear(6, 3))

    X, y = classes(12)
    one, many = both(build, (X, y), batch_size=4)
    assert many[1].path == "batched"
    assert_same(one, many)


def test_a_masked_model_keeps_its_parameters(float64_and_seed):
    from loopnets.builder.stacking import Stack

    models = [lavik("combine")(s) for s in SEEDS]
    stack = Stack(models)
    opt = torch.optim.Adam(stack.params, lr=0.1)
    x = classes(4)[0].repeat(len(SEEDS), 1)
    stack.freeze(1)
    before = [p.detach().clone() for p in stack.params]
    for _ in range(3):
        opt.zero_grad()
        stack.model(x).pow(2).sum().backward()
        opt.step()
        stack.hold()
    for p, q in zip(stack.params, before):
        assert torch.equal(p[1], q[1])  # masked: unchanged
        assert not torch.equal(p[0], q[0]) and not torch.equal(p[2], q[2])  # the others trained


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


@pytest.mark.parametrize("bias", [True, False])
def test_stacked_layers_compute_each_models_layer(float64_and_seed, bias):
    from loopnets.builder.stacking import Stack

    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(4, 5, bias=bias), nn.Unflatten(1, (1, 5)), nn.Conv1d(1, 2, 3, bias=bias)) for _ in SEEDS]
    x = torch.randn(len(SEEDS) * 3, 4, requires_grad=True)
    stacked = Stack(models).model(x)
    expected = torch.cat([m(part) for m, part in zip(models, x.view(len(SEEDS), 3, 4))])
    assert relative(expected, stacked) <= 1e-14


# --- stacking across variants ------------------------------------------------------------------


@pytest.mark.parametrize("family", ["combine", "couple", "tied"])
def test_variants_with_different_pass_counts_and_skips_stack(float64_and_seed, family):
    # FFN and COMBINE x2-x3 (a per-model pass weight), COUPLE / Tied x2-x3 (per-model output pass,
    # COUPLE's per-model tie), each with and without the skip (a per-model 0 / 1 factor): one stack
    X, y = classes(12)
    variants = [("ffn", 1)] * (family == "combine") + [(family, 2), (family, 3)]
    specs = [(v, u, skip) for v, u in variants for skip in (False, True)]
    seeds = list(range(len(specs)))
    settings = {"loss": "cross_entropy", "optimizer": ADAM, "epochs": 2, "batch_size": 2, "progress": False}
    single = [lavik(v, u, skip)(s) for (v, u, skip), s in zip(specs, seeds)]
    histories = [ln.fit(m, (X, y), (X[:6], y[:6]), seed=s, **settings) for m, s in zip(single, seeds)]
    stacked = [lavik(v, u, skip)(s) for (v, u, skip), s in zip(specs, seeds)]
    many = ln.fit_many(stacked, (X, y), (X[:6], y[:6]), seeds=seeds, **settings)
    assert many.path == "batched"
    assert_same((single, histories), (stacked, many))


def test_stack_keys_group_what_stacks():
    from loopnets.builder.stacking import merged_keys, stack_key

    keys = merged_keys([stack_key(lavik(v, u, skip)(0)) for v, u, skip in
                        [("ffn", 1, False), ("combine", 2, True), ("combine", 4, False), ("couple", 2, False),
                         ("couple", 3, True)]])
    assert keys[0] == keys[1] == keys[2] and keys[3] == keys[4] and keys[0] != keys[3]
    assert stack_key(lavik("ffn", hidden=6)(0)) != stack_key(lavik("ffn")(0))

    def scaled(unroll):  # COMBINE with grad_scale 1e3: its one-pass version is not an FFN
        torch.manual_seed(0)
        net = ln.Network(input_shape=(4,))
        net.dense(5, activation="relu")
        first = net.dense(5, activation="relu")
        last = net.dense(5, activation="relu")
        net.dense(3)
        if unroll:
            net.loopback(outof=last, into=first, unroll=unroll, backprop=ln.Combine(grad_scale=1e3))
        return net

    keys = merged_keys([stack_key(scaled(u)) for u in (0, 2, 3)])
    assert keys[1] == keys[2] and keys[0] != keys[1]


def test_fit_many_trains_through_the_one_engine_loop(monkeypatch):
    """The stacked path is engine.train with a stacked task and a per-model tracker, not a loop of its own."""
    import loopnets.training.batched as batched
    import loopnets.training.engine as engine

    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs["tracker"])
        return engine.train(*args, **kwargs)

    monkeypatch.setattr(batched, "run_training", spy)
    X, y = classes()
    models = [lavik("couple")(s) for s in SEEDS]
    many = ln.fit_many(models, (X, y), (X, y), seeds=SEEDS, loss="cross_entropy", epochs=3, early_stopping=1,
                       progress=False)
    assert many.path == "batched" and len(calls) == 1 and isinstance(calls[0], batched.StackedModels)
    assert [len(h) for h in many] == [len(h) for h in calls[0].histories] and all(len(h) >= 1 for h in many)
