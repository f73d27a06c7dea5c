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
  of the request (`release`, a teardown), where the pool rolls back anything left open.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime
from typing import Any

from flask import Flask, g

from webadmin.extensions import db

_PLACEHOLDER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


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
