"""The Network builder: shape inference, skips, loopback / feedback, printing, config."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from loopnets import layers
from loopnets.core.modes import Combine, Couple, Tied
from loopnets.core.dropout import Dropout
from loopnets.builder.network import Network


def square(n_layers: int = 4) -> Network:
    """4 -> d4 -> ... -> d4: every layer's input and output shape is (4,)."""
    net = Network((4,))
    for _ in range(n_layers):
        net.dense(4, activation="tanh")
    return net


def iris_like() -> Network:
    """4 -> d25 -> d25 -> d25 -> d3, the thesis's iris base (layers 0..3)."""
    net = Network((4,))
    for _ in range(3):
        net.dense(25, activation="relu")
    net.dense(3, activation="softmax")
    return net


# -- shape inference ------------------------------------------------------------------------


def test_dense_to_conv_reshapes_to_square_image():
    net = Network((4,))
    net.dense(100)
    net.conv(5, (3, 3))
    assert net.output_shape == (5, 8, 8)  # 100 = 1x10x10, 3x3 kernel -> 8x8
    assert isinstance(net.units[1][0], layers.Reshape)
    assert net(torch.randn(2, 4)).shape == (2, 5, 8, 8)


def test_dense_99_before_conv_suggests_nearest_squares():
    net = Network((4,))
    net.dense(99)
    with pytest.raises(ValueError, match=r"layer 1.*100 = 1x10x10 or 81 = 1x9x9"):
        net.conv(5, (3, 3))


def test_conv1d_same_padding_keeps_length():
    net = Network((1, 571))
    net.conv(1, 9, padding=4, activation="relu")
    assert net.layer_shapes() == [((1, 571), (1, 571))]
    assert isinstance(net.units[0][0], nn.Conv1d)
    assert net(torch.randn(2, 1, 571)).shape == (2, 1, 571)


def test_conv2d_row_kernel_on_one_row_image():
    net = Network((1, 1, 571))
    net.conv(1, (1, 9), padding=(0, 4), activation="relu")
    assert net.output_shape == (1, 1, 571)
    assert isinstance(net.units[0][0], nn.Conv2d)
    assert net(torch.randn(2, 1, 1, 571)).shape == (2, 1, 1, 571)


def test_conv_dims1_on_vector_and_dense_after_conv_flattens():
    net = Network((10,))
    net.conv(2, 3, dims=1, activation="relu")  # (10,) -> (1, 10) -> (2, 8)
    net.dense(4, activation="relu", dropout=0.5)
    assert net.layer_shapes() == [((10,), (2, 8)), ((2, 8), (4,))]
    assert [type(m) for m in net.units[1]] == [nn.Flatten, nn.Linear, nn.ReLU, Dropout]
    assert net(torch.randn(3, 10)).shape == (3, 4)


@pytest.mark.parametrize(
    "input_shape, build, expected",
    [
        ((2, 4, 4), lambda n: n.deconv(3, 3, stride=2, padding=1, output_padding=1), (3, 8, 8)),
        ((2, 5), lambda n: n.deconv(3, 4, stride=2), (3, 12)),
        ((3, 8, 8), lambda n: n.maxpool(2), (3, 4, 4)),
        ((3, 9), lambda n: n.maxpool(3, stride=2), (3, 4)),
    ],
)
def test_deconv_and_maxpool_shapes(input_shape, build, expected):
    net = Network(input_shape)
    build(net)
    assert net.output_shape == expected
    assert net(torch.randn(2, *input_shape)).shape == (2, *expected)


def test_kernel_too_large_is_an_error_naming_the_layer():
    net = Network((1, 3, 3))
    net.conv(1, 2)
    with pytest.raises(ValueError, match=r"layer 1 \(conv2d\).*does not fit the input \(1, 2, 2\)"):
        net.conv(1, 5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda n: n.dense(3, activation="swish"), "unknown activation 'swish'"),
        (lambda n: n.dense(-1), "units must be an int >= 1"),
        (lambda n: n.conv(1, 0), "kernel must be"),
        (lambda n: n.dropout(1.5), r"probability in \[0, 1\)"),
        (lambda n: n.connect(0, 7), "target 7 is out of range"),
        (lambda n: n.loopback(5, 0), "outof 5 is out of range"),
    ],
)
def test_bad_arguments_are_errors(call, match):
    net = Network((4,))
    net.dense(4)
    with pytest.raises(ValueError, match=match):
        call(net)


