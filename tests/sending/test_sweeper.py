"""The sweeper: one bad scheduled campaign cannot stop recovery, cancelled campaigns leave nothing pending, and
healthy campaigns are not re-queued."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.factories import make_device, make_due_retry, make_subscriber
from webadmin.extensions import db
from webadmin.models.audit import AuditEvent
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.sending.channels import routes_for_app
from webadmin.sending.engine import claim, send_batch
from webadmin.sending.runtime import worker_runtime
from webadmin.sending.sweeper import stalled_campaign_ids, sweep_once
from webadmin.services import campaigns
from webadmin.services.campaigns import CampaignDraft


def _draft(push_app, text: str = "Hi") -> Campaign:
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text=text), actor="test")
    db.session.commit()
    return campaign


def _due(campaign: Campaign) -> None:
    """Scheduled, and its time came a minute ago (inside the missed-start window)."""
    campaigns.schedule(campaign, utcnow() + timedelta(hours=1), actor="test")
    db.session.execute(update(Campaign).where(Campaign.id == campaign.id)
                       .values(scheduled_at=utcnow() - timedelta(minutes=1)))
    db.session.commit()


def _fresh(campaign_id: int) -> Campaign:
    db.session.expire_all()
    return db.session.get(Campaign, campaign_id)


def test_a_scheduled_campaign_that_cannot_start_fails_and_the_sweep_goes_on(push_app, manual_dispatch, caplog):
    for _ in range(3):
        make_device(push_app, make_subscriber())
    bad, good = _draft(push_app, "Broken"), _draft(push_app, "Fine")
    _due(bad)
    _due(good)
    # Stored before a rule changed, say: start() now refuses it.
    db.session.execute(update(Campaign).where(Campaign.id == bad.id).values(audience={"type": "nobody"}))
    db.session.commit()
    stalled = _draft(push_app, "Stalled")
    campaigns.start(stalled, actor="test")
    claim(stalled.id, 10, lease_seconds=-1)  # its worker died
    manual_dispatch.clear()
    with caplog.at_level(logging.ERROR, logger="webadmin.sending.sweeper"):
        outcome = sweep_once()
    assert outcome["started"] == 1 and stalled.id in manual_dispatch  # the sweep went on past the bad campaign
    assert set(manual_dispatch) == {good.id, stalled.id}
    failed = _fresh(bad.id)
    assert failed.status == "failed" and failed.finished_at is not None
    assert failed.status_reason == "Could not start at its scheduled time: Unknown audience type 'nobody'."
    assert _fresh(good.id).status == "sending"
    audit = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "campaign.fail"))
    assert audit.object_id == str(bad.id) and audit.actor == "scheduler"
    assert f"campaign {bad.id}: the scheduled start failed" in caplog.text
    assert sweep_once()["started"] == 0  # failed is terminal: not retried every minute
    assert campaigns.transition(failed, campaigns.S.SENDING) is False


def test_a_failed_start_never_fails_a_campaign_that_did_start(push_app, manual_dispatch, monkeypatch):
    """If start() committed (sending) and only handing it to the queue raised, the sweeper recovers it later."""
    from webadmin.sending.sweeper import start_due

    make_device(push_app, make_subscriber())
    campaign = _draft(push_app)
    _due(campaign)

    def queue_down(campaign_id: int, pending: int) -> int:
        raise ConnectionError("redis unreachable")

    monkeypatch.setattr("webadmin.tasks.enqueue_dispatch", queue_down)
    assert start_due(campaign.id) == "not started"
    assert _fresh(campaign.id).status == "sending"


# ---- cancel: nothing stays pending, counters follow the rows actually stopped


def _messages(campaign_id: int) -> list[Message]:
    db.session.expire_all()
    return list(db.session.scalars(select(Message).where(Message.campaign_id == campaign_id).order_by(Message.id)))


def _send_claimed(campaign: Campaign, lease, rows) -> None:
    """What a worker does with a batch it claimed before the cancel: send it and record the answers."""
    with worker_runtime(keep=False) as runtime:
        send_batch(db.session.get(Campaign, campaign.id), lease, rows, runtime, routes_for_app(campaign.app_id))


@pytest.mark.parametrize("token", ["retry-1", "ok-1"])
def test_a_retry_in_flight_at_the_cancel_ends_cancelled_or_sent(push_app, scripted_channel, manual_dispatch, token):
    scripted_channel("android")
    make_device(push_app, make_subscriber(), token=token)
    campaign = _draft(push_app)
    campaigns.start(campaign, actor="test")
    # It failed once and its retry is due: the campaign counts it as retrying.
    make_due_retry(campaign.id)
    lease, rows = claim(campaign.id, 10, lease_seconds=60)  # a worker has it on the wire…
    assert campaigns.cancel(_fresh(campaign.id), actor="test") == 0  # …so cancel leaves it to that worker
    assert _fresh(campaign.id).retrying == 1
    _send_claimed(campaign, lease, rows)
    [message] = _messages(campaign.id)
    campaign = _fresh(campaign.id)
    if token == "retry-1":  # it would be retried: the campaign is cancelled, so it ends here
        assert (message.state, message.error, message.retry_sending) == ("ERROR", "campaign cancelled", False)
        assert (campaign.sent, campaign.failed, campaign.retrying, campaign.cancelled) == (0, 0, 0, 1)
    else:  # the provider accepted it: it was sent, cancelled or not
        assert message.state == "SENT"
        assert (campaign.sent, campaign.failed, campaign.retrying, campaign.cancelled) == (1, 0, 0, 0)
    assert message.lease_until is None and campaign.status == "cancelled"
    assert sweep_once()["cancelled"] == 0


def test_rows_of_a_worker_that_died_after_the_cancel_are_ended_by_the_sweeper(push_app, manual_dispatch):
    for _ in range(3):
        make_device(push_app, make_subscriber())
    waiting = _draft(push_app)
    campaigns.start(waiting, actor="test")
    campaign = _draft(push_app)
    campaigns.start(campaign, actor="test")
    claim(campaign.id, 2, lease_seconds=60)
    assert campaigns.cancel(_fresh(campaign.id), actor="test") == 1  # the one no worker held
    assert sweep_once()["cancelled"] == 0  # the other two are still leased to a live worker
    db.session.execute(update(Message).where(Message.campaign_id == campaign.id, Message.lease_until.is_not(None))
                       .values(lease_until=utcnow() - timedelta(seconds=1)))  # …which died
    db.session.commit()
    assert sweep_once()["cancelled"] == 2
    assert {(m.state, m.error, m.lease_until) for m in _messages(campaign.id)} == {
        ("ERROR", "campaign cancelled", None)}
    campaign = _fresh(campaign.id)
    assert (campaign.status, campaign.cancelled, campaign.retrying, campaign.failed) == ("cancelled", 3, 0, 0)
    assert {m.state for m in _messages(waiting.id)} == {"WAITING"}  # another campaign's rows are not touched


# ---- re-queueing: only campaigns no worker is on


def _sending(push_app, devices: int = 5) -> Campaign:
    for _ in range(devices):
        make_device(push_app, make_subscriber())
    campaign = _draft(push_app)
    campaigns.start(campaign, actor="test")
    return campaign


def test_a_campaign_being_sent_is_not_requeued_until_its_worker_dies(push_app, manual_dispatch):
    campaign = _sending(push_app)
    claim(campaign.id, 2, lease_seconds=60)  # a worker is on it; three rows wait for its next claims
    manual_dispatch.clear()
    assert stalled_campaign_ids() == []
    assert sweep_once()["requeued"] == 0 and manual_dispatch == []
    db.session.execute(update(Message).where(Message.lease_until.is_not(None))
                       .values(lease_until=utcnow() - timedelta(seconds=1)))  # it died: its lease expired
    db.session.commit()
    assert stalled_campaign_ids() == [campaign.id]
    assert sweep_once()["requeued"] == 1 and manual_dispatch == [campaign.id]


def test_a_campaign_whose_tasks_were_lost_is_requeued_unless_one_is_waiting(push_app, real_queue):
    from webadmin.tasks import dispatch_campaign

    campaign = _sending(push_app)  # start() queued its dispatch tasks, nobody consumed them yet
    assert real_queue.pending_count() >= 1 and stalled_campaign_ids() == []
    real_queue.flush()  # the queue lost them (a consumer died holding them, Redis was flushed…)
    assert stalled_campaign_ids() == [campaign.id]
    assert sweep_once()["requeued"] == 1
    assert {task.args for task in real_queue.pending()} == {(campaign.id,)}
    assert sweep_once()["requeued"] == 0  # the task it queued is still waiting: no pile-up every minute
    assert [t.name for t in real_queue.pending()] == [dispatch_campaign.task_class.__name__]
