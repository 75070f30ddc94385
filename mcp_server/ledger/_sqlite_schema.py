"""The SQLite ledger file: schema migrations, identity checks, opening and its error texts."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from mcp_server._sqlite_wal import use_wal
from mcp_server.ledger.base import LedgerError, LedgerProblem

DEFAULT_BUSY_TIMEOUT = 5.0
"""Seconds to wait for another process's write lock before giving up with `LedgerError`."""

_APPLICATION_ID: Final = 0x4A524C59  # "JRLY": marks the file as a jobrelay ledger
_PAGE_CACHE_KIB: Final = 512
"""SQLite's page cache per connection (the default is 2 MiB each). The file is in the OS page
cache anyway, and one finished research row (~450 KB) still fits; measured 2 MB less peak RSS
under 1,000 concurrent waits (BENCHMARKS.md)."""


def _problem_message(problem: LedgerProblem, path: Path, detail: str, busy_timeout: float) -> str:
    where = f"The job ledger at {path}"
    untouched = "jobrelay has not changed it."
    match problem:
        case "corrupt":
            return (
                f"{where} is damaged or is not an SQLite database ({detail}). {untouched} "
                f"Move it aside (for example `mv '{path}' '{path}.damaged'`) so that a fresh "
                "ledger is created, or set JOBRELAY_DB to another file; "
                f"`sqlite3 '{path}' .recover` may salvage its jobs."
            )
        case "not_a_ledger":
            return (
                f"{path} is an SQLite database but not a jobrelay job ledger ({detail}). "
                f"{untouched} Set JOBRELAY_DB to another file."
            )
        case "locked":
            return (
                f"{where} is locked by another process (waited {busy_timeout:g} s for it). "
                "Close whatever holds a transaction open on it (an `sqlite3` shell, a stuck "
                "jobrelay) and try again, or set JOBRELAY_DB to another file."
            )
        case "too_new":
            return (
                f"{where} {detail}: it was written by a newer jobrelay. {untouched} "
                "Upgrade jobrelay, or set JOBRELAY_DB to another file."
            )
        case "unwritable":
            return (
                f"Cannot create or write the job ledger at {path} ({detail}). Make its "
                "directory writable, or set JOBRELAY_DB to a writable path."
            )
        case "migration_failed":
            return (
                f"Upgrading the schema of the job ledger at {path} failed ({detail}); the "
                "upgrade was rolled back and no data changed. Keep the file and report this."
            )
        case "io":
            return (
                f"{where} could not be read or written ({detail}). Check free disk space and "
                "that it is on a local filesystem (SQLite WAL does not work on network shares)."
            )
        case "closed":
            return f"{where} is closed."


# Primary SQLite result codes (https://sqlite.org/rescode.html).
_SQLITE_PROBLEMS: Final[dict[int, LedgerProblem]] = {
    3: "unwritable",  # SQLITE_PERM
    5: "locked",  # SQLITE_BUSY
    6: "locked",  # SQLITE_LOCKED
    8: "unwritable",  # SQLITE_READONLY
    11: "corrupt",  # SQLITE_CORRUPT
    14: "unwritable",  # SQLITE_CANTOPEN
    23: "unwritable",  # SQLITE_AUTH
    26: "corrupt",  # SQLITE_NOTADB
}


def _ledger_error(exc: sqlite3.Error, path: Path, busy_timeout: float) -> LedgerError:
    code = getattr(exc, "sqlite_errorcode", None)
    problem = _SQLITE_PROBLEMS.get(code & 0xFF, "io") if isinstance(code, int) else "io"
    message = _problem_message(problem, path, str(exc), busy_timeout)
    return LedgerError(message, path=path, problem=problem)


# --------------------------------------------------------------------------------------------
# Schema and migrations


