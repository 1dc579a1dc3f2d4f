"""Analyses of gated networks (loopnets.viz): numbers, shapes, the exact clean-case identities, PNGs."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from loopnets.models.gated.network import conv_autoencoder, dense_autoencoder, feedback_gain
from loopnets.viz import bottleneck_tsne, contrast_sweep, feedback_histograms, image_strip, noise_curves


@pytest.fixture(scope="module")
def digits():
    """60 sklearn digits (8 x 8), pixels scaled to [0, 1], and their labels."""
    data = load_digits()
    return torch.tensor(data.data[:60] / 16.0, dtype=torch.float32), data.target[:60]


def tiny(timesteps=2, **kwargs):
    torch.manual_seed(0)
    return dense_autoencoder(inputs=64, hidden=16, bottleneck=4, timesteps=timesteps, **kwargs)


def clean_mse(net, inputs, targets):
    """MSE of every pass, written out directly."""
    net.eval()
    with torch.no_grad():
        return [float(((p.output - targets) ** 2).mean()) for p in net.records(inputs)]


# ----------------------------------------------------------------------------- feedback histograms


def test_feedback_histograms_values_and_png(digits, tmp_path):
    x, _ = digits
    net = tiny(timesteps=3, eta=0.05)  # a small eta so some units saturate even untrained
    out = feedback_histograms(net, x, layer=0, path=tmp_path / "hist.png")
    assert out["mu_d"].shape == out["gain"].shape == (2, 60, 16)  # passes 2, 3; samples; units of E1
    assert out["passes"] == [2, 3]
    assert out["max_gain"] == pytest.approx(1 / (1 - 0.95))
    assert np.all(out["gain"] > 0) and np.all(out["gain"] <= out["max_gain"] * (1 + 1e-6))
    expected = feedback_gain(torch.from_numpy(out["mu_d"]), 0.95, 0.05).numpy()
    np.testing.assert_allclose(out["gain"], expected, rtol=1e-6)
    assert 0 < out["fraction_max_gain"] < 1
    assert out["fraction_max_gain"] == pytest.approx(float((out["mu_d"] >= 0.05).mean()))
    np.testing.assert_allclose(out["gain"][out["mu_d"] >= 0.05], out["max_gain"], rtol=1e-6)
    assert out["mean_gain"] == pytest.approx(float(out["gain"].mean()))
    assert (tmp_path / "hist.png").stat().st_size > 0


def test_feedback_histograms_batches_agree(digits):
    x, _ = digits
    net = tiny()
    whole = feedback_histograms(net, x, 0)
    batched = feedback_histograms(net, x, 0, batch_size=7)
    np.testing.assert_allclose(whole["mu_d"], batched["mu_d"], rtol=1e-5, atol=1e-6)


def test_feedback_histograms_refuses_single_pass_and_non_targets(digits):
    x, _ = digits
    with pytest.raises(ValueError, match="at least 2 passes"):
        feedback_histograms(tiny(timesteps=1), x, 0)
    with pytest.raises(ValueError, match="receives no feedback; the layers receiving feedback are \\[0\\]"):
        feedback_histograms(tiny(), x, 1)
    with pytest.raises(ValueError, match="mode 'constant'"):
        feedback_histograms(tiny(mode="constant"), x, 0)


# ----------------------------------------------------------------------------- noise curves


def test_noise_curves_sigma_zero_is_the_clean_loss(digits, tmp_path):
    x, _ = digits
    net = tiny(timesteps=3)
    net.train()
    rng = torch.get_rng_state()
    out = noise_curves(net, x, [0.0, 0.5, 2.0], seed=1, path=tmp_path / "noise.png")
    assert torch.equal(torch.get_rng_state(), rng)  # global RNG untouched
    assert net.training and net.noise_std == 0.0  # mode and noise restored
    assert out["per_pass"].shape == (3, 3)
    first, *_, last = clean_mse(net, x, x)
    assert out["first"][0] == pytest.approx(first, rel=1e-6)
    assert out["last"][0] == pytest.approx(last, rel=1e-6)
    assert out["last"][2] > out["last"][0] and out["first"][2] > out["first"][0]
    again = noise_curves(net, x, [0.5], seed=1)
    assert again["last"][0] == out["last"][1]  # same seed, same draws
    assert (tmp_path / "noise.png").stat().st_size > 0


# ----------------------------------------------------------------------------- contrast sweep


def test_contrast_factor_one_is_the_clean_loss(digits, tmp_path):
    x, _ = digits
    net = tiny()
    factors = np.linspace(0, 1, 11)
    out = contrast_sweep(net, x, factors, path=tmp_path / "contrast.png")
    assert out["first"].shape == out["last"].shape == out["mean_pixel_gap"].shape == (11,)
    first, last = clean_mse(net, x, x)
    assert out["first"][-1] == pytest.approx(first, rel=1e-6)
    assert out["last"][-1] == pytest.approx(last, rel=1e-6)
    assert (tmp_path / "contrast.png").stat().st_size > 0


def test_contrast_reduction_against_the_originals(digits):
    x, _ = digits
    net = tiny()
    mean = x.mean(1, keepdim=True)
    for around, reduced in (("mean", 0.5 * (x - mean) + mean), ("zero", 0.5 * x)):
        out = contrast_sweep(net, x, [0.5], around=around)
        first, last = clean_mse(net, reduced, x)  # reconstruction of x' scored against x
        assert out["first"][0] == pytest.approx(first, rel=1e-6)
        assert out["last"][0] == pytest.approx(last, rel=1e-6)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        contrast_sweep(net, x, [1.5])


# ----------------------------------------------------------------------------- t-SNE


def test_bottleneck_tsne_one_embedding_per_pass(digits, tmp_path):
    x, y = digits
    net = tiny(timesteps=2)
    out = bottleneck_tsne(net, x, y, layer=1, path=tmp_path / "tsne.png", perplexity=10, max_iter=250)
    assert len(out["embeddings"]) == 2 and out["passes"] == [1, 2]
    assert all(e.shape == (60, 2) and np.all(np.isfinite(e)) for e in out["embeddings"])
    np.testing.assert_array_equal(out["labels"], y)
    assert (tmp_path / "tsne.png").stat().st_size > 0
    with pytest.raises(ValueError, match="below the number of samples"):
        bottleneck_tsne(net, x, y, layer=1, perplexity=60)


# ----------------------------------------------------------------------------- image strip


def test_image_strip_rows_are_inputs_then_passes(digits, tmp_path):
    x, _ = digits
    net = tiny(timesteps=3)
    grid = image_strip(net, x, n=5, shape=(8, 8), path=tmp_path / "strip.png")
    assert grid.shape == (4 * 8, 5 * 8)
    np.testing.assert_allclose(grid[:8, 8:16], x[1].reshape(8, 8).numpy())
    net.eval()
    with torch.no_grad():
        passes = net.records(x[:5])
    np.testing.assert_allclose(grid[16:24, 32:40], passes[1].output[4].reshape(8, 8).numpy(), rtol=1e-6)
    assert (tmp_path / "strip.png").stat().st_size > 0
    with pytest.raises(ValueError, match="64 values"):
        image_strip(net, x, shape=(28, 28))


def test_image_strip_conv_rgb():
    torch.manual_seed(0)
    net = conv_autoencoder(input_shape=(3, 8, 8), filters=4, kernel=3)
    x = torch.rand(4, 3, 8, 8)
    grid = image_strip(net, x, n=4, shape=(3, 8, 8))
    assert grid.shape == (3 * 8, 4 * 8, 3)
    np.testing.assert_allclose(grid[:8, :8], x[0].permute(1, 2, 0).numpy())
