"""The thesis's timing workloads (issue 7's table): loopnets beside hand-written PyTorch and `neurons`.

Shapes of thesis Table 4.1 with the loops of sec 4.2, Adam as Table 4.2, one training epoch:
- FTIR MLP: 571 -> d128 -> d256 -> d128 -> d28, loop "3 -> 2" (d256, d128), batch 32, 529 samples;
- FTIR CNN: 1x571 -> conv(1, 9) -> conv(1, 9) -> d32 -> d28, loop "2 -> 1" (both convs), batch 32;
- iris: 4 -> d25 -> d25 -> d25 -> d3, loop "3 -> 2", batch 1, 150 samples.
ReLU, no biases, softmax + cross-entropy. FTIR data: `loopnets.data.load_spectra` (synthetic,
FTIR-shaped, 529 training spectra); iris: the 150 flowers of `load_iris` (120 + 30 joined).

Each (workload, variant) is timed three ways in one process, interleaved: `ln.fit`, the textbook
hand-written loop, and the same loop tuned for speed (see `handwritten.py`). PyTorch's default
initialisation (not the thesis's U(-1, 1)): the time per epoch does not depend on the values,
and these stay finite.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

import loopnets as ln
from loopnets import layers
from loopnets.models.lavik.architectures import loop_network, thesis_mlp

from handwritten import Looped, train_epochs
from timing import interleaved, median_ms, synchronizer

# ms per training epoch, `neurons` 2.6.2 medians on this machine (issue 7); (workload, variant, unroll)
NEURONS_MS = {
    ("ftir_mlp", "ffn", 1): 263, ("ftir_mlp", "combine", 2): 282, ("ftir_mlp", "combine", 3): 308,
    ("ftir_mlp", "couple", 2): 405, ("ftir_mlp", "couple", 3): 510,
    ("ftir_cnn", "ffn", 1): 73, ("ftir_cnn", "combine", 2): 99, ("ftir_cnn", "combine", 3): 108,
    ("ftir_cnn", "couple", 2): 103, ("ftir_cnn", "couple", 3): 155,
    ("iris", "ffn", 1): 5.1, ("iris", "combine", 2): 5.4, ("iris", "combine", 3): 5.5, ("iris", "combine", 4): 6.1,
    ("iris", "couple", 2): 11.4, ("iris", "couple", 3): 15.7, ("iris", "couple", 4): 18.0,
}
# variants timed per workload: the table's, plus Tied (no neurons figure) for the hand-written comparison
VARIANTS = {
    "ftir_mlp": [("ffn", 1), ("combine", 2), ("combine", 3), ("couple", 2), ("couple", 3), ("tied", 2), ("tied", 3)],
    "ftir_cnn": [("ffn", 1), ("combine", 2), ("combine", 3), ("couple", 2), ("couple", 3), ("tied", 2), ("tied", 3)],
    "iris": [("ffn", 1), ("combine", 2), ("combine", 3), ("combine", 4), ("couple", 2), ("couple", 3), ("couple", 4),
             ("tied", 2), ("tied", 4)],
}
ADAM = {
    "ftir_mlp": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8},
    "ftir_cnn": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8},
    "iris": {"lr": 1e-4, "betas": (0.95, 0.999), "eps": 1e-7},
}
BATCH = {"ftir_mlp": 32, "ftir_cnn": 32, "iris": 1}


@dataclass
class Workload:
    name: str
    X: torch.Tensor
    y: torch.Tensor

    @property
    def batch_size(self) -> int:
        return BATCH[self.name]

    def loopnets_model(self, variant: str, unroll: int) -> nn.Module:
        unroll = max(unroll, 2)  # "ffn" ignores it
        if self.name == "iris":
            return thesis_mlp(4, (25, 25, 25), 3, variant=variant, unroll=unroll)
        if self.name == "ftir_mlp":
            return thesis_mlp(571, (128, 256, 128), 28, variant=variant, unroll=unroll)
        conv = layers.Conv(1, 9, padding=4, activation="relu", bias=False)
        specs = [conv, conv, layers.Dense(32, activation="relu", bias=False)]
        return loop_network((1, 571), specs, (0, 1), 28, method=variant, unroll=unroll)

    def handwritten_model(self, variant: str, unroll: int) -> Looped:
        lin = lambda a, b: nn.Linear(a, b, bias=False)
        if self.name == "iris":
            pre, body, head = nn.Sequential(lin(4, 25), nn.ReLU()), nn.Sequential(lin(25, 25), nn.ReLU(), lin(25, 25), nn.ReLU()), lin(25, 3)
        elif self.name == "ftir_mlp":
            pre = nn.Sequential(lin(571, 128), nn.ReLU())
            body = nn.Sequential(lin(128, 256), nn.ReLU(), lin(256, 128), nn.ReLU())
            head = lin(128, 28)
        else:
            conv = lambda: nn.Conv1d(1, 1, 9, padding=4, bias=False)
            pre, body = nn.Identity(), nn.Sequential(conv(), nn.ReLU(), conv(), nn.ReLU())
            head = nn.Sequential(nn.Flatten(), lin(571, 32), nn.ReLU(), lin(32, 28))
        return Looped(pre, body, head, variant, unroll)


def workloads(quick: bool = False) -> list[Workload]:
    """The three workloads at the thesis's sizes (quick: 8 random samples of each shape, for tests)."""
    if quick:
        g = torch.Generator().manual_seed(0)
        shapes = {"ftir_mlp": ((571,), 28), "ftir_cnn": ((1, 571), 28), "iris": ((4,), 3)}
        return [Workload(name, torch.randn(8, *shape, generator=g), torch.randint(0, classes, (8,), generator=g))
                for name, (shape, classes) in shapes.items()]
    from loopnets.data import load_iris, load_spectra

    iris = load_iris()
    X_iris, y_iris = torch.cat([iris.x_train, iris.x_val]), torch.cat([iris.y_train, iris.y_val])  # (150, 4)
    dense, conv = load_spectra(layout="dense"), load_spectra(layout="conv")  # (529, 571), (529, 1, 571)
    return [Workload("ftir_mlp", dense.x_train, dense.y_train), Workload("ftir_cnn", conv.x_train, conv.y_train),
            Workload("iris", X_iris, y_iris)]


