"""Which queue the app uses: memory (immediate mode, tests), the SQLite file under instance/, or Redis when
WEBADMIN_REDIS_URL is set — checked by where an enqueued task actually lands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask

from tests.environment import need, redis_url
from webadmin.queue import huey, init_queue, queue_backend
from webadmin.tasks import dispatch_campaign


@pytest.fixture
def queue_settings(app: Flask) -> Iterator[Flask]:
    """Let a test point the queue elsewhere; immediate mode (in memory) is back afterwards."""
    saved = huey.storage_class, dict(huey.storage_kwargs)
    try:
        yield app
    finally:
        huey.storage_class, huey.storage_kwargs = saved
        app.config.update(QUEUE_IMMEDIATE=True, REDIS_URL=None)
        init_queue(app)


def _queued_ids() -> list[int]:
    return [task.args[0] for task in huey.pending()]


def test_tests_run_tasks_in_memory(app: Flask) -> None:
    assert queue_backend() == "memory"


def test_without_a_redis_url_the_queue_is_the_sqlite_file_in_the_instance_folder(queue_settings: Flask) -> None:
    app = queue_settings
    app.config.update(QUEUE_IMMEDIATE=False, REDIS_URL=None)
    init_queue(app)
    assert queue_backend() == "sqlite"
    dispatch_campaign(41)
    assert _queued_ids() == [41]
    assert (Path(app.config["INSTANCE_PATH"]) / "queue.sqlite3").stat().st_size > 0


def test_with_a_redis_url_tasks_go_to_redis_and_no_sqlite_file_is_made(queue_settings: Flask) -> None:
    need(redis_url() is not None, "Redis not configured (set WEBADMIN_TEST_REDIS_URL)")
    app, url = queue_settings, redis_url() or ""
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        app.config.update(QUEUE_IMMEDIATE=False, REDIS_URL=url)
        init_queue(app)
        assert queue_backend() == "redis"
        dispatch_campaign(42)
        assert _queued_ids() == [42]
        assert client.llen(f"huey.redis.{huey.name}") == 1  # in Redis itself, not only through Huey
        assert not (Path(app.config["INSTANCE_PATH"]) / "queue.sqlite3").exists()
    finally:
        client.flushdb()
        client.close()
