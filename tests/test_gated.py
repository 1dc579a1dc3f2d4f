"""Feedback-gated ReLUs (Kemmerling): the activation against hand-computed values and gradcheck,
and GatedNetwork (passes, feedback projections, filter-wise conv feedback, dropout, noise, fit)."""

import copy

import pytest
import torch
from torch import nn

import loopnets as ln
from loopnets import layers
from loopnets.models.gated.network import (
    FeedbackGatedReLU,
    GatedNetwork,
    conv_autoencoder,
    dense_autoencoder,
    feedback_gain,
    feedback_gated_relu,
)


pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)


def tiny_ae(feedback="partial", **options) -> GatedNetwork:
    """6-5-3-5-6 dense autoencoder: layers E1, E2, D1, D2 (sigmoid)."""
    return dense_autoencoder(feedback, inputs=6, hidden=5, bottleneck=3, **options)


def plain_relu_net(net: GatedNetwork) -> nn.Sequential:
    """The same affine layers (copied weights) with plain ReLUs and the sigmoid output."""
    linears = [copy.deepcopy(layer.pre[0]) for layer in net.layers]
    return nn.Sequential(linears[0], nn.ReLU(), linears[1], nn.ReLU(), linears[2], nn.ReLU(), linears[3], nn.Sigmoid())


# --- the activation ------------------------------------------------------------------------


def test_activation_hand_computed_eq6():
    # beta_max = 0.95, eta = 5: beta = min(0.19 mu_D, 0.95), f = max(0, mu_S) / (1 - beta)
    mu_s = torch.tensor([2.0, -1.0, 3.0, 0.5, 1.0, 4.0])
    mu_d = torch.tensor([0.0, 1.0, 10.0, -5.0, 2.5, 5.0])
    expected = torch.tensor([2.0, 0.0, 3.0 / 0.05, 0.5 / 1.95, 1.0 / 0.525, 4.0 / 0.05])
    torch.testing.assert_close(feedback_gated_relu(mu_s, mu_d, 0.95, 5.0), expected)
    gain = torch.tensor([1.0, 1 / 0.81, 20.0, 1 / 1.95, 1 / 0.525, 20.0])
    torch.testing.assert_close(feedback_gain(mu_d, 0.95, 5.0), gain)


@pytest.mark.parametrize("beta_max", [0.1, 0.5, 0.9, 0.95])
def test_maximum_gain_is_one_over_one_minus_beta_max(beta_max):
    mu_s = torch.tensor([1.0, 2.0, 0.3])
    mu_d = torch.tensor([7.0, 1e3, 1e12])  # all above eta = 7: saturated
    gate = FeedbackGatedReLU(beta_max, eta=7.0)
    assert gate.max_gain == pytest.approx(1 / (1 - beta_max))
    torch.testing.assert_close(gate(mu_s, mu_d), mu_s / (1 - beta_max))
    torch.testing.assert_close(feedback_gain(mu_d, beta_max, 7.0), torch.full((3,), 1 / (1 - beta_max)))
    sweep = feedback_gain(torch.linspace(-50, 50, 1001), beta_max, 7.0)
    assert sweep.max().item() == pytest.approx(1 / (1 - beta_max)) and sweep.min().item() > 0


def test_activation_hand_computed_eq8_threshold():
    # alpha mu_D is added to mu_S (eq 8); the gain still comes from mu_D itself.
    mu_s = torch.tensor([1.0, 1.0, -1.0, -1.0])
    mu_d = torch.tensor([2.0, 2.0, 1.0, 10.0])
    alpha = torch.tensor([0.5, -0.75, 2.0, 0.05])
    expected = torch.tensor([2.0 / 0.62, 0.0, 1.0 / 0.81, 0.0])  # -1 + 0.5 < 0
    torch.testing.assert_close(feedback_gated_relu(mu_s, mu_d, 0.95, 5.0, alpha=alpha), expected)
    # eq 6 would give 0 for the third entry: feedback lowered the threshold.
    assert feedback_gated_relu(mu_s, mu_d, 0.95, 5.0)[2] == 0


