"""What a run's backprop mode costs and how its loop behaves: summary.json's `loop_training`.

The modes comparison (configs/modes/, docs/modes.md) sets accuracy against time and memory. The
runner times every epoch already; this module adds, for every run of the lavik family:

- memory: `loopnets.training.memory.step_memory` of one training step of the trained model on the first
  `batch_size` training samples, with the run's deep supervision (the loop at its training unroll):
  autograd's saved bytes (exact) and the malloc peak (CPU) or the CUDA peak;
- solver: for Implicit / OneStep loops, the `SolverStats` of that training step's forward solve
  and (ift) backward solve, and of a forward over the whole validation split in eval mode.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from loopnets.data.split import Split
from loopnets.core.loop import Loop
from loopnets.training.losses import get_loss
from loopnets.training.memory import step_memory
from loopnets.core.passes import pass_plan
from loopnets.training.fit import as_tensors, pass_loss, predictor
from loopnets.training.device import device_and_dtype


def loop_training(model: nn.Module, split: Split, loss: str, batch_size: int, pass_weights=None) -> dict:
    """The memory of one training step and the loops' solver statistics (see the module doc)."""
    loss_fn = get_loss(loss)
    device, dtype = device_and_dtype(model)
    X, y = as_tensors(split.train, "train", device, dtype)
    xb, yb = X[:batch_size].clone(), y[:batch_size].clone()  # own storage: a view would count all of X as saved
    forward, from_logits = predictor(model, loss_fn)
    plan = pass_plan(model, pass_weights, None, seed=0)
    modes = {module: module.training for module in model.modules()}

    def step() -> None:
        preds, weights = ([forward(xb)], [1.0]) if plan is None else plan.predict(forward, xb, from_logits)
        _, _, value = pass_loss(preds, weights, yb, loss_fn, loss_fn.parts, from_logits)
        value.backward()

    model.train()
    try:
        usage = step_memory(step, device)
        model.zero_grad(set_to_none=True)
        loops = [m for m in model.modules() if isinstance(m, Loop) and hasattr(m.backprop, "solver")]
        solver = {}
        for i, loop in enumerate(loops):
            name = "loop" if len(loops) == 1 else f"loop{i}"
            solver[name] = {"train_forward": _stats(loop.solver_stats), "train_backward": _stats(loop.backward_stats)}
        if loops:
            model.eval()
            X_val, _ = as_tensors(split.val, "val", device, dtype)
            with torch.no_grad():
                model(X_val)
            for i, loop in enumerate(loops):
                solver["loop" if len(loops) == 1 else f"loop{i}"]["eval_forward"] = _stats(loop.solver_stats)
    finally:
        for module, training in modes.items():
            module.train(training)
    return {"memory": {"saved_bytes": usage.saved_bytes, "peak_bytes": usage.peak_bytes, "batch_size": len(xb)},
            "solver": solver or None}


def _stats(stats) -> dict | None:
    """A SolverStats as JSON (the residual trace shortened to its first and last 5 passes)."""
    if stats is None:
        return None
    out = dataclasses.asdict(stats)
    trace = out.pop("residuals")
    out["residuals_head"], out["residuals_tail"] = trace[:5], trace[-5:]
    return out
