"""Atomic file writes: a file is either its old contents or its new ones, never half of either.

Used by checkpoints (`ln.save`) and by run folders (`loopnets.experiments.rundir`). A write goes to
a temporary name in the same folder, is fsynced, and is renamed into place (`os.replace` is atomic
on POSIX and Windows); the folder is fsynced too, so the rename survives a power loss.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from loopnets.faults import about

__all__ = ["fsync_folder", "write_atomic", "write_new"]


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (POSIX: fsync the directory)."""
    if not hasattr(os, "O_DIRECTORY"):  # pragma: no cover - Windows has no directory fsync
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes) -> None:
    """Create `path` (it must not exist), write `data`, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` by `data` at once: a temporary file in its folder, fsync, os.replace.

    Raises:
        FileFault: the file could not be written (disk full, read-only, ...); `path` is unchanged
            and no temporary file is left.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with about(path, "write"):
        try:
            write_new(tmp, data)
            os.replace(tmp, path)
        except BaseException:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise
        fsync_folder(path.parent)