def test_module_modes():
    mu_s = torch.tensor([[1.0, -1.0, 0.5]])
    mu_d = torch.tensor([[2.0, 1.0, 10.0]])
    gain = FeedbackGatedReLU(0.95, 5.0, "gain")
    threshold = FeedbackGatedReLU(0.95, 5.0, "threshold", alpha=2.0)
    both = FeedbackGatedReLU(0.95, 5.0, "both", alpha=2.0)
    constant = FeedbackGatedReLU(mode="constant")
    torch.testing.assert_close(gain(mu_s, mu_d), torch.tensor([[1 / 0.62, 0.0, 10.0]]))
    torch.testing.assert_close(threshold(mu_s, mu_d), torch.tensor([[5.0, 1.0, 20.5]]))
    torch.testing.assert_close(both(mu_s, mu_d), torch.tensor([[5 / 0.62, 1 / 0.81, 20.5 * 20]]))
    torch.testing.assert_close(constant(mu_s), torch.tensor([[10.0, 0.0, 5.0]]))
    assert constant.max_gain == 10.0 and gain.alpha is None and constant.alpha is None
    assert isinstance(both.alpha, nn.Parameter) and both.alpha.item() == 2.0
    for gate in (gain, threshold, both):  # pass 1: no feedback, the plain ReLU
        torch.testing.assert_close(gate(mu_s), torch.relu(mu_s))
    with pytest.raises(ValueError, match="mu_d=None"):
        constant(mu_s, mu_d)


def test_gradcheck_away_from_kinks():
    # mu_S (+ alpha mu_D) away from 0, mu_D away from eta = 5, both sides of the kinks covered
    mu_s = torch.tensor([1.3, -0.7, 2.1, 0.4, -2.0, 0.9], requires_grad=True)
    mu_d = torch.tensor([0.5, 3.0, 8.0, -2.0, 1.0, 4.5], requires_grad=True)
    alpha = torch.tensor(0.3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, d: feedback_gated_relu(s, d, 0.95, 5.0), (mu_s, mu_d))
    assert torch.autograd.gradcheck(lambda s, d, a: feedback_gated_relu(s, d, 0.8, 5.0, alpha=a), (mu_s, mu_d, alpha))
    assert torch.autograd.gradcheck(lambda d: feedback_gain(d, 0.95, 5.0), (mu_d,))


def test_documented_subgradients_at_the_kinks():
    beta_max, eta = 0.95, 5.0
    mu_s = torch.tensor([2.0, 2.0, 0.0], requires_grad=True)
    mu_d = torch.tensor([eta, eta - 1e-3, 1.0], requires_grad=True)
    feedback_gated_relu(mu_s, mu_d, beta_max, eta).sum().backward()
    below = 1 / (1 - beta_max / eta * (eta - 1e-3))
    # at mu_D = eta: the saturated (flat) side; just below: max(0, mu_S) gain^2 beta_max / eta;
    # at mu_S = 0: the ReLU's slope 0 (and no feedback gradient through a zero numerator)
    torch.testing.assert_close(mu_d.grad, torch.tensor([0.0, 2.0 * below**2 * beta_max / eta, 0.0]))
    assert mu_s.grad[2] == 0 and mu_s.grad[0] == pytest.approx(20.0)


@pytest.mark.parametrize("beta_max, eta, bad", [(0, 5, "beta_max=0"), (1, 5, "beta_max=1"), (-0.1, 5, "beta_max=-0.1"),
                                                (1.5, 5, "beta_max=1.5"), (0.9, 0, "eta=0"), (0.9, -1.0, "eta=-1.0")])
def test_bad_hyperparameters_are_refused(beta_max, eta, bad):
    mu = torch.ones(2)
    expected_range = "open interval \\(0, 1\\)" if bad.startswith("beta") else "> 0"
    for make in (
        lambda: feedback_gated_relu(mu, mu, beta_max, eta),
        lambda: feedback_gain(mu, beta_max, eta),
        lambda: FeedbackGatedReLU(beta_max, eta),
        lambda: tiny_ae(beta_max=beta_max, eta=eta),
    ):
        with pytest.raises(ValueError, match=expected_range) as info:
            make()
        assert bad in str(info.value)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown mode 'gate'.*'gain', 'threshold', 'both', 'constant'"):
        FeedbackGatedReLU(mode="gate")
    with pytest.raises(ValueError, match="alpha .* mode 'threshold' or 'both'"):
        FeedbackGatedReLU(mode="gain", alpha=0.5)
    with pytest.raises(ValueError, match="constant_gain is used by mode 'constant'"):
        tiny_ae(constant_gain=10.0)
    with pytest.raises(ValueError, match="constant_gain must be a finite number > 0"):
        FeedbackGatedReLU(mode="constant", constant_gain=0)
    with pytest.raises(ValueError, match="source > target.*did you mean \\(2, 0\\)"):
        tiny_ae([(0, 2)])
    with pytest.raises(ValueError, match="layer 0 has activation 'sigmoid'.*'relu' can be gated"):
        GatedNetwork((4,), [layers.Dense(4, "sigmoid"), layers.Dense(3, "relu")], feedback=[(1, 0)])
    with pytest.raises(ValueError, match="source 7 is out of range.*0..3"):
        tiny_ae([(7, 0)])
    with pytest.raises(ValueError, match="timesteps must be an integer >= 1"):
        tiny_ae(timesteps=0)
    with pytest.raises(ValueError, match="feedback must be 'partial', 'comprehensive'"):
        tiny_ae("all")
    with pytest.raises(ValueError, match="noise_std must be a finite number >= 0"):
        tiny_ae(noise_std=-1.0)


