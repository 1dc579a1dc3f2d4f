"""GPU check: every backprop mode trains on CUDA as on the CPU, and a loopy CNN keeps up with hand-written PyTorch.

    python benchmarks/gpu_check.py            # on a machine with CUDA; exit 1 when a check fails
    python benchmarks/gpu_check.py --quick --device cpu   # the same code on the CPU, tiny sizes (tests)

1. Modes: a small looped MLP (float32, unroll 3) per backprop mode (Tied, Truncated, Couple,
   Combine, Implicit, OneStep) is trained 2 epochs by `ln.fit` on the CPU and on the device from the
   same initial weights and seed; the epoch losses and the final weights must agree within `--rtol`
   (the devices' kernels round differently, so not bit for bit).
2. Precision (CUDA only): bf16 and fp16 autocast train the Tied MLP 2 epochs within 5 % of float32.
3. Throughput: a CIFAR-shaped loopy CNN (`loopnets.models.loopy.network.loopy`, 32x32 images, batch 128, Tied x3)
   trained by `ln.fit`, against the same network by hand (`images.HandLoopy`) trained by the
   textbook loop (`handwritten.train_epochs`), epochs of `--batches` steps, interleaved rounds,
   median per epoch. Target: loopnets images/s >= 0.9 x hand-written images/s.

Without a CUDA device (and no --device) it prints "no CUDA device" and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loopnets as ln  # noqa: E402
from loopnets import loopy  # noqa: E402
from loopnets.training import resolve_device  # noqa: E402

from handwritten import train_epochs  # noqa: E402
from images import HandLoopy  # noqa: E402
from timing import interleaved, median_ms, synchronizer  # noqa: E402

MODES = {"tied": ln.Tied, "truncated": ln.Truncated, "couple": ln.Couple, "combine": ln.Combine,
         "implicit": ln.Implicit, "onestep": ln.OneStep}
TARGET = 0.9  # loopnets throughput / hand-written throughput


def looped_mlp(mode: str) -> nn.Module:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(32, 32), nn.Tanh())
    with torch.no_grad():
        body[0].weight.mul_(0.5)  # contractive enough for the fixed-point modes to converge
    return nn.Sequential(nn.Linear(16, 32), ln.Loop(body, unroll=3, backprop=MODES[mode]()), nn.Linear(32, 4))


def check_modes(device: str, rtol: float, log=print) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 16, generator=g)
    y = torch.randint(0, 4, (256,), generator=g)
    rows = []
    for mode in MODES:
        runs = {}
        for where in ("cpu", device):
            net = looped_mlp(mode)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ln.NotConvergedWarning)
                history = ln.fit(net, (X, y), (X, y), loss="cross_entropy", optimizer=("adam", {"lr": 1e-2}),
                                 epochs=2, batch_size=32, seed=0, progress=False, device=where)
            runs[where] = (history["train_loss"] + history["val_loss"], [p.detach().cpu() for p in net.parameters()])
        losses = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(runs["cpu"][0], runs[device][0]))
        weights = max(float(((a - b).abs() / (a.abs() + 1e-6)).max()) for a, b in zip(runs["cpu"][1], runs[device][1]))
        row = {"mode": mode, "loss_rel_diff": losses, "weight_rel_diff": weights, "ok": losses <= rtol}
        rows.append(row)
        log(f"{mode:10s} 2 epochs cpu vs {device}: losses differ by {losses:.2e} (relative), weights by "
            f"{weights:.2e}  {'ok' if row['ok'] else 'FAIL'}")
    return rows


def check_precisions(device: str, rtol: float = 5e-2, log=print) -> list[dict]:
    """bf16 and fp16 (autocast, GradScaler for fp16) train the Tied MLP 2 epochs near the float32 losses."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(256, 16, generator=g), torch.randint(0, 4, (256,), generator=g)
    losses = {}
    for precision in (None, "bf16", "fp16"):
        history = ln.fit(looped_mlp("tied"), (X, y), loss="cross_entropy", optimizer=("adam", {"lr": 1e-2}),
                         epochs=2, batch_size=32, seed=0, progress=False, device=device, precision=precision)
        losses[precision] = history["train_loss"]
    rows = []
    for precision in ("bf16", "fp16"):
        diff = max(abs(a - b) / abs(b) for a, b in zip(losses[precision], losses[None]))
        rows.append({"precision": precision, "loss_rel_diff": diff, "ok": diff <= rtol})
        log(f"{precision}: 2 epochs' losses within {diff:.2e} of float32 (tolerance {rtol})  "
            f"{'ok' if diff <= rtol else 'FAIL'}")
    return rows


