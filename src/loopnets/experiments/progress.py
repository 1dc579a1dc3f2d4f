"""A sweep's progress in epochs: one bar (a terminal) or plain lines (a log file), or nothing.

The run-level bar of `loopnets run` counts epochs, not runs: every finished epoch of every run
moves it, so its rate and ETA come from epochs done. A run that stops early, diverges or fails
counts its remaining epochs as done when it lands; a run whose epochs are not reported one by one
(seeds trained together by `fit_many`, Ray tasks) counts all of them when it lands.

    progress = SweepProgress("iris", runs=10, epochs_per_run=150, enabled=True)
    progress.epoch("ffn/seed=0")      # one epoch of that run finished
    progress.landed("ffn/seed=0")     # the run is done (its files are written)
    progress.write("a message")       # a line that does not break the bar
    progress.close()

On a terminal it is a tqdm bar over epochs with the runs done in its postfix; otherwise (stdout
redirected) a plain line "<name>: E/T epochs (P%), R/N runs, S s, ETA ..." at most every
`interval` seconds and whenever a run lands; with enabled=False nothing is printed but messages.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from tqdm.auto import tqdm


class SweepProgress:
    """Progress over `runs` runs of `epochs_per_run` epochs each (see the module docstring)."""

    def __init__(self, name: str, runs: int, epochs_per_run: int, enabled: bool = True, *,
                 log: Callable[[str], None] = print, out: TextIO | None = None, interval: float = 10.0):
        self.name, self.runs, self.per_run = name, runs, epochs_per_run
        self.total = runs * epochs_per_run
        self.done, self.landed_runs = 0, 0
        self.counted: dict[str, int] = {}  # epochs counted per run so far
        self.log, self.interval = log, interval
        self.out = out = sys.stdout if out is None else out
        self.tty = enabled and hasattr(out, "isatty") and out.isatty()
        self.plain = enabled and not self.tty
        self.start = self.last = time.perf_counter()
        self.bar = tqdm(total=self.total, desc=name, unit="epoch", file=out, postfix=self._runs()) if self.tty else None

    def _runs(self) -> str:
        return f"runs {self.landed_runs}/{self.runs}"

    def epoch(self, run: str) -> None:
        """One epoch of `run` finished."""
        if self.counted.get(run, 0) >= self.per_run:
            return
        self.counted[run] = self.counted.get(run, 0) + 1
        self._advance(1, False)

    def landed(self, run: str) -> None:
        """`run` is done: its epochs not yet counted count now."""
        rest = max(0, self.per_run - self.counted.get(run, 0))
        self.counted[run] = self.per_run
        self.landed_runs += 1
        self._advance(rest, True)

    def _advance(self, epochs: int, landed: bool) -> None:
        self.done += epochs
        if self.bar is not None:
            self.bar.set_postfix_str(self._runs(), refresh=False)
            self.bar.update(epochs)
        elif self.plain:
            now = time.perf_counter()
            if landed or now - self.last >= self.interval:
                self.last = now
                self.log(self.line(now - self.start))

    def line(self, elapsed: float) -> str:
        """The plain progress line after `elapsed` seconds."""
        percent = 100 * self.done / self.total if self.total else 100.0
        eta = "?" if not self.done else _clock(elapsed / self.done * (self.total - self.done))
        return (f"{self.name}: {self.done}/{self.total} epochs ({percent:.0f}%), {self._runs()}, "
                f"{elapsed:.1f} s, ETA {eta}")

    def write(self, text: str) -> None:
        """A message line (above the bar on a terminal)."""
        if self.bar is not None:
            self.bar.write(text, file=self.out)
        else:
            self.log(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
