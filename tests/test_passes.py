"""Per-pass outputs, deep supervision, random pass counts, input re-injection and early exit."""

import math

import pytest
import torch
from torch import nn

import loopnets as ln
from loopnets import layers

pytestmark = pytest.mark.usefixtures("float64_and_seed")


def body(n=3):
    return nn.Sequential(nn.Linear(n, n), nn.Tanh())


def loops():
    """Tiny loops of every mode and output rule (unroll 3)."""
    return {
        "tied": ln.Loop(body(), unroll=3),
        "tied-mean-add": ln.Loop(body(), unroll=3, merge="add", output="mean"),
        "tied-sum-feedback": ln.Loop(body(), unroll=3, output="sum", feedback=nn.Linear(3, 3)),
        "couple": ln.Loop(body(), unroll=3, backprop=ln.Couple(), merge="mul"),
        "combine": ln.Loop(body(), unroll=3, backprop=ln.Combine()),
        "combine-weighted-add": ln.Loop(body(), unroll=3, backprop=ln.Combine(accumulate="weighted"), merge="add"),
        "combine-sum": ln.Loop(body(), unroll=3, backprop=ln.Combine(accumulate="sum")),
        "truncated-mean-add": ln.Loop(body(), unroll=3, backprop=ln.Truncated(), merge="add", output="mean"),
        "implicit-add": ln.Loop(body(), unroll=3, backprop=ln.Implicit(), merge="add"),
        "onestep": ln.Loop(body(), unroll=3, backprop=ln.OneStep(), feedback=nn.Linear(3, 3)),
    }


def net_with_loop(backprop, output=None, merge="replace", final="softmax"):
    """input 4 -> dense 4 -> [loop over dense 4, dense 4] -> dense 3, with skips across the loop."""
    net = ln.Network(input_shape=(4,))
    net.dense(4, activation="tanh")  # 0
    net.dense(4, activation="tanh")  # 1
    net.dense(4, activation="tanh")  # 2
    net.dense(3, activation=final)  # 3
    net.loopback(outof=2, into=1, unroll=3, backprop=backprop, merge=merge, output=output)
    net.connect(1, 3)  # bypassing skip: carried past the loop
    net.connect(0, 1)  # a skip into the loop's input
    return net


def unrolled_output(model, x, t, logits=False):
    with ln.unrolled(model, t):
        return model.logits(x) if logits else model(x)


# -- pass_outputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(loops()))
def test_pass_outputs_of_a_loop_are_the_loop_run_for_t_passes(name):
    loop = loops()[name]
    if isinstance(loop.backprop, ln.Couple):  # distinct copies would be re-tied by fit; keep them apart here
        for c in loop.couple_copies:
            for p in c.parameters():
                p.data.add_(0.1)
    loop.eval()
    x = torch.randn(5, 3)
    outs = ln.pass_outputs(loop, x)
    assert len(outs) == 3
    for t, out in enumerate(outs, start=1):
        torch.testing.assert_close(out, loop(x, unroll=t), rtol=1e-12, atol=1e-12)
    assert len(ln.pass_outputs(loop, x, unroll=2)) == 2


NETWORK_MODES = [(ln.Tied(), "mean"), (ln.Couple(), None), (ln.Combine(), None), (ln.Truncated(), "sum"),
                 (ln.Implicit(), None), (ln.OneStep(), None)]


