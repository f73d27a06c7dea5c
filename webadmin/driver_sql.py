"""SQL on the database driver's own connection, for the few statements every API request runs.

The API key lookup and the device registration are most of what a mobile app sends. Run through the ORM session
and SQLAlchemy's execution layer (session transaction, cache key, compiled-parameter and result processing), a
one-row statement cost about 8× its execution on SQLite (docs/benchmarks.md); here the same SQL goes to the
DB-API cursor directly. What SQLAlchemy did for these statements is done by hand, for both backends:

- placeholders: statements are written with `:name`; PostgreSQL's psycopg gets `%(name)s`;
- timestamps: `UTCDateTime` columns hold naive UTC text on SQLite (the format SQLAlchemy writes, so rows written
  here and by the ORM compare and sort alike) and timestamptz on PostgreSQL; `time_param`/`time_value` convert;
- JSON columns come back as text on SQLite (`json_value` decodes) and decoded on PostgreSQL;
- the connection is checked out of the engine's pool once per request (`connection()`) and returned at the end
  of the request (`release`, a teardown), where the pool rolls back anything left open;
- SQLite's writers queue at a file lock (`Transaction.writing`, `WriterGate`) instead of in SQLite's busy handler.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import re
import threading
from datetime import UTC, datetime
from typing import Any

from flask import Flask, g

from webadmin.extensions import db

_PLACEHOLDER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")
log = logging.getLogger(__name__)
_GATE_FILES_MAX = 4


class WriterGate:
    """SQLite: the hot API paths' write transactions, one at a time per database file, across processes.

    SQLite has one writer; a connection that finds the write lock taken waits in its busy handler, which sleeps
    1 ms, then 2, 5, 10 … and polls again, however soon the lock is free. Two gunicorn workers writing short
    transactions (an event, a registration: tens of µs each) meet often, and each meeting cost a sleep that was
    longer than the transaction it waited for. Writers that first take an exclusive `flock` on `<database>-writer`
    are woken by the kernel the moment the holder lets go. SQLite's own lock stays the authority: writers that do
    not take the gate (the console, the queue's workers) still wait in SQLite's busy handler, and the gate is only
    taken outside any session transaction, so it is never waited for while SQLite's write lock is held.
    """

    def __init__(self) -> None:
        self._thread_lock = threading.Lock()  # flock is per open file: threads of a process queue here first
        self._files: dict[str, int] = {}  # database file → its gate file, opened once per process
        self.held: int | None = None
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        """After fork: the parent's open files are shared with it, so the child opens its own."""
        self._thread_lock = threading.Lock()
        self._files, self.held = {}, None

    def _file(self, database: str) -> int | None:
        found = self._files.get(database)
        if found is None:
            if len(self._files) >= _GATE_FILES_MAX:  # a process that saw many databases (the test suite)
                for name, fd in list(self._files.items()):
                    if fd != self.held:
                        del self._files[name]
                        if fd >= 0:
                            os.close(fd)
            try:
                found = os.open(f"{database}-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:  # a read-only folder: SQLite's busy handler alone, as without the gate
                log.warning("no writer gate for %s: %s", database, exc)
                found = -1
            self._files[database] = found
        return None if found < 0 else found

    def acquire(self, database: str) -> None:
        """Wait for the gate of this database file (a no-op where no gate file can be made)."""
        fd = self._file(database)
        if fd is None:
            return
        self._thread_lock.acquire()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        self.held = fd

    def release(self) -> None:
        """Let the next writer in (a no-op when not held)."""
        fd, self.held = self.held, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            self._thread_lock.release()


GATE = WriterGate()


def _file_database() -> str | None:
    """The SQLite database file of the app's engine (None for an in-memory one)."""
    database = db.engine.url.database
    return database if database and database != ":memory:" and not database.startswith("file:") else None


def _checked_out() -> tuple[Any, bool]:
    """(this request's pooled DB-API connection, whether it is SQLite's), checked out on first use."""
    found = g.get("_driver_connection")
    if found is None:
        engine = db.engine
        found = g._driver_connection = (engine.raw_connection(), engine.dialect.name == "sqlite")
    return found


def release(_exc: BaseException | None = None) -> None:
    """Teardown: give the connection back to the pool (which rolls back an unfinished transaction)."""
    found = g.pop("_driver_connection", None)
    if found is not None:
        found[0].close()
        if g.pop("_driver_gate", False):  # a request that failed between writing() and its commit
            GATE.release()


def init_app(app: Flask) -> None:
    """Return each request's driver connection when the app context ends."""
    app.teardown_appcontext(release)


@functools.cache
def _for_dialect(statement: str, sqlite: bool) -> str:
    """`:name` placeholders as the driver wants them (sqlite3 takes them as they are)."""
    return statement if sqlite else _PLACEHOLDER.sub(r"%(\1)s", statement)


class Transaction:
    """Statements on one DB-API connection: the caller's if its session has a transaction open (so its pending
    writes and these commit together, as when everything went through the session, and SQLite's single writer
    is not waited for by its own process), else this request's pooled connection."""

    def __init__(self) -> None:
        self.in_session = db.session.registry.has() and db.session().in_transaction()
        if self.in_session:
            self.raw = db.session.connection().connection
            self.sqlite = db.engine.dialect.name == "sqlite"
        else:
            self.raw, self.sqlite = _checked_out()
        self.gated = False

    def writing(self) -> None:
        """Say the next statement writes: on SQLite, outside a session transaction, queue at the writer gate
        first (released by commit or rollback). Reads before it run without holding anybody up."""
        if self.sqlite and not self.in_session and not self.gated:
            database = _file_database()
            if database is not None:
                GATE.acquire(database)
                self.gated = g._driver_gate = True

    def _ungate(self) -> None:
        if self.gated:
            self.gated = g._driver_gate = False
            GATE.release()

    def execute(self, statement: str, params: dict[str, Any]) -> Any:
        """Run one statement with named parameters; the cursor."""
        cursor = self.raw.cursor()
        cursor.execute(_for_dialect(statement, self.sqlite), params)
        return cursor

    def commit(self) -> None:
        """Commit (through the session when it is the session's transaction)."""
        if self.in_session:
            db.session.commit()
        else:
            try:
                self.raw.commit()
            finally:
                self._ungate()

    def rollback(self) -> None:
        """Roll back (through the session when it is the session's transaction)."""
        if self.in_session:
            db.session.rollback()
        else:
            try:
                self.raw.rollback()
            finally:
                self._ungate()

    def time_param(self, value: datetime) -> Any:
        """An aware datetime as a `UTCDateTime` column stores it."""
        return stored_utc(value, sqlite=self.sqlite)

    def json_value(self, value: Any) -> Any:
        """A JSON column's value, decoded (psycopg decodes it itself)."""
        return json.loads(value) if self.sqlite and value is not None else value


def integrity_error() -> type[Exception]:
    """The driver's IntegrityError class (a constraint refused a write)."""
    return db.engine.dialect.loaded_dbapi.IntegrityError


def stored_utc(value: datetime, *, sqlite: bool) -> Any:
    """An aware datetime as the driver is given it for a `UTCDateTime` column: on SQLite the naive-UTC text
    SQLAlchemy's DateTime writes there (so rows written by hand and by the ORM compare and sort alike), on
    PostgreSQL the datetime itself. Naive datetimes are refused, as `UTCDateTime` refuses them."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if not sqlite:
        return value
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def time_value(value: Any) -> datetime | None:
    """A `UTCDateTime` column's value as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
