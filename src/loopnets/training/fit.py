"""fit / evaluate: training and evaluation of any torch.nn.Module (loopnets models or not).

`fit` trains one model (`loopnets.training.supervised.fit_one`, through the one training loop
`loopnets.training.engine.train`) or, given several seeds, one model per seed
(`loopnets.training.batched.fit_many`). `evaluate` and the data checks live in
`loopnets.training.supervised`, which the stacked path uses too (so it does not import this front).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from loopnets.training.batched import fit_many
from loopnets.training.engine import EVAL_BATCH_SIZE
from loopnets.training.history import EpochRecord, History, TrainingDiverged
from loopnets.training.losses import Loss
from loopnets.training.optim import ClipSpec, OptimizerSpec, SchedulerSpec
from loopnets.training.supervised import GATHER_BYTES, as_tensors, evaluate, fit_one, pass_loss, predict, predictor

__all__ = ["EVAL_BATCH_SIZE", "GATHER_BYTES", "EpochRecord", "History", "TrainingDiverged", "as_tensors", "evaluate",
           "fit", "pass_loss", "predict", "predictor"]

def fit(
    model: nn.Module,
    train: Any,
    val: Any | None = None,
    *,
    loss: str | Loss,
    optimizer: OptimizerSpec = ("adam", {"lr": 1e-3}),
    epochs: int = 100,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    early_stopping: int | None = None,
    restore_best: bool = True,
    shuffle: bool = True,
    pass_weights: str | list[float] | None = None,
    random_passes: tuple[int, int] | None = None,
    compile: bool = False,
    device: str | torch.device | None = None,
    precision: str | None = None,
    callbacks: list | None = None,
    scheduler: SchedulerSpec = None,
    clip: ClipSpec = None,
) -> History:
    """Train `model` with minibatch gradient descent; return its History. The loop is `loopnets.training.engine.train`.

    Data: (X, y) tensors or arrays (the fast path described below), a `torch.utils.data.Dataset`
    (batched with `batch_size`, shuffled with `seed`), or any iterable of (inputs, targets) batches
    such as a `DataLoader` or an `IterableDataset`, which then owns shuffling and batching
    (`batch_size` and `shuffle` are not used for it; each batch is moved to the device as it comes).

    With tensors, each epoch visits every sample once, in a fresh random order (a torch.Generator seeded with
    `seed`), in minibatches of `batch_size` (the last one may be smaller). Per batch: forward,
    the mean loss over the batch, backward, one optimizer step, then `loopnets.tie_(model)`, which
    re-ties COUPLE copies (a no-op for models without COUPLE loops). The model is in train() mode
    while training and eval() mode while validating; every submodule's mode is restored at the end.

    Predictions: for cross_entropy / kl_divergence on a model with `output_activation == "softmax"`
    (binary_cross_entropy: "sigmoid"), the loss is computed from `model.logits(x)` in its
    numerically stable form (exact gradient p - t for softmax + cross-entropy); otherwise from
    `model(x)`, where cross_entropy treats the output as logits (PyTorch convention: a generic
    model must not end in a softmax). See `loopnets.training.losses`.

    Logged numbers: train_loss is the loss over all the epoch's batches as they were trained
    (sums and counts accumulated, so rmse is the root of the epoch's mean squared error);
    val_loss / val_accuracy are computed after the epoch over the whole validation set.

    Speed (docs/performance.md): per step, fit does only the forward, loss, backward, optimizer
    step and COUPLE re-tie. The batch losses stay on the device and are read once per epoch (no
    host sync per step), so a nan / inf training loss is detected at the end of its epoch: the
    epoch's remaining steps have been taken by then, and the weights are nan unless
    early_stopping restores the best epoch. The data are put in shuffled order once per epoch and
    cut into views (data over GATHER_BYTES are indexed batch by batch instead); the COUPLE loops
    are found once per call; named optimizers use fused kernels for float32 (see
    `loopnets.training.optim`). For the same seed the results are those of a per-batch loop: the same
    shuffling and the same batches; in float64 the same numbers for the same memory layout of the
    data (MKL's matmul rounding can depend on operand alignment, so the same X at another storage
    offset may differ in the last bit, about 1e-17).

    Differences from the seed framework (`neurons` 2.6.2), on purpose (standard PyTorch semantics):
    - the batch loss is the *mean* over the batch (neurons sums per-sample gradients), so learning
      rates tuned there for batch size B correspond to about B times larger ones here;
    - the data are reshuffled every epoch (neurons uses fixed consecutive batches; pass
      `shuffle=False` for fixed batches in the original order);
    - Adam's bias correction counts optimizer steps (neurons counts epochs);
    - the softmax + cross-entropy gradient is the exact p - t (neurons multiplies it by a constant);
    - early stopping waits for `early_stopping` epochs without a new best validation loss
      (neurons stops after `tol` epochs of strictly increasing validation loss);
    - a batch runs as one vectorized forward pass, not one thread per sample.

    Args:
        model: any nn.Module mapping (B, *in) -> (B, *out). The data are moved to the device and
            floating dtype of its first parameter (after `device` moved the model there).
        train: (X, y) tensors or numpy arrays, X: (N, *in) floating, y: (N, *out), or (N,) integer
            class indices for cross_entropy; or a Dataset, or an iterable of (X, y) batches.
        val: optional validation data, in any of the same forms.
        loss: a name in `loopnets.training.losses.LOSSES` (or a Loss).
        optimizer: a name, a (name, kwargs) pair or a callable params -> optimizer; see
            `loopnets.training.optim.make_optimizer`.
        epochs: number of passes over `train` (0 returns an empty History).
        batch_size: samples per optimizer step.
        seed: seeds torch's global RNG (dropout, ...) and the shuffling generator. Weights are
            initialized when the model is built, before fit: seed that yourself.
        progress: show a tqdm bar over epochs with the losses; False prints nothing.
        early_stopping: patience: stop when the validation loss has not improved (strictly
            decreased) for this many epochs. Needs `val`.
        restore_best: with early_stopping, load the weights of the best epoch (lowest validation
            loss) into the model before returning, whether or not training stopped early, and
            also when TrainingDiverged is raised. Without early_stopping it has no effect: the
            model keeps its last weights.
        shuffle: reshuffle the samples every epoch (False: the same consecutive batches each epoch).
        pass_weights: deep supervision for a model with one loop (see `loopnets.core.passes`): the
            batch loss is sum_t w_t loss(output after pass t) over the loop's k passes, with
            w_t = 1/k ("mean"), t / (1 + ... + k) ("linear"), only the final output ("last":
            the same numbers as None), or a list of k numbers >= 0. Not with COMBINE (its passes
            carry no graph: use Combine(accumulate=...)). The logged train_loss stays the loss of
            the final output, so it compares with runs without deep supervision.
        random_passes: (lo, hi): every optimizer step draws a pass count k uniformly from lo..hi
            (a torch.Generator of its own seeded with `seed`, so the shuffling is unchanged) and
            runs the model's loops with k passes for that step; validation runs the loops' own
            unroll. Not with ln.Implicit / ln.OneStep (their solver chooses the passes), nor hi
            beyond a COUPLE loop's unroll. With pass_weights "mean" / "linear" the weights are
            those for the drawn k.
        compile: `torch.compile` the forward that training calls (the model, or its logits) once
            per call; backward, the optimizer and validation stay eager, and the numbers are those
            of the eager forward up to rounding. It pays only where the forward has many ops to
            fuse per dispatch: on this project's CPU workloads it was 1.0-1.25x *slower* after 5-36 s
            of compiling (docs/performance.md, `benchmarks/compile_step.py`); try it for large
            models or on a GPU, and compare with `History["train_seconds"]`.

        device: None (the model's), "cpu", "cuda", "cuda:N", "mps" or "auto" (CUDA, else MPS, else
            the CPU): the model is moved there once, in place, and tensors once; loader batches as they come.
        precision: None (the model's dtype), or "bf16" / "fp16": the forward and loss run under
            torch.autocast, fp16 with a GradScaler. CUDA only.
        callbacks: objects with any of on_train_start(model), on_epoch_end(record),
            on_train_end(history), e.g. `loopnets.training.CSVLogger(path)`, `TensorBoardLogger(dir)`.
        scheduler: a learning-rate scheduler of `torch.optim.lr_scheduler` by name with its arguments,
            e.g. ("StepLR", {"step_size": 10}), stepped once per epoch (see `loopnets.training.optim.make_scheduler`).
        clip: gradient clipping: ("norm", max_norm) or ("value", max_value) on the parameters' gradients
            after backward (`loopnets.training.optim.make_clipper`), or ("output", max_value): every element of
            dLoss/dOutput (the gradient of the batch loss with respect to the prediction the loss is
            computed from: the logits where it uses them) clamped to [-max_value, max_value] during
            backward, the thesis's (-5, 5) loss-gradient clamp (`loopnets.training.optim.make_output_clamp`).

    Under `torchrun --nproc-per-node N` (or an initialised torch.distributed group) fit trains data
    parallel: `batch_size` per rank, tensors split between the ranks, gradients averaged after every
    backward, progress and callbacks on rank 0 only (`loopnets.training.distributed`).

    Returns:
        The History: one EpochRecord per epoch, `stopped_early`, `best_epoch`, `diverged`.

    Raises:
        TrainingDiverged: a training batch loss or a validation loss is nan / inf (checked at the
            end of each epoch). Its message names the epoch and the first such batch; `.history`
            holds the finished epochs.
        ValueError: malformed data or arguments (the message says how to fix them), or a device
            that is not available.
        TypeError: a loader batch that is not an (inputs, targets) pair, or a callback without hooks.
    """
    extras = {"pass_weights": pass_weights, "random_passes": random_passes, "compile": compile or None,
              "device": device, "precision": precision, "callbacks": callbacks, "scheduler": scheduler, "clip": clip}
    if isinstance(seed, (list, tuple)):  # several seeds: one model per seed, see loopnets.training.batched.fit_many
        given = [name for name, value in extras.items() if value is not None]
        if given:
            raise ValueError(
                f"{' / '.join(given)} not supported with several seeds (fit_many); "
                "call fit once per seed, e.g. [fit(model_s, ..., seed=s) for s in seeds]"
            )
        return fit_many(model, train, val, seeds=seed, loss=loss, optimizer=optimizer, epochs=epochs,
                        batch_size=batch_size, progress=progress, early_stopping=early_stopping,
                        restore_best=restore_best, shuffle=shuffle)
    return fit_one(model, train, val, loss=loss, optimizer=optimizer, epochs=epochs, batch_size=batch_size, seed=seed,
                   progress=progress, early_stopping=early_stopping, restore_best=restore_best, shuffle=shuffle,
                   pass_weights=pass_weights, random_passes=random_passes, compile=compile, device=device,
                   precision=precision, callbacks=callbacks, scheduler=scheduler, clip=clip)
