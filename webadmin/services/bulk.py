"""Plain-row bulk writes for generated data (the demo loaders and the scale benchmarks).

SQLAlchemy's executemany runs every value of every row through its type processors (UTC datetimes, JSON, booleans)
in Python; for tens of thousands of generated rows that costs more than the database's own work. Here the values
are converted once per column kind to what the driver stores, and the rows go in set-based: one DB-API
executemany on SQLite, COPY on PostgreSQL, inside the session's current transaction.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import JSON, Boolean, Table

from webadmin.driver_sql import stored_utc
from webadmin.extensions import db
from webadmin.models.types import UTCDateTime


def _converter(column: Any, sqlite: bool) -> Any:
    """A function turning a Python value of the column into the driver's plain value (None stays None)."""
    if isinstance(column.type, UTCDateTime):
        return functools.partial(stored_utc, sqlite=sqlite)
    if isinstance(column.type, JSON):
        return json.dumps
    if isinstance(column.type, Boolean) and sqlite:
        return int
    return None


def insert_dicts(table: Table, rows: Sequence[dict[str, Any]]) -> int:
    """insert_rows() of dicts that all have the same keys (those of the first)."""
    if not rows:
        return 0
    columns = list(rows[0])
    return insert_rows(table, columns, ([row[c] for c in columns] for row in rows))


def insert_rows(table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Insert plain rows (tuples in the order of `columns`) into `table`; returns how many."""
    sqlite = db.engine.dialect.name == "sqlite"
    cols = [table.c[name] for name in columns]
    converters = [_converter(c, sqlite) for c in cols]
    if any(converters):
        values = [tuple(v if v is None or f is None else f(v) for v, f in zip(row, converters, strict=True))
                  for row in rows]
    else:
        values = [tuple(row) for row in rows]
    if not values:
        return 0
    names = ", ".join(f'"{name}"' for name in columns)
    driver = db.session.connection().connection.driver_connection
    if sqlite:
        marks = ", ".join("?" for _ in columns)
        driver.cursor().executemany(f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})', values)
    else:
        with driver.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            for row in values:
                copy.write_row(row)
    return len(values)
