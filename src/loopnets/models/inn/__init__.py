"""Iterative neural networks (Hershey 2023): one masked weight matrix iterated over [input; state].

    import loopnets as ln; inn = ln.inn
    mask = inn.block_exchange(inn.layered_mask(2500, [500, 200, 100, 10]), p=0.2, seed=0)
    net = inn.IterativeNetwork(2500, 810, 10, mask, iterations=4, output_activation="linear")
    ys = net.steps(x)                   # (batch, 4, 10): the output of every iteration

The public API is exactly what this module re-exports.
"""

from loopnets.models.inn.lstm import LSTMBaseline, lstm_hidden_for, lstm_parameters
from loopnets.models.inn.masks import (
    block_exchange,
    expected_trainable,
    identity_blocks,
    layered_mask,
    random_mask,
    weight_space,
)
from loopnets.models.inn.metrics import (
    acc_end,
    acc_seq,
    accuracy_by_position,
    confusion_matrix,
    predict_index,
    sequence_outputs,
)
from loopnets.models.inn.network import AUTO_SPARSE_DENSITY, KERNELS, IterativeNetwork
from loopnets.models.inn.options import AUTHORS_INIT_STD, BIASES, INITS
from loopnets.models.inn.tasks import (
    SequenceHistory,
    accuracy_by_iterations,
    fit_iterations,
    fit_sequences,
    multitask_loss,
    per_iteration_loss,
)

__all__ = [
    "AUTHORS_INIT_STD",
    "AUTO_SPARSE_DENSITY",
    "BIASES",
    "INITS",
    "KERNELS",
    "IterativeNetwork",
    "LSTMBaseline",
    "SequenceHistory",
    "acc_end",
    "acc_seq",
    "accuracy_by_iterations",
    "accuracy_by_position",
    "block_exchange",
    "confusion_matrix",
    "expected_trainable",
    "fit_iterations",
    "fit_sequences",
    "identity_blocks",
    "layered_mask",
    "lstm_hidden_for",
    "lstm_parameters",
    "multitask_loss",
    "per_iteration_loss",
    "predict_index",
    "random_mask",
    "sequence_outputs",
    "weight_space",
]
