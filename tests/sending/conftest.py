"""Engine fixtures: an app with an audience, a scripted channel, and manual control of dispatch."""

from __future__ import annotations

import pytest

from tests.factories import make_app
from tests.sending import scripted
from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.campaign import Channel


@pytest.fixture(autouse=True)
def _engine_config(app):
    """Temporary runtimes (no connections kept between tests) and small batches."""
    app.config.update(ENGINE_KEEP_CONNECTIONS=False, ENGINE_BATCH_SIZE=50, ENGINE_RETRY_BASE_SECONDS=30.0)
    scripted.SENT.clear()


@pytest.fixture
def push_app():
    """The app pushes go to."""
    return make_app("Nibs")


@pytest.fixture
def scripted_channel(push_app):
    """Send android pushes through the scripted backend."""

    def _make(platform: str = "android", options: dict | None = None, **credentials) -> Channel:
        channel = Channel(app_id=push_app.id, platform=platform, backend="scripted", name=f"scripted {platform}",
                          credentials_encrypted=encrypt_credentials(credentials), options=options or {})
        db.session.add(channel)
        db.session.commit()
        return channel

    return _make


@pytest.fixture
def manual_dispatch(monkeypatch):
    """Starting a campaign does not dispatch; the test calls the engine itself. Returns the enqueued ids."""
    enqueued: list[int] = []
    monkeypatch.setattr("webadmin.tasks.enqueue_dispatch", lambda cid, pending: enqueued.append(cid) or 1)
    return enqueued


@pytest.fixture
def real_queue(app):
    """The app's queue on its SQLite file under the instance folder instead of immediate mode: tasks wait in it
    for a consumer. Immediate mode is back afterwards."""
    from webadmin.queue import huey, init_queue

    saved = huey.storage_class, dict(huey.storage_kwargs)
    app.config["QUEUE_IMMEDIATE"] = False
    init_queue(app)
    try:
        yield huey
    finally:
        huey.storage_class, huey.storage_kwargs = saved
        app.config["QUEUE_IMMEDIATE"] = True
        init_queue(app)
