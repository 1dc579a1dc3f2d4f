"""The loop protocol (loopnets.core.protocol) on the three loop classes (Loop also with PerPass) and on a toy loop.

For each: the protocol check passes; passes / iterate / output_after agree with the forward;
ln.severed gives the no-feedback output (computed here without the model's loop machinery);
ln.unrolled sets the pass count and restores it; ln.pass_outputs gives the output after every
pass; ln.early_exit stops where its definition says and computes no pass beyond it.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import loopnets as ln
from loopnets.core.protocol import FeedbackLoop, LoopHost, loops_in

pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)


# -- the three classes (Loop twice), tiny, each with its no-feedback output written out ----------------------


def make_loop():
    body = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    return ln.Loop(body, unroll=3, merge="add", output="mean"), torch.randn(4, 3), lambda m, x: m.body(x)


def make_perpass_loop():  # a module per pass (the former loopy.PassLoop)
    bodies = [nn.Sequential(nn.Linear(3, 3), nn.Tanh()), nn.Sequential(nn.Linear(3, 3), nn.Tanh())]
    return ln.Loop(ln.PerPass(bodies), unroll=3, merge="add"), torch.randn(4, 3), lambda m, x: m.body[0](x)


def make_gated():
    net = ln.gated.dense_autoencoder("comprehensive", inputs=6, hidden=5, bottleneck=3, timesteps=3)

    def plain(m, x):  # the same weights without feedback: the plain autoencoder
        free = ln.gated.dense_autoencoder("none", inputs=6, hidden=5, bottleneck=3, timesteps=1)
        free.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("projections.")})
        return free(x)

    return net, torch.rand(4, 6), plain


def make_inn(kernel="dense"):
    net = ln.inn.IterativeNetwork(4, 7, 3, activation="tanh", iterations=3, kernel=kernel)

    def first_iteration(m, x):  # s^1 = tanh(W_x x + b): s^0 = 0 contributes nothing
        return torch.tanh(x @ m.weight[:, :4].t() + m.bias)[:, -3:]

    return net, torch.randn(4, 4), first_iteration


MAKERS = {"Loop": make_loop, "Loop-PerPass": make_perpass_loop, "GatedNetwork": make_gated, "IterativeNetwork": make_inn,
          "IterativeNetwork-sparse": lambda: make_inn("sparse")}


@pytest.fixture(params=list(MAKERS))
def case(request):
    model, x, no_feedback = MAKERS[request.param]()
    return model.eval(), x, no_feedback


def own_passes(model) -> int:
    return {"Loop": "unroll", "GatedNetwork": "timesteps", "IterativeNetwork": "iterations"}[
        type(model).__name__
    ]


# -- the protocol's members ---------------------------------------------------------------------


def test_protocol_check_passes(case):
    model, _, _ = case
    assert isinstance(model, FeedbackLoop)
    assert loops_in(nn.Sequential(model)) == [model]
    assert model.probe_unroll is None and model.planned_passes == getattr(model, own_passes(model)) == 3
    model.probe_unroll = 5
    assert model.planned_passes == 5


def test_non_loops_fail_the_check():
    assert not isinstance(nn.Linear(2, 2), FeedbackLoop)
    assert not isinstance(ln.Network(input_shape=(2,)), FeedbackLoop)
    assert isinstance(ln.Network(input_shape=(2,)), LoopHost)


def test_passes_return_one_tensor_per_pass_and_match_the_forward(case):
    model, x, _ = case
    with torch.no_grad():
        for k in (1, 2, 4):
            outs = model.passes(x, k)
            assert isinstance(outs, list) and len(outs) == k and all(isinstance(o, torch.Tensor) for o in outs)
            torch.testing.assert_close(model.output_after(outs), model(x, k), rtol=0, atol=1e-12)
            streamed = list(itertools.islice(model.iterate(x), k))
            for a, b in zip(streamed, outs):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        assert len(model.passes(x)) == 3  # planned_passes


def test_output_after_needs_a_pass(case):
    model, _, _ = case
    with pytest.raises(ValueError, match="at least one"):
        model.output_after([])


def test_loop_output_after_is_the_mean_for_output_mean():
    loop, x, _ = make_loop()
    with torch.no_grad():
        outs = loop.passes(x, 3)
        torch.testing.assert_close(loop.output_after(outs), torch.stack(outs).mean(0))
        assert not torch.allclose(loop.output_after(outs), outs[-1])


# -- severed, unrolled ----------------------------------------------------------------------------


def test_severed_gives_the_no_feedback_output(case):
    model, x, no_feedback = case
    with torch.no_grad():
        full = model(x)
        with ln.severed(model, loops=True):
            assert model.planned_passes == 1
            cut = model(x)
            torch.testing.assert_close(cut, model.passes(x)[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(cut, no_feedback(model, x), rtol=1e-10, atol=1e-12)
        assert not torch.allclose(cut, full)  # the feedback did change the output
        assert model.probe_unroll is None
        torch.testing.assert_close(model(x), full, rtol=0, atol=0)


def test_unrolled_sets_the_pass_count_and_restores_it(case):
    model, x, _ = case
    net = nn.Sequential(nn.Identity(), model)  # found inside a container too
    with torch.no_grad():
        want = model(x, 5)
        with ln.unrolled(net, 5):
            assert model.probe_unroll == 5
            torch.testing.assert_close(model(x), want, rtol=0, atol=0)
            assert len(model.passes(x)) == 5
        assert model.probe_unroll is None
        with pytest.raises(RuntimeError), ln.unrolled(net, 2):
            raise RuntimeError("restored after an error too")
        assert model.probe_unroll is None


def test_iterative_network_sequence_input_under_severed_is_an_error():
    net, _, _ = make_inn()
    seq = torch.randn(2, 4, 4)
    with ln.severed(net, loops=True), pytest.raises(ValueError, match="one iteration per step"):
        net(seq)
    assert len(list(net.iterate(seq))) == 4  # a sequence ends with its steps


# -- pass_outputs, early_exit -------------------------------------------------------------------------


def test_pass_outputs_give_the_output_after_every_pass(case):
    model, x, _ = case
    with torch.no_grad():
        outs = ln.pass_outputs(model, x)
        assert len(outs) == 3
        for t, out in enumerate(outs, start=1):
            torch.testing.assert_close(out, model(x, t), rtol=0, atol=1e-12)
        torch.testing.assert_close(outs[-1], model(x), rtol=0, atol=1e-12)
        after = nn.Linear(outs[-1].shape[1], 2)  # layers after the loop run on every pass's output
        seq = nn.Sequential(model, after)
        for t, out in enumerate(ln.pass_outputs(seq, x, unroll=4), start=1):
            torch.testing.assert_close(out, after(model(x, t)), rtol=0, atol=1e-12)


def test_early_exit_threshold_zero_runs_every_pass(case):
    model, x, _ = case
    result = ln.early_exit(model, x, "residual", 0.0, max_passes=4)
    assert result.passes.tolist() == [4] * len(x)
    with torch.no_grad():
        torch.testing.assert_close(result.output, model(x, 4), rtol=0, atol=1e-12)


def test_early_exit_stops_at_the_first_pass_below_the_threshold(case):
    model, x, _ = case
    result = ln.early_exit(model, x, "entropy", float("inf"), max_passes=4)  # every sample exits at pass 1
    assert result.passes.tolist() == [1] * len(x) and len(result.values) == 1
    with torch.no_grad():
        torch.testing.assert_close(result.output, model(x, 1), rtol=0, atol=1e-12)
    # residual: undefined at pass 1, so a huge threshold exits at pass 2 with the 2-pass output
    result = ln.early_exit(model, x, "residual", 1e30, max_passes=4)
    assert result.passes.tolist() == [2] * len(x)
    with torch.no_grad():
        torch.testing.assert_close(result.output, model(x, 2), rtol=0, atol=1e-12)


def test_early_exit_computes_no_pass_beyond_the_exit():
    loop, x, _ = make_loop()
    calls = []
    loop.body.register_forward_hook(lambda *_: calls.append(1))
    ln.early_exit(loop, x, "residual", 1e30, max_passes=6)
    assert len(calls) == 2


# -- hosts and a toy loop ---------------------------------------------------------------------------


def test_loopy_cnn_hosts_its_loop():
    model = ln.loopy.loopy(in_channels=1, classes=3, image_size=4, unroll=3).eval()
    x = torch.rand(2, 1, 4, 4)
    assert isinstance(model, LoopHost) and len(loops_in(model)) == 1
    with torch.no_grad():
        outs = ln.pass_outputs(model, x)
        torch.testing.assert_close(outs[-1], model(x), rtol=0, atol=1e-12)
        torch.testing.assert_close(outs, model.passes(x), rtol=0, atol=1e-12)
        with ln.severed(model, loops=True):
            torch.testing.assert_close(model(x), outs[0], rtol=0, atol=1e-12)
    vanilla = ln.loopy.vanilla(in_channels=1, classes=3, image_size=4)
    with pytest.raises(ValueError, match="exactly one loop"):
        ln.pass_outputs(vanilla, x)


class Halving(nn.Module):
    """A toy loop written only against the protocol: h_t = (h_{t-1} + x) / 2, h_1 = x / 2."""

    def __init__(self, unroll: int = 3):
        super().__init__()
        self.unroll, self.probe_unroll = unroll, None

    @property
    def planned_passes(self) -> int:
        return self.unroll if self.probe_unroll is None else self.probe_unroll

    def iterate(self, x):
        h = torch.zeros_like(x)
        while True:
            h = (h + x) / 2
            yield h

    def passes(self, x, unroll=None):
        return list(itertools.islice(self.iterate(x), self.planned_passes if unroll is None else unroll))

    def output_after(self, outputs):
        return outputs[-1]

    def forward(self, x, unroll=None):
        return self.passes(x, unroll)[-1]


def test_a_new_loop_class_joins_by_implementing_the_protocol():
    toy, x = Halving(), torch.ones(2, 1)
    assert isinstance(toy, FeedbackLoop)
    with ln.severed(toy, loops=True):
        torch.testing.assert_close(toy(x), x / 2)
    with ln.unrolled(toy, 4):
        torch.testing.assert_close(toy(x), x * (1 - 2.0**-4))
    torch.testing.assert_close(ln.pass_outputs(toy, x), [x / 2, x * 0.75, x * 0.875])
    result = ln.early_exit(toy, x, "residual", 0.2, max_passes=10)  # residual at t: 2^-t / (1 - 2^-t)
    assert result.passes.tolist() == [3, 3]
