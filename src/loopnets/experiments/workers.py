"""Local worker processes for a sweep (`loopnets run --workers N`): a worker that dies fails only its task.

`concurrent.futures.ProcessPoolExecutor` marks the whole pool broken when one worker dies
(`kill -9`, the out-of-memory killer): every other task fails with BrokenProcessPool, the
surviving workers are terminated with the runs they were training, and nothing says which task
the dead worker held. Here each worker has its own pipe and holds one task at a time, so the
driver always knows which task each worker holds:

- a task's results come back one by one as the task produces them (`fn(task)` is a generator),
  so the runs it has finished are kept whatever happens to it later;
- a worker that dies is reported as ("died", its task, how it died); the other workers go on,
  and a fresh worker takes its place while tasks remain;
- an exception that escapes `fn` comes back as ("error", task, traceback text);
- while a task runs, `report(payload)` inside it sends ("progress", task, payload) to the driver
  at once (the sweep's per-epoch progress), between the task's results.

Workers are started with the "spawn" method (fork after torch's thread pools can deadlock) and
ignore Ctrl-C: the driver stops them when it is interrupted, or when its consumer stops reading.
"""

from __future__ import annotations

import multiprocessing
import signal
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Callable, Iterator


_CONN: Connection | None = None  # in a worker process: its pipe to the driver (set by `_serve`)


def report(payload: object) -> bool:
    """In a worker: send ("progress", payload) to the driver now and return True; elsewhere False
    (the caller then reports in its own process). A driver that has gone away is ignored."""
    if _CONN is None:
        return False
    try:
        _CONN.send(("progress", payload))
    except OSError:
        pass
    return True


@dataclass
class _Worker:
    process: multiprocessing.Process
    conn: Connection
    task: int | None = None  # the index of the task it holds


def _serve(conn: Connection, threads: int) -> None:
    """A worker's life: set torch's threads, then run tasks until told to stop."""
    global _CONN
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _CONN = conn
    import torch

    torch.set_num_threads(threads)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        fn, task = message
        try:
            for item in fn(task):
                conn.send(("item", item))
        except Exception:
            conn.send(("error", traceback.format_exc()))
        else:
            conn.send(("done", None))


def died(exitcode: int | None) -> str:
    """How a worker process ended, in words."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name}" + (" (kill -9, or the out-of-memory killer)" if -exitcode == signal.SIGKILL else "")
    return f"exited with code {exitcode}"


def run_tasks(fn: Callable[[object], Iterator[object]], tasks: list, workers: int, threads: int,
              started: Callable[[int, int], None] | None = None) -> Iterator[tuple[str, int, object]]:
    """Run `fn(task)` for every task on `workers` processes; yield what comes back as it comes.

    Yields (kind, index of the task, payload): ("item", i, one item `fn(task)` yielded),
    ("progress", i, what the task passed to `report`), ("error", i, traceback text of an exception
    that escaped it), or ("died", i, how its worker died). `started(i, pid)` is called when task i is handed to worker `pid`.

    Args:
        fn: a module-level generator function (it travels to the workers by name).
        threads: torch.set_num_threads in each worker.
    """
    context = multiprocessing.get_context("spawn")
    queue = list(range(len(tasks)))[::-1]  # popped from the end: tasks in order

    def start() -> _Worker:
        here, there = context.Pipe()
        process = context.Process(target=_serve, args=(there, threads), daemon=True)
        process.start()
        there.close()
        return _Worker(process, here)

    pool = [start() for _ in range(min(workers, len(tasks)))]
    try:
        while queue or any(w.task is not None for w in pool):
            for worker in pool:
                if worker.task is None and queue and worker.process.is_alive():
                    try:
                        worker.conn.send((fn, tasks[queue[-1]]))
                    except OSError:  # it died idle: replaced below, the task waits for another worker
                        continue
                    worker.task = queue.pop()
                    if started is not None:
                        started(worker.task, worker.process.pid)
            busy = [w for w in pool if w.task is not None]
            wait([w.conn for w in busy] + [w.process.sentinel for w in pool])
            for worker in list(pool):
                yield from _collect(worker)
                if not worker.process.is_alive():
                    yield from _collect(worker)  # what it sent before it died (up to end-of-file)
                    worker.process.join()
                    if worker.task is not None:
                        yield "died", worker.task, f"worker pid {worker.process.pid} {died(worker.process.exitcode)}"
                    pool.remove(worker)
                    worker.conn.close()
                    if queue:
                        pool.append(start())
    finally:
        _stop(pool)


def _collect(worker: _Worker) -> Iterator[tuple[str, int, object]]:
    """Everything a worker has sent so far."""
    while worker.task is not None:
        try:
            if not worker.conn.poll():
                return
            kind, payload = worker.conn.recv()
        except (EOFError, OSError):  # it died: the caller sees its exit
            return
        if kind in ("item", "progress"):
            yield kind, worker.task, payload
        else:
            task, worker.task = worker.task, None
            if kind == "error":
                yield kind, task, payload


def _stop(pool: list[_Worker]) -> None:
    """Idle workers are told to stop; busy ones (an interrupted sweep) are terminated."""
    for worker in pool:
        try:
            if worker.task is None:
                worker.conn.send(None)
            else:
                worker.process.terminate()
        except OSError:
            pass
    for worker in pool:
        worker.process.join(timeout=10)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()
