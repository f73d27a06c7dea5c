"""Engine fixes: an attempt ceiling for rows a lost worker left leased, the message UUID in the push data, and
the Debug backend's provider ids."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from tests.factories import make_device, make_subscriber
from tests.sending import scripted
from webadmin.extensions import db
from webadmin.models.analytics import CampaignRollup, HourlyRollup
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.sending.engine import claim, dispatch
from webadmin.sending.sweeper import stalled_campaign_ids, sweep_once
from webadmin.services import campaigns, rollups
from webadmin.services.campaigns import CampaignDraft


def _started(push_app, **fields) -> Campaign:
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Hi", **fields), actor="test")
    campaigns.start(campaign, actor="test")
    return campaign


def _messages(campaign_id: int) -> list[Message]:
    db.session.expire_all()
    return list(db.session.scalars(select(Message).where(Message.campaign_id == campaign_id).order_by(Message.id)))


def _rollup_rows() -> dict[str, list[tuple]]:
    db.session.expire_all()
    return {t.name: [tuple(r) for r in db.session.execute(select(t).order_by(*t.primary_key.columns))]
            for t in (CampaignRollup.__table__, HourlyRollup.__table__)}


def test_rows_a_lost_worker_left_at_the_ceiling_are_given_up_and_counted(app, push_app, manual_dispatch):
    app.config["ENGINE_MAX_ATTEMPTS"] = 2
    for platform in ("android", "ios", "web"):
        make_device(push_app, make_subscriber(), platform)
    campaign = _started(push_app)
    for _ in range(2):  # two workers claim the batch and are lost before recording it (their leases expire)
        _, rows = claim(campaign.id, 10, lease_seconds=-1)
        assert len(rows) == 3
    assert claim(campaign.id, 10, lease_seconds=60)[1] == []  # never a third attempt
    assert stalled_campaign_ids() == []  # so the sweeper does not re-enqueue it forever

    assert dispatch(campaign.id).stopped_because == "finished"
    messages = _messages(campaign.id)
    assert {(m.state, m.error, m.failure_class, m.lease_until) for m in messages} == {
        ("ERROR", "gave up after 2 attempts, worker lost", "other", None)}
    campaign = db.session.get(Campaign, campaign.id)
    assert (campaign.status, campaign.sent, campaign.failed, campaign.retrying) == ("sent", 0, 3, 0)
    funnel = db.session.get(CampaignRollup, campaign.id)
    assert (funnel.failed_other, funnel.failed) == (3, 3)
    live = _rollup_rows()
    assert sorted(row[1] for row in live["hourly_rollups"]) == ["android", "ios", "web"]
    rollups.rebuild()
    assert _rollup_rows() == live


def test_the_sweeper_ends_a_retry_lost_at_the_ceiling(app, push_app, scripted_channel, manual_dispatch):
    app.config["ENGINE_MAX_ATTEMPTS"] = 2
    scripted_channel("android")
    make_device(push_app, make_subscriber(), token="retry-1")
    make_device(push_app, make_subscriber(), token="ok-1")
    campaign = _started(push_app)
    dispatch(campaign.id)  # ok-1 sent, retry-1 waits (attempt 1)
    assert db.session.get(Campaign, campaign.id).retrying == 1
    db.session.execute(update(Message).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    _, rows = claim(campaign.id, 10, lease_seconds=-1)  # attempt 2, and the worker is lost
    assert [r.attempts for r in rows] == [2]
    assert sweep_once() == {"started": 0, "requeued": 0, "finished": 1, "cancelled": 0}
    retry = next(m for m in _messages(campaign.id) if m.state != "SENT")
    assert (retry.state, retry.error, retry.retry_sending) == ("ERROR", "gave up after 2 attempts, worker lost", False)
    db.session.expire_all()
    campaign = db.session.get(Campaign, campaign.id)
    assert (campaign.status, campaign.sent, campaign.failed, campaign.retrying) == ("sent", 1, 1, 0)


def test_a_batch_the_channel_refused_is_no_attempt(app, push_app, scripted_channel, manual_dispatch):
    app.config["ENGINE_MAX_ATTEMPTS"] = 1
    channel = scripted_channel("android", fail="auth")
    make_device(push_app, make_subscriber(), token="ok-1")
    campaign = _started(push_app)
    assert "credentials refused" in dispatch(campaign.id).stopped_because
    assert [(m.state, m.number_of_send_attempts) for m in _messages(campaign.id)] == [("WAITING", 0)]
    db.session.delete(channel)  # fixed: the Debug backend takes over
    db.session.commit()
    campaigns.resume(db.session.get(Campaign, campaign.id), actor="test")
    assert dispatch(campaign.id).stopped_because == "finished"
    assert [(m.state, m.number_of_send_attempts) for m in _messages(campaign.id)] == [("DEBUG", 1)]


def test_the_push_data_carries_the_message_uuid(push_app, scripted_channel, manual_dispatch):
    scripted_channel("android")
    for i in range(3):
        make_device(push_app, make_subscriber(), token=f"ok-{i}")
    campaign = _started(push_app, data={"screen": "offers", "messageId": "spoofed"})
    dispatch(campaign.id)
    uuids = {m.uuid for m in _messages(campaign.id)}
    assert {m.data["messageId"] for m in scripted.SENT} == uuids
    assert all(m.data["screen"] == "offers" for m in scripted.SENT)


def test_debug_provider_ids_name_the_message(push_app, manual_dispatch):
    for platform in ("android", "ios"):
        make_device(push_app, make_subscriber(), platform)
    campaign = _started(push_app)
    dispatch(campaign.id)
    messages = _messages(campaign.id)
    assert [m.provider_message_id for m in messages] == [f"debug-{m.uuid}" for m in messages]
    assert db.session.scalar(select(func.count()).select_from(Message).where(Message.state == "DEBUG")) == 2
