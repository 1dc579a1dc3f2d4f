"""Send runs to a Ray cluster (`loopnets run --ray ADDRESS`, or `--ray local`).

Each runner task (one run, or one variant's seeds trained together, `runner.groups`) is one Ray
task needing one CPU (torch runs one thread in it); it returns its runs' files as bytes, which the
driver writes into the runs folder, so the cluster needs no shared file system. A task that fails
on the cluster (an exception Ray could not hand back as results, a worker or node that died) comes
back as its exception, and the runner records its runs as failed; the other tasks go on. With a remote ADDRESS
(e.g. `ray://head:10001` or `auto`), the loopnets package is shipped to the workers through
Ray's runtime environment (`py_modules`); torch and the data packages must be installed there.
Ray is an optional extra: `pip install 'loopnets[ray]'`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator


def run_on_ray(todo: list, address: str, train: Callable) -> Iterator[tuple[object, object]]:
    """Yield (task, train(task, 1)) for every task in `todo` as the cluster finishes them, or
    (task, the exception) for a task that failed there."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs the Ray package: pip install 'loopnets[ray]' (or pip install ray)") from None


    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            package = str(Path(__file__).resolve().parents[1])  # the loopnets package folder
            ray.init(address=address, runtime_env={"py_modules": [package]}, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(train)
        pending = {remote.remote(task, 1): task for task in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as err:  # RayTaskError, WorkerCrashedError, ...
                    result = err
                yield task, result
    finally:
        if started_here:
            ray.shutdown()
