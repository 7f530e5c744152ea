"""Files replaced whole, whatever happens: the daemon's state files (netwatchd.store.state_files)
and the TC attach's record of the qdiscs it created (netwatchd.kernel.tc_attach) both use this."""
from __future__ import annotations

import errno
import os
import tempfile
from typing import BinaryIO, Callable, List

TEMP_SUFFIX = ".tmp"


def _temp_prefix(name: str) -> str:
    return f".{name}."


def write_atomically(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Replace `path` with what `write` writes into the binary file it is handed.

    The bytes go to a temporary file of a unique name (tempfile.mkstemp: mode 0600) in the same
    directory, which is fsynced, renamed over `path`, and then the directory is fsynced: after a
    crash or a power cut `path` is the old file or the new one, whole. If anything fails, the
    temporary file is removed and the error raised; `path` is untouched.
    """
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(name), suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(directory)


def fsync_directory(directory: str) -> None:
    """Make a rename in `directory` durable. A file system that cannot fsync a directory (EINVAL)
    has nothing to flush there."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str, names) -> List[str]:
    """Temporary files of write_atomically for `names` that a killed process left behind."""
    removed = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    prefixes = tuple(_temp_prefix(n) for n in names)
    for entry in entries:
        if entry.startswith(prefixes) and entry.endswith(TEMP_SUFFIX):
            try:
                os.unlink(os.path.join(directory, entry))
                removed.append(entry)
            except OSError:
                pass
    return sorted(removed)
