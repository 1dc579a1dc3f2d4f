"""Faults of the environment or of a file: one exception type, one message.

A full disk, a read-only folder, a name the file system refuses, a missing, empty or corrupt
file: none of these is a bug in loopnets or a mistake in a config, and none should reach the
user as a traceback. Code that touches files raises `FileFault` (or lets an `OSError` through);
the command line prints either as

    loopnets: error: <what happened>: <which file>; <what to do>

and exits with status 2 (`loopnets.cli.main`). `explain` writes that line for any OSError, and
`about(path, doing)` turns the OSError, non-UTF-8 text or NUL byte of a block of file work into
a FileFault that names the file.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from typing import Iterator

__all__ = ["FileFault", "about", "explain"]

_AGAIN = "then run the same command again (finished runs are kept)"
# errno -> (what happened, what to do)
_ADVICE = {
    errno.ENOSPC: ("no space left on the device", f"free some space, or give --runs-dir a folder on another disk; {_AGAIN}"),
    errno.EDQUOT: ("disk quota exceeded", f"free some space, or give --runs-dir a folder on another disk; {_AGAIN}"),
    errno.EROFS: ("the file system is read-only", f"give --runs-dir a writable folder (or remount it read-write); {_AGAIN}"),
    errno.EACCES: ("permission denied", f"check the folder's owner and permissions, or give --runs-dir another folder; {_AGAIN}"),
    errno.EPERM: ("operation not permitted", f"check the folder's owner and permissions, or give --runs-dir another folder; {_AGAIN}"),
    errno.ENAMETOOLONG: ("the name is too long for the file system (at most 255 bytes a name)",
                         "shorten the experiment name (name=...), the variant names or the --runs-dir path"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path, or give --runs-dir another folder"),
    errno.EISDIR: ("a folder where a file was expected", "check the path"),
    errno.EIO: ("input/output error", "check the disk (dmesg), then run the same command again"),
}


class FileFault(OSError):
    """A fault of the environment or of a file, with what happened, which file, and what to do.

    An OSError, so code that handles OSError handles it too; `errno` is that of the OSError it
    came from (None when it did not come from one).
    """

    def __init__(self, what: str, path: str | os.PathLike, fix: str, code: int | None = None):
        self.what, self.path, self.fix = what, str(path), fix
        super().__init__(f"{what}: {self.path}; {fix}")
        self.errno = code

    def __reduce__(self):  # the default would call __init__ with the message alone
        return type(self), (self.what, self.path, self.fix, self.errno)


def explain(err: OSError) -> str:
    """The one-line message for an OSError: what happened, which file, what to do."""
    if isinstance(err, FileFault):
        return str(err)
    if err.errno is None or err.filename is None:
        return str(err)  # a message already written for people (e.g. "no runs in ...")
    what, fix = _ADVICE.get(err.errno, (err.strerror or f"error {err.errno}", "check the file and the file system"))
    where = f"{err.filename} -> {err.filename2}" if err.filename2 is not None else str(err.filename)
    return f"{what}: {where}; {fix}"


@contextmanager
def about(path: str | os.PathLike, doing: str) -> Iterator[None]:
    """Raise the file faults of the block as one `FileFault` that names the file.

    An OSError (named by its own file name when it has one, else by `path`), a UnicodeDecodeError
    (a text file that is not UTF-8) and the ValueError of a NUL byte in a path become
    `FileFault(f"cannot {doing} (<cause>)", file, <what to do>)`. Other exceptions pass unchanged.
    """
    try:
        yield
    except FileFault:
        raise
    except OSError as err:
        what, fix = _ADVICE.get(err.errno, (err.strerror or str(err), "check the file and the file system"))
        raise FileFault(f"cannot {doing} ({what})", err.filename if err.filename is not None else path, fix,
                        err.errno) from err
    except UnicodeDecodeError as err:
        bad = err.object[err.start:err.start + 1]
        raise FileFault(f"cannot {doing}: not UTF-8 text (byte {bad!r} at offset {err.start})", path,
                        "save the file as UTF-8") from err
    except ValueError as err:
        if type(err) is not ValueError or "null byte" not in str(err):
            raise
        raise FileFault(f"cannot {doing}: a name contains a NUL byte", repr(str(path)),
                        "remove it from the experiment name, the variant names or the --runs-dir path") from err
