"""Engine tuning per database: SQLite pragmas for concurrent readers and a writer."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from webadmin.extensions import db


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run during a write; busy_timeout waits for the writer instead of failing."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def engine_options(app: Flask) -> None:
    """SQLALCHEMY_ENGINE_OPTIONS for the configured database, set before the engine is made.

    pool_pre_ping (a `SELECT 1` at every connection checkout, i.e. every request) finds connections a database
    server dropped; a SQLite file has no server to drop them, and the ping was ~100 µs of a ~900 µs device
    registration (docs/benchmarks.md), so SQLite goes without it.
    """
    options = app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
    if not str(app.config.get("SQLALCHEMY_DATABASE_URI", "")).startswith("sqlite"):
        options.setdefault("pool_pre_ping", True)


def configure_engine(app: Flask) -> None:
    """Install per-dialect connection settings on the app's engine."""
    with app.app_context():
        engine: Engine = db.engine
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)


def is_sqlite() -> bool:
    """Whether the bound database is SQLite."""
    return db.engine.dialect.name == "sqlite"
