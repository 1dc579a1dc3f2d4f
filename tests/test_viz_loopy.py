"""Guided backprop, merge images and image grids of loopy CNNs (float64, tiny images)."""

import pytest
import torch
from test_loopy import randomise_bn_
from torch import nn

from loopnets import loopy as L
from loopnets.viz import guided_backprop, guided_relus, image_grid, merge_images

pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)



TINY = dict(in_channels=3, classes=4, image_size=6, filters=(5, 4))


def images(n=3):
    return torch.rand(n, 3, 6, 6) - 0.5



# ----------------------------------------------------------------------------- guided backprop


def test_guided_relu_passes_only_positive_gradients_through_positive_inputs():
    relu = nn.ReLU()
    x = torch.randn(50, requires_grad=True)
    g = torch.randn(50)
    with guided_relus(relu):
        y = relu(x)
    assert torch.equal(y, x.clamp(min=0))
    (guided,) = torch.autograd.grad(y, x, g)
    assert torch.equal(guided, g * (x > 0) * (g > 0))
    (plain,) = torch.autograd.grad(relu(x), x, g)  # hooks removed on exit
    assert torch.equal(plain, g * (x > 0))
    assert not torch.equal(plain, guided)


def test_guided_backprop_equals_the_hand_built_rule_on_one_hidden_relu():
    """Vanilla, target conv2 at unroll 0: the only ReLU on the path is conv1's, written out by hand."""
    model = L.vanilla(**TINY)
    randomise_bn_(model)
    model.train()
    x = images()
    filter_ = 2
    result = guided_backprop(model, x, "conv2", filter_, unroll=0)
    assert model.training  # mode restored

    model.eval()
    block1, conv2 = model.features.conv1, model.layer_modules("conv2")[0]
    xg = x.clone().requires_grad_(True)
    z1 = block1.bn(block1.conv(xg))  # pre-activation of the ReLU, (3, 5, 6, 6)
    a1 = z1.clamp(min=0).detach().requires_grad_(True)
    (g1,) = torch.autograd.grad(conv2(a1)[:, filter_].sum(), a1)  # gradient arriving at the ReLU
    (expected,) = torch.autograd.grad(z1, xg, g1 * (z1 > 0) * (g1 > 0), retain_graph=True)
    assert result.shape == x.shape
    assert torch.allclose(result, expected, atol=1e-12)
    (plain,) = torch.autograd.grad(z1, xg, g1 * (z1 > 0))  # ordinary backprop differs
    assert not torch.allclose(result, plain, atol=1e-6)


def test_guided_backprop_maps_differ_between_unrolls():
    model = L.loopy(**TINY, unroll=3)
    randomise_bn_(model)
    x = images()
    maps = [guided_backprop(model, x, "conv1", 0, unroll=u) for u in range(3)]
    assert all(m.shape == x.shape for m in maps)
    assert all(m.abs().sum() > 0 for m in maps)
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        assert not torch.allclose(maps[a], maps[b], atol=1e-6)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        guided_backprop(model, x, "conv1", 0, unroll=3)
    with pytest.raises(ValueError, match="filter"):
        guided_backprop(model, x, "conv3", 3, unroll=0)


def test_guided_backprop_reaches_the_loop_conv_and_deep_copies():
    model = L.times_layer(**TINY, unroll=3)
    x = images()
    maps = [guided_backprop(model, x, "loop", 1, unroll=u) for u in range(2)]  # runs after passes 1, 2
    assert maps[0].shape == x.shape and not torch.allclose(maps[0], maps[1], atol=1e-6)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        guided_backprop(model, x, "loop", 1, unroll=2)
    deep = L.deep(**TINY, unroll=2)
    assert guided_backprop(deep, x, "conv2", 0, unroll=1).shape == x.shape


# ----------------------------------------------------------------------------- merge images


@pytest.mark.parametrize("build,merge", [(L.loopy, torch.add), (L.times_layer, torch.mul)])
def test_merge_images_are_what_conv1_receives_per_unroll(build, merge):
    model = build(**TINY, unroll=3)
    randomise_bn_(model)
    x = images()
    out = merge_images(model, x)
    assert len(out) == 3 and all(m.shape == x.shape for m in out)
    assert torch.equal(out[0], x)  # unroll 0: no merge node
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        _, feedbacks = model.pass_modules()
        h = model.features.passes(x)
        fed = [feedbacks[min(t, len(feedbacks) - 1)](h[t]) if feedbacks else h[t] for t in range(2)]
    for t in (1, 2):
        assert torch.allclose(out[t], merge(fed[t - 1], x), atol=1e-12)
    assert not torch.allclose(out[1], out[2])
    assert len(merge_images(L.vanilla(**TINY), x)) == 1


# ----------------------------------------------------------------------------- image grid


def test_image_grid_values_and_png(tmp_path):
    rows = [torch.rand(4, 3, 6, 6) * 5 - 2 for _ in range(3)]
    grid = image_grid(rows)
    assert grid.shape == (18, 24, 3)
    assert grid.min() == 0.0 and grid.max() == 1.0
    first = rows[0][0]
    expected = ((first - first.min()) / (first.max() - first.min())).permute(1, 2, 0).numpy()
    assert abs(grid[:6, :6] - expected).max() < 1e-12  # each image stretched to its own range
    assert not list(tmp_path.iterdir())  # numbers only without a path

    path = tmp_path / "sub" / "grid.png"
    again = image_grid(rows, path, labels=["a", "b", "c"])
    assert (again == grid).all()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image_grid(torch.rand(2, 1, 5, 5)).shape == (5, 10)
    with pytest.raises(ValueError, match="channels"):
        image_grid(torch.rand(2, 2, 5, 5))
