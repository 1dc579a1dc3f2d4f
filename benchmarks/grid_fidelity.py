"""The iris grid's COUPLE group, stacked against one at a time over the whole training, in a chosen dtype.

    python benchmarks/grid_fidelity.py [float64|float32]

Trains the grid's 30 COUPLE networks (configs/lavik/iris.toml, <= 100 epochs, patience 10) as one
stacked model, then two of them again alone with `ln.fit` (couple-x2 seed 0, couple-x4-skip seed
4: the run with the largest float32 loss difference in `loopnets bench --suites grid`), and prints
their epochs, final validation losses and the largest relative weight difference. In float64 the
two ways agree to rounding over every epoch; in float32 rounding differences grow over the
12,000 steps of batch-1 training.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import loopnets as ln
from loopnets.experiments import load_config
from loopnets.experiments.config import expand_variants
from loopnets.experiments.runner import build_model, load_split, loss_name

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "lavik" / "iris.toml"
CHECKED = {("couple-x2", 0), ("couple-x4-skip", 4)}


def main() -> None:
    dtype = getattr(torch, sys.argv[1] if len(sys.argv) > 1 else "float64")
    torch.set_num_threads(1)
    torch.set_default_dtype(dtype)
    exp = load_config(CONFIG)
    split = load_split(exp)
    train, val = ([t.to(dtype) if t.is_floating_point() else t for t in part] for part in (split.train, split.val))
    loss = loss_name(exp, split)
    settings = {"loss": loss, "optimizer": (exp.train.optimizer, {k: tuple(v) if isinstance(v, list) else v
                                                                  for k, v in exp.train.optimizer_args.items()}),
                "epochs": exp.train.epochs, "batch_size": exp.train.batch_size, "progress": False,
                "early_stopping": exp.train.early_stopping}
    specs = [(v, s) for v in expand_variants(exp) if v.method == "couple" for s in exp.train.seeds]

    def build(variant, seed):
        torch.manual_seed(seed)
        return build_model(exp, variant, split).to(dtype)

    models = [build(v, s) for v, s in specs]
    many = ln.fit_many(models, tuple(train), tuple(val), seeds=[s for _, s in specs], **settings)
    print(f"{dtype}: {len(models)} COUPLE networks stacked ({many.path})")
    for (variant, seed), model, history in zip(specs, models, many):
        if (variant.name, seed) not in CHECKED:
            continue
        alone = build(variant, seed)
        single = ln.fit(alone, tuple(train), tuple(val), seed=seed, **settings)
        diff = max(((p - q).abs().max() / p.abs().max()).item() for p, q in zip(alone.parameters(), model.parameters()))
        print(f"  {variant.name} seed={seed}: epochs {len(single)} alone / {len(history)} stacked; final val loss "
              f"{single['val_loss'][-1]:.10g} / {history['val_loss'][-1]:.10g}; largest relative weight difference {diff:.2e}")


if __name__ == "__main__":
    main()
