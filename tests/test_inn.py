"""loopnets.models.inn core: IterativeNetwork against the MLP and the RNN it generalises (Hershey eq 2.10,
2.11), masks (layered, random R, block exchange P, fixed identity blocks), eq 3.1's weight space
against the digest's depth table, and the dense and sparse kernels against each other."""

import math
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call

import loopnets.models.inn as inn
from loopnets.models.inn import IterativeNetwork, block_exchange, identity_blocks, layered_mask, random_mask, weight_space

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import inn_kernels  # noqa: E402 (after the sys.path line)

pytestmark = pytest.mark.usefixtures("float64_and_seed")  # float64, seed 0 (conftest.py)

KERNELS = ("dense", "sparse")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: on a busy CPU, intra-op threads mostly wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blocks_of(mask: torch.Tensor, block: int) -> torch.Tensor:
    """Block attributes on the grid block_exchange documents (rows, then input and state columns apart);
    asserts that every block is uniform."""
    depth, width = mask.shape
    inputs = width - depth
    rows = [(a, min(a + block, depth)) for a in range(0, depth, block)]
    cols = [(a, min(a + block, inputs)) for a in range(0, inputs, block)]
    cols += [(a, min(a + block, width)) for a in range(inputs, width, block)]
    out = torch.zeros(len(rows), len(cols), dtype=torch.bool)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            part = mask[r0:r1, c0:c1]
            assert part.all() or not part.any(), f"block rows {r0}:{r1} cols {c0}:{c1} is mixed"
            out[i, j] = part.any()
    return out


# ----------------------------------------------------------------------------- MLP and RNN equivalence

MLPS = {
    "ends in Linear": lambda: nn.Sequential(nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)),
    "final ReLU": lambda: nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU()),
    "tanh, 4 layers, nested": lambda: nn.Sequential(
        nn.Linear(6, 5), nn.Tanh(), nn.Sequential(nn.Linear(5, 5), nn.Tanh()), nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 2)
    ),
    "no bias, leaky": lambda: nn.Sequential(
        nn.Linear(4, 3, bias=False), nn.LeakyReLU(0.2), nn.Linear(3, 2, bias=False), nn.Sigmoid()
    ),
    "one layer": lambda: nn.Sequential(nn.Linear(4, 3), nn.ReLU()),
}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", list(MLPS))
def test_from_mlp_equals_the_mlp_after_one_iteration_per_layer_and_stays_there(name, kernel):
    mlp = MLPS[name]()
    with torch.no_grad():  # non-zero biases everywhere, so a wrongly placed bias shows
        for m in mlp.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.uniform_(-0.5, 0.5)
    net = IterativeNetwork.from_mlp(mlp, kernel=kernel)
    layers = sum(isinstance(m, nn.Linear) for m in mlp.modules())
    x = torch.randn(9, net.inputs)
    assert net.iterations == layers
    assert net.trainable_weights == sum(m.weight.numel() for m in mlp.modules() if isinstance(m, nn.Linear))
    expected = mlp(x)
    torch.testing.assert_close(net(x), expected, rtol=0, atol=1e-12)
    # eq 2.10's fixed point: with x re-inserted, more iterations keep the MLP's output
    torch.testing.assert_close(net(x, iterations=layers + 3), expected, rtol=0, atol=1e-12)
    if layers > 1:  # one iteration too few: the signal has not reached the output block
        assert not torch.allclose(net(x, iterations=layers - 1), expected)


def test_from_mlp_rejects_what_it_cannot_represent():
    cases = {
        "Dropout": nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Dropout(0.1), nn.Linear(3, 2)),
        "one hidden activation": nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)),
        "follows another activation": nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Tanh(), nn.Linear(3, 2)),
        "takes 4 features": nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(4, 2)),
        "must start with nn.Linear": nn.Sequential(nn.ReLU(), nn.Linear(3, 2)),
        "Softmax": nn.Sequential(nn.Linear(3, 3), nn.Softmax(dim=-1)),
        "at least one nn.Linear": nn.Sequential(),
    }
    for message, mlp in cases.items():
        with pytest.raises(ValueError, match=message):
            IterativeNetwork.from_mlp(mlp)
    with pytest.raises(TypeError, match="nn.Sequential"):
        IterativeNetwork.from_mlp(nn.Linear(3, 2))