def check_throughput(device: str, quick: bool, batches: int, rounds: int, log=print) -> dict:
    from loopnets.data import synthetic_cifar

    size, filters, batch = (8, 4, 8) if quick else (32, 64, 128)
    split = synthetic_cifar(n=batch * batches * 5 // 4 + 2)
    X = split.x_train[: batch * batches, :, :size, :size].contiguous().to(device)
    y = split.y_train[: batch * batches].to(device)
    torch.manual_seed(0)
    net = loopy.loopy(image_size=size, filters=filters, unroll=3, backprop=ln.Tied(), bn_per_unroll=False).to(device)
    torch.manual_seed(0)
    hand = HandLoopy(filters=filters, image_size=size, unroll=3).to(device)
    sync = synchronizer(device)
    adam = {"lr": 1e-3}

    def loopnets_epoch():
        return ln.fit(net, (X, y), loss="cross_entropy", optimizer=("adam", adam), epochs=1, batch_size=batch,
                      progress=False)["train_seconds"]

    def hand_epoch():
        return train_epochs(hand, X, y, epochs=1, batch_size=batch, adam=adam, sync=sync)

    loopnets_epoch(), hand_epoch()  # warm-up: kernels, allocator, cuDNN autotuning
    samples = interleaved({"loopnets": loopnets_epoch, "handwritten": hand_epoch}, rounds)
    ms = {name: median_ms(values) for name, values in samples.items()}
    images = batch * batches
    row = {"image": size, "filters": filters, "batch": batch, "unroll": 3, "steps_per_epoch": batches,
           "loopnets_images_per_s": images / ms["loopnets"] * 1e3,
           "handwritten_images_per_s": images / ms["handwritten"] * 1e3}
    row["ratio"] = row["loopnets_images_per_s"] / row["handwritten_images_per_s"]
    row["ok"] = row["ratio"] >= TARGET
    log(f"loopy CNN {size}x{size} Tied x3, batch {batch}: loopnets {row['loopnets_images_per_s']:.0f} images/s, "
        f"hand-written {row['handwritten_images_per_s']:.0f} images/s: {row['ratio']:.2f}x "
        f"(target >= {TARGET}x)  {'ok' if row['ok'] else 'FAIL'}")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="default: cuda, when there is one")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for tests)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance of the mode check")
    parser.add_argument("--batches", type=int, default=20, help="training steps per epoch in the throughput check")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.device is None:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device on this machine; nothing to check")
            return 0
        args.device = "cuda"
    device = str(resolve_device(args.device, nn.Linear(1, 1)))
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    print(f"gpu_check on {device} ({name}), torch {torch.__version__}")
    modes = check_modes(device, args.rtol)
    precisions = check_precisions(device) if device.startswith("cuda") else []  # autocast needs CUDA
    throughput = check_throughput(device, args.quick, 2 if args.quick else args.batches, 1 if args.quick else args.rounds)
    result = {"device": device, "name": name, "torch": torch.__version__, "modes": modes, "precisions": precisions,
              "throughput": throughput}
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    ok = all(row["ok"] for row in modes + precisions) and (throughput["ok"] or args.quick)
    print("gpu_check: all checks passed" if ok else "gpu_check: FAILED (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
