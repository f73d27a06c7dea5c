"""`flask --app webadmin push send-batch`: send waiting and due retries without a queue consumer."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from tests.factories import make_device, make_due_retry
from webadmin.extensions import db
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.services import campaigns
from webadmin.services.campaigns import CampaignDraft


@pytest.fixture
def terminal(monkeypatch) -> None:
    """Make click believe it writes to a terminal, so the progress bar itself is drawn (not only its label)."""
    monkeypatch.setattr("click._termui_impl.isatty", lambda _stream: True)


def _started_campaign(push_app, devices: int) -> Campaign:
    """A sending campaign whose messages wait for a worker that never comes."""
    for _ in range(devices):
        make_device(push_app)
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Batch"), actor="test")
    db.session.commit()
    campaigns.start(campaign, actor="test")
    return campaign


def test_send_batch_sends_waiting_and_due_messages_with_a_progress_bar(
        push_app, runner, manual_dispatch, terminal) -> None:
    campaign = _started_campaign(push_app, 120)
    # One message failed once and its retry is due: send-batch takes it too, and the counter follows.
    first = db.session.scalar(select(func.min(Message.id)).where(Message.campaign_id == campaign.id))
    make_due_retry(campaign.id, first)

    result = runner.invoke(args=["push", "send-batch"])

    assert result.exit_code == 0, result.output
    assert "Sending 120 messages" in result.output
    assert "[" + "#" * 36 + "]" in result.output and "120/120" in result.output  # 36: click's bar width
    assert "50/120" in result.output  # drawn after each batch of 50 (ENGINE_BATCH_SIZE in these tests)
    assert result.output.rstrip().endswith("Done: 120 sent, 0 failed, 1 campaign(s).")
    db.session.expire_all()
    states = Counter(db.session.scalars(select(Message.state).where(Message.campaign_id == campaign.id)))
    assert states == {"DEBUG": 120}
    campaign = db.session.get(Campaign, campaign.id)
    assert campaign.status == "sent"
    assert (campaign.targeted, campaign.sent, campaign.failed, campaign.retrying) == (120, 120, 0, 0)


def test_send_batch_leaves_retries_that_are_not_due_and_paused_campaigns_alone(
        push_app, runner, manual_dispatch) -> None:
    campaign = _started_campaign(push_app, 3)
    later = db.session.scalar(select(func.min(Message.id)).where(Message.campaign_id == campaign.id))
    db.session.execute(update(Message).where(Message.id == later).values(
        state="ERROR_RETRY", number_of_send_attempts=1, next_attempt_at=utcnow() + timedelta(hours=1)))
    db.session.commit()
    paused = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Paused"), actor="test")
    db.session.commit()
    campaigns.start(paused, actor="test")
    campaigns.pause(paused, actor="test")

    result = runner.invoke(args=["push", "send-batch"])

    assert result.exit_code == 0, result.output
    assert "Done: 2 sent, 0 failed, 1 campaign(s)." in result.output
    db.session.expire_all()
    assert db.session.get(Message, later).state == "ERROR_RETRY"
    assert db.session.get(Campaign, campaign.id).status == "sending"  # the retry is still to come
    waiting = db.session.scalars(select(Message.state).where(Message.campaign_id == paused.id)).all()
    assert waiting == ["WAITING"] * 3


def test_send_batch_with_nothing_waiting(runner) -> None:
    result = runner.invoke(args=["push", "send-batch"])
    assert result.exit_code == 0, result.output
    assert "Done: 0 sent, 0 failed, 0 campaign(s)." in result.output
