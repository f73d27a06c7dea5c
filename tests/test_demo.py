"""Demo data: a believable audience in seconds, loaded once, from the CLI too; the dashboard then counts it."""

from __future__ import annotations

import re

from sqlalchemy import func, select

import webadmin.services.demo_loaders  # noqa: F401  (registers the loaders, as create_app does)
from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.audience import Device, Group, GroupMember, Subscriber
from webadmin.models.audit import AuditEvent
from webadmin.models.demo import DemoLoad
from webadmin.models.user import Role
from webadmin.services import demo
from webadmin.services.demo_audience import DEMO_SUBSCRIBERS, GROUPS, generate_audience

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def _count(column, *where) -> int:
    return db.session.scalar(select(func.count(column)).where(*where))


def _row_counts() -> dict[str, int]:
    """Rows per table, except the audit log and the loads (every load is audited and recorded)."""
    return {
        table.name: db.session.scalar(select(func.count()).select_from(table))
        for table in db.metadata.sorted_tables
        if table.name not in ("audit_events", "demo_loads")
    }


def test_demo_load_creates_a_believable_audience_once(app):
    report = demo.load(actor="test")
    assert f"{DEMO_SUBSCRIBERS:,} subscribers" in report
    nibs = db.session.scalar(select(App).where(App.name == "Nibs"))
    assert nibs.deep_link_scheme == "nibs" and nibs.platforms == ["android", "ios", "web"]
    subscribers = _count(Subscriber.id)
    assert subscribers >= 20_000
    assert _count(func.distinct(Device.subscriber_id)) == subscribers  # everyone has a device
    devices = _count(Device.id)
    assert subscribers < devices <= 3 * subscribers
    by_platform = dict(db.session.execute(select(Device.platform, func.count()).group_by(Device.platform)).all())
    assert set(by_platform) == {"android", "ios", "web"}
    invalid = _count(Device.id, Device.status == "invalid")
    assert 0.01 * devices < invalid < 0.1 * devices
    assert _count(Device.id, Device.status == "invalid", Device.invalid_reason.is_(None)) == 0
    assert _count(Device.id, Device.status == "unsubscribed") > 0
    assert _count(Device.id, Device.token.not_like("sim-%")) == 0
    phones = db.session.scalars(select(Subscriber.phone).where(Subscriber.phone.is_not(None))).all()
    assert 0.6 < len(phones) / subscribers < 0.8 and all(E164.match(p) for p in phones)
    sample = db.session.scalars(select(Subscriber).limit(50)).all()
    assert all(re.fullmatch(r"[a-z]+\.[a-z]+\d+@example\.com", s.subscriber_key) for s in sample)
    assert all(s.display_name and s.locale and s.time_zone for s in sample)
    groups = db.session.scalars(select(Group.name)).all()
    assert set(groups) == set(GROUPS)
    assert _count(func.distinct(GroupMember.group_id)) == len(GROUPS)

    before = _row_counts()
    assert demo.load(actor="test") == "nothing new"
    assert _row_counts() == before


def test_generate_audience_is_sized_and_deterministic(app):
    added = generate_audience(300, devices_per_subscriber_max=1, seed=7)
    assert added["subscribers"] == 300 and added["devices"] == 300 and added["groups"] == len(GROUPS)
    first = db.session.scalars(select(Subscriber.subscriber_key).order_by(Subscriber.id)).all()
    again = generate_audience(400, devices_per_subscriber_max=1, seed=7)  # the first 300 exist already
    assert again == {"subscribers": 100, "devices": 100, "memberships": again["memberships"], "groups": 0}
    assert db.session.scalars(select(Subscriber.subscriber_key).order_by(Subscriber.id).limit(300)).all() == first


def test_cli_demo_load_then_the_dashboard_counts(runner, client, login_as):
    login_as(Role.VIEWER)
    assert 'id="dashboard-empty"' in client.get("/").get_data(as_text=True)
    result = runner.invoke(args=["demo", "load"])
    assert result.exit_code == 0, result.output
    assert f"{DEMO_SUBSCRIBERS:,} subscribers" in result.output
    # A progress line per loader, in order, each with its phrase and time.
    lines = [line for line in result.output.splitlines() if line.startswith("[")]
    steps = len(demo.LOADERS)
    assert [line.split("]")[0] + "]" for line in lines] == [f"[{n}/{steps}" + "]" for n in range(1, steps + 1)]
    assert lines[0].startswith(f"[1/{steps}] audience … {DEMO_SUBSCRIBERS:,} subscribers") and lines[0].endswith(" s)")
    page = client.get("/").get_data(as_text=True)
    assert 'id="dashboard-empty"' not in page and 'id="dashboard-summary"' in page
    for label in ("Subscribers", "Devices", "Groups"):
        assert label in page
    assert f"{DEMO_SUBSCRIBERS:,}" in page
    again = runner.invoke(args=["demo", "load"])
    assert "Demo data loaded: nothing new" in again.output and f"[1/{steps}] audience … nothing new" in again.output


def test_demo_button_is_for_admins_only(client, login_as):
    login_as(Role.MARKETER)
    assert "Ask an admin to load demo data" in client.get("/").get_data(as_text=True)
    assert client.post("/demo").status_code == 403
    assert _count(Subscriber.id) == 0
    assert _count(AuditEvent.id, AuditEvent.action == "demo.load") == 0
    assert _count(DemoLoad.id) == 0