def test_forward_rejects_wrong_input_shape():
    net = Network(input_shape=(4,))
    net.dense(3)
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 4\); got \(2, 5\)"):
        net(torch.randn(2, 5))


# -- skips ----------------------------------------------------------------------------------


def scaled_identity_net(accumulation=None, **kwargs) -> Network:
    """Three bias-free 3x3 layers with weights 2I, 3I, I and a skip from the input into layer 2."""
    net = Network((3,), **kwargs)
    for scale in (2.0, 3.0, 1.0):
        i = net.dense(3, bias=False)
        with torch.no_grad():
            net.units[i][0].weight.copy_(scale * torch.eye(3))
    net.connect(0, 2, accumulation)
    return net.double()


@pytest.mark.parametrize(
    "accumulation, expected",
    [
        ("add", lambda x: 6 * x + x),
        ("sub", lambda x: 6 * x - x),
        ("mul", lambda x: 6 * x * x),
        ("mean", lambda x: (6 * x + x) / 2),
        ("overwrite", lambda x: x),
    ],
)
def test_skip_accumulation_values(accumulation, expected):
    x = torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
    net = scaled_identity_net(accumulation)
    torch.testing.assert_close(net(x), expected(x))
    # the same through the network-wide default
    net = scaled_identity_net(skip_accumulation=accumulation)
    torch.testing.assert_close(net(x), expected(x))


def test_skips_disabled_contribute_nothing():
    x = torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
    net = scaled_identity_net("add")
    net.skips_enabled = False
    torch.testing.assert_close(net(x), 6 * x)


def test_skips_into_one_layer_apply_in_order():
    x = torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
    net = scaled_identity_net("add")  # skip 0 -> 2 (add): 6x + x
    net.connect(1, 2, "mul")  # then times the input of layer 1 (2x)
    torch.testing.assert_close(net(x), (6 * x + x) * (2 * x))


def test_skip_reshapes_equal_sizes_and_rejects_others():
    net = Network((1, 2, 2))
    for _ in range(2):
        i = net.dense(4, bias=False)
        with torch.no_grad():
            net.units[i][-2].weight.copy_(torch.eye(4))  # [(Flatten,) Linear, Identity]
    net.connect(0, 1)  # the input (1, 2, 2) is reshaped to layer 1's input (4,)
    net.double()
    x = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(net(x), 2 * x.reshape(2, 4))
    net.dense(3)
    net.dense(2)
    with pytest.raises(ValueError, match=r"input of layer 1 has shape \(4,\).*input of layer 3 has shape \(3,\)"):
        net.connect(1, 3)


# -- loops ----------------------------------------------------------------------------------


def test_loopback_tied_equals_manual_unrolling():
    torch.manual_seed(0)
    net = iris_like().double()
    l0, l1, l2, l3 = list(net.units)
    net.loopback(outof=2, into=1, unroll=3, backprop=Tied())
    x = torch.randn(5, 4, dtype=torch.float64)
    h = l0(x)
    for _ in range(3):
        h = l2(l1(h))
    torch.testing.assert_close(net(x), l3(h))
    assert len(net.units) == 3 and net.loops()[0].body[0] is l1
    assert sum(p.numel() for p in net.parameters()) == 125 + 650 + 650 + 78  # weights tied, counted once


def test_loopback_defaults_to_combine():
    net = iris_like()
    net.loopback(2, 1)
    (loop,) = net.loops()
    assert loop.backprop == Combine() and loop.unroll == 2
    assert net(torch.randn(2, 4)).shape == (2, 3)


def test_loopback_with_couple_registers_each_parameter_once():
    net = iris_like()
    net.loopback(2, 1, backprop=Couple())
    state = net.state_dict()
    assert len({t.data_ptr() for t in state.values()}) == len(state)  # no shared tensors (safetensors)


def test_loopback_shape_error():
    net = Network((4,))
    net.dense(25)
    net.dense(25)
    net.dense(25)
    net.dense(24)
    with pytest.raises(ValueError) as err:
        net.loopback(3, 1)
    assert str(err.value) == (
        "loopback 3 -> 1 needs layer 3's output shape to equal layer 1's input shape (25,); got (24,)"
    )


def test_feedback_block_is_one_layer_with_couple_by_default():
    torch.manual_seed(0)
    net = Network((4,))
    net.dense(6, activation="relu")
    index = net.feedback([layers.Dense(6, "tanh"), layers.Dense(6, "tanh")], unroll=2)
    assert index == 1 and net.dense(3) == 2
    (loop,) = net.loops()
    assert loop.backprop == Couple()
    net.double().eval()
    x = torch.randn(4, 4, dtype=torch.float64)
    h = net.units[0](x)
    h = loop.body(loop.body(h))
    torch.testing.assert_close(net(x), net.units[2](h))