def run(quick: bool = False, rounds: int = 5, epochs: int = 3, device: str = "cpu", log=print) -> list[dict]:
    """Time every (workload, variant); one row each with medians (ms per epoch) and ratios.

    Every contender trains `epochs` epochs per round and its first epoch (warm-up) is dropped.
    """
    sync = synchronizer(device)
    rows = []
    for wl in workloads(quick):
        X, y = wl.X.to(device), wl.y.to(device)
        adam = ADAM[wl.name]
        variants = VARIANTS[wl.name][:2] if quick else VARIANTS[wl.name]
        for variant, unroll in variants:
            torch.manual_seed(0)
            net = wl.loopnets_model(variant, unroll).to(device)
            torch.manual_seed(0)
            hand = wl.handwritten_model(variant, unroll).to(device)
            tuned = copy.deepcopy(hand)

            def fit_epochs(net=net):
                try:
                    history = ln.fit(net, (X, y), loss="cross_entropy", optimizer=("adam", adam), epochs=epochs,
                                     batch_size=wl.batch_size, progress=False)
                except ln.TrainingDiverged as err:
                    history = err.history
                return history["train_seconds"][1:] if epochs > 1 else history["train_seconds"]

            def hand_epochs(model, tuned_loop):
                seconds = train_epochs(model, X, y, epochs=epochs, batch_size=wl.batch_size, adam=adam,
                                       tuned=tuned_loop, sync=sync)
                return seconds[1:] if epochs > 1 else seconds

            samples = interleaved({
                "loopnets": fit_epochs,
                "handwritten": lambda: hand_epochs(hand, False),
                "tuned": lambda: hand_epochs(tuned, True),
            }, rounds)
            ms = {k: median_ms(v) for k, v in samples.items()}
            neurons = NEURONS_MS.get((wl.name, variant, unroll))
            row = {
                "workload": wl.name, "variant": variant, "unroll": unroll, "device": str(device),
                "samples": len(wl.X), "batch": wl.batch_size,
                "loopnets_ms": ms["loopnets"], "handwritten_ms": ms["handwritten"], "tuned_ms": ms["tuned"],
                "vs_handwritten": ms["loopnets"] / ms["handwritten"], "vs_tuned": ms["loopnets"] / ms["tuned"],
                "neurons_ms": neurons, "neurons_speedup": neurons / ms["loopnets"] if neurons else None,
            }
            rows.append(row)
            log(f"{wl.name:9} {label(variant, unroll):11} loopnets {row['loopnets_ms']:8.2f} ms  hand-written "
                f"{row['handwritten_ms']:8.2f} ms ({row['vs_handwritten']:.2f}x)  tuned {row['tuned_ms']:8.2f} ms"
                + (f"  neurons {neurons} ms ({row['neurons_speedup']:.2f}x faster)" if neurons else ""))
    return rows


def label(variant: str, unroll: int) -> str:
    return "FFN" if variant == "ffn" else f"{variant.upper()} x{unroll}"
