"""A bounded, crash-safe local queue of check results waiting to be shipped (SQLite in WAL mode)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import orjson

log = logging.getLogger("agent.spool")

_T = TypeVar("_T")

SCHEMA_VERSION: Final = 1
# Why rows were lost, as `dropped_by_reason` names it.
FULL: Final = "spool_full"
CORRUPT: Final = "spool_corrupt"
# Bounds the WAL file left on disk after a checkpoint; the database file itself holds at most
# `capacity` rows (~350 bytes each on disk) and reuses the pages freed by acks and drops.
WAL_SIZE_LIMIT_BYTES: Final = 8 * 1024 * 1024
BUSY_TIMEOUT_SECONDS: Final = 5.0

_CORRUPTION_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_CONTENTION_CODES: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class CorruptSpoolError(sqlite3.DatabaseError):
    """The spool file is readable SQLite but its content is not a usable spool."""


class Spool:
    """A bounded FIFO of JSON rows on disk, delivered at least once.

    Rows are appended by the check runner and shipped by a sender that calls `peek`, posts the
    batch to the control plane and then `ack`s the marker `peek` returned. A row stays in the
    file until it is acked, so a crash, a restart or a control-plane outage loses nothing that
    fits in `capacity`; a retry after a failed post sends the same rows again, which the
    server's idempotency makes harmless. When an append would exceed `capacity`, the oldest rows
    are deleted to make room; they are counted in `dropped_total`.

    Durability (SQLite WAL, ``synchronous=NORMAL``): each `append` and `ack` is one transaction,
    all or nothing. Once a call has returned, its transaction survives a crash of the process
    (SIGKILL, OOM kill, segfault): the commit is in the WAL file, the kernel writes it out, and
    the next `Spool` on the path replays it. A call interrupted by the crash leaves no trace.
    A power loss or an OS crash can lose the transactions committed since the last WAL sync
    (NORMAL syncs only at checkpoints, i.e. every ~1000 pages ≈ 4 MiB of WAL ≈ 10,000 rows): the
    spool then reopens consistent, at an earlier committed state, so it may miss the newest rows
    or re-send rows whose ack was lost. Given a disk that honours fsync, it never comes back
    corrupt because of that.

    Corrupt or unreadable files: if the file cannot be opened as a spool (not SQLite, failing
    ``PRAGMA quick_check``, an unknown schema version, unreadable), it is renamed to
    ``<name>.corrupt-<UTC timestamp>`` together with its ``-wal`` and ``-shm`` files, a warning
    is logged and the spool starts empty. If SQLite reports corruption later, while in use, the
    same happens and the rows that were waiting are added to `dropped_total`. If even a fresh
    file cannot be created (e.g. the directory is not writable), an error is logged and the
    spool runs in memory (`durable` is False) so that the agent keeps working. Rows whose stored
    body is not a JSON object are deleted when `peek` meets them and counted as dropped.

    Threads and the event loop: every method takes an internal lock, so one `Spool` may be used
    from several threads. The synchronous methods do SQLite I/O in the calling thread; appending
    a batch of 50 rows usually takes well under a millisecond, but a commit that triggers a WAL
    checkpoint fsyncs the files, which on a slow disk can take tens of milliseconds. Code on the
    asyncio event loop should therefore use `append_async`, `peek_async` and `ack_async`: they
    encode the rows in the calling thread (so later mutations of the rows do not matter) and
    run the SQLite work on the spool's own single worker thread, in the order the calls were
    made. The synchronous methods are meant for other threads, tests, tools and shutdown.
    Opening runs ``PRAGMA quick_check`` (about 40 ms for 100,000 rows) and `close` waits for
    the queued async calls: do both at startup and shutdown, not in the middle of the loop.

    One process per spool file: `depth` is a counter kept in memory (read from the file at
    open), and `dropped_total` counts the drops since this `Spool` was opened
    (`dropped_by_reason` splits them: `spool_full`, `spool_corrupt`).

    Attributes:
        path: The spool file.
        capacity: The most rows the spool holds.
    """

    def __init__(self, path: Path, capacity: int) -> None:
        """Open the spool at `path`, creating the file and its table if missing.

        Args:
            path: The SQLite file; its parent directories are created if needed.
            capacity: The most rows kept; at least 1.

        Raises:
            ValueError: If `capacity` is less than 1.
            sqlite3.OperationalError: If another process keeps the file locked.
        """
        if capacity < 1:
            raise ValueError(f"spool capacity must be at least 1, got {capacity}")
        self.path: Final = Path(path)
        self.capacity: Final = capacity
        self._lock = threading.Lock()
        # Appends made while an append job waits in the worker's queue join it (group commit).
        self._group_lock = threading.Lock()
        self._open_group: list[tuple[list[bytes], asyncio.Future[int]]] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-spool")
        self._dropped: Counter[str] = Counter()
        self._dropped_while_full = 0
        # The highest marker handed out by `peek`: `ack` never deletes past it, and a file
        # recreated after corruption numbers its rows above it, so stale markers match nothing.
        self._max_marker = 0
        self._overflowing = False
        self._closed = False
        self._durable = True
        self._conn, self._depth = self._open()

    # -- public API -------------------------------------------------------------------------

    @property
    def dropped_total(self) -> int:
        """Rows lost since this spool was opened: dropped for capacity, corrupt or unreadable."""
        return self._dropped.total()

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        """`dropped_total` by reason: `spool_full` (capacity), `spool_corrupt` (a corrupt file,
        or a stored row that is not a JSON object)."""
        return {FULL: self._dropped[FULL], CORRUPT: self._dropped[CORRUPT]}

    @property
    def durable(self) -> bool:
        """False when the file could not be created and the rows are only kept in memory."""
        return self._durable

    def depth(self) -> int:
        """The number of rows waiting to be acked."""
        return self._depth

    def append(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store `rows` at the end of the spool, in one transaction.

        Args:
            rows: JSON-able mappings (orjson types: also datetimes, UUIDs, dataclasses).

        Returns:
            How many rows were dropped to respect `capacity`: the oldest waiting rows first,
            then the first rows of `rows` itself if it alone is larger than `capacity`.

        Raises:
            TypeError: If a row cannot be encoded as JSON; nothing is stored then.
            sqlite3.OperationalError: On an I/O error such as a full disk; nothing is stored.
            ValueError: If the spool is closed.
        """
        return self._append_bodies(_encode(rows))

    def peek(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """Return the oldest rows, up to `limit`, without removing them.

        Args:
            limit: The most rows to return; at least 1.

        Returns:
            The marker to pass to `ack` once the rows are delivered (the id of the last row
            returned; 0 when the spool is empty) and the rows, oldest first.

        Raises:
            ValueError: If `limit` is less than 1 or the spool is closed.
        """
        ids, rows = self.peek_ids(limit)
        return (ids[-1] if ids else 0), rows

    def peek_ids(self, limit: int) -> tuple[list[int], list[dict[str, Any]]]:
        """`peek`, with each row's own marker: acking the marker of row k acks rows 0..k.

        For a sender that delivers a batch in parts (the server refused it as a whole) and
        acks each part once it is settled.

        Raises:
            ValueError: If `limit` is less than 1 or the spool is closed.
        """
        if limit < 1:
            raise ValueError(f"peek limit must be at least 1, got {limit}")
        return self._guarded(lambda: self._read(limit), lambda: ([], []))

    def ack(self, marker: int) -> None:
        """Remove every row up to and including `marker`, once the control plane accepted them.

        A stale marker (already acked, or for rows since dropped) is harmless, and a marker
        larger than any `peek` returned is capped at the last one, so rows that were never
        handed out are never removed.

        Args:
            marker: A marker returned by `peek`.

        Raises:
            ValueError: If the spool is closed.
        """
        self._guarded(lambda: self._delete_through(marker), lambda: None)

    def append_async(self, rows: Sequence[Mapping[str, Any]]) -> asyncio.Future[int]:
        """`append` for the event loop: encodes `rows` now, writes on the spool's worker thread.

        Call it from the event loop thread and await the result: once it resolves, the rows
        are committed. The work is queued when the method is called, so calls complete in the
        order they were made, and changing `rows` afterwards does not change what is stored.

        Group commit: appends made while an earlier append still waits in the worker's queue
        (no `peek_async` or `ack_async` queued in between) are written with it, in one
        transaction, in call order. The rows that transaction dropped for capacity are
        reported to the group's first caller; the others get 0. A failed write fails them all.
        """
        self._check_open()
        bodies = _encode(rows)
        loop = asyncio.get_running_loop()
        member: asyncio.Future[int] = loop.create_future()
        with self._group_lock:
            group = self._open_group
            if group is not None:
                group.append((bodies, member))
                return member
            group = self._open_group = [(bodies, member)]
        job = self._in_worker(self._write_group, group)
        job.add_done_callback(lambda done: _settle(group, done))
        return member

    def peek_async(self, limit: int) -> asyncio.Future[tuple[int, list[dict[str, Any]]]]:
        """`peek` for the event loop, queued now on the spool's worker thread."""
        self._check_open()
        self._close_group()
        return self._in_worker(self.peek, limit)

    def peek_ids_async(self, limit: int) -> asyncio.Future[tuple[list[int], list[dict[str, Any]]]]:
        """`peek_ids` for the event loop, queued now on the spool's worker thread."""
        self._check_open()
        self._close_group()
        return self._in_worker(self.peek_ids, limit)

    def ack_async(self, marker: int) -> asyncio.Future[None]:
        """`ack` for the event loop, queued now on the spool's worker thread."""
        self._check_open()
        self._close_group()
        return self._in_worker(self.ack, marker)

    def close(self) -> None:
        """Finish the queued async calls and close the file; closing twice is harmless."""
        self._executor.shutdown(wait=True)
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _in_worker(self, function: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _close_group(self) -> None:
        """Later appends start a new group (queued after what is queued now)."""
        with self._group_lock:
            self._open_group = None

    def _write_group(self, group: list[tuple[list[bytes], asyncio.Future[int]]]) -> int:
        with self._group_lock:
            if self._open_group is group:
                self._open_group = None  # closed: appends from now on form the next group
        return self._append_bodies([body for bodies, _ in group for body in bodies])

    def _append_bodies(self, bodies: list[bytes]) -> int:
        if not bodies:
            self._check_open()
            return 0
        return self._guarded(lambda: self._write(bodies), lambda: self._write(bodies))

    def _guarded(self, operation: Callable[[], _T], after_reset: Callable[[], _T]) -> _T:
        """Run `operation` under the lock; on corruption, start a new file and `after_reset`."""
        with self._lock:
            self._check_open()
            try:
                return operation()
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise
                self._reset(exc)
            return after_reset()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"spool {self.path} is closed")

    def _write(self, bodies: list[bytes]) -> int:
        keep = bodies[-self.capacity :]
        excess = self._depth + len(keep) - self.capacity
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = 0
            if excess > 0:
                deleted = conn.execute(
                    "DELETE FROM spool WHERE id IN (SELECT id FROM spool ORDER BY id LIMIT ?)",
                    (excess,),
                ).rowcount
            conn.executemany("INSERT INTO spool (body) VALUES (?)", [(body,) for body in keep])
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        dropped = deleted + len(bodies) - len(keep)
        self._depth += len(keep) - deleted
        if dropped:
            self._dropped[FULL] += dropped
            self._dropped_while_full += dropped
            if not self._overflowing:
                self._overflowing = True
                log.warning(
                    "spool %s is full (%d rows): dropping the oldest rows until it drains",
                    self.path,
                    self.capacity,
                )
        return dropped

    def _read(self, limit: int) -> tuple[list[int], list[dict[str, Any]]]:
        rows: list[dict[str, Any]] = []
        ids: list[int] = []
        bad: list[int] = []
        after = 0
        while len(rows) < limit:
            fetched: list[tuple[int, bytes]] = self._conn.execute(
                "SELECT id, body FROM spool WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit - len(rows)),
            ).fetchall()
            if not fetched:
                break
            for row_id, body in fetched:
                try:
                    row = orjson.loads(body)
                except (orjson.JSONDecodeError, TypeError):
                    row = None
                if isinstance(row, dict):
                    rows.append(row)
                    ids.append(row_id)
                else:
                    bad.append(row_id)
            after = fetched[-1][0]
        if bad:
            self._discard(bad)
        if ids:
            self._max_marker = max(self._max_marker, ids[-1])
        return ids, rows

    def _discard(self, ids: list[int]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = conn.executemany("DELETE FROM spool WHERE id = ?", [(i,) for i in ids])
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self._depth -= deleted.rowcount
        self._dropped[CORRUPT] += deleted.rowcount
        log.warning("spool %s: dropped %d rows that are not JSON objects", self.path, len(ids))

    def _delete_through(self, marker: int) -> None:
        through = min(marker, self._max_marker)
        if through < 1:
            return
        deleted = self._conn.execute("DELETE FROM spool WHERE id <= ?", (through,)).rowcount
        self._depth -= deleted
        if self._overflowing and self._depth < self.capacity:
            self._overflowing = False
            log.warning(
                "spool %s has room again: %d rows were dropped while it was full",
                self.path,
                self._dropped_while_full,
            )
            self._dropped_while_full = 0

    def _reset(self, exc: sqlite3.DatabaseError) -> None:
        log.warning(
            "spool %s is corrupt (%s): moving it aside and starting empty; %d rows are lost",
            self.path,
            exc,
            self._depth,
        )
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._dropped[CORRUPT] += self._depth
        self._move_aside()
        self._conn, self._depth = self._open()

    def _open(self) -> tuple[sqlite3.Connection, int]:
        try:
            conn, depth = _open_file(self.path)
        except (sqlite3.DatabaseError, OSError) as exc:
            if isinstance(exc, sqlite3.Error) and _error_code(exc) in _CONTENTION_CODES:
                raise
            log.warning(
                "spool %s is corrupt or unreadable (%s): moving it aside and starting empty",
                self.path,
                exc,
            )
            self._move_aside()
            try:
                conn, depth = _open_file(self.path)
            except (sqlite3.Error, OSError) as exc2:
                log.error(
                    "cannot create spool %s (%s): spooling in memory, a crash or a restart "
                    "will lose the rows waiting",
                    self.path,
                    exc2,
                )
                conn, depth = _open_memory()
                self._durable = False
            else:
                self._durable = True
        else:
            self._durable = True
        if self._max_marker and depth == 0:
            # A recreated file: number its rows above every marker handed out before.
            seeded = conn.execute(
                "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'spool'",
                (self._max_marker,),
            ).rowcount
            if not seeded:
                conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('spool', ?)",
                    (self._max_marker,),
                )
        return conn, depth

    def _move_aside(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        attempt = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{attempt}")
            attempt += 1
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if not source.exists():
                continue
            try:
                os.replace(source, f"{target}{suffix}")
            except OSError as exc:
                log.error("cannot move %s aside: %s", source, exc)
            else:
                if not suffix:
                    log.warning("moved the unusable spool file to %s", target)


def _settle(group: list[tuple[list[bytes], asyncio.Future[int]]], job: asyncio.Future[int]) -> None:
    """Resolve the futures of a group's callers from the group's write."""
    error = None if job.cancelled() else job.exception()
    dropped = 0 if job.cancelled() or error is not None else job.result()
    for _, member in group:
        if member.done():
            continue  # its caller stopped waiting
        if job.cancelled():
            member.cancel()
        elif error is not None:
            member.set_exception(error)
        else:
            member.set_result(dropped)
            dropped = 0


def _encode(rows: Sequence[Mapping[str, Any]]) -> list[bytes]:
    return [orjson.dumps(row if isinstance(row, dict) else dict(row)) for row in rows]


def _error_code(exc: sqlite3.Error) -> int:
    # Extended result codes (e.g. SQLITE_CORRUPT_INDEX) keep the primary code in the low byte.
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    return isinstance(exc, CorruptSpoolError) or _error_code(exc) in _CORRUPTION_CODES


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.rollback()


SQLITE_HEADER: Final = b"SQLite format 3\x00"
# The tables of a spool file (SQLite keeps AUTOINCREMENT counters in `sqlite_sequence`).
SPOOL_TABLES: Final = frozenset({"spool", "sqlite_sequence"})


def foreign_file(path: Path) -> str | None:
    """Why the file at `path` is not a spool the agent may open, or None.

    A spool that is corrupt is moved aside and replaced (`Spool`). That is right for this
    agent's own file, and wrong for any other: a `--spool` naming another file by mistake
    must not rename it (a text file such as /etc/passwd), nor add a table to another
    program's SQLite database. None for a file that is absent, empty, zeroed where a header
    should be, SQLite with only a spool's tables, or SQLite too damaged to list its tables:
    those are this agent's spool, or what is left of one.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return "is a directory"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not head.strip(b"\x00"):
        return None  # empty, or zeroed by a crash (some file systems fill lost blocks so)
    if head != SQLITE_HEADER:
        return "is not a SQLite file, so not an agent spool"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            tables = {str(name) for (name,) in rows}
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None
    others = sorted(tables - SPOOL_TABLES)
    if others:
        return f"is a SQLite database with other tables ({', '.join(others[:3])}), not a spool"
    return None


def _open_file(path: Path) -> tuple[sqlite3.Connection, int]:
    """Open (or create) the spool file, check it and return it with its row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            log.warning("spool %s: WAL mode unavailable, using journal mode %s", path, mode)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise CorruptSpoolError(f"unknown spool schema version {version}")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS spool"
            " (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL)"
        )
        if version == 0:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise CorruptSpoolError("; ".join(problems[:3]))
        depth: int = conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
    except BaseException:
        conn.close()
        raise
    return conn, depth


def _open_memory() -> tuple[sqlite3.Connection, int]:
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE spool (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL)")
    return conn, 0
