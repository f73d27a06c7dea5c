"""The dashboard's "Load demo data": a queue task on the real (SQLite) queue, its progress fragment, one load at a
time, a failing loader that leaves nothing of itself behind, and the shell refusing to run alongside."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

import webadmin.services.demo_loaders  # noqa: F401  (registers the loaders, as create_app does)
from webadmin.extensions import db
from webadmin.models.audience import Group, Subscriber
from webadmin.models.audit import AuditEvent
from webadmin.models.demo import DemoLoad
from webadmin.models.types import utcnow
from webadmin.models.user import Role
from webadmin.queue import huey, init_queue
from webadmin.services import demo, demo_audience

HX = {"HX-Request": "true", "HX-Target": "demo-load"}
SMALL = 120  # subscribers: the full 20,000 take half a minute; the flow is what is tested here


@pytest.fixture
def real_queue(app) -> Iterator:
    """The app's queue on its SQLite file under the instance folder instead of immediate mode: tasks wait in it
    until the test runs a worker's step (dequeue + execute). Immediate mode is back afterwards."""
    saved = huey.storage_class, dict(huey.storage_kwargs)
    app.config["QUEUE_IMMEDIATE"] = False
    init_queue(app)
    huey.flush()
    try:
        yield huey
    finally:
        huey.flush()
        huey.storage_class, huey.storage_kwargs = saved
        app.config["QUEUE_IMMEDIATE"] = True
        init_queue(app)


@pytest.fixture(autouse=True)
def _small(monkeypatch):
    monkeypatch.setattr(demo_audience, "DEMO_SUBSCRIBERS", SMALL)


def _work(queue) -> int:
    """Run every waiting task as a worker would; how many ran."""
    ran = 0
    while (task := queue.dequeue()) is not None:
        queue.execute(task)
        ran += 1
    return ran


def _count(column, *where) -> int:
    db.session.rollback()  # a fresh snapshot: the worker and the requests committed on their own connections
    return db.session.scalar(select(func.count(column)).where(*where))


def test_button_queues_the_load_a_worker_runs_it_and_the_fragment_stops_polling(client, login_as, real_queue):
    admin = login_as(Role.ADMIN)
    response = client.post("/demo")
    assert response.status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "Loading demo data in the background" in page
    assert 'data-status="queued"' in page and "waiting for a queue worker" in page and 'hx-trigger="every 1s"' in page
    assert 'action="/demo"' not in page  # no second button while it is queued
    assert _count(Subscriber.id) == 0  # nothing ran in the request
    pending = real_queue.pending()
    assert [(t.name, t.args) for t in pending] == [("load_demo_data", (db.session.scalar(select(DemoLoad.id)),))]

    assert _work(real_queue) == 1
    fragment = client.get("/demo/status", headers=HX).get_data(as_text=True)
    assert 'data-status="done"' in fragment and "hx-trigger" not in fragment  # the last answer stops the polling
    assert f"Demo data loaded: {SMALL} subscribers with" in fragment
    page = client.get("/").get_data(as_text=True)
    assert 'id="demo-load-report"' in page and 'id="dashboard-summary"' in page
    assert _count(Subscriber.id) == SMALL and _count(Group.id) == len(demo_audience.GROUPS)
    loads = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "demo.load")).all()
    assert [(e.actor, e.actor_id) for e in loads] == [(admin.email, admin.id)]
    row = db.session.scalar(select(DemoLoad))
    assert (row.status, row.slot, row.step, row.steps) == ("done", None, len(demo.LOADERS), len(demo.LOADERS))


def test_a_second_click_while_one_is_queued_says_so_and_starts_nothing(client, login_as, real_queue):
    login_as(Role.ADMIN)
    client.post("/demo")
    page = client.post("/demo", follow_redirects=True).get_data(as_text=True)
    assert "A demo load is already queued" in page and "nothing new was started" in page
    assert len(real_queue.pending()) == 1
    assert _count(DemoLoad.id) == 1 and _count(AuditEvent.id, AuditEvent.action == "demo.load") == 1
    _work(real_queue)
    # Once it is done, the slot is free again: a new load starts (and adds nothing).
    client.post("/demo")
    assert _work(real_queue) == 1
    assert db.session.scalars(select(DemoLoad.report).order_by(DemoLoad.id)).all()[-1] == "nothing new"


