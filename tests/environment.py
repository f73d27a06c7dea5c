"""What the test machine offers (PostgreSQL, Redis, Chromium), and the CI rule: never skip there."""

from __future__ import annotations

import functools
import os
import shutil
from urllib.parse import urlsplit, urlunsplit

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, reason: str) -> None:
    """Skip with a reason on a laptop that lacks something; fail under CI=true, where it must run."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} — CI must run this test, not skip it", pytrace=False)
    pytest.skip(reason)


def xdist_worker() -> int | None:
    """The number of this pytest-xdist worker (gw0 → 0), or None when the suite runs in one process."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") else None


def postgres_url() -> str | None:
    """The PostgreSQL URL for tests, if configured: its own database per xdist worker, made on first use."""
    url = os.environ.get("WEBADMIN_TEST_DATABASE_URL") or None
    worker = xdist_worker()
    return url if url is None or worker is None else _worker_database(url, worker)


@functools.cache
def _worker_database(url: str, worker: int) -> str:
    """Create `<database>_gw<n>` beside the configured test database (workers truncate their own tables)."""
    from sqlalchemy import create_engine, make_url, text

    from webadmin.config import normalize_database_url

    base = make_url(normalize_database_url(url))
    name = f"{base.database}_gw{worker}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def redis_url() -> str | None:
    """The Redis URL for tests, if configured: each xdist worker gets the database below the previous one's."""
    url = os.environ.get("WEBADMIN_TEST_REDIS_URL") or None
    worker = xdist_worker()
    if url is None or worker is None:
        return url
    parts = urlsplit(url)
    number = int(parts.path.strip("/") or 15) - worker
    return urlunsplit(parts._replace(path=f"/{number}"))


def scratch_name(prefix: str) -> str:
    """A name for a scratch database that no other test process uses at the same time."""
    return f"{prefix}_{os.getpid()}"


def chromium_path() -> str | None:
    """Debian's Chromium, which Playwright drives (it cannot download its own browser here)."""
    return os.environ.get("WEBADMIN_CHROMIUM") or shutil.which("chromium") or None