@pytest.mark.parametrize("kernel", KERNELS)
def test_dense_network_is_the_hand_written_relu_rnn(kernel):
    # eq 2.11: H^t = ReLU(W^i X^t + W^h H^(t-1)), H^0 = 0, every step's H is the output
    net = IterativeNetwork.rnn(5, 4, bias=False, kernel=kernel)
    assert net.trainable_weights == 4 * (5 + 4) and net.outputs == 4
    x = torch.randn(3, 6, 5)
    w_i, w_h = net.weight[:, :5], net.weight[:, 5:]
    h, hs = torch.zeros(3, 4), []
    for t in range(6):
        h = torch.relu(x[:, t] @ w_i.T + h @ w_h.T)
        hs.append(h)
    torch.testing.assert_close(net.steps(x), torch.stack(hs, 1), rtol=0, atol=1e-12)


def test_rnn_with_bias_equals_torch_rnn():
    net = IterativeNetwork.rnn(5, 4)
    rnn = nn.RNN(5, 4, nonlinearity="relu", batch_first=True)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(net.weight[:, :5])
        rnn.weight_hh_l0.copy_(net.weight[:, 5:])
        rnn.bias_ih_l0.copy_(net.bias)
        rnn.bias_hh_l0.zero_()
    x = torch.randn(3, 7, 5)
    torch.testing.assert_close(net.steps(x), rnn(x)[0], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("kernel", KERNELS)
def test_static_input_is_re_inserted_before_every_iteration(kernel):
    net = IterativeNetwork.rnn(4, 6, outputs=2, kernel=kernel, iterations=5)
    x = torch.randn(3, 4)
    repeated = x.unsqueeze(1).expand(-1, 5, -1)
    once = torch.cat([x.unsqueeze(1), torch.zeros(3, 4, 4)], 1)  # x only before the first iteration
    ys = net.steps(x)
    assert ys.shape == (3, 5, 2)
    torch.testing.assert_close(ys, net.steps(repeated), rtol=0, atol=1e-12)
    assert not torch.allclose(ys[:, 1:], net.steps(once)[:, 1:])
    torch.testing.assert_close(net(x), ys[:, -1])
    assert net.steps(x, iterations=2).shape == (3, 2, 2)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_sequence_runs_one_iteration_per_step_and_is_causal(kernel):
    net = IterativeNetwork(3, 8, 2, random_mask(3, 8, 0.6, seed=1), iterations=2, kernel=kernel)
    x = torch.randn(4, 6, 3)
    ys = net.steps(x)
    assert ys.shape == (4, 6, 2)  # T = L, whatever net.iterations is
    assert net.states(x).shape == (4, 6, 8)
    torch.testing.assert_close(net.states(x)[:, :, -2:], ys)
    changed = x.clone()
    changed[:, 3] += 1.0
    other = net.steps(changed)
    torch.testing.assert_close(other[:, :3], ys[:, :3], rtol=0, atol=0)
    assert not torch.allclose(other[:, 3:], ys[:, 3:])
    torch.testing.assert_close(net.steps(x, iterations=6), ys)
    with pytest.raises(ValueError, match="iterations must be None or 6"):
        net.steps(x, iterations=5)


def test_bad_inputs_and_arguments_raise_with_the_expected_shape():
    net = IterativeNetwork(3, 5, 2)
    with pytest.raises(ValueError, match=r"\(batch, 3\).*got \(4, 2\)"):
        net(torch.randn(4, 2))
    with pytest.raises(ValueError, match="got \\(4, 1, 1, 3\\)"):
        net(torch.randn(4, 1, 1, 3))
    with pytest.raises(ValueError, match="iterations must be an integer >= 1"):
        net(torch.randn(4, 3), iterations=0)
    with pytest.raises(ValueError, match="outputs <= depth"):
        IterativeNetwork(3, 2, 3)
    with pytest.raises(ValueError, match=r"shape \(depth, inputs \+ depth\) = \(5, 8\)"):
        IterativeNetwork(3, 5, 2, mask=torch.ones(5, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool tensor"):
        IterativeNetwork(3, 5, 2, mask=torch.ones(5, 8))
    with pytest.raises(ValueError, match="softmax mixes units"):
        IterativeNetwork(3, 5, 2, activation="softmax")
    with pytest.raises(ValueError, match="unknown kernel"):
        IterativeNetwork(3, 5, 2, kernel="cuda")


# ----------------------------------------------------------------------------- masks and training


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.1),
    ],
    ids=["Adam+L2", "AdamW", "SGD+momentum"],
)
def test_masked_weights_stay_exactly_zero_and_get_exactly_zero_gradient(make_optimizer, kernel):
    mask = random_mask(6, 10, 0.3, seed=2)
    net = IterativeNetwork(6, 10, 3, mask, iterations=3, kernel=kernel, output_activation="linear")
    assert torch.equal(net.weight[~mask], torch.zeros(int((~mask).sum())))  # zero from the start
    start = net.weight.detach().clone()
    opt = make_optimizer(net.parameters())
    x, target = torch.randn(16, 6), torch.randn(16, 3)
    for _ in range(5):
        opt.zero_grad()
        (net(x) - target).square().mean().backward()
        assert torch.count_nonzero(net.weight.grad[~mask]) == 0
        opt.step()
        assert torch.count_nonzero(net.weight[~mask]) == 0
    assert (net.weight[mask] != start[mask]).all()  # the trainable ones did train