# --- gated networks ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["gain", "threshold", "both"])
def test_one_timestep_is_the_plain_relu_network(mode):
    net = tiny_ae("comprehensive", timesteps=1, mode=mode)
    x = torch.rand(4, 6)
    torch.testing.assert_close(net(x), plain_relu_net(net)(x), rtol=0, atol=0)
    assert not torch.allclose(net(x, timesteps=2), net(x))  # feedback acts from pass 2 on


def test_two_timesteps_by_hand():
    net = tiny_ae("partial", timesteps=2)  # D1 (layer 2) -> E1 (layer 0)
    x = torch.rand(4, 6)
    e1, e2, d1, d2 = (layer.pre[0] for layer in net.layers)
    p = net.projections["2_to_0"].weight  # (5, 5): n x m, no bias
    d1_first = torch.relu(d1(torch.relu(e2(torch.relu(e1(x))))))
    mu_d = d1_first @ p.T
    gated = torch.relu(e1(x)) / (1 - torch.clamp(0.95 / 5.0 * mu_d, max=0.95))
    expected = torch.sigmoid(d2(torch.relu(d1(torch.relu(e2(gated))))))
    torch.testing.assert_close(net(x), expected)
    second = net.records(x)[1]
    torch.testing.assert_close(second.mu_d[0], mu_d)
    torch.testing.assert_close(second.gain[0], feedback_gain(mu_d, 0.95, 5.0))
    assert list(second.mu_d) == [0] and net.records(x)[0].mu_d == {}


@pytest.mark.parametrize("mode", ["gain", "threshold", "both"])
def test_feedback_projections_get_gradients_only_from_two_timesteps(mode):
    net = tiny_ae("comprehensive", mode=mode)
    x = torch.rand(4, 6)
    (net(x, timesteps=1) - x).pow(2).mean().backward()
    assert len(net.projections) == 6
    assert all(p.grad is None for p in net.projections.parameters())
    assert all(layer.activation.alpha is None or layer.activation.alpha.grad is None for layer in net.layers[:3])
    assert all(layer.pre[0].weight.grad is not None for layer in net.layers)
    net.zero_grad(set_to_none=True)
    (net(x, timesteps=2) - x).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.projections.parameters())
    alphas = [layer.activation.alpha for layer in net.layers[:3]]
    assert all((a is None) == (mode == "gain") for a in alphas)  # one learned alpha per gated layer
    assert all(a.grad is not None and a.grad != 0 for a in alphas if a is not None)


def test_comprehensive_feedback_projects_every_higher_layer_into_every_lower_one():
    net = tiny_ae("comprehensive")
    widths = [5, 3, 5, 6]
    pairs = [(s, t) for t in range(3) for s in range(t + 1, 4)]
    assert sorted(net.feedback_pairs) == sorted(pairs)
    assert set(net.projections) == {f"{s}_to_{t}" for s, t in pairs}
    for s, t in pairs:
        assert net.projections[f"{s}_to_{t}"].weight.shape == (widths[t], widths[s])  # n x m
    assert len(tiny_ae("none").projections) == 0 and tiny_ae("partial").feedback_pairs == [(2, 0)]
    assert sum(p.numel() for p in dense_autoencoder().projections.parameters()) == 392 * 392


