"""Per-step CPU time of small loops under two source trees, side by side (an A/B for refactors).

    python benchmarks/loop_step_ab.py OLD_SRC NEW_SRC [--rounds 2]

Each tree runs in its own process (one torch thread): a 32-unit MLP loop (Tied x1, x3) and an
8-channel 8x8 conv loop (Tied x3, merge add), SGD steps, best of 5 x 300 steps of process CPU
time, so other load on the machine matters less than for wall time. Prints microseconds per step
and the NEW / OLD ratio. Used for issue 16: the modes refactor added no per-step overhead.
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
for name, model, x in [("mlp Tied x1", mlp(1), torch.randn(16, 32)), ("mlp Tied x3", mlp(3), torch.randn(16, 32)),
                       ("conv 8x8 Tied x3", cnn(3), torch.randn(16, 8, 8, 8))]:
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


def measure(src: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, src], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old_src")
    p.add_argument("new_src")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2); the best of each is kept")
    args = p.parse_args(argv)
    old, new = {}, {}
    for _ in range(args.rounds):
        for tree, keep in ((args.old_src, old), (args.new_src, new)):
            for name, us in measure(tree).items():
                keep[name] = min(us, keep.get(name, float("inf")))
    print(f"{'workload':<20} {'old us/step':>12} {'new us/step':>12} {'new/old':>8}   (1 torch thread, process CPU time)")
    for name in old:
        print(f"{name:<20} {old[name]:>12.1f} {new[name]:>12.1f} {new[name] / old[name]:>8.3f}")


if __name__ == "__main__":
    main()
