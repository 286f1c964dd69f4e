"""Opening the state file: locking, schema migrations, serial and lineage."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb

from reconciler.core.plan import StateRef

SCHEMA_VERSION = 1

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR NOT NULL, value VARCHAR NOT NULL)",
    """CREATE TABLE IF NOT EXISTS resources (
        address VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        parent VARCHAR,
        agent VARCHAR,
        spec JSON NOT NULL,
        fingerprint VARCHAR NOT NULL,
        run_fingerprint VARCHAR,
        serial BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS revisions (
        serial BIGINT NOT NULL,
        sha VARCHAR,
        ref VARCHAR,
        author VARCHAR,
        committed_at VARCHAR,
        message VARCHAR,
        dirty BOOLEAN NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL,
        added INTEGER NOT NULL,
        changed INTEGER NOT NULL,
        destroyed INTEGER NOT NULL,
        canary_runs INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS canary_runs (
        id VARCHAR NOT NULL,
        route VARCHAR NOT NULL,
        run_fingerprint VARCHAR NOT NULL,
        state VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        steps JSON NOT NULL,
        created_serial BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS results (
        agent VARCHAR NOT NULL,
        region VARCHAR NOT NULL,
        canary VARCHAR NOT NULL,
        parent VARCHAR NOT NULL,
        check_name VARCHAR NOT NULL,
        check_type VARCHAR NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        duration_ms DOUBLE NOT NULL,
        status VARCHAR NOT NULL,
        code INTEGER,
        message VARCHAR,
        phases JSON,
        received_at TIMESTAMPTZ NOT NULL,
        retries SMALLINT DEFAULT 0,
        maintenance BOOLEAN DEFAULT false
    )""",
    # Added after the first release: state files created before them gain them here, at the
    # end of the table (NULL-free: the defaults fill existing rows).
    "ALTER TABLE results ADD COLUMN IF NOT EXISTS retries SMALLINT DEFAULT 0",
    "ALTER TABLE results ADD COLUMN IF NOT EXISTS maintenance BOOLEAN DEFAULT false",
    """CREATE TABLE IF NOT EXISTS agent_tokens (
        agent VARCHAR NOT NULL,
        token_hash VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    )""",
    # Incidents (store/incidents.py): at most one open per canary; state open | resolved.
    """CREATE TABLE IF NOT EXISTS incidents (
        id BIGINT NOT NULL,
        canary VARCHAR NOT NULL,
        opened_at TIMESTAMPTZ NOT NULL,
        resolved_at TIMESTAMPTZ,
        state VARCHAR NOT NULL
    )""",
    # Which regions went down | up | unknown, and when, while an incident was open.
    """CREATE TABLE IF NOT EXISTS incident_timeline (
        incident BIGINT NOT NULL,
        changed_at TIMESTAMPTZ NOT NULL,
        region VARCHAR NOT NULL,
        change VARCHAR NOT NULL
    )""",
    # The incident controller's region verdict per canary, and each agent's streaks and cursor.
    """CREATE TABLE IF NOT EXISTS incident_regions (
        canary VARCHAR NOT NULL,
        region VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        last_known VARCHAR,
        changed_at TIMESTAMPTZ
    )""",
    """CREATE TABLE IF NOT EXISTS incident_agents (
        canary VARCHAR NOT NULL,
        region VARCHAR NOT NULL,
        agent VARCHAR NOT NULL,
        verdict VARCHAR,
        fails INTEGER NOT NULL,
        passes INTEGER NOT NULL,
        changed_at TIMESTAMPTZ,
        last_run_at TIMESTAMPTZ
    )""",
    # Canary deployments (store/deployments.py): runtime state, evaluations, actions, pushes.
    "ALTER TABLE canary_runs ADD COLUMN IF NOT EXISTS runtime JSON",
    "ALTER TABLE canary_runs ADD COLUMN IF NOT EXISTS updated_at TIMESTAMPTZ",
    """CREATE TABLE IF NOT EXISTS canary_evaluations (
        run_id VARCHAR NOT NULL,
        route VARCHAR NOT NULL,
        evaluated_at TIMESTAMPTZ NOT NULL,
        step INTEGER NOT NULL,
        verdict VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        detail JSON NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS canary_actions (
        run_id VARCHAR NOT NULL,
        route VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        acted_at TIMESTAMPTZ NOT NULL,
        outcome VARCHAR NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS route_metrics (
        route VARCHAR NOT NULL,
        grp VARCHAR NOT NULL,
        received_at TIMESTAMPTZ NOT NULL,
        requests BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        p99_ms DOUBLE
    )""",
    # Results history (store/archive.py): files holding days moved out of `results`, and
    # the view over both (redefined whenever the list changes).
    """CREATE TABLE IF NOT EXISTS archive_files (
        path VARCHAR NOT NULL,
        day DATE NOT NULL,
        region VARCHAR NOT NULL,
        rows BIGINT NOT NULL,
        bytes BIGINT NOT NULL,
        archived_at TIMESTAMPTZ NOT NULL
    )""",
    # The per-day tier (store/days.py): one row per canary, region, check and finished day.
    """CREATE TABLE IF NOT EXISTS result_days (
        parent VARCHAR NOT NULL,
        region VARCHAR NOT NULL,
        check_name VARCHAR NOT NULL,
        day INTEGER NOT NULL,
        runs BIGINT NOT NULL,
        passes BIGINT NOT NULL,
        degraded BIGINT NOT NULL,
        retried BIGINT NOT NULL,
        p95 DOUBLE NOT NULL,
        bins SMALLINT[] NOT NULL,
        counts BIGINT[] NOT NULL
    )""",
    """CREATE VIEW IF NOT EXISTS results_all AS
       SELECT agent, region, canary, parent, check_name, check_type, started_at, duration_ms,
              status, code, message, phases, received_at
       FROM results""",
    # When each agent last pulled and pushed (store/agent_activity.py).
    """CREATE TABLE IF NOT EXISTS agent_activity (
        agent VARCHAR NOT NULL,
        last_pull TIMESTAMPTZ,
        last_push TIMESTAMPTZ
    )""",
    # The newest revision the control plane refused, until one is applied (store/refusals.py).
    """CREATE TABLE IF NOT EXISTS refusals (
        sha VARCHAR,
        label VARCHAR NOT NULL,
        refused_at TIMESTAMPTZ NOT NULL,
        errors JSON NOT NULL,
        served_sha VARCHAR,
        served_label VARCHAR
    )""",
]

Connection = duckdb.DuckDBPyConnection


class StateError(Exception):
    """The state file cannot be used as asked."""


class StateWriteError(StateError, duckdb.TransactionException):
    """A transaction could not be committed (a full disk, a file that cannot be written): a
    `StateError` for the commands that report those, and still DuckDB's error for the code
    that handles DuckDB's."""


class StateLocked(StateError):
    """Another process holds the state file."""


def _lock_message(path: Path, error: Exception) -> str:
    holder = re.search(r"PID (\d+)", str(error))
    who = f"process {holder.group(1)}" if holder else "another process"
    return (
        f"state file {path} is in use by {who}. If `reconcile serve` holds it, stop it or "
        "plan with `--base REF` instead; otherwise retry, or raise --lock-timeout."
    )


def _connect(
    path: Path, read_only: bool, lock_timeout: float, sleep: Callable[[float], None]
) -> Connection:
    deadline = time.monotonic() + lock_timeout
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise StateError(f"cannot open state file {path}: {error}") from error
            if time.monotonic() >= deadline:
                raise StateLocked(_lock_message(path, error)) from error
            sleep(delay)
            delay = min(delay * 2, 0.5)
        except duckdb.Error as error:
            raise _state_error(path, error, "cannot open state file") from error


# How DuckDB words a block whose checksum does not match (a damaged file).
_CORRUPT = "Corrupt database file"


def _state_error(path: Path, error: duckdb.Error, doing: str) -> StateError:
    """A DuckDB error on the state file as the CLI says it: a damaged file with what to do
    about it, anything else as `doing` the file failed."""
    if _CORRUPT in str(error):
        return StateError(_damaged_message(path, error))
    return StateError(f"{doing} {path}: {error}")


def _damaged_message(path: Path, error: Exception) -> str:
    return (
        f"state file {path} is damaged: {error}. Nothing was changed. Keep it (and "
        f"{path.name}.wal, if there is one) to look into; to carry on, put back a backup "
        "(`reconcile state backup`) or a copy taken while no reconciler held the file, or "
        "move it aside and run `reconcile apply` to start a new one (the config is applied "
        "again; the results, incidents, tokens and canary runs it held are not)."
    )


def _migrate(connection: Connection) -> None:
    for statement in _SCHEMA:
        connection.execute(statement)
    found = _schema_version(connection)
    if found is None:
        connection.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [
                ("schema_version", str(SCHEMA_VERSION)),
                ("lineage", str(uuid.uuid4())),
                ("serial", "0"),
            ],
        )
    else:
        _check_version(found)


def _schema_version(connection: Connection) -> object | None:
    """The state's recorded schema version (None in a new file)."""
    found = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return found[0] if found else None


def _check_version(found: object) -> None:
    """Refuse a state file of a newer schema (or one whose version is not a number): read
    or written by this reconciler, it would be misread."""
    text = str(found)
    if not text.isdigit():
        raise StateError(f"the state file's schema version is {text!r}, not a number")
    if int(text) > SCHEMA_VERSION:
        raise StateError(
            f"the state file has schema version {text}, newer than this reconciler "
            f"understands ({SCHEMA_VERSION}); upgrade canary-reconciler"
        )


def open_state(
    path: Path,
    *,
    read_only: bool = False,
    lock_timeout: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Connection | None:
    """Open the state file, creating and migrating it when writing.

    Args:
        path: the DuckDB file.
        read_only: open for reading; returns None when the file does not exist yet.
        lock_timeout: seconds to wait for another process to release the file.
        sleep: how to wait between attempts.

    Raises:
        StateLocked: another process kept the file locked for `lock_timeout` seconds.
        StateError: the file is not a usable state file.
    """
    if read_only and not path.exists():
        return None
    if path.exists() and not path.is_file():
        # A directory is DuckDB's own error; a FIFO or a device would block or be consumed.
        raise StateError(f"{path} is not a regular file: a state file is a DuckDB file")
    if not read_only:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = "a file is in the way" if isinstance(error, FileExistsError) else None
            raise StateError(
                f"cannot create state file {path}: its directory {path.parent} cannot be "
                f"made ({reason or error.strerror or error})"
            ) from error
    connection = _connect(path, read_only, lock_timeout, sleep)
    try:
        tables = {row[0] for row in connection.execute("SHOW TABLES").fetchall()}
        if "meta" not in tables and (read_only or tables):
            # Another program's DuckDB file: never written into, nor read as a state.
            found = f" (it holds other tables: {', '.join(sorted(tables)[:5])})" if tables else ""
            raise StateError(f"{path} is not a canary-reconciler state file{found}")
        if read_only:
            _check_version(_schema_version(connection) or "")
        else:
            connection.execute("BEGIN TRANSACTION")
            _migrate(connection)
            connection.execute("COMMIT")
    except duckdb.Error as error:
        connection.close()
        raise _state_error(path, error, "cannot read state file") from error
    except BaseException:
        connection.close()
        raise
    return connection


@contextlib.contextmanager
def transaction(connection: Connection) -> Iterator[None]:
    """`BEGIN` before the block, `COMMIT` after it, `ROLLBACK` when it raises.

    A `COMMIT` that fails (a full disk: DuckDB cannot write its log) has ended the
    transaction already; its error is the one raised, not the `ROLLBACK`'s "no transaction
    is active", which used to hide it.
    """
    connection.execute("BEGIN TRANSACTION")
    try:
        yield
        try:
            connection.execute("COMMIT")
        except duckdb.Error as error:
            raise StateWriteError(f"the state file could not be written: {error}") from error
    except BaseException:
        with contextlib.suppress(duckdb.TransactionException):
            connection.execute("ROLLBACK")
        raise


def state_ref(connection: Connection) -> StateRef:
    """The state's current serial and lineage."""
    rows = dict(
        connection.execute(
            "SELECT key, value FROM meta WHERE key IN ('serial', 'lineage')"
        ).fetchall()
    )
    return StateRef(int(rows["serial"]), rows["lineage"])


def set_serial(connection: Connection, serial: int) -> None:
    """Record a new serial (inside the caller's transaction)."""
    connection.execute("UPDATE meta SET value = ? WHERE key = 'serial'", [str(serial)])


def state_is_empty(path: Path) -> bool:
    """True when a state file was created but nothing was ever applied to it."""
    connection = open_state(path, read_only=True, lock_timeout=0)
    if connection is None:
        return False
    with connection:
        return state_ref(connection).serial == 0


def remove_state(path: Path) -> None:
    """Delete a state file and its write-ahead log."""
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".wal").unlink(missing_ok=True)