@pytest.mark.parametrize("backprop, output", NETWORK_MODES)
@pytest.mark.parametrize("logits", [False, True])
def test_pass_outputs_of_a_network_with_skips_across_the_loop(backprop, output, logits):
    net = net_with_loop(backprop, output, merge="add").eval()
    x = torch.randn(6, 4)
    outs = ln.pass_outputs(net, x, logits=logits)
    assert [o.shape for o in outs] == [(6, 3)] * 3
    for t, out in enumerate(outs, start=1):
        torch.testing.assert_close(out, unrolled_output(net, x, t, logits), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(outs[0], outs[2])


def test_pass_outputs_logits_of_a_network_whose_loop_holds_the_softmax():
    net = ln.Network(input_shape=(3,))
    net.dense(3, activation="softmax")
    net.loopback(outof=0, into=0, unroll=3, backprop=ln.Tied(), merge="add")
    x = torch.randn(4, 3)
    outs, logit_outs = ln.pass_outputs(net, x), ln.pass_outputs(net, x, logits=True)
    for t in range(3):
        torch.testing.assert_close(outs[t], unrolled_output(net, x, t + 1))
        torch.testing.assert_close(logit_outs[t], unrolled_output(net, x, t + 1, logits=True))
        torch.testing.assert_close(torch.softmax(logit_outs[t], -1), outs[t])


def test_pass_outputs_of_a_sequential_run_the_layers_around_the_loop():
    loop = ln.Loop(body(), unroll=3, output="mean")
    model = nn.Sequential(nn.Linear(2, 3), loop, nn.ReLU(), nn.Linear(3, 1))
    x = torch.randn(4, 2)
    outs = ln.pass_outputs(model, x)
    for t, out in enumerate(outs, start=1):
        torch.testing.assert_close(out, unrolled_output(model, x, t))


def test_pass_outputs_carry_the_gradient_of_t_passes_for_tied_and_couple():
    for backprop in (ln.Tied(), ln.Couple()):
        net = net_with_loop(backprop, merge="add")
        x = torch.randn(5, 4)
        outs = ln.pass_outputs(net, x)
        for t, out in enumerate(outs, start=1):
            params = list(net.parameters())
            got = torch.autograd.grad(out.square().sum(), params, allow_unused=True, retain_graph=True)
            want = torch.autograd.grad(unrolled_output(net, x, t).square().sum(), params, allow_unused=True)
            for g, w in zip(got, want):
                if w is None:
                    assert g is None or not g.any()
                else:
                    torch.testing.assert_close(g, w)


def test_pass_outputs_of_truncated_detach_the_no_grad_passes():
    loop = ln.Loop(body(), unroll=4, backprop=ln.Truncated(grad_passes=2), merge="add")
    x = torch.randn(5, 3)
    outs = ln.pass_outputs(loop, x)
    assert [o.requires_grad for o in outs] == [False, False, True, True]
    params = list(loop.parameters())
    got = torch.autograd.grad(outs[3].sum(), params)
    h2 = outs[1].detach()  # the last two passes start from the detached pass 2
    want = torch.autograd.grad(loop.body(loop.body(h2 + x) + x).sum(), params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("backprop", [ln.Implicit(), ln.OneStep()], ids=["implicit", "onestep"])
def test_pass_outputs_of_solver_modes_carry_one_pass_graphs(backprop):
    loop = ln.Loop(body(), unroll=3, backprop=backprop, merge="add")
    x = torch.randn(5, 3)
    outs = ln.pass_outputs(loop, x)
    params = list(loop.parameters())
    for t, out in enumerate(outs):
        got = torch.autograd.grad(out.sum(), params, retain_graph=True)
        v = x if t == 0 else outs[t - 1].detach() + x
        want = torch.autograd.grad(loop.body(v).sum(), params)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


def test_deep_supervision_of_an_implicit_loop_sums_the_one_pass_gradients():
    loop = ln.Loop(body(), unroll=3, backprop=ln.Implicit(), merge="add")
    X, y = torch.randn(6, 3), torch.randn(6, 3)
    before = [p.detach().clone() for p in loop.parameters()]
    want = [torch.zeros_like(p) for p in before]
    outs = ln.pass_outputs(loop, X)
    for out in outs:
        grads = torch.autograd.grad(nn.functional.mse_loss(out, y) / 3, list(loop.parameters()), retain_graph=True)
        want = [w + g for w, g in zip(want, grads)]
    ln.fit(loop, (X, y), loss="mse", optimizer=("sgd", {"lr": 1.0}), epochs=1, batch_size=6, progress=False,
           pass_weights="mean")
    for b, p, w in zip(before, loop.parameters(), want):
        torch.testing.assert_close(b - p.detach(), w)


def test_pass_outputs_refuse_models_without_exactly_one_loop():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="exactly one loop"):
        ln.pass_outputs(nn.Linear(3, 3), x)
    with pytest.raises(ValueError, match="got Sequential with 2 loop"):
        ln.pass_outputs(nn.Sequential(ln.Loop(body()), ln.Loop(body())), x)
    with pytest.raises(ValueError, match="top level"):
        ln.pass_outputs(nn.Sequential(nn.Sequential(ln.Loop(body()))), x)
    net = ln.Network(input_shape=(3,))
    net.feedback([layers.Dense(3, "tanh")], unroll=2)
    net.feedback([layers.Dense(3, "tanh")], unroll=2)
    with pytest.raises(ValueError, match="exactly one loop"):
        ln.pass_outputs(net, x)


# -- input re-injection -------------------------------------------------------------------------


def halving_loop(backprop, merge):
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(0.5 * torch.eye(2))
    return ln.Loop(nn.Sequential(lin), unroll=4, backprop=backprop, merge=merge)


@pytest.mark.parametrize(
    "backprop",
    [ln.Tied(), ln.Couple(), ln.Combine(), ln.Truncated(), ln.Implicit(), ln.OneStep()],
    ids=["tied", "couple", "combine", "truncated", "implicit", "onestep"],
)
def test_merge_add_reinjects_the_input_in_every_pass_in_every_mode(backprop):
    # body h -> h / 2. replace: h_t = x / 2^t. add: h_t = (h_{t-1} + x) / 2 = (1 - 1/2^t) x.
    x = torch.tensor([[1.0, -2.0], [4.0, 0.5]])
    raw = {"replace": [x / 2**t for t in range(1, 5)], "add": [(1 - 1 / 2**t) * x for t in range(1, 5)]}
    for merge in ("replace", "add"):
        loop = halving_loop(backprop, merge)
        if isinstance(backprop, ln.Combine):  # the loop's output: the mean of the passes so far
            want = [torch.stack(raw[merge][:t]).mean(0) for t in range(1, 5)]
        else:
            want = raw[merge]
        for got, w in zip(ln.pass_outputs(loop, x), want):
            torch.testing.assert_close(got, w)
        result = ln.early_exit(loop, x, threshold=0.0)
        torch.testing.assert_close(result.output, want[-1])
        assert result.passes.tolist() == [4, 4]


# -- deep supervision ---------------------------------------------------------------------------


def one_sgd_step(net, X, y, **options):
    """The parameter change of one full-batch SGD step with lr 1: minus the gradient."""
    before = [p.detach().clone() for p in net.parameters()]
    ln.fit(net, (X, y), loss="cross_entropy", optimizer=("sgd", {"lr": 1.0}), epochs=1, batch_size=len(X),
           progress=False, **options)
    return [b - p.detach() for b, p in zip(before, net.parameters())]


def per_pass_gradients(net, X, y):
    """Hand-computed: the gradient of the loss of the network run for t passes, t = 1..3."""
    grads = []
    net.train()
    for t in (1, 2, 3):
        logits = unrolled_output(net, X, t, logits=True)
        loss = nn.functional.cross_entropy(logits, y)
        grads.append(torch.autograd.grad(loss, list(net.parameters())))
    return grads


@pytest.mark.parametrize("rule, weights", [
    ("mean", [1 / 3, 1 / 3, 1 / 3]),
    ("linear", [1 / 6, 2 / 6, 3 / 6]),
    ([0.2, 0.0, 0.5], [0.2, 0.0, 0.5]),
])
def test_deep_supervision_gradient_is_the_weighted_sum_of_per_pass_gradients(rule, weights):
    net = net_with_loop(ln.Tied(), output="mean", merge="add")
    X, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    grads = per_pass_gradients(net, X, y)
    want = [sum(w * g[i] for w, g in zip(weights, grads)) for i in range(len(grads[0]))]
    got = one_sgd_step(net, X, y, pass_weights=rule)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(want[0], grads[2][0])  # the earlier passes change the gradient


def test_deep_supervision_logs_the_final_outputs_loss():
    X, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    net = net_with_loop(ln.Tied(), merge="add")
    with torch.no_grad():
        want = nn.functional.cross_entropy(net.eval().logits(X), y).item()
    history = ln.fit(net, (X, y), loss="cross_entropy", optimizer=("sgd", {"lr": 0.0}), epochs=1, batch_size=8,
                     progress=False, pass_weights="mean")
    assert history["train_loss"][0] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("backprop", [ln.Tied(), ln.Couple()], ids=["tied", "couple"])
def test_pass_weights_last_is_plain_fit_bit_for_bit(backprop):
    def train(**options):
        torch.manual_seed(1)
        net = ln.Network(input_shape=(4,))
        net.dense(5, activation="tanh")
        net.feedback([layers.Dense(5, "tanh"), layers.Dropout(0.2), layers.Dense(5, "tanh")], unroll=3,
                     backprop=backprop, output="mean")
        net.dense(3, activation="softmax")
        X, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
        history = ln.fit(net, (X, y), (X, y), loss="cross_entropy", epochs=3, batch_size=6, seed=3,
                         progress=False, **options)
        return history, net.state_dict()

    plain, plain_state = train()
    for weights in ("last", [0, 0, 1.0]):
        last, last_state = train(pass_weights=weights)
        assert last["train_loss"] == plain["train_loss"] and last["val_loss"] == plain["val_loss"]
        assert all(torch.equal(plain_state[k], last_state[k]) for k in plain_state)
    mean, _ = train(pass_weights="mean")
    assert mean["train_loss"] != plain["train_loss"]


# -- random passes -----------------------------------------------------------------------------


def count_passes(loop):
    """Record (training?, passes) of every forward call of a Tied loop, counted by body calls."""
    calls = []
    loop.register_forward_pre_hook(lambda m, args: calls.append([m.training, 0]))
    loop.body.register_forward_hook(lambda m, args, out: calls[-1].__setitem__(1, calls[-1][1] + 1))
    return calls


def random_pass_run(seed=0, **options):
    torch.manual_seed(0)
    loop = ln.Loop(body(3), unroll=3, merge="add")
    model = nn.Sequential(loop, nn.Linear(3, 1))
    calls = count_passes(loop)
    batches = []
    loop.register_forward_pre_hook(lambda m, args: batches.append(args[0][:, 0].tolist()) if m.training else None)
    X, y = torch.randn(40, 3), torch.randn(40, 1)
    history = ln.fit(model, (X, y), (X[:8], y[:8]), loss="mse", epochs=4, batch_size=4, seed=seed,
                     progress=False, **options)
    return history, calls, batches


def test_random_passes_draw_a_pass_count_per_step_within_bounds():
    history, calls, batches = random_pass_run(random_passes=(2, 6))
    train_counts = [k for training, k in calls if training]
    assert len(train_counts) == 4 * 10
    assert set(train_counts) == {2, 3, 4, 5, 6}  # 40 draws from 5 values: all seen with this seed
    assert all(k == 3 for training, k in calls if not training)  # validation runs the loop's unroll
    again, calls_again, _ = random_pass_run(random_passes=(2, 6))
    assert calls_again == calls and again["train_loss"] == history["train_loss"]
    _, calls_other, _ = random_pass_run(seed=1, random_passes=(2, 6))
    assert [k for t, k in calls_other if t] != train_counts
    plain, plain_calls, plain_batches = random_pass_run()
    assert batches == plain_batches  # the shuffling does not depend on the pass draws
    assert all(k == 3 for _, k in plain_calls)
    assert plain["train_loss"] != history["train_loss"]


def test_random_passes_with_deep_supervision_use_the_drawn_count():
    torch.manual_seed(0)
    loop = ln.Loop(body(3), unroll=3, merge="add")
    model = nn.Sequential(loop, nn.Linear(3, 1))
    # the layer after the loop runs once per step on all k passes stacked: (k * 4, 3)
    counts = []
    model[1].register_forward_hook(lambda m, args, out: counts.append(len(args[0]) // 4))
    X, y = torch.randn(12, 3), torch.randn(12, 1)
    ln.fit(model, (X, y), loss="mse", epochs=3, batch_size=4, progress=False, random_passes=(1, 5),
           pass_weights="linear")
    assert len(counts) == 9 and len(set(counts)) > 1 and all(1 <= k <= 5 for k in counts)


def test_random_passes_reach_a_couple_loop_up_to_its_unroll():
    torch.manual_seed(0)
    net = ln.Network(input_shape=(3,))
    net.feedback([layers.Dense(3, "tanh")], unroll=4)  # COUPLE by default
    net.dense(1)
    X, y = torch.randn(12, 3), torch.randn(12, 1)
    ln.fit(net, (X, y), loss="mse", epochs=2, batch_size=4, progress=False, random_passes=(1, 4))
    loop = net.loops()[0]
    for c in loop.couple_copies:  # still re-tied after every step
        assert all(torch.equal(a, b) for a, b in zip(loop.body.parameters(), c.parameters()))


# -- refusals ------------------------------------------------------------------------------------


def test_fit_refuses_impossible_pass_options():
    X, y = torch.randn(6, 3), torch.randn(6, 3)
    fit = lambda model, **kw: ln.fit(model, (X, y), loss="mse", epochs=1, progress=False, **kw)
    tied = ln.Loop(body(), unroll=3)
    cases = [
        (ln.Loop(body(), backprop=ln.Combine()), dict(pass_weights="mean"), "Combine\\(accumulate=...\\)"),
        (ln.Loop(body(), unroll=3, backprop=ln.Couple()), dict(random_passes=(1, 4)), "hi <= 3"),
        (tied, dict(random_passes=(0, 2)), "1 <= lo <= hi"),
        (tied, dict(random_passes=(3, 2)), "1 <= lo <= hi"),
        (tied, dict(random_passes=3), "pair of integers"),
        (tied, dict(pass_weights=[1, 1]), "the loop runs 3 passes; got 2"),
        (tied, dict(pass_weights=[1, -1, 1]), ">= 0 and not all zero"),
        (tied, dict(pass_weights=[0, 0, 0]), ">= 0 and not all zero"),
        (tied, dict(pass_weights="first"), "choose one of mean, linear, last"),
        (tied, dict(pass_weights=[1, 1, 1], random_passes=(1, 3)), "fixes the number of passes"),
        (ln.Loop(body(), backprop=ln.Implicit()), dict(random_passes=(1, 3)), "solver chooses"),
        (ln.Loop(body(), backprop=ln.OneStep()), dict(random_passes=(1, 3), pass_weights="mean"), "solver chooses"),
        (nn.Linear(3, 3), dict(pass_weights="mean"), "exactly one Loop; Linear has 0"),
        (nn.Sequential(ln.Loop(body()), ln.Loop(body())), dict(random_passes=(1, 2)), "exactly one Loop"),
    ]
    for model, options, message in cases:
        with pytest.raises(ValueError, match=message):
            fit(model, **options)
    with pytest.raises(ValueError, match="not supported with several seeds"):
        ln.fit(tied, (X, y), loss="mse", epochs=1, seed=[0, 1], progress=False, random_passes=(1, 2))
    # COMBINE trains with random pass counts (it has no deep supervision)
    fit(ln.Loop(body(), backprop=ln.Combine()), random_passes=(1, 3))


# -- early exit ----------------------------------------------------------------------------------


def saturating_loop(unroll=6):
    """Body h -> hardtanh(2 h): a sample reaches the fixed point +-1 after a known number of passes."""
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(2.0)
    return ln.Loop(nn.Sequential(lin, nn.Hardtanh()), unroll=unroll)


def test_early_exit_residual_stops_each_sample_at_its_fixed_point():
    # x = 1: h = 1, 1 (residual 0 at pass 2). 0.3: .6, 1, 1 (pass 3). 0.1: .2 .4 .8 1 1 (pass 5).
    # 0.01: .02 ... .64, 1, 1: not settled within 6 passes, exits at max_passes.
    loop = saturating_loop()
    x = torch.tensor([[1.0], [0.3], [0.1], [0.01]])
    result = ln.early_exit(loop, x, criterion="residual", threshold=1e-9)
    assert result.passes.tolist() == [2, 3, 5, 6]
    torch.testing.assert_close(result.output, torch.tensor([[1.0], [1.0], [1.0], [0.64]]))
    assert result.values.shape == (6, 4) and math.isinf(result.values[0, 0])
    torch.testing.assert_close(result.values[1], torch.tensor([0.0, 0.4, 0.5, 0.5]))


def test_early_exit_stops_the_loop_once_every_sample_has_exited():
    loop = saturating_loop(unroll=10)
    calls = []
    loop.body.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    result = ln.early_exit(loop, torch.tensor([[1.0], [0.3]]), threshold=1e-9)
    assert result.passes.tolist() == [2, 3] and len(calls) == 3 and len(result.values) == 3
    assert loop.training  # the mode is restored


def entropy(p):
    return -(p * p.log()).sum(-1)


@pytest.mark.parametrize("criterion", ["entropy", "change"])
def test_early_exit_prediction_criteria_are_those_of_the_t_pass_outputs(criterion):
    net = net_with_loop(ln.Tied(), output="mean", merge="add")
    x = torch.randn(7, 4)
    full = ln.early_exit(net, x, criterion=criterion, threshold=0.0)
    net.eval()
    probs = [unrolled_output(net, x, t) for t in (1, 2, 3)]
    if criterion == "entropy":
        want = torch.stack([entropy(p) for p in probs])
    else:
        want = torch.stack([torch.full((7,), math.inf), *((b - a).abs().sum(-1) for a, b in zip(probs, probs[1:]))])
    torch.testing.assert_close(full.values, want)
    assert full.passes.tolist() == [3] * 7
    # a threshold between the values: each sample exits at the first pass below it
    threshold = want[1].median().item()
    result = ln.early_exit(net, x, criterion=criterion, threshold=threshold)
    below = want < threshold
    expected = torch.where(below.any(0), below.int().argmax(0) + 1, torch.tensor(3))
    assert result.passes.tolist() == expected.tolist() and len(set(expected.tolist())) > 1
    for i, t in enumerate(expected.tolist()):
        torch.testing.assert_close(result.output[i], probs[t - 1][i])


def test_early_exit_entropy_of_logits_for_a_model_without_softmax():
    loop = saturating_loop()
    scale = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        scale.weight.copy_(torch.tensor([[5.0], [-5.0]]))
    model = nn.Sequential(loop, scale)  # logits (5h, -5h)
    x = torch.tensor([[1.0], [0.1]])
    result = ln.early_exit(model, x, criterion="entropy", threshold=0.01)
    # softmax entropy of (5h, -5h) < 0.01 needs h > 0.55: pass 1 for x=1, pass 3 (h=0.8) for x=0.1
    assert result.passes.tolist() == [1, 3]
    torch.testing.assert_close(result.values[0], entropy(torch.softmax(unrolled_output(model, x, 1), -1)))


@pytest.mark.parametrize("backprop, output", NETWORK_MODES)
@pytest.mark.parametrize("criterion", ["residual", "entropy", "change"])
def test_early_exit_with_threshold_zero_equals_running_max_passes(backprop, output, criterion):
    net = net_with_loop(backprop, output, merge="add")
    x = torch.randn(5, 4)
    for max_passes in (None, 2, 3):
        result = ln.early_exit(net, x, criterion=criterion, threshold=0, max_passes=max_passes)
        k = max_passes or 3
        assert result.passes.tolist() == [k] * 5
        torch.testing.assert_close(result.output, unrolled_output(net.eval(), x, k), rtol=0, atol=0)


def test_early_exit_refuses_bad_arguments():
    loop, x = saturating_loop(), torch.ones(2, 1)
    with pytest.raises(ValueError, match="choose one of residual, entropy, change"):
        ln.early_exit(loop, x, criterion="halt")
    with pytest.raises(ValueError, match="threshold must be a number >= 0"):
        ln.early_exit(loop, x, threshold=-1)
    with pytest.raises(ValueError, match="unroll must be an integer >= 1"):
        ln.early_exit(loop, x, max_passes=0)


def test_entropy_exit_reads_classes_on_dim_1_for_per_position_outputs():
    """Per-position scores (B, C, L), as ln.thinking's nets give: the criterion's probabilities are a
    softmax over the classes (dim 1, as cross_entropy), so every position's distribution sums to one."""
    torch.manual_seed(0)
    net = ln.thinking.recurrent_conv(dim=1, in_channels=1, width=4, unroll=3)
    x = torch.randint(0, 2, (5, 1, 7)).to(torch.get_default_dtype())
    with torch.no_grad():
        out = ln.early_exit(net, x, criterion="entropy", threshold=float("inf"))  # exits after pass 1
        p = torch.softmax(ln.pass_outputs(net, x, unroll=1)[0], dim=1)
    expected = -(p * p.log()).sum(dim=(1, 2))
    torch.testing.assert_close(out.values[0], expected)
