"""The LSTM baseline of Hershey's iterative-network experiments (thesis §2.1.6, Table 3.1), and its sizing."""

from __future__ import annotations

import warnings

from torch import Tensor, nn

from loopnets.training.engine import check_int

# --- the LSTM baseline (thesis §2.1.6, Table 3.1) ---------------------------------------------


def lstm_parameters(hidden: int, inputs: int = 2500, outputs: int = 10) -> int:
    """Trainable parameters of `torch.nn.LSTM(inputs, hidden, proj_size=outputs)`.

    4 gates x (hidden x inputs + hidden x outputs + 2 biases of hidden) + the projection
    outputs x hidden = hidden * (4 inputs + 5 outputs + 8). LSTMBaseline() has 130 * 10,058 = 1,307,540.
    """
    return hidden * (4 * inputs + 5 * outputs + 8)


def lstm_hidden_for(trainable: int, inputs: int = 2500, outputs: int = 10) -> int:
    """The largest LSTMBaseline hidden size whose parameter count is <= `trainable`.

    The thesis sizes its LSTMs "to approximate the number of trainable weights" of the iterative
    networks (§2.1.6). PyTorch needs hidden > proj_size = outputs, so the smallest LSTM with 2500
    inputs and 10 outputs (hidden 11) has 110,638 parameters: at the thesis's 50,000 and 10,000
    weights it "could no longer be defined" (§3.4.2), and here it cannot at 100,000 either.

    Raises:
        ValueError: no hidden size > outputs fits in `trainable` (the message gives the minimum).
    """
    for name, value in (("trainable", trainable), ("inputs", inputs), ("outputs", outputs)):
        check_int(name, value, minimum=1)
    per_unit = lstm_parameters(1, inputs, outputs)
    hidden = int(trainable) // per_unit
    if hidden <= outputs:
        smallest = lstm_parameters(outputs + 1, inputs, outputs)
        raise ValueError(
            f"no LSTM with {inputs} inputs and {outputs} outputs fits in {int(trainable):,} trainable parameters: "
            f"its projection needs hidden > {outputs}, and the smallest (hidden={outputs + 1}) has {smallest:,} "
            f"({per_unit:,} per hidden unit). Give it at least {smallest:,} parameters"
        )
    return hidden


class LSTMBaseline(nn.Module):
    """The thesis's LSTM baseline: `torch.nn.LSTM(inputs, hidden, proj_size=outputs)`, read every step.

    The outputs are the projected hidden states h_t (linear projection, no activation), used as
    logits. LSTMBaseline() has exactly 1,307,540 parameters, Table 3.1's count ("input dimension of
    2500, a hidden dimension of 130 and an output dimension of 10"); an LSTM(2500, 130) with a
    separate Linear(130, 10) head would have 1,369,950.

    Args:
        inputs: features per step (2500: MNIST resized to 50 x 50).
        hidden: LSTM cell size; must exceed `outputs` (PyTorch's rule for proj_size).
        outputs: projected output units (`sequence_outputs(length)` for an anomaly task).
    """

    def __init__(self, inputs: int = 2500, hidden: int = 130, outputs: int = 10):
        super().__init__()
        for name, value in (("inputs", inputs), ("hidden", hidden), ("outputs", outputs)):
            check_int(name, value, minimum=1)
        if hidden <= outputs:
            raise ValueError(
                f"LSTMBaseline needs hidden > outputs (PyTorch's proj_size rule); got hidden={hidden}, "
                f"outputs={outputs}: use hidden={outputs + 1} or more"
            )
        self.lstm = nn.LSTM(inputs, hidden, proj_size=outputs, batch_first=True)

    def steps(self, x: Tensor, iterations: int | None = None) -> Tensor:
        """The output of every step, (batch, T, outputs).

        Args:
            x: (batch, L, inputs), one step per element (T = L), or (batch, inputs), fed
                `iterations` times (default 1).
            iterations: steps for a static input; not allowed with a sequence.
        """
        if x.dim() == 2:
            if iterations is not None:
                check_int("iterations", iterations, minimum=1)
            x = x.unsqueeze(1).expand(-1, iterations or 1, -1)  # (batch, T, inputs)
        elif x.dim() != 3:
            raise ValueError(
                f"LSTMBaseline takes (batch, L, inputs) sequences or (batch, inputs) static inputs; got {tuple(x.shape)}"
            )
        elif iterations is not None:
            raise ValueError(
                f"a sequence of shape {tuple(x.shape)} runs one step per element; drop iterations={iterations!r}"
            )
        with warnings.catch_warnings():
            # On CPU, PyTorch says once that oneDNN has no projection kernel and uses its own: same results.
            warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
            out, _ = self.lstm(x)  # (batch, T, outputs)
        return out

    def forward(self, x: Tensor, iterations: int | None = None) -> Tensor:
        """The last step's output, (batch, outputs)."""
        return self.steps(x, iterations)[:, -1]