def test_layered_mask_places_each_layer_after_the_one_before():
    m = layered_mask(2, [2, 1])  # rows: h0 h1 | y ; columns: x0 x1 | h0 h1 y
    expected = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0]], dtype=torch.bool)
    assert torch.equal(m, expected)
    thesis = layered_mask(2500, [500, 200, 100, 10])
    assert thesis.shape == (810, 3310)
    assert int(thesis.sum()) == 1_371_000  # 2500*500 + 500*200 + 200*100 + 100*10 (digest E1)
    with pytest.raises(ValueError, match="sizes"):
        layered_mask(3, [])


def test_random_mask_has_density_r_and_is_reproducible_by_seed():
    m = random_mask(400, 100, 0.3, seed=7)
    assert m.shape == (100, 500) and m.dtype == torch.bool
    assert abs(m.float().mean().item() - 0.3) < 0.01  # 50,000 draws: sd 0.002
    assert torch.equal(m, random_mask(400, 100, 0.3, seed=7))
    assert not torch.equal(m, random_mask(400, 100, 0.3, seed=8))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(random_mask(5, 4, 0.5, seed=g1), random_mask(5, 4, 0.5, seed=g2))
    assert random_mask(5, 4, 1.0, seed=0).all()
    for bad in (0.0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match=r"density R .* \(0, 1\]"):
            random_mask(5, 4, bad)


def test_block_exchange_keeps_the_layered_mask_when_p_is_0():
    m = layered_mask(2500, [500, 200, 100, 10])
    assert torch.equal(block_exchange(m, 0.0, seed=0), m)
    assert blocks_of(m, 100).shape == (9, 34)  # the thesis's grid: 810 = 8*100 + 10, 3310 = 33*100 + 10


def test_block_exchange_moves_whole_blocks_when_p_is_1():
    m = layered_mask(2500, [500, 200, 100, 10])
    out = block_exchange(m, 1.0, seed=0)
    assert out.shape == m.shape and out.dtype == torch.bool
    before, after = blocks_of(m, 100), blocks_of(out, 100)  # every block still all-or-nothing
    assert int(after.sum()) == int(before.sum())  # attributes move, none appear or vanish
    assert (after != before).sum() > 10
    assert torch.equal(out, block_exchange(m, 1.0, seed=0))
    assert not torch.equal(out, block_exchange(m, 1.0, seed=1))


