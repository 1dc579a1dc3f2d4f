"""loopnets.models.inn (lstm.py, metrics.py, tasks.py): LSTM baseline sizing, the multi-task loss and the thesis metrics against hand
computations, and the two training loops on a tiny learnable sequence task (stand-in model below)."""

import math

import pytest
import torch
from torch import nn

from loopnets.models.inn import (
    LSTMBaseline,
    SequenceHistory,
    acc_end,
    acc_seq,
    accuracy_by_iterations,
    accuracy_by_position,
    confusion_matrix,
    fit_iterations,
    fit_sequences,
    lstm_hidden_for,
    lstm_parameters,
    multitask_loss,
    per_iteration_loss,
    predict_index,
    sequence_outputs,
)
from loopnets.training.fit import TrainingDiverged

D = torch.float64




class TinyRecurrent(nn.Module):
    """Stand-in for IterativeNetwork: a GRU cell read out at every step, same steps / forward interface."""

    def __init__(self, inputs, outputs, hidden=12, dtype=torch.float32):
        super().__init__()
        self.cell = nn.GRUCell(inputs, hidden, dtype=dtype)
        self.readout = nn.Linear(hidden, outputs, dtype=dtype)
        self.poison_after = None  # training forward calls before the outputs turn nan (divergence test)
        self.calls = 0

    def steps(self, x, iterations=None):
        if x.dim() == 2:  # static input, re-inserted every iteration
            x = x.unsqueeze(1).expand(-1, iterations or 3, -1)
        h = x.new_zeros(len(x), self.cell.hidden_size)
        outputs = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            outputs.append(self.readout(h))
        out = torch.stack(outputs, dim=1)  # (batch, T, outputs)
        if self.training:
            self.calls += 1
            if self.poison_after is not None and self.calls > self.poison_after:
                out = out * math.nan
        return out

    def forward(self, x, iterations=None):
        return self.steps(x, iterations)[:, -1]


