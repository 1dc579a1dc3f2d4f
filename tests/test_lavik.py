"""The thesis's base models, the iris loader and the `loopnets demo` main job."""

import torch

import loopnets as ln
from loopnets.data import load_iris
from loopnets.models.lavik.architectures import thesis_mlp


def test_iris_split_is_stratified_standardised_and_seeded():
    a, b = load_iris(seed=0), load_iris(seed=1)
    assert a.x_train.shape == (120, 4) and a.x_val.shape == (30, 4)
    assert torch.bincount(a.y_val).tolist() == [10, 10, 10]
    assert torch.allclose(a.x_train.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(a.x_train.std(0, unbiased=False), torch.ones(4), atol=1e-4)
    assert not torch.equal(a.x_val, b.x_val)
    assert torch.equal(a.x_val, load_iris(seed=0).x_val)


def test_thesis_mlp_variants_have_the_thesis_structure():
    ffn = thesis_mlp(4, (25, 25, 25), 3)
    assert ffn.loops() == []
    combine = thesis_mlp(4, (25, 25, 25), 3, variant="combine", unroll=3, skip=True)
    (loop,) = combine.loops()
    assert isinstance(loop.backprop, ln.Combine) and loop.unroll == 3
    couple = thesis_mlp(4, (25, 25, 25), 3, variant="couple", unroll=2)
    (block,) = couple.loops()
    assert isinstance(block.backprop, ln.Couple) and len(block.copies) == 2
    # compact parameter count is the same for every variant: the loop reuses h2, h3
    compact = lambda net: sum(p.numel() for p in net.parameters()) - sum(
        p.numel() for lp in net.loops() for c in lp.copies[1:] for p in c.parameters()
    )
    assert compact(ffn) == compact(combine) == compact(couple) == 4 * 25 + 25 * 25 * 2 + 25 * 3
    x = torch.randn(5, 4)
    for net in (ffn, combine, couple):
        assert torch.allclose(net(x).sum(1), torch.ones(5))


def test_bypassing_skip_changes_the_output_and_can_be_severed():
    net = thesis_mlp(4, (25, 25, 25), 3, variant="couple", skip=True)
    x = torch.randn(5, 4)
    with torch.no_grad():
        with_skip = net(x)
        with ln.severed(net, skips=True):
            without = net(x)
        first, block, out = net.units[0], net.units[1], net.units[2]
        h = first(x)
        manual = out(block(h))
    assert torch.allclose(without, manual)
    assert not torch.allclose(with_skip, without)


def test_loop_network_conv_model_loops_2_to_1_like_the_ftir_cnn():
    from loopnets import layers
    from loopnets.models.lavik.architectures import loop_network

    convs = [layers.Conv(1, 9, padding=4, activation="relu", bias=False)] * 2 + [layers.Dense(32, activation="relu")]
    for method in ("combine", "couple", "tied"):
        net = loop_network((1, 100), convs, (0, 1), 3, method=method, unroll=3, skip=True)
        (loop,) = net.loops()
        assert loop.unroll == 3
        assert net.skips()[0].source == 0
        assert net(torch.randn(2, 1, 100)).shape == (2, 3)


def test_uniform_init_is_neurons_range_and_keeps_couple_copies_tied():
    from loopnets.models.lavik.architectures import init_uniform_

    net = thesis_mlp(4, (25, 25, 25), 3, variant="couple", unroll=3)
    init_uniform_(net, generator=torch.Generator().manual_seed(0))
    weights = torch.cat([p.flatten() for p in net.parameters()])
    assert weights.min() >= -1 and weights.max() <= 1 and weights.std() > 0.5  # U(-1, 1): sd 0.577
    (block,) = net.loops()
    for copy in block.copies[1:]:
        assert all(torch.equal(a, b) for a, b in zip(block.body.parameters(), copy.parameters()))