def _migration_v1(conn: sqlite3.Connection) -> None:
    """The first schema: jobs, their upstream ids and their target keys."""
    conn.execute(
        """
        CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL,
            provider TEXT NOT NULL,
            operation TEXT NOT NULL,
            sandbox INTEGER NOT NULL,
            params TEXT NOT NULL,
            params_fingerprint TEXT NOT NULL,
            credits_requested INTEGER NOT NULL,
            credits_seen INTEGER,
            state TEXT NOT NULL,
            raw_status TEXT,
            snapshot TEXT,
            result TEXT,
            error TEXT,
            warnings TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at TEXT,
            next_check_at TEXT
        )
        """
    )
    conn.execute("CREATE INDEX jobs_by_tenant ON jobs (tenant, created_at)")
    conn.execute("CREATE INDEX jobs_by_created ON jobs (created_at)")
    conn.execute(
        "CREATE INDEX jobs_open ON jobs (created_at) "
        "WHERE state IN ('queued', 'running', 'unknown')"
    )
    conn.execute(
        """
        CREATE TABLE job_upstream_ids (
            job_seq INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            upstream_id TEXT NOT NULL,
            PRIMARY KEY (job_seq, position)
        )
        """
    )
    conn.execute("CREATE INDEX job_upstream_ids_by_id ON job_upstream_ids (upstream_id)")
    conn.execute(
        """
        CREATE TABLE job_targets (
            job_seq INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            target TEXT NOT NULL,
            PRIMARY KEY (job_seq, position)
        )
        """
    )
    conn.execute("CREATE INDEX job_targets_by_target ON job_targets (target)")


