"""Engine settings per backend, and the connections of webadmin/driver_sql.py."""

from __future__ import annotations

import contextlib
import os
import sqlite3

import pytest

from webadmin import driver_sql
from webadmin.extensions import db


def test_pre_ping_only_where_a_server_can_drop_connections(app):
    # A SELECT 1 at every checkout (every request) finds connections a PostgreSQL server closed; a SQLite file has
    # no server, and the ping was a measurable part of each API request (docs/benchmarks.md).
    assert db.engine.pool._pre_ping is (db.engine.dialect.name != "sqlite")


# SQLite's own connections; PostgreSQL's come from the pool (the API tests cover both).
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@sqlite_only
def test_sqlite_requests_reuse_a_connection_and_leave_nothing_open(app):
    with app.app_context():  # one request's context
        first = driver_sql.Transaction().raw
        first.execute("CREATE TEMP TABLE scratch (n INTEGER)")  # lives as long as the connection
        driver_sql.Transaction().execute("INSERT INTO scratch VALUES (:n)", {"n": 1})  # never committed
        assert first.in_transaction
    assert not first.in_transaction  # rolled back when the request ended
    with app.app_context():
        again = driver_sql.Transaction().raw
        assert again is first
        assert again.execute("SELECT count(*) FROM scratch").fetchone() == (0,)


@sqlite_only
def test_idle_sqlite_connections_are_bounded_and_closed_with_the_engine(app):
    with contextlib.ExitStack() as requests:
        held = []
        for _ in range(driver_sql._IDLE_SQLITE_MAX + 3):  # more requests at once than are kept afterwards
            requests.enter_context(app.app_context())
            held.append(driver_sql.Transaction().raw)
        assert len({id(c) for c in held}) == len(held)
    kept = driver_sql._idle_sqlite(db.engine)
    assert len(kept) == driver_sql._IDLE_SQLITE_MAX and all(c in held for c in kept)
    with app.app_context():
        in_use = driver_sql.Transaction().raw
        db.engine.dispose()  # closes the idle ones, as it closes the pool's
        assert driver_sql._idle_sqlite(db.engine) == []
    with pytest.raises(sqlite3.ProgrammingError):
        kept[0].execute("SELECT 1")
    with pytest.raises(sqlite3.ProgrammingError):  # and the one in use then, once given back
        in_use.execute("SELECT 1")
    assert driver_sql._idle_sqlite(db.engine) == []


@sqlite_only
def test_a_forked_process_opens_its_own_sqlite_connection(app):
    with app.app_context():
        parent = driver_sql.Transaction().raw
    pid = os.fork()
    if pid == 0:  # a gunicorn worker forked after the app served something
        code = 2
        try:
            with app.app_context():
                child = driver_sql.Transaction().raw
                code = 0 if child is not parent and child.execute("SELECT 1").fetchone() == (1,) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with app.app_context():
        assert driver_sql.Transaction().raw is parent  # the parent's is still its own