def test_feedback_shape_error():
    net = Network((4,))
    net.dense(6)
    with pytest.raises(ValueError, match=r"input shape \(6,\); got \(5,\)"):
        net.feedback([layers.Dense(5)])


@pytest.mark.parametrize("loop_first", [False, True])
@pytest.mark.parametrize("source, target", [(0, 2), (2, 3)])
def test_skip_strictly_inside_a_loop_is_an_error(loop_first, source, target):
    net = square()
    if loop_first:
        net.loopback(2, 1)
        with pytest.raises(ValueError, match="strictly inside the loop over layers 1..2"):
            net.connect(source, target)
    else:
        net.connect(source, target)
        with pytest.raises(ValueError, match="strictly inside the loop over layers 1..2"):
            net.loopback(2, 1)


def test_bypassing_skip_around_a_loop_is_allowed():
    net = iris_like()
    net.loopback(2, 1)
    net.connect(1, 3)
    assert net(torch.randn(2, 4)).shape == (2, 3)


@pytest.mark.parametrize("second", [(3, 2), (3, 0), (1, 1)])
def test_overlapping_or_nested_loops_are_an_error(second):
    net = square()
    net.loopback(2, 1)
    with pytest.raises(ValueError, match=r"overlap.*5\.5\.1"):
        net.loopback(*second)


def test_loopback_over_a_feedback_block_is_an_error():
    net = Network((4,))
    net.dense(4)
    net.feedback([layers.Dense(4)])
    with pytest.raises(ValueError, match=r"feedback block \(layer 1\).*5\.5\.1"):
        net.loopback(1, 0)


# -- output, printing, config ---------------------------------------------------------------


def test_logits_are_the_output_before_softmax():
    torch.manual_seed(0)
    net = iris_like().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    assert net.output_activation == "softmax"
    torch.testing.assert_close(torch.softmax(net.logits(x), dim=-1), net(x))
    assert not torch.allclose(net.logits(x), net(x))


def test_logits_of_a_looped_sigmoid_output():
    torch.manual_seed(0)
    net = Network((3,))
    net.dense(3, activation="sigmoid")
    net.loopback(0, 0, backprop=Tied())
    net.double()
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(torch.sigmoid(net.logits(x)), net(x))


def test_print_shows_layers_shapes_loops_skips_and_parameters():
    net = iris_like()
    net.loopback(2, 1)
    net.connect(1, 3)
    text = str(net)
    for part in ("dense 25", "(25,)", "softmax", "650", "loopback 2 -> 1", "Combine", "input of 1 -> input of 3"):
        assert part in text
    assert "total parameters: 1,503" in text
    net = Network((4,))
    net.feedback([layers.Dense(4, "relu")], unroll=3)
    assert "COUPLE trains 3 copies (40 parameters beyond the compact body)" in str(net)


def build_mixed() -> Network:
    net = Network((1, 8, 8), skip_accumulation="mean")
    net.conv(2, (3, 3), padding=1, activation="relu")
    net.conv(1, (3, 3), padding=1, activation="relu", dropout=0.1)
    net.maxpool(2)
    net.dense(16, activation="tanh", bias=False)
    net.feedback([layers.Dense(8, "relu"), layers.Dense(16, "relu")], unroll=3, merge="add")
    net.dense(3, activation="softmax")
    net.loopback(1, 0, unroll=2, backprop=Tied())
    net.connect(0, 2, "add")
    net.connect(3, 5)
    return net


def test_config_round_trip():
    torch.manual_seed(0)
    net = build_mixed()
    cfg = json.loads(json.dumps(net.config()))
    assert cfg == net.config()
    rebuilt = Network.from_config(cfg)
    assert rebuilt.config() == net.config()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    rebuilt.load_state_dict(net.state_dict())
    net.eval(), rebuilt.eval()
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(rebuilt(x), net(x))


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"input_shape": [4], "colour": "red"}, r"unknown keys \['colour'\]"),
        ({"input_shape": [4], "calls": [{"op": "dense", "units": 3, "size": 2}]}, r"unknown keys \['size'\]"),
        ({"input_shape": [4], "calls": [{"op": "lstm"}]}, "unknown op 'lstm'"),
    ],
)
def test_from_config_rejects_unknown_keys(cfg, match):
    with pytest.raises(ValueError, match=match):
        Network.from_config(cfg)