def anomaly_task(n, length=4, inputs=3, seed=0):
    """Noise sequences of `length` steps where the anomalous step carries a marker (feature 0 = 2),
    then a blank query step: x (n, length + 1, inputs), flags (n, length + 1), index (n,)."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, length, (n,), generator=g)
    x = 0.3 * torch.randn(n, length + 1, inputs, generator=g)
    x[:, -1] = 0.0
    x[torch.arange(n), index, 0] = 2.0
    flags = torch.zeros(n, length + 1)
    flags[torch.arange(n), index] = 1.0
    return x, flags, index


# --- LSTM baseline ---------------------------------------------------------------------------


def test_lstm_baseline_has_the_thesis_parameter_count_and_the_per_step_interface():
    model = LSTMBaseline()
    assert sum(p.numel() for p in model.parameters()) == 1_307_540 == lstm_parameters(130)
    small = LSTMBaseline(inputs=3, hidden=6, outputs=5)
    x = torch.randn(2, 4, 3)
    out = small.steps(x)
    assert out.shape == (2, 4, 5)
    torch.testing.assert_close(small(x), out[:, -1])
    assert small.steps(torch.randn(2, 3), iterations=7).shape == (2, 7, 5)
    with pytest.raises(ValueError, match="hidden=6 or more"):
        LSTMBaseline(inputs=3, hidden=5, outputs=5)


def test_lstm_hidden_for_gives_the_largest_fitting_size_and_refuses_when_none_exists():
    per_unit = 4 * 2500 + 5 * 10 + 8  # 10,058 parameters per hidden unit
    assert lstm_hidden_for(1_307_540) == 130
    assert lstm_hidden_for(1_307_540 + per_unit - 1) == 130
    assert lstm_hidden_for(1_307_540 + per_unit) == 131
    assert lstm_hidden_for(11 * per_unit) == 11  # the smallest definable: hidden > proj_size 10
    for budget in (11 * per_unit - 1, 100_000, 50_000, 10_000):
        with pytest.raises(ValueError, match="at least 110,638"):
            lstm_hidden_for(budget)
    # a small case against torch's own count: 30 parameters per hidden unit with 3 inputs, 2 outputs
    assert sum(p.numel() for p in nn.LSTM(3, 4, proj_size=2).parameters()) == lstm_parameters(4, 3, 2) == 4 * 30
    assert lstm_hidden_for(4 * 30, inputs=3, outputs=2) == 4
    assert lstm_hidden_for(4 * 30 - 1, inputs=3, outputs=2) == 3
    with pytest.raises(ValueError, match="hidden > 2"):
        lstm_hidden_for(3 * 30 - 1, inputs=3, outputs=2)


# --- losses ----------------------------------------------------------------------------------


def _example():
    """2 sequences of 2 images + query step (T = 3), 3 units: index logits 0, 1 and flag logit 2."""
    outputs = torch.tensor(
        [[[0.3, -0.2, 1.0], [0.1, 0.4, -0.5], [2.0, -1.0, 0.7]],
         [[-0.6, 0.2, -2.0], [0.5, 0.5, 1.5], [0.2, 0.9, -0.3]]],
        dtype=D,
    )
    flags = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=D)
    index = torch.tensor([0, 1])
    return outputs, flags, index


def test_multitask_loss_matches_a_hand_computation_in_both_interim_modes(float64_and_seed):
    outputs, flags, index = _example()

    def bce(z, y):  # -[y log p + (1 - y) log(1 - p)], p = sigmoid(z)
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    def ce(logits, k):
        return -logits[k] + math.log(sum(math.exp(v) for v in logits))

    bce_terms = [[bce(1.0, 1), bce(-0.5, 0)], [bce(-2.0, 0), bce(1.5, 1)]]
    ce_terms = [ce([2.0, -1.0], 0), ce([0.2, 0.9], 1)]
    want_sum = sum(sum(b) + c for b, c in zip(bce_terms, ce_terms)) / 2
    want_mean = sum(sum(b) / 2 + c for b, c in zip(bce_terms, ce_terms)) / 2
    assert multitask_loss(outputs, flags, index).item() == pytest.approx(want_sum, rel=1e-12)
    assert multitask_loss(outputs, flags, index, interim="mean").item() == pytest.approx(want_mean, rel=1e-12)
    # flags without the query step's column give the same loss; the flag unit can be moved
    assert multitask_loss(outputs, flags[:, :2], index).item() == pytest.approx(want_sum, rel=1e-12)
    moved = outputs[..., [2, 0, 1]]
    assert multitask_loss(moved, flags, index, flag_unit=0).item() == pytest.approx(want_sum, rel=1e-12)
    assert sequence_outputs(2) == 3 and sequence_outputs(9) == 10
    with pytest.raises(ValueError, match="sequence_outputs"):
        multitask_loss(outputs[..., :2], flags, index)
    with pytest.raises(ValueError, match="interim"):
        multitask_loss(outputs, flags, index, interim="max")


def test_per_iteration_loss_is_the_weighted_cross_entropy_at_every_iteration(float64_and_seed):
    outputs = torch.randn(4, 3, 5)
    labels = torch.tensor([0, 4, 2, 2])
    per_step = torch.stack([nn.functional.cross_entropy(outputs[:, t], labels) for t in range(3)])
    torch.testing.assert_close(per_iteration_loss(outputs, labels), per_step.mean())
    w = torch.tensor([0.0, 0.5, 2.0])
    torch.testing.assert_close(per_iteration_loss(outputs, labels, w), (w * per_step).sum())


# --- metrics ---------------------------------------------------------------------------------


def test_acc_end_and_acc_seq_match_hand_counts(float64_and_seed):
    outputs, flags, index = _example()
    # last step: sequence 0 predicts 0 (2.0 > -1.0), right; sequence 1 predicts 1 (0.9 > 0.2), right
    assert predict_index(outputs).tolist() == [0, 1]
    assert acc_end(outputs, index) == 1.0
    assert acc_end(outputs, torch.tensor([1, 1])) == 0.5
    # interim flag signs: seq 0: +1.0 vs 1 (hit), -0.5 vs 0 (hit); seq 1: -2.0 vs 0 (hit), +1.5 vs 1 (hit)
    assert acc_seq(outputs, flags, index) == 1.0
    # flags wrong at one interim step of each sequence, indices right: (6 - 2) / 6 while ACC_end is 1
    assert acc_seq(outputs, torch.tensor([[0.0, 0, 0], [1.0, 1, 0]]), index) == pytest.approx(4 / 6)
    # ... and one index wrong too: (6 - 3) / 6
    assert acc_seq(outputs, torch.tensor([[0.0, 0, 0], [1.0, 1, 0]]), torch.tensor([1, 1])) == 0.5


def test_confusion_matrix_and_accuracy_by_position_on_a_hand_example():
    true = torch.tensor([0, 0, 1, 1, 1, 2])
    pred = torch.tensor([0, 1, 1, 1, 0, 1])
    cm = confusion_matrix(pred, true, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    by_position = accuracy_by_position(pred, true, 4)
    assert by_position[:3].tolist() == [0.5, 2 / 3, 0.0]
    assert math.isnan(by_position[3])  # position 3 never occurs
    with pytest.raises(ValueError, match="classes=2"):
        confusion_matrix(pred, true, 2)


class CountsToThree(nn.Module):
    """Static classifier that is right from 3 iterations on (rolled, wrong, before); records its calls."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.seen = []

    def forward(self, x, iterations):
        self.seen.append(iterations)
        return x * self.weight if iterations >= 3 else x.roll(1, dims=1)