def test_conv_feedback_is_filter_wise():
    net = conv_autoencoder("partial", input_shape=(1, 8, 8), filters=3, kernel=3)  # 8 -> 4 -> 2 -> 4 -> 8
    assert net.output_shape == (1, 8, 8)
    proj = net.projections["2_to_0"].weight
    assert proj.shape == (3, 3 * 4 * 4)  # one signal per filter of E1, from all of D1's units
    x = torch.rand(2, 1, 8, 8)
    first, second = net.records(x)
    assert second.mu_d[0].shape == (2, 3) and second.gain[0].shape == (2, 3)
    mu_d = first.activations[2].flatten(1) @ proj.T  # (2, 3)
    torch.testing.assert_close(second.mu_d[0], mu_d)
    e1 = net.layers[0].pre[0]
    gain = feedback_gain(mu_d, 0.95, 5.0)[:, :, None, None]  # broadcast over the 4 x 4 positions
    torch.testing.assert_close(second.activations[0], torch.relu(e1(x)) * gain)


def test_dropout_mask_is_shared_across_passes():
    spec = [layers.Dense(5, "relu"), layers.Dense(8, "sigmoid", dropout=0.5), layers.Dense(4, "sigmoid")]
    net = GatedNetwork((4,), spec, feedback=[(1, 0), (2, 0)], timesteps=3)
    net.train()
    x = torch.rand(16, 4)
    passes = net.records(x)
    dropped = [p.activations[1] == 0 for p in passes]  # sigmoid > 0: zeros are the mask
    assert 0 < dropped[0].sum() < dropped[0].numel()
    assert all(torch.equal(d, dropped[0]) for d in dropped)
    assert not torch.allclose(passes[0].activations[1], passes[1].activations[1])  # values do change
    assert not torch.equal(net.records(x)[0].activations[1] == 0, dropped[0])  # a new call, a new mask


def test_noise_only_in_eval_and_only_with_positive_sigma():
    net = tiny_ae("partial").eval()
    x = torch.rand(4, 6)
    clean = [p.output for p in net.records(x)]
    with net.noisy(0.0):
        torch.testing.assert_close(net(x), clean[-1], rtol=0, atol=0)
    with net.noisy(2.0):
        noisy = [p.output for p in net.records(x)]
        assert all(not torch.allclose(a, b) for a, b in zip(noisy, clean))  # every pass
        net.train()
        torch.testing.assert_close(net(x), clean[-1], rtol=0, atol=0)  # training: no noise
    assert net.noise_std == 0.0


def test_constant_gain_mode():
    net = tiny_ae("partial", mode="constant")  # E1's gain fixed at 10, no feedback
    assert len(net.projections) == 0 and net.max_gain == 10.0
    x = torch.rand(4, 6)
    e1, e2, d1, d2 = (layer.pre[0] for layer in net.layers)
    expected = torch.sigmoid(d2(torch.relu(d1(torch.relu(e2(10 * torch.relu(e1(x))))))))
    for timesteps in (1, 2, 3):
        torch.testing.assert_close(net(x, timesteps=timesteps), expected)
    assert all(torch.equal(p.gain[0], torch.full((4, 5), 10.0)) for p in net.records(x))


def test_logits_are_the_output_before_the_sigmoid():
    net = tiny_ae("comprehensive")
    x = torch.rand(3, 6)
    torch.testing.assert_close(torch.sigmoid(net.logits(x)), net(x))
    assert net.output_activation == "sigmoid"


def test_tiny_autoencoder_trains_with_fit():
    torch.manual_seed(1)
    x = torch.rand(32, 6)
    for feedback in ("partial", "comprehensive"):
        net = tiny_ae(feedback)
        history = ln.fit(net, (x, x), loss="mse", optimizer=("adam", {"lr": 1e-2}), epochs=6, batch_size=8,
                         progress=False)
        assert history["train_loss"][-1] < history["train_loss"][0]


def test_severed_loops_and_unrolled_drive_the_gated_timesteps():
    import loopnets as ln

    torch.manual_seed(0)
    net = ln.gated.dense_autoencoder("comprehensive", inputs=16, hidden=8, bottleneck=4, timesteps=3).eval()
    x = torch.rand(5, 16)
    with torch.no_grad():
        full, one, four = net(x), net(x, timesteps=1), net(x, timesteps=4)
        with ln.severed(net, loops=True):
            assert torch.equal(net(x), one)
        with ln.unrolled(net, 4):
            assert torch.equal(net(x), four)
        assert torch.equal(net(x), full) and not torch.equal(full, one)
