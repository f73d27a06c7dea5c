"""Engine settings per backend."""

from __future__ import annotations

from webadmin.extensions import db


def test_pre_ping_only_where_a_server_can_drop_connections(app):
    # A SELECT 1 at every checkout (every request) finds connections a PostgreSQL server closed; a SQLite file has
    # no server, and the ping was a measurable part of each API request (docs/benchmarks.md).
    assert db.engine.pool._pre_ping is (db.engine.dialect.name != "sqlite")
