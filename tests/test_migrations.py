"""Migrations: a single head, and upgrading an empty database gives exactly the models' schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import build_app
from tests.environment import need, postgres_url, scratch_name
from webadmin.config import ROOT, normalize_database_url
from webadmin.extensions import db, migrate


def _schema_diff(app) -> list:
    """Differences between the migrated database and the models."""
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, db.metadata)
        db.engine.dispose()
    return diff


def test_single_head(tmp_path):
    app = build_app(f"sqlite:///{tmp_path / 'x.sqlite3'}", tmp_path)
    with app.app_context():
        config = migrate.get_config(str(ROOT / "migrations"))
        heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, f"several migration heads: {heads}"


def test_migrations_match_models_on_sqlite(tmp_path):
    app = build_app(f"sqlite:///{tmp_path / 'migrated.sqlite3'}", tmp_path)
    assert _schema_diff(app) == []


def test_migrations_match_models_on_postgresql(tmp_path):
    url = postgres_url()
    need(url is not None, "PostgreSQL not configured (set WEBADMIN_TEST_DATABASE_URL)")
    base = make_url(normalize_database_url(url))
    name = scratch_name("webadmin_migrations_test")
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        app = build_app(base.set(database=name).render_as_string(hide_password=False), tmp_path)
        assert _schema_diff(app) == []
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
