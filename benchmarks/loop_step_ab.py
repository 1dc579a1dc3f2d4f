"""Per-step CPU time of small loops under two source trees, side by side (an A/B for refactors).

    python benchmarks/loop_step_ab.py OLD_SRC NEW_SRC [--rounds 2] [--workloads steps fit_many]

Each tree runs in its own process (one torch thread), timed in process CPU time so that other
load on the machine matters less than for wall time:
- steps: a 32-unit MLP loop (Tied x1, x3) and an 8-channel 8x8 conv loop (Tied x3, merge add), SGD
  steps, best of 5 x 300 steps (microseconds per step);
- fit_many: the thesis's iris MLP stacked over 5 seeds, 5 epochs, batch 1 (FFN, COMBINE x2,
  COUPLE x2, Tied x2), best of 3 (milliseconds per model-epoch).
Prints both trees' numbers and the NEW / OLD ratio. Used for issues 14 and 16: the modes refactor
and fit_many through the one engine loop added no overhead.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r'''
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
import loopnets as ln
torch.set_num_threads(1)
torch.manual_seed(0)
def mlp(k):
    return ln.Loop(torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU()), unroll=k, backprop=ln.Tied())
def cnn(k):
    body = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
    return ln.Loop(body, unroll=k, backprop=ln.Tied(), merge="add")
out = {}
for name, model, x in [("step: mlp Tied x1 (us)", mlp(1), torch.randn(16, 32)), ("step: mlp Tied x3 (us)", mlp(3), torch.randn(16, 32)),
                       ("step: conv 8x8 Tied x3 (us)", cnn(3), torch.randn(16, 8, 8, 8))]:
    opt = torch.optim.SGD(model.parameters(), 0.01)
    def step():
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    for _ in range(50):
        step()
    best = float("inf")
    for _ in range(5):
        t = time.process_time()
        for _ in range(300):
            step()
        best = min(best, (time.process_time() - t) / 300 * 1e6)
    out[name] = best
print(json.dumps(out))
'''

FIT_MANY = r'''
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
import loopnets as ln
from loopnets.data import load_dataset
try:
    from loopnets.models.lavik.architectures import init_uniform_, thesis_mlp
except ImportError:  # a tree from before the layers
    from loopnets.lavik import init_uniform_, thesis_mlp
torch.set_num_threads(1)
split = load_dataset("iris", seed=0)
seeds = list(range(5))
settings = {"loss": "cross_entropy", "optimizer": ("adam", {"lr": 1e-4, "betas": (0.95, 0.999), "eps": 1e-7}),
            "epochs": 5, "batch_size": 1, "progress": False}
out = {}
for variant, unroll in (("ffn", 1), ("combine", 2), ("couple", 2), ("tied", 2)):
    best = float("inf")
    for _ in range(3):
        models = []
        for s in seeds:
            torch.manual_seed(s)
            m = thesis_mlp(4, (25, 25, 25), 3, variant=variant, unroll=unroll)
            init_uniform_(m)
            models.append(m)
        cpu = time.process_time()
        history = ln.fit_many(models, split.train, split.val, seeds=seeds, **settings)
        assert history.path == "batched"
        best = min(best, 1000 * (time.process_time() - cpu) / (len(seeds) * settings["epochs"]))
    out[f"fit_many {variant} x{unroll} (ms/model-epoch)"] = best
print(json.dumps(out))
'''


def measure(src: str, workloads: list[str]) -> dict:
    out = {}
    for workload in workloads:
        child = CHILD if workload == "steps" else FIT_MANY
        done = subprocess.run([sys.executable, "-c", child, src], capture_output=True, text=True, check=True)
        out.update(json.loads(done.stdout))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old_src")
    p.add_argument("new_src")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2); the best of each is kept")
    p.add_argument("--workloads", nargs="+", choices=("steps", "fit_many"), default=["steps", "fit_many"])
    args = p.parse_args(argv)
    old, new = {}, {}
    for _ in range(args.rounds):
        for tree, keep in ((args.old_src, old), (args.new_src, new)):
            for name, us in measure(tree, args.workloads).items():
                keep[name] = min(us, keep.get(name, float("inf")))
    print(f"{'workload':<42} {'old':>9} {'new':>9} {'new/old':>8}   (1 torch thread, process CPU time)")
    for name in old:
        print(f"{name:<42} {old[name]:>9.2f} {new[name]:>9.2f} {new[name] / old[name]:>8.3f}")


if __name__ == "__main__":
    main()