def _migration_v2(conn: sqlite3.Connection) -> None:
    """MCP tasks (issue 16): per-ledger secrets, and one row per task beside its job."""
    conn.execute("CREATE TABLE ledger_secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
    conn.execute(
        """
        CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY,
            job_id TEXT NOT NULL,
            terminal INTEGER NOT NULL,
            expires_at REAL,
            data TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX tasks_by_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL")


def _migration_v3(conn: sqlite3.Connection) -> None:
    """Jobs by (provider, state): `job_counts` (the `jobrelay_jobs` gauge, every 15 s) reads
    this index alone instead of scanning every row with its result (BENCHMARKS.md)."""
    conn.execute("CREATE INDEX jobs_by_provider_state ON jobs (provider, state)")


_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _migration_v1,
    _migration_v2,
    _migration_v3,
)
"""Migration N (1-based) takes the schema from version N-1 to N. Append; never edit or reorder."""

SCHEMA_VERSION: Final = len(_MIGRATIONS)


def _identity(conn: sqlite3.Connection) -> tuple[int, int, bool]:
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE substr(name, 1, 7) <> 'sqlite_'"
    ).fetchone()[0]
    return app_id, version, bool(tables)


def _check_identity(conn: sqlite3.Connection, path: Path, known: int) -> int:
    """The schema version of a file that is ours (or empty); LedgerError for anything else."""
    app_id, version, has_tables = _identity(conn)
    if app_id == _APPLICATION_ID:
        if version > known:
            detail = f"has schema version {version}, but this jobrelay knows versions up to {known}"
            raise LedgerError(
                _problem_message("too_new", path, detail, 0), path=path, problem="too_new"
            )
        return version
    if app_id == 0 and version == 0 and not has_tables:
        return 0
    detail = f"application_id {app_id:#x}, user_version {version}, with tables of its own"
    raise LedgerError(
        _problem_message("not_a_ledger", path, detail, 0), path=path, problem="not_a_ledger"
    )


def _migrate(
    conn: sqlite3.Connection, path: Path, migrations: Sequence[Callable[[sqlite3.Connection], None]]
) -> None:
    # BEGIN IMMEDIATE also proves at open that we can take the write lock within busy_timeout,
    # and serialises two processes opening a fresh file at once (the second sees version N).
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _check_identity(conn, path, len(migrations))
        for number in range(version + 1, len(migrations) + 1):
            try:
                migrations[number - 1](conn)
            except sqlite3.Error as exc:
                detail = f"version {number - 1} to {number}: {exc}"
                raise LedgerError(
                    _problem_message("migration_failed", path, detail, 0),
                    path=path,
                    problem="migration_failed",
                ) from exc
            conn.execute(f"PRAGMA user_version = {number:d}")
        if version == 0:
            conn.execute(f"PRAGMA application_id = {_APPLICATION_ID:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _prepare(conn: sqlite3.Connection, path: Path, busy_timeout: float) -> None:
    """Check, then migrate. Nothing here writes to a file it is about to refuse."""
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    _check_identity(conn, path, len(_MIGRATIONS))  # read-only checks first
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        detail = "; ".join(problems[:3])
        raise LedgerError(
            _problem_message("corrupt", path, detail, busy_timeout), path=path, problem="corrupt"
        )
    mode = use_wal(conn, busy_timeout)
    if mode != "wal":
        detail = f"cannot use WAL, journal_mode is {mode}"
        raise LedgerError(
            _problem_message("io", path, detail, busy_timeout), path=path, problem="io"
        )
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA cache_size = -{_PAGE_CACHE_KIB:d}")
    _migrate(conn, path, _MIGRATIONS)


def check_ledger_location(
    raw_path: str | os.PathLike[str], busy_timeout: float = DEFAULT_BUSY_TIMEOUT
) -> Path:
    """Can the ledger live at `raw_path`? Raise `LedgerError` ("unwritable") when not.

    The one location check `jobrelay serve` and `jobrelay doctor` share. It leaves nothing
    behind: for a file that does not exist yet it creates the missing directories and a
    scratch file the way the first start would, then removes them again. An existing file is
    only looked at (opening it is `SqliteLedger.open`'s job).
    """
    path = Path(raw_path).expanduser()

    def refuse(detail: str) -> LedgerError:
        return LedgerError(
            _problem_message("unwritable", path, detail, busy_timeout),
            path=path,
            problem="unwritable",
        )

    try:
        if path.is_dir():
            raise LedgerError(
                f"JOBRELAY_DB={path} is a directory. Fix: point JOBRELAY_DB at a file inside "
                f"it, e.g. {path / 'jobs.sqlite3'}.",
                path=path,
                problem="unwritable",
            )
        if path.exists():
            if not os.access(path, os.R_OK | os.W_OK):
                raise refuse("permission denied: the file is not readable and writable")
            return path
        missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    except OSError as exc:
        raise refuse(f"cannot look at it: {exc.strerror or exc}") from exc
    made: list[Path] = []
    try:
        for directory in reversed(missing):
            directory.mkdir()
            made.append(directory)
        fd, scratch = tempfile.mkstemp(prefix=".jobrelay-check-", dir=path.parent)
        os.close(fd)
        Path(scratch).unlink()
    except OSError as exc:
        where = made[-1] if made else (missing[-1] if missing else path.parent)
        raise refuse(f"cannot create files in {where}: {exc.strerror or exc}") from exc
    finally:
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                directory.rmdir()
    return path


def _open_connection(
    raw_path: str | os.PathLike[str], busy_timeout: float
) -> tuple[sqlite3.Connection, Path]:
    """Create the directory, open the file, check and migrate it (in a worker thread)."""
    path = check_ledger_location(raw_path, busy_timeout)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        detail = f"cannot create directory {path.parent}: {exc.strerror or exc}"
        raise LedgerError(
            _problem_message("unwritable", path, detail, busy_timeout),
            path=path,
            problem="unwritable",
        ) from exc
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise _ledger_error(exc, path, busy_timeout) from exc
    try:
        _prepare(conn, path, busy_timeout)
    except sqlite3.Error as exc:
        conn.close()
        raise _ledger_error(exc, path, busy_timeout) from exc
    except BaseException:
        conn.close()
        raise
    return conn, path


def _open_reader(path: Path) -> sqlite3.Connection:
    """The loop thread's read-only connection to an already prepared ledger file.

    `timeout=0`: a busy answer comes back at once instead of blocking the event loop.
    """
    reader = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        reader.row_factory = sqlite3.Row
        reader.execute("PRAGMA query_only = ON")
        reader.execute(f"PRAGMA cache_size = -{_PAGE_CACHE_KIB:d}")
    except BaseException:
        reader.close()
        raise
    return reader
