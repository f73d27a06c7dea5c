"""The Huey task queue: SQLite storage under instance/ by default, Redis when WEBADMIN_REDIS_URL is set."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flask import Flask
from huey import SqliteHuey
from huey.storage import RedisStorage, SqliteStorage

F = TypeVar("F", bound=Callable[..., Any])

# One Huey for the process. Tasks register on it at import time; init_queue points its storage at the
# configured backend once the app's settings are known.
huey = SqliteHuey("webadmin", filename=":memory:", immediate=False)
_app: Flask | None = None


def init_queue(app: Flask) -> None:
    """Point the queue at Redis or the instance SQLite file; immediate mode runs tasks inline (tests)."""
    global _app
    _app = app
    if app.config.get("QUEUE_IMMEDIATE"):
        huey.immediate = True
        return
    huey.immediate = False
    if app.config.get("REDIS_URL"):
        huey.storage_class = RedisStorage
        huey.storage_kwargs = {"url": app.config["REDIS_URL"]}
    else:
        path = Path(app.config["INSTANCE_PATH"]) / "queue.sqlite3"
        huey.storage_class = SqliteStorage
        huey.storage_kwargs = {"filename": str(path)}
    huey.storage = huey.create_storage()


def queue_backend() -> str:
    """'redis', 'sqlite' or 'memory' (immediate mode)."""
    if huey.immediate:
        return "memory"
    return "redis" if isinstance(huey.storage, RedisStorage) else "sqlite"


def in_app_context(func: F) -> F:
    """Run a task body inside the Flask app context of the process (consumer or web)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _app is None:
            raise RuntimeError("the queue is used before create_app() ran")
        with _app.app_context():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
