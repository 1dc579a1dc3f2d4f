"""Data parallel fit under torchrun: 2 CPU processes (gloo) equal one process with the doubled batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import loopnets as ln

SCRIPT = r'''
import json, sys
import torch
from torch import nn
import torch.distributed as dist
import loopnets as ln

def build():
    torch.manual_seed(int(dist.get_rank()) if dist.is_initialized() else 0)  # rank 1 starts elsewhere: fit syncs it
    body = nn.Sequential(nn.Linear(5, 5, dtype=torch.float64), nn.Tanh())
    return nn.Sequential(nn.Linear(3, 5, dtype=torch.float64), ln.Loop(body, unroll=3, backprop=ln.Couple()),
                         nn.Linear(5, 2, dtype=torch.float64))

g = torch.Generator().manual_seed(0)
X = torch.randn(22, 3, generator=g, dtype=torch.float64)
y = (X.sum(1) > 0).long()
batch = int(sys.argv[2])
dist.init_process_group("gloo") if int(__import__("os").environ.get("WORLD_SIZE", "1")) > 1 else None
net = build()
seen = []
class Seen:
    def on_epoch_end(self, record):
        seen.append(record.epoch)
history = ln.fit(net, (X, y), (X, y), loss="cross_entropy", optimizer=("adam", {"lr": 0.05}), epochs=3,
                 batch_size=batch, seed=4, progress=False, callbacks=[Seen()])
loop = net[1]
tied = all(torch.equal(a, b) for copy in loop.copies[1:] for a, b in zip(loop.copies[0].parameters(), copy.parameters()))
rank = dist.get_rank() if dist.is_initialized() else 0
with open(sys.argv[1] + f".{rank}.json", "w") as f:
    json.dump({"train": history["train_loss"], "val": history["val_loss"], "seen": seen, "tied": tied,
               "weights": [p.detach().flatten().tolist() for p in net.parameters()]}, f)
'''


def run(tmp_path, ranks, batch):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = tmp_path / f"out{ranks}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    if ranks == 1:
        command = [sys.executable, str(script), str(out), str(batch)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                   str(script), str(out), str(batch)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(Path(f"{out}.{r}.json").read_text()) for r in range(ranks)]


def test_two_ranks_equal_one_rank_with_the_doubled_batch(tmp_path):
    (single,) = run(tmp_path, 1, 8)
    ranks = run(tmp_path, 2, 4)
    for result in ranks:
        assert result["train"] == pytest.approx(single["train"], rel=1e-10)
        assert result["val"] == pytest.approx(single["val"], rel=1e-10)
        for a, b in zip(result["weights"], single["weights"]):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
        assert result["tied"]  # COUPLE copies re-tied on every rank
    assert ranks[0]["weights"] == ranks[1]["weights"]  # the replicas stay equal
    assert ranks[0]["seen"] == [1, 2, 3] and ranks[1]["seen"] == []  # only rank 0 calls the callbacks


def test_a_last_global_batch_too_small_to_split_is_a_clear_error():
    from loopnets.training.data import TensorBatches
    from loopnets.training.distributed import Replicas

    X = torch.zeros(9, 2)
    with pytest.raises(ValueError, match="last global batch holds 1 of the 9 samples, fewer than one per rank"):
        TensorBatches((X, X), 4, True, None, 0, Replicas(0, 2))
    shards = [list(TensorBatches((torch.arange(10.0),), 3, False, None, 0, Replicas(r, 2)).epoch()) for r in (0, 1)]
    assert [b[0].tolist() for b in shards[0]] == [[0, 1, 2], [6, 7]] and [b[0].tolist() for b in shards[1]] == [[3, 4, 5], [8, 9]]
