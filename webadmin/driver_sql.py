"""SQL on the database driver's own connection, for the few statements every API request runs.

The API key lookup and the device registration are most of what a mobile app sends. Run through the ORM session
and SQLAlchemy's execution layer (session transaction, cache key, compiled-parameter and result processing), a
one-row statement cost about 8× its execution on SQLite (docs/benchmarks.md); here the same SQL goes to the
DB-API cursor directly. What SQLAlchemy did for these statements is done by hand, for both backends:

- placeholders: statements are written with `:name`; PostgreSQL's psycopg gets `%(name)s`;
- timestamps: `UTCDateTime` columns hold naive UTC text on SQLite (the format SQLAlchemy writes, so rows written
  here and by the ORM compare and sort alike) and timestamptz on PostgreSQL; `time_param`/`time_value` convert;
- JSON columns come back as text on SQLite (`json_value` decodes) and decoded on PostgreSQL;
- one connection per request, taken on first use (`_checked_out`) and given back at the end of the request
  (`release`, a teardown), which rolls back anything left open. PostgreSQL's comes from the engine's pool, which
  pings it at checkout, so a connection the server dropped is replaced before a request uses it. SQLite's come
  from a short list of idle connections of this process, detached from the pool: a file has no server to drop
  them, and the pool's checkout, reset and checkin were about a sixth of an event report's Python
  (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import json
import os
import re
import weakref
from datetime import UTC, datetime
from typing import Any

from flask import Flask, g
from sqlalchemy import event

from webadmin.extensions import db

_PLACEHOLDER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


# Idle SQLite connections per engine (by id: a WeakKeyDictionary lookup cost more than the rest of taking one; the
# entry goes with the engine). Bounded by the requests a process runs at once.
_IDLE_SQLITE: dict[int, list[Any]] = {}
_IDLE_SQLITE_MAX = 8
# A forked child (a gunicorn worker) opens its own: its copies of the parent's are kept here, never used and never
# closed (SQLite forbids using a connection across fork(), and closing the last one checkpoints the WAL).
_INHERITED: list[dict[int, list[Any]]] = []


def _forget_inherited() -> None:
    """In a forked child: set the parent's connections aside."""
    _INHERITED.append(dict(_IDLE_SQLITE))
    _IDLE_SQLITE.clear()


os.register_at_fork(after_in_child=_forget_inherited)


def _idle_sqlite(engine: Any) -> list[Any]:
    """This process's idle connections of the engine."""
    found = _IDLE_SQLITE.get(id(engine))
    if found is None:
        found = _IDLE_SQLITE[id(engine)] = []
        if not event.contains(engine, "engine_disposed", _close_idle):  # once per engine
            event.listen(engine, "engine_disposed", _close_idle)
            weakref.finalize(engine, _IDLE_SQLITE.pop, id(engine), None)
    return found


def _close_idle(engine: Any) -> None:
    """Engine.dispose() closes the pool's connections; it closes the idle ones here too (and those in use when
    it ran are closed when given back: `release` finds their list gone)."""
    for connection in _IDLE_SQLITE.pop(id(engine), []):
        connection.close()


def _take_sqlite(engine: Any) -> tuple[Any, list[Any]]:
    """An idle sqlite3 connection, else a new one made by the pool (whose connect event set its pragmas) and
    detached from it; and the idle list it goes back to."""
    idle = _idle_sqlite(engine)
    try:
        return idle.pop(), idle  # atomic under the GIL: threads never share one
    except IndexError:
        pooled = engine.raw_connection()
        connection = pooled.dbapi_connection
        pooled.detach()
        return connection, idle


def _checked_out() -> tuple[Any, bool]:
    """(this request's DB-API connection, whether it is SQLite's), taken on first use."""
    found = g.get("_driver_connection")
    if found is None:
        engine = db.engine
        if engine.dialect.name == "sqlite":
            found = g._driver_connection = (*_take_sqlite(engine), engine)
        else:
            found = g._driver_connection = (engine.raw_connection(), None, engine)
    return found[0], found[1] is not None


def release(_exc: BaseException | None = None) -> None:
    """Teardown: give the connection back (PostgreSQL's to the pool, which rolls back an unfinished transaction;
    SQLite's, rolled back here if a transaction is open, to the idle list)."""
    found = g.pop("_driver_connection", None)
    if found is None:
        return
    connection, idle, engine = found
    if idle is None:  # PostgreSQL
        connection.close()
        return
    if connection.in_transaction:
        connection.rollback()
    if _IDLE_SQLITE.get(id(engine)) is idle and len(idle) < _IDLE_SQLITE_MAX:
        idle.append(connection)
    else:  # too many idle ones, or the engine was disposed while this one was in use
        connection.close()


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
    is not waited for by its own process), else this request's connection. `raw` runs DB-API calls (a pool's
    proxy or, for SQLite outside a session, the sqlite3 connection itself); `driver` is the driver's own
    connection object (psycopg's pipeline, sqlite3's executemany)."""

    def __init__(self) -> None:
        self.in_session = db.session.registry.has() and db.session().in_transaction()
        if self.in_session:
            self.raw = db.session.connection().connection
            self.sqlite = db.engine.dialect.name == "sqlite"
            self.driver = self.raw.driver_connection
        else:
            self.raw, self.sqlite = _checked_out()
            self.driver = self.raw if self.sqlite else self.raw.driver_connection

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
            self.raw.commit()

    def rollback(self) -> None:
        """Roll back (through the session when it is the session's transaction)."""
        if self.in_session:
            db.session.rollback()
        else:
            self.raw.rollback()

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
