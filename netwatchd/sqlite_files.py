"""What netwatchd's SQLite files share: private modes whatever the umask, and telling a damaged
file from a failing environment."""
from __future__ import annotations

import logging
import os
import sqlite3

log = logging.getLogger(__name__)

DIR_MODE = 0o750  # root and group netwatchd may enter; nobody else sees what devices exist
FILE_MODE = 0o640  # SQLite gives its -wal and -shm files the mode of the database file
# SQLite's primary result codes that mean the file, not the environment, is at fault.
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26


def is_corruption(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return (code & 0xFF) in (SQLITE_CORRUPT, SQLITE_NOTADB)  # extended codes carry the primary in the low byte
    text = str(e)
    return "not a database" in text or "malformed" in text


def make_private_dirs(directory: str) -> None:
    """Creates `directory` and missing parents with DIR_MODE whatever the umask; existing ones
    are left alone (the state directory may be shared, or set up by systemd)."""
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, not ours to chmod
        os.chmod(d, DIR_MODE)


def create_private_file(path: str) -> None:
    """Creates the database file with FILE_MODE before SQLite does (SQLite would use 0644), or
    takes group-write and all access by others away from an existing one."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        mode = os.fstat(fd).st_mode & 0o7777
        if mode & 0o027:
            os.fchmod(fd, mode & ~0o027)
            log.warning("%s was accessible to others (mode %04o); made it %04o", path, mode, mode & ~0o027)
    finally:
        os.close(fd)