def test_the_fragment_names_the_running_loader_n_of_m(app, client, login_as, real_queue, monkeypatch):
    login_as(Role.ADMIN)
    seen: list[str] = []

    def probe() -> None:  # runs inside the load, as its second loader: what does a poll see meanwhile?
        seen.append(client.get("/demo/status", headers=HX).get_data(as_text=True))
        seen.append(client.get("/").get_data(as_text=True))

    monkeypatch.setattr(demo, "LOADERS", [demo.LOADERS[0], ("probe", probe), *demo.LOADERS[1:]])
    client.post("/demo")
    _work(real_queue)
    steps = len(demo.LOADERS)
    fragment, page = seen
    assert 'data-status="running"' in fragment and 'hx-trigger="every 1s"' in fragment
    assert 'data-loader="probe"' in fragment and f'data-step="2" data-steps="{steps}"' in fragment
    assert f"2 of {steps}" in fragment
    # Without JavaScript the dashboard shows the same state, with a link to look again.
    assert 'data-loader="probe"' in page and 'id="demo-load-refresh"' in page
    assert _count(Subscriber.id) == SMALL  # the audience loader before it had committed already


def test_a_failing_loader_leaves_nothing_of_itself_and_shows_its_error(client, login_as, real_queue, monkeypatch):
    login_as(Role.ADMIN)

    def broken() -> None:
        db.session.add(Group(name="Half-written", description="must not survive"))
        db.session.flush()
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(demo, "LOADERS", [demo.LOADERS[0], ("broken", broken), *demo.LOADERS[1:]])
    client.post("/demo")
    _work(real_queue)
    fragment = client.get("/demo/status", headers=HX).get_data(as_text=True)
    assert 'data-status="failed"' in fragment and "hx-trigger" not in fragment
    assert "failed in <strong>broken</strong>" in fragment and "broken: RuntimeError: the disk is on fire" in fragment
    assert _count(Group.id, Group.name == "Half-written") == 0  # the failed loader's transaction is gone
    assert _count(Subscriber.id) == SMALL  # the audience before it is complete
    row = db.session.scalar(select(DemoLoad))
    assert row.status == "failed" and row.slot is None and row.finished_at is not None
    # The error is for admins; a viewer sees that it failed.
    client.post("/logout")
    login_as(Role.VIEWER)
    fragment = client.get("/demo/status", headers=HX).get_data(as_text=True)
    assert "The demo load failed" in fragment and "the disk is on fire" not in fragment


def test_the_shell_refuses_to_load_while_the_dashboard_load_is_queued(app, runner, client, login_as, real_queue):
    login_as(Role.ADMIN)
    client.post("/demo")
    result = runner.invoke(args=["demo", "load"])
    assert result.exit_code == 1 and "A demo load is already queued" in result.output
    assert _count(Subscriber.id) == 0 and _count(DemoLoad.id) == 1


def test_a_load_that_stopped_showing_life_is_released_by_the_next_start(app, client, login_as, real_queue):
    login_as(Role.ADMIN)
    client.post("/demo")
    real_queue.flush()  # the worker lost it
    db.session.rollback()
    stuck = db.session.scalar(select(DemoLoad))
    stuck.updated_at = utcnow() - demo.STALE_AFTER - timedelta(minutes=1)
    db.session.commit()
    page = client.post("/demo", follow_redirects=True).get_data(as_text=True)
    assert "Loading demo data in the background" in page
    _work(real_queue)
    statuses = db.session.scalars(select(DemoLoad.status).order_by(DemoLoad.id)).all()
    assert statuses == ["failed", "done"]
    assert "No progress for 30 minutes" in db.session.scalar(select(DemoLoad.error).order_by(DemoLoad.id))


def test_without_htmx_the_status_url_leads_to_the_dashboard(client, login_as):
    login_as(Role.VIEWER)
    response = client.get("/demo/status")
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_a_queue_that_cannot_take_the_task_fails_the_load_and_frees_the_slot(app, client, login_as, real_queue):
    login_as(Role.ADMIN)
    app.config.update(QUEUE_IMMEDIATE=False, REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens there
    init_queue(app)
    try:
        page = client.post("/demo", follow_redirects=True).get_data(as_text=True)
    finally:
        app.config.update(REDIS_URL=None)
        init_queue(app)
    assert "could not be queued" in page and 'data-status="failed"' in page and "Could not queue the load" in page
    assert _count(DemoLoad.id, DemoLoad.slot.is_not(None)) == 0


def test_a_post_without_the_csrf_token_starts_nothing(app, client, login_as, real_queue):
    login_as(Role.ADMIN)
    app.config["WTF_CSRF_ENABLED"] = True
    try:
        response = client.post("/demo", follow_redirects=True)
    finally:
        app.config["WTF_CSRF_ENABLED"] = False
    assert response.status_code in (200, 400)
    assert _count(DemoLoad.id) == 0 and real_queue.pending() == []
    assert _count(AuditEvent.id, AuditEvent.action == "demo.load") == 0
