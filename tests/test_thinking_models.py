"""The thinking-longer models (ln.thinking): recurrent conv nets with recall, the feedforward baseline,
the looped transformer; per-position cross_entropy."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import loopnets as ln
from loopnets.data.algorithmic import mazes, prefix_sums
from loopnets.training.losses import get_loss
from loopnets.models.thinking import ResidualBlock, feedforward_conv, looped_transformer, recurrent_conv
from loopnets.models.thinking.transformer import pre_norm_layer


def test_recurrent_conv_1d_and_2d_keep_the_size_and_read_the_state_after_any_passes():
    torch.manual_seed(0)
    x, _ = prefix_sums(3, 16)
    m = recurrent_conv(1, 1, width=8, unroll=3)
    assert m(x).shape == (3, 2, 16)
    with ln.unrolled(m, 7):
        seven = m(x)
    assert seven.shape == (3, 2, 16) and not torch.allclose(seven, m(x))
    assert prefix_sums(2, 40)[0].shape[-1] == m(prefix_sums(2, 40)[0]).shape[-1]  # any length
    g, _ = mazes(2, 9)
    assert recurrent_conv(2, 3, width=8, unroll=2)(g).shape == (2, 2, 9, 9)
    outs = ln.pass_outputs(m, x, 4)
    assert len(outs) == 4 and torch.allclose(outs[-1], ln.pass_outputs(m, x, 4)[-1])


@pytest.mark.parametrize("recall, merge", [("concat", "concat"), ("add", "add"), (None, "replace")])
def test_recall_is_the_loop_merge(recall, merge):
    torch.manual_seed(0)
    m = recurrent_conv(1, 1, width=4, recall=recall, unroll=3)
    proj, loop, head = m
    assert isinstance(loop, ln.Loop) and loop.merge == merge
    assert (loop.project is not None) == (recall == "concat")
    x = torch.randn(2, 1, 10)
    p = proj(x)
    h = loop.body(p)
    for _ in range(2):
        v = {"concat": lambda: loop.project(torch.cat([h, p], 1)), "add": lambda: h + p, None: lambda: h}[recall]()
        h = loop.body(v)
    torch.testing.assert_close(m(x), head(h))


def test_feedforward_baseline_has_the_same_depth_with_untied_weights():
    ff = feedforward_conv(1, 1, width=8, blocks=2, depth=5)
    rec = recurrent_conv(1, 1, width=8, blocks=2, recall=None, unroll=5)
    assert sum(isinstance(m, ResidualBlock) for m in ff.modules()) == 10  # 5 passes x 2 blocks, each its own
    per_block = sum(p.numel() for p in ResidualBlock(1, 8).parameters())
    n = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert n(ff) - n(rec) == 8 * per_block
    assert ff(torch.randn(2, 1, 12)).shape == (2, 2, 12)


def test_bad_model_settings_are_refused():
    with pytest.raises(ValueError, match="recall must be 'concat' \\(DeepThinking\\), 'add' or None"):
        recurrent_conv(1, 1, recall="mul")
    with pytest.raises(ValueError, match="dim must be 1"):
        recurrent_conv(3, 1)
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        feedforward_conv(1, 1, width=0)
    with pytest.raises(ValueError, match="d_model=30 must be divisible by nhead=4; use d_model=32"):
        looped_transformer(1, d_model=30, nhead=4)


def test_cross_entropy_per_position_is_the_mean_over_positions_and_counts_positions():
    torch.manual_seed(0)
    pred, y = torch.randn(4, 3, 7), torch.randint(0, 3, (4, 7))
    loss = get_loss("cross_entropy")
    torch.testing.assert_close(loss(pred, y), F.cross_entropy(pred, y))  # PyTorch's mean over all positions
    hits, count = loss.correct(pred, y)
    assert count == 28 and hits == (pred.argmax(1) == y).sum()
    grid, gy = torch.randn(2, 2, 5, 5), torch.randint(0, 2, (2, 5, 5))
    torch.testing.assert_close(loss(grid, gy), F.cross_entropy(grid, gy))
    with pytest.raises(ValueError, match=r"integer class indices of shape \(4, 7\)"):
        loss(pred, y[:, :5])


def test_recurrent_conv_trains_with_progressive_loss_through_fit():
    torch.manual_seed(0)
    x, y = prefix_sums(128, 8, seed=1)
    m = recurrent_conv(1, 1, width=8, unroll=4, backprop=ln.Progressive(0.5))
    h = ln.fit(m, (x, y), (x, y), loss="cross_entropy", optimizer=("adam", {"lr": 3e-3}), epochs=4, batch_size=32,
               progress=False)
    assert h["val_loss"][-1] < h["val_loss"][0]
    assert 0 <= h["val_accuracy"][-1] <= 1


def test_looped_transformer_is_causal_trains_with_random_passes_and_runs_more_passes():
    torch.manual_seed(0)
    m = looped_transformer(1, d_model=16, nhead=2, ff=32, unroll=3, backprop=ln.Truncated(1), dropout=0.1)
    assert not any(isinstance(mod, nn.Dropout) for mod in m.modules())  # ln.Dropout: one mask for all passes
    m.eval()
    x = torch.randint(0, 2, (2, 1, 12)).float()
    out = m(x)
    assert out.shape == (2, 2, 12)
    x2 = x.clone()
    x2[:, :, 8:] = 1 - x2[:, :, 8:]  # change the end: the first 8 positions' outputs stay (causal)
    torch.testing.assert_close(m(x2)[:, :, :8], out[:, :, :8])
    assert not torch.allclose(m(x2)[:, :, 8:], out[:, :, 8:])
    with ln.unrolled(m, 8):
        assert not torch.allclose(m(x), out)
    xs, _ = prefix_sums(64, 8)
    ys = xs[:, 0].long()  # copy each bit: learnable in a few steps
    h = ln.fit(m, (xs, ys), (xs, ys), loss="cross_entropy", epochs=3, batch_size=16, progress=False,
               random_passes=(1, 4), optimizer=("adam", {"lr": 3e-3}))
    assert len(h) == 3 and h["val_loss"][-1] < h["val_loss"][0]


def test_a_windowed_transformer_sees_exactly_its_window_per_layer_and_learns_its_offset_bias():
    """window=w: each layer attends to itself and the w - 1 previous positions, so after the prelude,
    k passes and the coda an output at i depends on inputs i - (w - 1)(k + 2)..i and no others."""
    torch.manual_seed(0)
    w, k = 3, 2
    m = looped_transformer(1, d_model=16, nhead=2, ff=32, unroll=k, window=w).eval()
    x = torch.randint(0, 2, (1, 1, 20)).float()
    reach = (w - 1) * (k + 2)  # prelude + k core passes + coda, w - 1 positions each
    for j in (0, 5):
        x2 = x.clone()
        x2[0, 0, j] = 1 - x2[0, 0, j]
        moved = (m(x2) - m(x)).abs().sum(1)[0] > 1e-6
        assert moved[j:j + reach + 1].all() and not moved[j + reach + 1:].any() and not moved[:j].any()
    band = m[1].band(5, 0, x)
    assert torch.isinf(band[0, 1]) and torch.isinf(band[4, 1]) and band[4, 2] == band[3, 1] == m[1].offset_bias[0, 2]
    m.train()
    loss = m(x).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in m.named_parameters() if "offset_bias" in n)
    with pytest.raises(ValueError, match="window must be None or an integer >= 2"):
        looped_transformer(1, window=1)
    with pytest.raises(ValueError, match="causal=True"):
        looped_transformer(1, window=3, causal=False)


def test_the_windowed_layers_compute_the_encoder_layers_own_forward_in_every_mode():
    """pre_norm_layer is nn.TransformerEncoderLayer's norm-first forward (its training path), and a
    windowed model gives the same numbers in eval mode without grad, where torch's fused path would
    read the learned offset bias as a boolean mask."""
    torch.manual_seed(0)
    m = looped_transformer(1, d_model=16, nhead=2, ff=32, unroll=3, window=3)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "offset_bias" in name:
                p.uniform_(-0.5, 0.5)
    layer, h = m[1].layers[0], torch.randn(4, 8, 16)
    mask = m[1].band(8, 0, h)
    torch.testing.assert_close(pre_norm_layer(layer, h, mask), layer(h, src_mask=mask))  # training mode
    x = torch.randint(0, 2, (4, 1, 8)).float()
    trained = m(x)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x), trained)
