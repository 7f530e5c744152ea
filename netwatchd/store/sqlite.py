"""What netwatchd's SQLite files share: private modes whatever the umask, and telling a damaged
file from a failing environment."""
from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from typing import Callable, FrozenSet, Optional, Tuple, Type, TypeVar

from netwatchd.errors import StoreError

T = TypeVar("T")

log = logging.getLogger(__name__)

DIR_MODE = 0o750  # root and group netwatchd may enter; nobody else sees what devices exist
FILE_MODE = 0o640  # SQLite gives its -wal and -shm files the mode of the database file
BUSY_TIMEOUT_MS = 5000  # a reader (a backup, sqlite3 on the command line) may briefly hold a lock
WAL_SIZE_LIMIT = 8 * 1024 * 1024  # bytes the WAL shrinks back to after a checkpoint
SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
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


def header_problem(path: str) -> str:
    """Why a non-empty file is not an SQLite database, or "" when it may be one. Asked before
    SQLite opens the file: SQLite would delete a -wal file beside a file it cannot read, and
    that WAL may hold the newest data, which moving the bad file aside should keep."""
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if head and head != SQLITE_MAGIC:
        return f"not a database (starts with {head[:8]!r}, not an SQLite header)"
    return ""


def use_wal(conn: sqlite3.Connection) -> str:
    """Busy timeout, write-ahead logging with synchronous=NORMAL and a bounded WAL; returns the
    journal mode in force ("wal" unless the file system cannot do it)."""
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode == "wal":
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    return mode


def in_transaction(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
    """Runs `work` between BEGIN IMMEDIATE and COMMIT, so it lands whole or not at all: rolled
    back if anything fails (the connection is opened with isolation_level=None)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


@dataclass(frozen=True)
class FileKind:
    """What one of our SQLite files is: its name in messages, its errors and its schema."""

    what: str  # "netwatchd inventory", in "not a netwatchd inventory"
    error: Type[StoreError]  # the environment's fault (permissions, a newer schema, a full disk)
    corrupt: Type[StoreError]  # the file's fault: not SQLite, damaged, not ours
    schema: Tuple[str, ...]  # CREATE TABLE IF NOT EXISTS statements, schema_version first
    tables: FrozenSet[str]
    version: int
    # migrate(conn, from_version): converts a file of an older schema version, inside the
    # transaction that opens it (so it is converted whole or not at all); None: nothing to convert
    migrate: Optional[Callable[[sqlite3.Connection, int], None]] = None

    def sqlite_error(self, path: str, doing: str, e: sqlite3.Error) -> StoreError:
        return (self.corrupt if is_corruption(e) else self.error)(path, f"{doing}: {e}")

    def check_header(self, path: str) -> None:
        problem = header_problem(path)
        if problem:
            raise self.corrupt(path, problem)


def open_private(kind: FileKind, path: str, quick_check: bool) -> sqlite3.Connection:
    """Opens (or creates) a file of `kind` with private modes, WAL, and its schema checked or
    created. Raises kind.corrupt if the file is not a healthy one of ours, kind.error for any
    other reason it cannot be used. With quick_check every page is read first, so damage is
    found here, where the caller can move the file aside, rather than in the middle of a run."""
    try:
        make_private_dirs(os.path.dirname(os.path.abspath(path)))
        create_private_file(path)
        kind.check_header(path)
    except OSError as e:
        raise kind.error(path, f"cannot create or read: {e.strerror or e}") from e
    try:
        # isolation_level=None: no implicit transactions; each batch says BEGIN/COMMIT itself.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise kind.sqlite_error(path, "cannot open", e) from e
    try:
        mode = use_wal(conn)
        if mode != "wal":
            raise kind.error(path, f"cannot use write-ahead logging (journal_mode stays {mode!r})")
        if quick_check:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise kind.corrupt(path, "damaged: " + "; ".join(problems))
        in_transaction(conn, lambda: _check_or_create_schema(kind, path, conn))
    except sqlite3.Error as e:
        conn.close()
        raise kind.sqlite_error(path, "cannot open", e) from e
    except BaseException:
        conn.close()
        raise
    return conn


def _check_or_create_schema(kind: FileKind, path: str, conn: sqlite3.Connection) -> None:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if tables and "schema_version" not in tables:
        raise kind.corrupt(path, f"not a {kind.what} (tables: {', '.join(sorted(tables))})")
    version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] if tables else None
    if version is not None and version > kind.version:
        raise kind.error(path, f"written by a newer netwatchd (schema version {version}; "
                               f"this one knows up to {kind.version})")
    if version is not None and version < kind.version and kind.migrate is not None:
        kind.migrate(conn, version)  # in open_private's transaction: converted once, whole, or not at all
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (kind.version,))
        log.info("%s: converted from schema version %d to %d", path, version, kind.version)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for statement in kind.schema:
        conn.execute(statement)
    missing = kind.tables - tables
    if version is None:
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (kind.version,))
    elif missing:
        log.warning("%s: recreated missing table(s) %s", path, ", ".join(sorted(missing)))
