"""Loopy CNN families (Caswell et al. 2016): exact equivalences in float64 on tiny images, parameter counts at CIFAR size."""

import pytest
import torch
from torch import nn

import loopnets as ln
from loopnets import loopy as L

pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)



TINY = dict(in_channels=3, classes=4, image_size=6, filters=(5, 4))  # small enough for float64 equalities


def images(n=4, channels=3, size=6):
    return torch.rand(n, channels, size, size)


def randomise_bn_(model):
    """Non-trivial BN affine parameters and running statistics, so BN differences show."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)


def copy_in_order_(source, target):
    """Copy parameters and buffers by position (the families build their modules in the same order)."""
    src = [*source.parameters(), *source.buffers()]
    dst = [*target.parameters(), *target.buffers()]
    assert [t.shape for t in src] == [t.shape for t in dst]
    with torch.no_grad():
        for s, d in zip(src, dst):
            d.copy_(s)


def blocks(body):
    return [body.conv1, body.conv2, body.conv3]


# ----------------------------------------------------------------------------- Loopy vs Vanilla


@pytest.mark.parametrize("bn_per_unroll", [True, False])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_loopy_with_one_unroll_is_vanilla(bn_per_unroll, mode):
    vanilla = L.vanilla(**TINY)
    randomise_bn_(vanilla)
    loopy = L.loopy(**TINY, unroll=1, bn_per_unroll=bn_per_unroll)
    copy_in_order_(vanilla, loopy)
    vanilla.train(mode == "train"), loopy.train(mode == "train")
    x = images()
    assert torch.allclose(loopy(x), vanilla(x), atol=1e-12)
    loopy3 = L.loopy(**TINY, unroll=3, bn_per_unroll=bn_per_unroll)  # the loop changes the output
    assert not torch.allclose(loopy3(x), L.vanilla(**TINY)(x), atol=1e-3)


@pytest.mark.parametrize("bn_per_unroll", [True, False])
def test_loopy_is_the_additive_loop_written_out(bn_per_unroll):
    """Pass 1 sees x alone; pass t >= 2 sees x + conv3 output of pass t - 1; the FC reads the last pass."""
    model = L.loopy(**TINY, unroll=3, bn_per_unroll=bn_per_unroll).eval()
    randomise_bn_(model)
    bodies, _ = model.pass_modules()
    body = lambda t: bodies[min(t, len(bodies) - 1)]
    x = images()
    h = body(0)(x)
    h = body(1)(x + h)
    h = body(2)(x + h)
    assert torch.allclose(model(x), model.head(h.flatten(1)), atol=1e-12)
    assert isinstance(model.features, ln.Loop)
    assert isinstance(model.features.body.conv1.bn, ln.PerPass if bn_per_unroll else nn.BatchNorm2d)


def test_per_unroll_bn_ties_convs_and_separates_bn():
    model = L.loopy(**TINY, unroll=3)
    bodies, _ = model.pass_modules()
    assert len(bodies) == 3
    for layer in range(3):
        convs = [blocks(b)[layer].conv for b in bodies]
        bns = [blocks(b)[layer].bn for b in bodies]
        assert all(c is convs[0] for c in convs)  # one conv object: tied
        assert len({id(b) for b in bns}) == 3  # one BN per unroll
    # the tied weight appears once in parameters(); layer_modules finds one conv
    weight = bodies[0].conv1.conv.weight
    assert sum(p is weight for p in model.parameters()) == 1
    assert model.layer_modules("conv1") == [bodies[0].conv1.conv]
    shared = L.loopy(**TINY, unroll=3, bn_per_unroll=False)
    assert isinstance(shared.features, ln.Loop) and len(shared.pass_modules()[0]) == 1


def test_passes_and_probes_read_every_unroll():
    model = L.loopy(**TINY, unroll=3).eval()
    x = images()
    per_pass = model.passes(x)
    assert len(per_pass) == 3 and torch.allclose(per_pass[-1], model(x))
    with ln.severed(model, loops=True):  # "feedback off": one pass, with unroll 0's BN
        assert torch.allclose(model(x), per_pass[0])
    with ln.unrolled(model, 2):
        assert torch.allclose(model(x), per_pass[1])
    with ln.unrolled(model, 5):  # beyond k: the last pass's modules are reused
        assert model(x).shape == (4, 4)


# ----------------------------------------------------------------------------- parameter counts


def test_parameter_counts_match_caswell_code_at_cifar_size():
    """Trainable 71,443 / 71,967 / 152,869 and logged (with BN statistics) 71,705 / 72,753 / 153,655."""
    counts = L.parameter_counts({"vanilla": L.vanilla(), "loopy": L.loopy(), "deep": L.deep(),
                                 "loopy shared bn": L.loopy(bn_per_unroll=False), "+layer": L.plus_layer()})
    v, lp, d = counts["vanilla"], counts["loopy"], counts["deep"]
    assert (v["total"], lp["total"], d["total"]) == (71_443, 71_967, 152_869)
    assert (v["total+bn_stats"], lp["total+bn_stats"], d["total+bn_stats"]) == (71_705, 72_753, 153_655)
    assert lp["conv+fc"] == v["conv+fc"] == 40_451 + 30_730  # the loop adds no weights
    assert lp["total"] - v["total"] == 2 * 2 * (64 + 64 + 3)  # per-unroll BN gamma, beta of passes 2, 3
    assert counts["loopy shared bn"]["total"] == v["total"]
    assert d["conv"] == 3 * v["conv"]
    assert counts["+layer"]["fc"] == 64 * 32 * 32 * 10 + 10  # the FC reads conv 2's 64 channels
    table = str(counts)
    assert "vanilla" in table and "71,443" in table and "152,869" in table


# ----------------------------------------------------------------------------- Deep


@pytest.mark.parametrize("family", ["loopy", "loopy shared bn", "plus_layer", "times_layer"])
def test_deep_from_loopy_same_output_and_gradient_sums_over_copies(family):
    build = {"loopy": L.loopy, "loopy shared bn": lambda **kw: L.loopy(bn_per_unroll=False, **kw),
             "plus_layer": L.plus_layer, "times_layer": L.times_layer}[family]
    loopy = build(**TINY, unroll=3).eval()
    randomise_bn_(loopy)
    deep = L.deep_from_loopy(loopy)
    assert deep.family == "deep" and not deep.training
    x = images()
    out_loopy, out_deep = loopy(x), deep(x)
    assert torch.allclose(out_loopy, out_deep, atol=1e-12)

    out_loopy.square().sum().backward()
    out_deep.square().sum().backward()
    for layer in loopy.layer_names:
        (tied,) = loopy.layer_modules(layer)
        copies = deep.layer_modules(layer)
        assert len(copies) == (2 if layer == "loop" else 3)  # untied: one conv per use
        assert all(c.weight is not tied.weight for c in copies)
        total = sum(c.weight.grad for c in copies)
        assert torch.allclose(tied.weight.grad, total, atol=1e-10)  # tied gradient = sum over uses
        assert not torch.allclose(tied.weight.grad, copies[-1].weight.grad, atol=1e-6)


def test_deep_has_untied_independently_initialised_copies():
    deep = L.deep(**TINY, unroll=3)
    for layer in ("conv1", "conv2", "conv3"):
        convs = deep.layer_modules(layer)
        assert len(convs) == 3
        assert not torch.equal(convs[0].weight, convs[1].weight)
    loopy = L.loopy(**TINY, unroll=3)
    conv = lambda m: L.parameter_counts({"m": m})["m"]["conv"]
    assert conv(deep) == 3 * conv(loopy)
    x = images()
    assert deep(x).shape == (4, 4)


def test_deep_from_loopy_refuses_models_without_loop():
    with pytest.raises(ValueError, match="looped LoopyCNN"):
        L.deep_from_loopy(L.vanilla(**TINY))


# ----------------------------------------------------------------------------- loop with parameters


@pytest.mark.parametrize("build,merge", [(L.plus_layer, "add"), (L.times_layer, "mul")])
def test_loop_layer_models_shapes_and_the_loop_conv_learns(build, merge):
    model = build(**TINY, unroll=3)
    assert model.features.merge == merge
    assert model.layer_names == ("conv1", "conv2", "loop")
    assert model.head.in_features == 4 * 6 * 6  # conv 2's channels (filters[1]) x H x W
    (loop_conv,) = model.layer_modules("loop")
    assert (loop_conv.in_channels, loop_conv.out_channels) == (4, 3)
    x = images()
    out = model(x)
    assert out.shape == (4, 4)
    out.square().sum().backward()
    assert loop_conv.weight.grad is not None and loop_conv.weight.grad.abs().sum() > 0
    # with one pass the loop conv is not used (the code builds it after unrolls 1..k-1 only)
    single = build(**TINY, unroll=1)
    single(x).square().sum().backward()
    assert single.layer_modules("loop")[0].weight.grad is None


def test_plus_and_times_layer_differ_only_in_the_merge():
    plus = L.plus_layer(**TINY, unroll=2).eval()
    times = L.times_layer(**TINY, unroll=2).eval()
    copy_in_order_(plus, times)
    x = images()
    bodies, feedbacks = plus.pass_modules()
    h = bodies[0](x)
    assert torch.allclose(plus(x), plus.head(bodies[1](x + feedbacks[0](h)).flatten(1)), atol=1e-12)
    assert torch.allclose(times(x), plus.head(bodies[1](x * feedbacks[0](h)).flatten(1)), atol=1e-12)


# ----------------------------------------------------------------------------- MNIST model, options, errors


def test_mnist_loopy_model_shape():
    model = L.mnist_loopy(unroll=3)
    convs = [model.layer_modules(n)[0] for n in ("conv1", "conv2", "conv3")]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 16, (3, 3), (1, 1)), (16, 8, (3, 3), (1, 1)), (8, 1, (3, 3), (1, 1))]
    assert model.head.in_features == 784 and model.head.out_features == 10
    assert model.features.merge == "add" and model.unroll == 3
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_glorot_init_uses_the_relu_gain_and_zero_biases():
    model = L.vanilla()
    conv = model.layer_modules("conv2")[0]
    limit = (12 / ((64 + 64) * 9)) ** 0.5  # Lasagne GlorotUniform('relu'), caswell-code-facts.md sec 1.1
    assert conv.weight.abs().max() <= limit and conv.weight.abs().max() > 0.9 * limit
    assert torch.count_nonzero(conv.bias) == 0 and torch.count_nonzero(model.head.bias) == 0
    torch_default = L.vanilla(init="pytorch")
    assert torch.count_nonzero(torch_default.head.bias) > 0


def test_backprop_modes_and_bad_arguments():
    couple = L.loopy(**TINY, unroll=2, bn_per_unroll=False, backprop=ln.Couple())
    assert isinstance(couple.features.backprop, ln.Couple)
    with pytest.raises(ValueError, match="bn_per_unroll=False"):
        L.loopy(**TINY, unroll=2, backprop=ln.Couple())
    with pytest.raises(ValueError, match="filters"):
        L.vanilla(filters=(64, 0))
    with pytest.raises(ValueError, match="init"):
        L.vanilla(init="he")
    with pytest.raises(ValueError, match="unknown layer"):
        L.vanilla().layer_modules("loop")


def test_checkpoint_round_trip_keeps_ties(tmp_path):
    model = L.loopy(**TINY, unroll=3).eval()
    randomise_bn_(model)
    x = images()
    path = tmp_path / "loopy.lnet"
    ln.save(model, path)
    fresh = ln.load(path, model=L.loopy(**TINY, unroll=3).eval())
    assert torch.allclose(fresh(x), model(x), atol=1e-12)
    bodies, _ = fresh.pass_modules()
    assert bodies[1].conv1.conv is bodies[0].conv1.conv


def test_deep_from_loopy_matches_in_train_mode_with_per_unroll_bn():
    loopy = L.loopy(**TINY, unroll=3).train()
    deep = L.deep_from_loopy(loopy)
    assert deep.training
    x = images()
    assert torch.allclose(loopy(x), deep(x), atol=1e-12)  # batch statistics, one BN per pass in both
