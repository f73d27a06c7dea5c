"""Analytics rollups: kept current by the engine and the events API, equal to a rebuild from the raw rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from tests.known_campaign import run_known_campaign
from webadmin.extensions import db
from webadmin.models.analytics import CampaignHourlyRollup, CampaignRollup, HourlyRollup
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.services.events import DeviceEvent, record_events
from webadmin.services.rollups import code_of, failure_class, hour_of, rebuild

TABLES = (CampaignRollup, CampaignHourlyRollup, HourlyRollup)


def _snapshot() -> dict[str, list[tuple]]:
    """Every rollup row, in key order."""
    db.session.expire_all()
    snapshot = {}
    for model in TABLES:
        table = model.__table__
        keys = [c for c in table.c if c.primary_key]
        snapshot[table.name] = [tuple(row) for row in db.session.execute(select(table).order_by(*keys))]
    return snapshot


@pytest.mark.parametrize(("code", "flags", "expected"), [
    ("UNREGISTERED", {}, "invalid_token"),
    ("BadDeviceToken", {}, "invalid_token"),
    ("INVALID_ARGUMENT", {"token_invalid": True}, "invalid_token"),  # FCM: the argument was the token
    ("INVALID_ARGUMENT", {}, "payload"),
    ("PayloadTooLarge", {"payload_error": True}, "payload"),
    ("SOMETHING_NEW", {"payload_error": True}, "payload"),
    ("QUOTA_EXCEEDED", {}, "quota"),
    ("TooManyRequests", {}, "quota"),
    ("THIRD_PARTY_AUTH_ERROR", {}, "auth"),
    ("ExpiredProviderToken", {}, "auth"),
    ("UNAVAILABLE", {}, "other"),
    (None, {}, "other"),
])
def test_failure_class_from_the_error_code(code, flags, expected):
    assert failure_class(code, **flags) == expected


def test_code_of_a_stored_error():
    assert code_of("QUOTA_EXCEEDED: 429 (gave up after 5 attempts)") == "QUOTA_EXCEEDED"
    assert code_of("device no longer active (invalidated or unsubscribed before sending)") is None
    assert code_of("gave up after 5 attempts: worker lost") is None
    assert code_of(None) is None


def test_live_rollups_count_the_known_campaign_and_equal_a_rebuild(app, monkeypatch):
    known = run_known_campaign(app, monkeypatch)
    campaign, expected = known.campaign, known.expected
    funnel = db.session.get(CampaignRollup, campaign.id)
    assert (funnel.sent, funnel.opened, funnel.received) == (expected["sent"], expected["opened"], 2)
    assert {name: getattr(funnel, f"failed_{name}") for name in ("invalid_token", "quota", "auth", "payload", "other")
            } == {name: expected[name] for name in ("invalid_token", "quota", "auth", "payload", "other")}
    # The campaign's own counters agree with the funnel.
    assert (campaign.targeted, campaign.sent, campaign.failed, campaign.opened, campaign.retrying) == (
        expected["targeted"], expected["sent"], expected["failed"], expected["opened"], 0)
    traffic = db.session.execute(
        select(HourlyRollup.platform, func.sum(HourlyRollup.sent), func.sum(HourlyRollup.failed),
               func.sum(HourlyRollup.opened)).group_by(HourlyRollup.platform)
    ).all()
    assert {p: (s, f, o) for p, s, f, o in traffic} == known.by_platform
    assert set(db.session.scalars(select(HourlyRollup.source))) == {"adhoc"}
    curve = db.session.execute(select(func.sum(CampaignHourlyRollup.sent), func.sum(CampaignHourlyRollup.failed),
                                      func.sum(CampaignHourlyRollup.opened))).one()
    assert tuple(curve) == (expected["sent"], expected["failed"], expected["opened"])

    live = _snapshot()
    written = rebuild()
    assert _snapshot() == live
    assert written["campaign_rollups"] == 1 and written["classified"] == 0


def test_rebuild_from_scratch_and_for_rows_failed_before_failure_classes(app, monkeypatch, runner):
    known = run_known_campaign(app, monkeypatch)
    live = _snapshot()
    for model in TABLES:
        db.session.execute(model.__table__.delete())
    # Rows written before failure classes existed: the class comes from the stored error code.
    db.session.execute(text("UPDATE messages SET failure_class = NULL"))
    db.session.commit()
    result = runner.invoke(args=["analytics", "rebuild"])
    assert result.exit_code == 0, result.output
    assert "campaign_rollups 1" in result.output and "classified 5" in result.output
    assert _snapshot() == live
    assert known.campaign.id in {row[0] for row in live["campaign_rollups"]}


def test_an_open_counts_in_the_hour_the_device_reports_within_send_and_now(app, monkeypatch):
    known = run_known_campaign(app, monkeypatch)
    message = db.session.scalar(select(Message).where(Message.campaign_id == known.campaign.id,
                                                      Message.state == "SENT", Message.opened_at.is_(None)))
    before = message.sent_at - timedelta(days=3)  # a wrong device clock: not before the send
    record_events([DeviceEvent(message.uuid, "opened", before), DeviceEvent(message.uuid, "received",
                                                                          utcnow() + timedelta(days=2))], app_id=None)
    db.session.expire_all()
    message = db.session.get(Message, message.id)
    assert message.opened_at == message.sent_at and message.received_at <= utcnow()
    row = db.session.get(CampaignHourlyRollup, (known.campaign.id, hour_of(message.sent_at)))
    assert row.opened >= 1
    live = _snapshot()
    rebuild()
    assert _snapshot() == live


def test_an_event_about_another_apps_message_is_unknown_and_counts_nowhere(app, monkeypatch):
    known = run_known_campaign(app, monkeypatch)
    message = db.session.scalar(select(Message).where(Message.campaign_id == known.campaign.id,
                                                      Message.opened_at.is_(None), Message.state == "SENT"))
    live = _snapshot()
    report = record_events([DeviceEvent(message.uuid, "opened")], app_id=known.campaign.app_id + 1)
    assert (report.counted, report.unknown) == (0, [message.uuid])
    assert _snapshot() == live
    report = record_events([DeviceEvent(message.uuid, "opened")], app_id=known.campaign.app_id)
    assert report.counted == 1 and _snapshot() != live