def test_block_exchange_grid_never_mixes_input_and_state_columns():
    # inputs = 150 is no multiple of 100: the input columns end in a 50-wide block of their own
    m = layered_mask(150, [100, 100, 10])
    for seed in range(3):
        out = block_exchange(m, 1.0, block=100, seed=seed)
        after = blocks_of(out, 100)  # grid x: [0,100) [100,150); state: [150,250) [250,350) [350,360)
        assert after.shape == (3, 5) and int(after.sum()) == int(blocks_of(m, 100).sum())
    with pytest.raises(ValueError, match="use block=30"):
        block_exchange(layered_mask(150, [30, 20]), 0.5, block=100)
    blocks_of(block_exchange(layered_mask(150, [30, 20]), 1.0, block=30, seed=0), 30)  # and block=30 works
    with pytest.raises(ValueError, match="not block-structured"):
        block_exchange(random_mask(150, 30, 0.5, seed=0), 0.5, block=10)


# ----------------------------------------------------------------------------- fixed identity blocks


@pytest.mark.parametrize("kernel", KERNELS)
def test_identity_blocks_give_persistent_memory(kernel):
    # Block A (rows 0..3) reads x; block B (rows 4..5, the outputs) reads A. A pulse in x at step 0
    # reaches B at step 1 and is gone by step 2, unless A keeps it through its fixed self-identity.
    inputs, sizes = 3, [4, 2]
    mask = layered_mask(inputs, sizes)
    x = torch.zeros(2, 6, inputs)
    x[:, 0] = torch.rand(2, inputs) + 0.5
    plain = IterativeNetwork(inputs, 6, 2, mask, bias=False, kernel=kernel)
    memory = IterativeNetwork(inputs, 6, 2, mask, bias=False, kernel=kernel, fixed=identity_blocks(inputs, 6, [(0, 4)]))
    with torch.no_grad():
        memory.weight.copy_(plain.weight.abs())
        plain.weight.copy_(plain.weight.abs())  # non-negative weights: the pulse survives the ReLU
    assert memory.trainable_weights == plain.trainable_weights  # fixed weights are not trainable
    assert [n for n, _ in memory.named_parameters()] == ["weight"]
    s_plain, s_memory = plain.states(x), memory.states(x)
    assert torch.count_nonzero(s_plain[:, 2:]) == 0
    first = s_memory[:, 0, :4]
    assert torch.count_nonzero(first) > 0
    for t in range(6):
        torch.testing.assert_close(s_memory[:, t, :4], first, rtol=0, atol=1e-12)
    torch.testing.assert_close(memory.steps(x)[:, -1], s_memory[:, 1, 4:])  # the output is held too


def test_fixed_weights_get_no_gradient_and_may_not_overlap_the_mask():
    fixed = identity_blocks(3, 4)
    assert torch.equal(fixed[:, 3:], torch.eye(4)) and not fixed[:, :3].any()
    mask = random_mask(3, 4, 1.0) & (fixed == 0)
    net = IterativeNetwork(3, 4, 2, mask, fixed=fixed)
    net(torch.randn(5, 3), iterations=3).sum().backward()
    assert net.fixed.grad is None and not net.fixed.requires_grad
    torch.testing.assert_close(net.effective_weight()[:, 3:].diagonal(), torch.ones(4))
    with pytest.raises(ValueError, match="4 positions are both"):
        IterativeNetwork(3, 4, 2, random_mask(3, 4, 1.0), fixed=fixed)
    with pytest.raises(ValueError, match="span"):
        identity_blocks(3, 4, [(2, 9)])


# ----------------------------------------------------------------------------- eq 3.1

# Digest section 3.1.11: depth of the weight space for In = 2500.
DENSITIES = [1.0, 0.6, 0.4, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005]
DEPTH_TABLE = {
    1_000_000: [351, 547, 766, 1312, 2150, 3394, 5931, 8828, 12947],
    100_000: [39, 65, 96, 186, 351, 638, 1312, 2150, 3394],
    50_000: [20, 33, 49, 96, 186, 351, 766, 1312, 2150],
    10_000: [4, 7, 10, 20, 39, 78, 186, 351, 638],
}


def test_weight_space_matches_the_depth_table():
    for trainable, depths in DEPTH_TABLE.items():
        for density, depth in zip(DENSITIES, depths):
            width, got = weight_space(trainable, density, 2500, outputs=0)
            assert abs(got - depth) <= 1, (trainable, density, got, depth)
            assert width == 2500 + got
            # the square weight space holds about W_train / R weights
            assert abs(got * width * density - trainable) <= density * (width + got) / 2 + 1


