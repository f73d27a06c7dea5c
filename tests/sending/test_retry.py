"""The engine applying the retry policy: the age ceiling, and dead tokens (the policy itself: test_retry_policy.py)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from tests.factories import make_device, make_subscriber
from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.sending.engine import dispatch
from webadmin.services import campaigns
from webadmin.services.campaigns import CampaignDraft


def test_an_old_message_is_not_retried_and_a_dead_token_is_invalidated_with_its_time(
        push_app, scripted_channel, manual_dispatch):
    scripted_channel("android")
    late = make_device(push_app, make_subscriber(), token="retry-late")
    dead = make_device(push_app, make_subscriber(), token="dead-1")
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Hi"), actor="test")
    db.session.commit()
    campaigns.start(campaign, actor="test")
    # The campaign's messages were made a day and a bit ago (its workers were down since).
    db.session.execute(update(Message).values(created_at=utcnow() - timedelta(hours=25)))
    db.session.commit()
    before = utcnow()
    report = dispatch(campaign.id)
    assert report.stopped_because == "finished" and report.retried == 0
    db.session.expire_all()
    by_device = {m.device_id: m for m in db.session.scalars(select(Message))}
    message = by_device[late.id]
    assert (message.state, message.failure_class, message.next_attempt_at) == ("ERROR", "other", None)
    assert message.error == "UNAVAILABLE: 503 (gave up: older than 1 day, 0:00:00)"
    device = db.session.get(Device, dead.id)
    assert device.status == "invalid" and device.invalid_reason == "UNREGISTERED"
    assert before <= device.invalidated_at <= utcnow()
    assert db.session.get(Device, late.id).status == "active"  # a retryable failure never touches the token
    campaign = db.session.get(Campaign, campaign.id)
    assert (campaign.failed, campaign.retrying, campaign.invalid_tokens, campaign.status) == (2, 0, 1, "sent")