def test_accuracy_by_iterations_runs_the_model_at_each_count():
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    x = nn.functional.one_hot(y, 4).float()
    model = CountsToThree()
    model.train()
    assert accuracy_by_iterations(model, x, y, [1, 2, 3, 8], batch_size=4) == {1: 0.0, 2: 0.0, 3: 1.0, 8: 1.0}
    assert model.seen == [1, 1, 2, 2, 3, 3, 8, 8]  # two batches per count
    assert model.training  # mode restored


# --- training --------------------------------------------------------------------------------


def _fit(seed=0, init_seed=0, **kwargs):
    torch.manual_seed(init_seed)
    model = TinyRecurrent(inputs=3, outputs=sequence_outputs(4))
    history = fit_sequences(
        model, anomaly_task(64), anomaly_task(32, seed=1), epochs=kwargs.pop("epochs", 12),
        batch_size=16, seed=seed, optimizer=("adam", {"lr": 2e-2}), progress=False, **kwargs,
    )
    return model, history


def test_fit_sequences_learns_the_anomaly_task_and_is_reproducible():
    model, history = _fit()
    assert isinstance(history, SequenceHistory) and len(history) == 12
    losses = history["train_loss"]
    assert losses[-1] < 0.6 * losses[0]
    assert history["val_loss"][-1] < 0.6 * history["val_loss"][0]
    assert history[-1].val_accuracy > 0.5  # ACC_end, chance is 0.25 (4 positions)
    assert 0.0 <= history[-1].val_acc_seq <= 1.0 and history[-1].val_acc_seq > history[0].val_acc_seq
    x, _, index = anomaly_task(32, seed=1)
    with torch.no_grad():
        assert history[-1].val_accuracy == pytest.approx(acc_end(model.steps(x), index))
    again_model, again = _fit()
    for column in ("train_loss", "val_loss", "val_accuracy", "val_acc_seq"):
        assert again[column] == history[column]  # bit for bit
    for p, q in zip(model.parameters(), again_model.parameters()):
        assert torch.equal(p, q)
    _, reshuffled = _fit(seed=1, epochs=2)  # same initial weights, another batch order
    assert reshuffled["train_loss"] != history["train_loss"][:2]
    assert SequenceHistory.from_dict(history.to_dict()) == history


def test_fit_sequences_raises_training_diverged_with_the_finished_epochs():
    torch.manual_seed(0)
    model = TinyRecurrent(inputs=3, outputs=sequence_outputs(4))
    model.poison_after = 2 * 4  # 4 batches per epoch: the third epoch's outputs turn nan
    with pytest.raises(TrainingDiverged, match="epoch 3") as caught:
        fit_sequences(model, anomaly_task(64), epochs=5, batch_size=16, progress=False)
    assert len(caught.value.history) == 2 and caught.value.history.diverged
    assert model.training  # modes restored


def test_fit_sequences_stops_early_and_restores_the_best_weights():
    torch.manual_seed(0)
    model = TinyRecurrent(inputs=3, outputs=sequence_outputs(4))
    val = anomaly_task(16, seed=1)
    # gradient ascent: the val loss rises every epoch, so epoch 1 stays the best
    history = fit_sequences(
        model, anomaly_task(32), val, epochs=10, optimizer=("sgd", {"lr": 0.1, "maximize": True}),
        early_stopping=2, progress=False,
    )
    assert history.stopped_early and history.best_epoch == 1 and len(history) == 3
    assert history["val_loss"][0] < history["val_loss"][1] < history["val_loss"][2]
    model.eval()
    with torch.no_grad():
        restored = multitask_loss(model.steps(val[0]), val[1], val[2]).item()
    assert restored == pytest.approx(history["val_loss"][0], rel=1e-6)


def test_fit_iterations_trains_with_a_loss_at_every_iteration():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(48) % 3
    x = nn.functional.one_hot(y, 3).double() + 0.3 * torch.randn(48, 3, generator=g, dtype=D)
    torch.manual_seed(0)
    model = TinyRecurrent(inputs=3, outputs=3, dtype=D)
    history = fit_iterations(model, (x, y), (x, y), iterations=3, epochs=6, optimizer=("adam", {"lr": 3e-2}), progress=False)
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    accuracy = accuracy_by_iterations(model, x, y, [3])[3]
    assert history[-1].val_accuracy == pytest.approx(accuracy) and accuracy > 0.9
