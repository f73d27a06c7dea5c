"""The engine: claim → send → record, retries, invalid tokens, payload and channel errors, control."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from tests.factories import make_device, make_due_retry, make_subscriber
from tests.sending import scripted
from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign, Channel
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.sending.engine import claim, dispatch
from webadmin.services import ServiceError, campaigns
from webadmin.services.campaigns import CampaignDraft


def _campaign(push_app, **audience) -> Campaign:
    draft = CampaignDraft(app_id=push_app.id, text="Exclusive Offer: Nibs", title="Hi", open_direct="nibs://offers/1",
                          audience=audience or {"type": "all"})
    campaign = campaigns.create_campaign(draft, actor="test")
    db.session.commit()
    return campaign


def _states(campaign_id) -> dict[str, int]:
    rows = db.session.execute(
        select(Message.state, func.count()).where(Message.campaign_id == campaign_id).group_by(Message.state)
    )
    return dict(rows.all())


def _fresh(campaign) -> Campaign:
    db.session.expire_all()
    return db.session.get(Campaign, campaign.id)


def test_debug_backend_sends_everything_through_the_real_queue(push_app):
    subscribers = [make_subscriber() for _ in range(7)]
    for s in subscribers:
        make_device(push_app, s, "android")
        make_device(push_app, s, "ios")
    campaign = _campaign(push_app)
    assert campaigns.start(campaign, actor="test") == 14  # immediate-mode Huey runs the dispatch tasks
    campaign = _fresh(campaign)
    assert campaign.status == "sent" and campaign.finished_at is not None
    assert (campaign.targeted, campaign.sent, campaign.failed, campaign.retrying) == (14, 14, 0, 0)
    assert _states(campaign.id) == {"DEBUG": 14}
    message = db.session.scalar(select(Message).where(Message.campaign_id == campaign.id))
    assert message.backend == "debug" and message.number_of_send_attempts == 1 and message.lease_until is None


def test_results_are_classified(push_app, scripted_channel, manual_dispatch):
    scripted_channel("android")
    alice = make_subscriber()
    ok = make_device(push_app, alice, token="ok-1")
    dead = make_device(push_app, alice, token="dead-1")
    retry = make_device(push_app, alice, token="retry-1")
    payload = make_device(push_app, alice, token="payload-1")
    campaign = _campaign(push_app)
    campaigns.start(campaign, actor="test")
    report = dispatch(campaign.id)
    assert report.stopped_because == "retry scheduled"
    by_device = {m.device_id: m for m in db.session.scalars(select(Message).where(Message.campaign_id == campaign.id))}
    assert by_device[ok.id].state == "SENT" and by_device[ok.id].provider_message_id.startswith("scripted-")
    assert by_device[dead.id].state == "ERROR" and "UNREGISTERED" in by_device[dead.id].error
    assert by_device[retry.id].state == "ERROR_RETRY"
    # Retry-After (120 s) is a floor under the backoff (30 s ± jitter).
    assert by_device[retry.id].next_attempt_at >= utcnow() + timedelta(seconds=110)
    assert by_device[payload.id].state == "ERROR"
    db.session.expire_all()
    assert db.session.get(Device, dead.id).status == "invalid"
    assert db.session.get(Device, dead.id).invalid_reason == "UNREGISTERED"
    assert db.session.get(Device, payload.id).status == "active"  # a payload error never invalidates a token
    campaign = _fresh(campaign)
    assert (campaign.sent, campaign.failed, campaign.retrying, campaign.invalid_tokens) == (1, 2, 1, 1)
    assert campaign.status == "sending"


def test_retries_back_off_then_give_up(app, push_app, scripted_channel, manual_dispatch):
    app.config["ENGINE_MAX_ATTEMPTS"] = 3
    scripted_channel("android")
    make_device(push_app, make_subscriber(), token="retry-forever")
    campaign = _campaign(push_app)
    campaigns.start(campaign, actor="test")
    for attempt in range(1, 4):
        dispatch(campaign.id)
        message = db.session.scalar(select(Message).where(Message.campaign_id == campaign.id))
        assert message.number_of_send_attempts == attempt
        # Nothing is claimable before its time.
        assert claim(campaign.id, 10, 60)[1] == [] or attempt == 3
        db.session.execute(update(Message).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    db.session.expire_all()
    message = db.session.scalar(select(Message).where(Message.campaign_id == campaign.id))
    assert message.state == "ERROR" and "gave up after 3 attempts" in message.error
    campaign = _fresh(campaign)
    assert (campaign.failed, campaign.retrying, campaign.status) == (1, 0, "sent")


def test_many_payload_errors_pause_the_campaign(push_app, scripted_channel, manual_dispatch):
    scripted_channel("android")
    for i in range(12):
        make_device(push_app, make_subscriber(), token=f"payload-{i}")
    campaign = _campaign(push_app)
    campaigns.start(campaign, actor="test")
    report = dispatch(campaign.id)
    campaign = _fresh(campaign)
    assert campaign.status == "paused" and "payload errors" in campaign.status_reason
    assert report.stopped_because.startswith("paused")
    assert db.session.scalar(select(func.count()).where(Device.status == "invalid")) == 0


def test_refused_credentials_pause_and_show_on_channel(push_app, scripted_channel, manual_dispatch):
    channel = scripted_channel("android", fail="auth")
    make_device(push_app, make_subscriber(), token="ok-1")
    campaign = _campaign(push_app)
    campaigns.start(campaign, actor="test")
    dispatch(campaign.id)
    campaign = _fresh(campaign)
    assert campaign.status == "paused" and "credentials refused" in campaign.status_reason
    assert "invalid credentials" in db.session.get(Channel, channel.id).error
    assert _states(campaign.id) == {"WAITING": 1}  # released, sent after the channel is fixed and resumed


def test_provider_down_retries_the_whole_batch(push_app, scripted_channel, manual_dispatch):
    scripted_channel("android", fail="down")
    for _ in range(3):
        make_device(push_app, make_subscriber(), token=f"ok-{_}")
    campaign = _campaign(push_app)
    campaigns.start(campaign, actor="test")
    dispatch(campaign.id)
    assert _states(campaign.id) == {"ERROR_RETRY": 3}
    assert _fresh(campaign).retrying == 3


def test_device_unsubscribed_after_targeting_is_not_sent(push_app, scripted_channel, manual_dispatch):
    scripted_channel("android")
    device = make_device(push_app, make_subscriber(), token="ok-late")
    campaign = _campaign(push_app)
    campaigns.start(campaign, actor="test")
    db.session.execute(update(Device).where(Device.id == device.id).values(status="unsubscribed"))
    db.session.commit()
    dispatch(campaign.id)
    assert scripted.SENT == []
    assert _states(campaign.id) == {"ERROR": 1}


def test_lease_fences_a_late_worker(push_app, scripted_channel, manual_dispatch):
    """A worker whose lease expired (it was presumed dead) cannot overwrite or double-count."""
    from webadmin.providers.base import SendResult
    from webadmin.sending.engine import Recorder, _record, retry_policy

    for _ in range(4):
        make_device(push_app, make_subscriber(), token=f"ok-{_}")
    campaign = _campaign(push_app)
    campaigns.start(campaign, actor="test")
    old_lease, rows = claim(campaign.id, 10, lease_seconds=-1)  # already expired
    new_lease, again = claim(campaign.id, 10, lease_seconds=60)
    assert {r.id for r in again} == {r.id for r in rows}
    late = Recorder(campaign.id, retry_policy(), utcnow())
    route = type("R", (), {"type_name": "scripted"})()
    for row in rows:
        late.ok(row, SendResult(row.id, ok=True), route)
    _record(late, old_lease, rows)
    assert late.outcome.lost_lease == 4
    assert _fresh(campaign).sent == 0 and _states(campaign.id) == {"WAITING": 4}
    assert max(r.attempts for r in again) == 2  # counted: these were in flight when the first worker "died"


def test_pause_resume_and_cancel(push_app, manual_dispatch):
    for _ in range(120):
        make_device(push_app, make_subscriber())
    campaign = _campaign(push_app)
    campaigns.start(campaign, actor="test")
    dispatch(campaign.id, max_batches=1)  # 50 sent
    campaigns.pause(campaign, actor="test")
    assert dispatch(campaign.id).stopped_because == "campaign paused"
    assert _fresh(campaign).sent == 50
    campaigns.resume(campaign, actor="test")
    dispatch(campaign.id, max_batches=1)
    stopped = campaigns.cancel(campaign, actor="test")
    campaign = _fresh(campaign)
    assert stopped == 20 and (campaign.sent, campaign.cancelled, campaign.status) == (100, 20, "cancelled")
    assert dispatch(campaign.id).stopped_because == "campaign cancelled"
    with pytest.raises(ServiceError, match="Cannot resume a campaign that is cancelled"):
        campaigns.resume(campaign, actor="test")


def test_transitions_follow_the_allow_table(push_app):
    campaign = _campaign(push_app)
    assert campaigns.transition(campaign, campaigns.S.SENT) is False  # draft cannot jump to sent
    assert campaigns.transition(campaign, campaigns.S.SENDING) is True
    assert campaigns.transition(campaign, campaigns.S.DRAFT) is False
    assert campaigns.transition(campaign, campaigns.S.SENT) is True
    for target in campaigns.S:
        assert campaigns.transition(campaign, target) is False  # sent is terminal


def test_schedule_start_and_hold(app, push_app, manual_dispatch):
    make_device(push_app, make_subscriber())
    campaign = _campaign(push_app)
    with pytest.raises(ServiceError, match="future"):
        campaigns.schedule(campaign, utcnow() - timedelta(minutes=1), actor="test")
    campaigns.schedule(campaign, utcnow() + timedelta(hours=1), actor="test")
    assert campaigns.start_if_due(campaign.id) == "not yet"
    # The time comes while nothing runs: within the window it starts…
    db.session.execute(update(Campaign).values(scheduled_at=utcnow() - timedelta(minutes=5)))
    db.session.commit()
    assert campaigns.start_if_due(campaign.id) == "started"
    late = _campaign(push_app)
    campaigns.schedule(late, utcnow() + timedelta(hours=1), actor="test")
    # …but long after the window it is held for a person, not sent late in silence.
    three_hours_ago = utcnow() - timedelta(hours=3)
    db.session.execute(update(Campaign).where(Campaign.id == late.id).values(scheduled_at=three_hours_ago))
    db.session.commit()
    assert campaigns.start_if_due(late.id) == "held"
    late = _fresh(late)
    assert late.status == "scheduled" and "held for a person" in late.status_reason
    assert late.id not in campaigns.due_campaign_ids()
    assert campaigns.confirm_held(late, actor="test") == 1


def test_cancel_a_scheduled_campaign(push_app, manual_dispatch):
    make_device(push_app, make_subscriber())
    campaign = _campaign(push_app)
    campaigns.schedule(campaign, utcnow() + timedelta(hours=1), actor="test")
    campaigns.cancel(campaign, actor="test")
    db.session.execute(update(Campaign).values(scheduled_at=utcnow() - timedelta(minutes=1)))
    db.session.commit()
    assert campaigns.start_if_due(campaign.id) == "not scheduled"
    assert _states(campaign.id) == {}


def test_sweeper_requeues_stalled_work_and_finishes(push_app, manual_dispatch):
    from webadmin.sending.sweeper import sweep_once

    for _ in range(3):
        make_device(push_app, make_subscriber())
    campaign = _campaign(push_app)
    campaigns.start(campaign, actor="test")
    claim(campaign.id, 10, lease_seconds=-1)  # a worker claimed and died
    manual_dispatch.clear()
    assert sweep_once()["requeued"] == 1 and manual_dispatch == [campaign.id]
    dispatch(campaign.id)
    assert _fresh(campaign).status == "sent"


@pytest.mark.parametrize("fail", ["down", "auth"])
def test_a_failed_later_chunk_keeps_what_the_provider_already_accepted(push_app, scripted_channel, manual_dispatch,
                                                                       fail):
    """Chunks of 2: the first is accepted, the second fails as a whole. Only the second one's rows take the error;
    the accepted ones are SENT, once, and never handed to the provider again."""
    channel = scripted_channel("android", options={"batch_size": 2}, fail=fail, fail_from_call=2)
    for i in range(4):
        make_device(push_app, make_subscriber(), token=f"ok-{i}")
    campaign = _campaign(push_app)
    campaigns.start(campaign, actor="test")
    report = dispatch(campaign.id)
    first = {m.message_id for m in scripted.SENT}
    assert len(scripted.SENT) == 2  # the failing call raised before it was recorded as sent
    by_id = {m.id: m for m in db.session.scalars(select(Message).where(Message.campaign_id == campaign.id))}
    assert {i for i, m in by_id.items() if m.state == "SENT"} == first
    others = [m for i, m in by_id.items() if i not in first]
    campaign = _fresh(campaign)
    assert campaign.sent == 2 and report.sent == 2
    if fail == "down":
        assert {(m.state, m.number_of_send_attempts) for m in others} == {("ERROR_RETRY", 1)}
        assert campaign.retrying == 2 and campaign.status == "sending"
    else:
        # Released: not an attempt, sent once the channel is fixed and the campaign resumed.
        assert {(m.state, m.number_of_send_attempts, m.lease_until) for m in others} == {("WAITING", 0, None)}
        assert campaign.status == "paused" and campaign.retrying == 0
        assert "invalid credentials" in db.session.get(Channel, channel.id).error


def test_a_released_retry_still_counts_as_retrying(push_app, scripted_channel, manual_dispatch):
    """A due retry that the channel refuses (credentials) is released as it was: still ERROR_RETRY, still counted."""
    scripted_channel("android", fail="auth")
    make_device(push_app, make_subscriber(), token="ok-1")
    campaign = _campaign(push_app)
    campaigns.start(campaign, actor="test")
    make_due_retry(campaign.id)
    assert "credentials refused" in dispatch(campaign.id).stopped_because
    assert _states(campaign.id) == {"ERROR_RETRY": 1}
    assert _fresh(campaign).retrying == 1