def test_weight_space_refuses_sizes_the_thesis_could_not_define():
    for density, depth in zip(DENSITIES, DEPTH_TABLE[10_000]):
        if depth <= 10:  # 10,000 weights at R > 0.2: no hidden unit beside 10 outputs
            with pytest.raises(ValueError, match="no hidden unit"):
                weight_space(10_000, density, 2500)
        else:  # (the table's 638 at R = 0.005 is 637.46 exactly; we round to 637)
            assert abs(weight_space(10_000, density, 2500)[1] - depth) <= 1
    with pytest.raises(ValueError, match=r"at least (\d+) trainable weights") as info:
        weight_space(10_000, 0.4, 2500)
    needed = int(info.value.args[0].split("at least ")[1].split()[0])
    assert weight_space(needed, 0.4, 2500)[1] == 11 and math.isclose(needed, 0.4 * 10.5 * 2510.5, abs_tol=1)
    for bad in (0.0, 1.01):
        with pytest.raises(ValueError, match="density"):
            weight_space(10_000, bad, 2500)
    with pytest.raises(ValueError, match="trainable"):
        weight_space(0, 0.5, 2500)


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("sequence", [False, True], ids=["static", "sequence"])
def test_sparse_and_dense_kernels_give_the_same_outputs_and_gradients(sequence):
    fixed = identity_blocks(5, 9, [(0, 3)])
    mask = random_mask(5, 9, 0.4, seed=3) & (fixed == 0)
    dense = IterativeNetwork(5, 9, 3, mask, fixed=fixed, output_activation="tanh", iterations=4, kernel="dense")
    sparse = IterativeNetwork(5, 9, 3, mask, fixed=fixed, output_activation="tanh", iterations=4, kernel="sparse")
    sparse.load_state_dict(dense.state_dict())
    x = torch.randn(4, 6, 5) if sequence else torch.randn(4, 5)
    results = []
    for net in (dense, sparse):
        xi = x.clone().requires_grad_()
        ys = net.steps(xi)
        (ys.square().sum() + net.states(xi).sin().sum()).backward()
        results.append((ys, net.weight.grad, net.bias.grad, xi.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert torch.count_nonzero(results[1][1][~mask]) == 0


def test_sparse_kernel_passes_gradcheck():
    net = IterativeNetwork(3, 4, 2, random_mask(3, 4, 0.5, seed=0), output_activation="tanh", kernel="sparse")
    net.activation = nn.Tanh()  # smooth, so finite differences are exact enough
    w = net.weight.detach().clone().requires_grad_()
    x = torch.randn(2, 3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, x: functional_call(net, {"weight": w}, (x, 3)), (w, x))


def test_auto_kernel_takes_sparse_on_the_cpu_below_the_measured_crossover():
    low, high = inn.AUTO_SPARSE_DENSITY / 2, min(1.0, inn.AUTO_SPARSE_DENSITY * 2)
    cpu = torch.device("cpu")
    assert IterativeNetwork(200, 50, 2, random_mask(200, 50, low, seed=0)).kernel_on(cpu) == "sparse"
    assert IterativeNetwork(200, 50, 2, random_mask(200, 50, high, seed=0)).kernel_on(cpu) == "dense"
    assert IterativeNetwork(200, 50, 2, random_mask(200, 50, low, seed=0)).kernel_on(torch.device("meta")) == "dense"
    assert IterativeNetwork(200, 50, 2, kernel="sparse").kernel_on(cpu) == "sparse"


def test_the_kernel_benchmark_runs(capsys):
    rows = inn_kernels.main(
        ["--inputs", "20", "--depth", "8", "--outputs", "2", "--batch", "4", "--iterations", "2",
         "--densities", "1", "0.1", "--repeats", "3", "--budget", "0", "--threads", "1", "--no-write"]
    )  # fmt: skip
    assert [(r["threads"], r["density"]) for r in rows] == [(1, 1.0), (1, 0.1)]
    assert all(r["dense_ms"] > 0 and r["sparse_ms"] > 0 for r in rows)
    assert "crossover" in capsys.readouterr().out
    # sparse time proportional to the density, dense constant: equal at density 0.1
    rows = [{"density": d, "dense_ms": 10.0, "sparse_ms": 100.0 * d} for d in (1.0, 0.3, 0.05, 0.02)]
    assert inn_kernels.crossover(rows) == pytest.approx(0.1)
    assert inn_kernels.crossover(rows[2:]) is None  # sparse wins everywhere: no crossover measured


# ----------------------------------------------------------------------------- init and bookkeeping


def test_init_respects_the_mask_and_each_rows_fan_in():
    mask = layered_mask(16, [9, 4])
    net = IterativeNetwork(16, 13, 4, mask)
    assert (net.weight[:9, :16].abs() <= 1 / 4).all() and net.weight[:9, :16].abs().max() > 1 / 8  # fan-in 16
    assert (net.weight[9:, 16:25].abs() <= 1 / 3).all()  # fan-in 9
    assert torch.count_nonzero(net.weight[~mask]) == 0
    kaiming = IterativeNetwork(16, 13, 4, mask, init="kaiming")
    assert torch.count_nonzero(kaiming.bias) == 0 and torch.count_nonzero(kaiming.weight[~mask]) == 0
    assert net.inputs == 16 and net.depth == 13 and net.outputs == 4 and net.iterations == 2
    assert net.trainable_weights == 16 * 9 + 9 * 4 and net.density == pytest.approx(180 / (13 * 29))
    assert torch.equal(net.mask, mask) and "mask" in dict(net.named_buffers())
    assert "trainable_weights=180" in repr(net)


# ----------------------------------------------------------------------------- the authors' settings
# qbhershey/iterativenn (the digest's "settings stated in the authors' code"): a bias on every row,
# linear output rows, weights N(0, 0.05^2), trainable counts with every row's bias.


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bias", ["state", "all"])
def test_the_bias_enters_every_rows_pre_activation_and_the_output_rows_are_linear(kernel, bias):
    inputs, depth, outputs = 4, 7, 3
    net = IterativeNetwork(inputs, depth, outputs, random_mask(inputs, depth, 0.6, seed=1), "relu",
                           output_activation="linear", bias=bias, init="normal", init_std=0.5, kernel=kernel)
    with torch.no_grad():
        net.bias.copy_(torch.linspace(-2.0, 2.0, depth))  # large, of both signs: every row's bias shows
        net.bias[-outputs:] = -6.0  # output pre-activations mostly negative: a ReLU there would show
    x = torch.randn(6, inputs)
    w = torch.where(net.mask, net.weight, 0.0).detach()
    w_x, w_s = w[:, :inputs], w[:, inputs:]
    b = net.bias.detach().clone()
    hidden = slice(0, depth - outputs)

    def act(z):  # ReLU on the hidden rows, the identity on the output rows
        return torch.cat([z[:, hidden].clamp(min=0), z[:, hidden.stop :]], 1)

    z1 = x @ w_x.T + b  # (6, depth): every row's pre-activation holds its bias
    z2 = x @ w_x.T + act(z1) @ w_s.T + b
    states = net.states(x, iterations=2).detach()
    torch.testing.assert_close(states[:, 0], act(z1))
    torch.testing.assert_close(states[:, 1], act(z2))
    assert (states[:, :, hidden.stop :] < 0).any()  # linear outputs go negative, ReLU ones could not
    # Each row's bias moves that row's pre-activation one for one: shift one bias, only its row moves.
    for r in range(depth):
        with torch.no_grad():
            net.bias.copy_(b)
            net.bias[r] += 10.0
        shifted = net.states(x, iterations=1).detach()[:, 0]
        moved = (shifted - states[:, 0]).abs().sum(0) > 0
        assert moved.tolist() == [c == r for c in range(depth)], r
        if r >= depth - outputs:
            torch.testing.assert_close(shifted[:, r] - states[:, 0, r], torch.full((6,), 10.0))


def test_bias_all_counts_the_input_rows_as_the_authors_code_and_computes_as_state():
    inputs, depth, outputs = 5, 6, 2
    mask = random_mask(inputs, depth, 0.5, seed=3)
    nets = {}
    for bias in ("state", "all", "none", True, False):
        torch.manual_seed(0)
        nets[bias] = IterativeNetwork(inputs, depth, outputs, mask, bias=bias, init="normal")
    weights = int(mask.sum())
    assert nets["none"].trainable_parameters == nets[False].trainable_parameters == weights
    assert nets["state"].trainable_parameters == nets[True].trainable_parameters == weights + depth
    assert nets["all"].trainable_parameters == weights + inputs + depth  # count_nonzero(mask) + out_features
    assert all(n.trainable_weights == weights for n in nets.values())
    assert nets["none"].bias is None and nets[False].bias is None
    # The input rows' biases are counted, not allocated: the input insert overwrites them before any
    # row reads them (authors' code; Fig 2.6 here), so they cannot change an output or learn.
    assert sum(p.numel() for p in nets["all"].parameters()) == sum(p.numel() for p in nets["state"].parameters())
    x = torch.randn(4, inputs)
    torch.testing.assert_close(nets["all"].steps(x, 3), nets["state"].steps(x, 3))
    assert nets["state"].bias_rows == nets[True].bias_rows == "state" and nets[False].bias_rows == "none"
    assert "bias='all'" in repr(nets["all"])


def test_normal_init_has_the_requested_std_whatever_the_fan_in():
    inputs, sizes = 300, [200, 40, 10]
    depth = sum(sizes)
    mask = layered_mask(inputs, sizes)  # fan-in 300, 200 and 40: "linear" would scale them apart
    torch.manual_seed(0)  # fixed draw: the tolerances below are > 10 standard errors, so they cannot flake
    for std in (None, 0.2):
        net = IterativeNetwork(inputs, depth, 10, mask, init="normal", init_std=std, output_activation="linear")
        want = 0.05 if std is None else std
        assert net.init_std == want and inn.AUTHORS_INIT_STD == 0.05
        assert torch.count_nonzero(net.weight[~mask]) == 0
        for rows in (slice(0, 200), slice(200, 240)):  # fan-in 300 and 200
            w = net.weight.detach()[rows][mask[rows]]
            n = w.numel()  # 60,000 and 8,000 draws: std error of the std about 1 / sqrt(2 n) < 0.8 %
            assert abs(float(w.std()) / want - 1) < 0.1, (rows, float(w.std()))
            assert abs(float(w.mean())) < 10 * want / math.sqrt(n)
        bound = (inputs + depth) ** -0.5  # biases as the authors' MaskedLinear: U(+-1/sqrt(full width))
        top = float(net.bias.detach().abs().max())
        assert 0.9 * bound < top <= bound
    fan_in_rule = IterativeNetwork(inputs, depth, 10, mask)  # today's default is unchanged
    assert float(fan_in_rule.weight.detach()[200:240].abs().max()) <= 200**-0.5 + 1e-12 < 0.2  # U(+-1/sqrt(fan-in 200))


def test_bad_bias_and_init_std_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="'state', 'all', 'none'"):
        IterativeNetwork(3, 5, 2, bias="rows")
    with pytest.raises(ValueError, match="'state', 'all', 'none'"):
        IterativeNetwork(3, 5, 2, bias=1)
    with pytest.raises(ValueError, match="init_std sets the spread of init='normal'"):
        IterativeNetwork(3, 5, 2, init_std=0.05)
    for bad in (0, -0.1, float("nan"), float("inf"), True, "0.05"):
        with pytest.raises(ValueError, match="finite number > 0"):
            IterativeNetwork(3, 5, 2, init="normal", init_std=bad)
    with pytest.raises(ValueError, match="unknown init 'gaussian'.*'normal'"):
        IterativeNetwork(3, 5, 2, init="gaussian")
    with pytest.raises(ValueError, match="'state', 'all', 'none'"):
        weight_space(100_000, 0.5, 2500, biases="rows")


def test_table_3_1_count_fits_r_half_only_with_every_rows_bias():
    """Thesis Table 3.1: the INN averaged 1,343,631 trainable weights over the 2500-500-200-100-10
    weight space (depth 810, width 3310). With the authors' count (every row's bias) R = 0.5 fits."""
    table, inputs, depth, density = 1_343_631, 2500, 810, 0.5
    sd = math.sqrt(density * (1 - density) * depth * (inputs + depth))  # one mask's binomial spread, ~819
    assert inn.expected_trainable(inputs, depth, density, "all") == 1_343_860
    assert abs(inn.expected_trainable(inputs, depth, density, "all") - table) < 0.5 * sd
    assert abs(inn.expected_trainable(inputs, depth, density, "state") - table) > 2.5 * sd
    assert abs(inn.expected_trainable(inputs, depth, density, "none") - table) > 3.5 * sd
    assert weight_space(table, density, inputs, biases="all") == (3310, 810)
    assert weight_space(table, density, inputs) == (3311, 811)  # weights only: one row too deep
    net = IterativeNetwork(inputs, depth, 10, random_mask(inputs, depth, density, seed=0), bias="all",
                           init="normal", output_activation="linear", kernel="dense")
    assert abs(net.trainable_parameters - table) < 3 * sd
    assert net.trainable_parameters == net.trainable_weights + inputs + depth


@pytest.mark.parametrize("biases", ["none", "state", "all"])
def test_weight_space_with_biases_inverts_the_expected_count(biases):
    for inputs, depth, density in [(2500, 810, 0.5), (2500, 186, 0.2), (784, 60, 1.0), (2500, 39, 0.02)]:
        count = round(inn.expected_trainable(inputs, depth, density, biases))
        assert weight_space(count, density, inputs, outputs=10, biases=biases) == (inputs + depth, depth)
    with pytest.raises(ValueError, match=r"use at least (\d+) trainable") as info:
        weight_space(10_000, 0.5, 2500, biases=biases)
    needed = int(re.search(r"use at least (\d+) trainable", str(info.value)).group(1))
    assert weight_space(needed, 0.5, 2500, biases=biases)[1] == 11
    with pytest.raises(ValueError, match="use at least"):
        weight_space(needed - 1, 0.5, 2500, biases=biases)


@pytest.mark.parametrize("init", ["linear", "normal"])
@pytest.mark.parametrize("how", ["int seed", "generator", "global"])
def test_the_init_does_not_follow_the_mask_drawn_from_the_same_seed(init, how):
    """The runner seeds torch.manual_seed(s) and draws the mask from seed s. Were the mask drawn from
    s's own stream, the init would read the same numbers and follow the mask (init="linear", R = 0.5:
    trainable means r < 0.5, the weight (2r - 1) / sqrt(fan_in) < 0, every one of them)."""
    torch.manual_seed(0)
    seed = {"int seed": 0, "generator": torch.Generator().manual_seed(0), "global": None}[how]
    mask = random_mask(300, 60, 0.5, seed=seed)
    if how != "global":
        torch.manual_seed(0)
    w = IterativeNetwork(300, 60, 10, mask, init=init).weight.detach()[mask]  # ~10,800 draws
    assert abs(float((w > 0).double().mean()) - 0.5) < 0.03  # 6 standard errors
    assert abs(float(w.mean())) < 6 * float(w.std()) / math.sqrt(w.numel())
    if init == "normal":
        assert abs(float(w.std()) / 0.05 - 1) < 0.05
    # block exchange draws from a stream of its own too: its first draws are not the init's
    torch.manual_seed(0)
    layered = layered_mask(40, [20, 10])
    assert not torch.equal(block_exchange(layered, 0.5, block=10, seed=0), block_exchange(layered, 0.5, block=10, seed=1))


def test_generator_seeds_the_init_without_the_global_generator():
    mask = random_mask(30, 8, 0.5, seed=1)
    nets = []
    for global_seed in (0, 123):
        torch.manual_seed(global_seed)
        nets.append(IterativeNetwork(30, 8, 2, mask, init="normal", generator=torch.Generator().manual_seed(5)))
    assert torch.equal(nets[0].weight, nets[1].weight) and torch.equal(nets[0].bias, nets[1].bias)
    other = IterativeNetwork(30, 8, 2, mask, init="normal", generator=torch.Generator().manual_seed(6))
    assert not torch.equal(nets[0].weight, other.weight)
    rnn = IterativeNetwork.rnn(4, 3, init="kaiming", generator=torch.Generator().manual_seed(5))
    assert torch.equal(rnn.weight, IterativeNetwork.rnn(4, 3, init="kaiming", generator=torch.Generator().manual_seed(5)).weight)
