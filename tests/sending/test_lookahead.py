"""The engine's one batch of look-ahead: batch k+1 is claimed while k is on the wire, but sent only once k's answers
are in and the campaign is still sending; every exit waits for the batch on the wire and records it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, insert, select, update

from tests.sending import scripted
from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.sending import engine
from webadmin.sending.engine import dispatch
from webadmin.services import campaigns
from webadmin.services.campaigns import CampaignDraft

BATCH = 50  # ENGINE_BATCH_SIZE in these tests (conftest)


def _started(push_app, tokens: list[str]) -> Campaign:
    db.session.execute(insert(Device), [{"app_id": push_app.id, "platform": "android", "token": t} for t in tokens])
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Hi"), actor="test")
    db.session.commit()
    campaigns.start(campaign, actor="test")
    return campaign


def _rows(campaign_id: int) -> list[Message]:
    db.session.expire_all()
    return list(db.session.scalars(select(Message).where(Message.campaign_id == campaign_id).order_by(Message.id)))


def _fresh(campaign_id: int) -> Campaign:
    db.session.expire_all()
    return db.session.get(Campaign, campaign_id)


def _first_batch_sent_only(campaign_id: int) -> tuple[list[Message], list[Message]]:
    rows = _rows(campaign_id)
    first, second = rows[:BATCH], rows[BATCH:]
    assert sorted(m.message_id for m in scripted.SENT) == [m.id for m in first]  # batch 2 never went out
    return first, second


def test_a_pause_for_the_first_batch_stops_the_second_one_claimed_ahead(push_app, scripted_channel, manual_dispatch):
    scripted_channel("android")
    campaign = _started(push_app, [f"payload-{i}" for i in range(BATCH)] + [f"ok-{i}" for i in range(10)])
    report = dispatch(campaign.id)
    assert report.stopped_because.startswith("paused: 50 of 50 messages") and report.batches == 1
    first, second = _first_batch_sent_only(campaign.id)
    assert {m.state for m in first} == {"ERROR"}
    # Released as they were: no attempt counted, no lease left.
    assert {(m.state, m.number_of_send_attempts, m.lease_until) for m in second} == {("WAITING", 0, None)}
    assert _fresh(campaign.id).status == "paused"


def _when_both_batches_are_claimed(app: Flask, campaign_id: int, action) -> threading.Thread:
    """Run `action(campaign)` from another thread once the batch ahead is claimed too (60 rows leased)."""

    def body() -> None:
        with app.app_context():
            try:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    db.session.commit()
                    leased = db.session.scalar(select(func.count()).where(Message.lease_until.is_not(None)))
                    if leased == BATCH + 10:
                        action(db.session.get(Campaign, campaign_id))
                        return
                    time.sleep(0.01)
            finally:
                db.session.remove()

    thread = threading.Thread(target=body)
    thread.start()
    return thread


@pytest.mark.parametrize("control", ["pause", "cancel"])
def test_pause_or_cancel_between_the_claim_and_the_start_of_the_next_batch(
        app, push_app, scripted_channel, manual_dispatch, control):
    scripted_channel("android", delay=0.6)  # batch 1 is on the wire long enough for the click
    campaign = _started(push_app, [f"ok-{i}" for i in range(BATCH + 10)])
    thread = _when_both_batches_are_claimed(app, campaign.id, lambda c: getattr(campaigns, control)(c, actor="test"))
    report = dispatch(campaign.id)
    thread.join()
    first, second = _first_batch_sent_only(campaign.id)
    assert report.batches == 1 and report.stopped_because == ("campaign paused" if control == "pause"
                                                              else "campaign cancelled")
    assert {m.state for m in first} == {"SENT"}  # on the wire when the person clicked: sent and recorded
    campaign = _fresh(campaign.id)
    if control == "pause":
        assert {(m.state, m.number_of_send_attempts, m.lease_until) for m in second} == {("WAITING", 0, None)}
        assert (campaign.sent, campaign.cancelled) == (BATCH, 0)
    else:
        assert {(m.state, m.error, m.lease_until) for m in second} == {("ERROR", "campaign cancelled", None)}
        assert (campaign.sent, campaign.cancelled, campaign.retrying) == (BATCH, 10, 0)


def test_an_error_while_recording_still_records_the_batch_on_the_wire(push_app, scripted_channel, manual_dispatch,
                                                                      monkeypatch):
    scripted_channel("android")
    campaign = _started(push_app, [f"ok-{i}" for i in range(BATCH + 10)])
    calls = Counter()
    rollups = engine.Recorder._rollups

    def failing_once(self, owned):
        calls["rollups"] += 1
        if calls["rollups"] == 1:
            raise RuntimeError("database went away")
        return rollups(self, owned)

    monkeypatch.setattr(engine.Recorder, "_rollups", failing_once)
    with pytest.raises(RuntimeError, match="database went away"):
        dispatch(campaign.id)
    rows = _rows(campaign.id)
    first, second = rows[:BATCH], rows[BATCH:]
    assert len(scripted.SENT) == BATCH + 10  # batch 2 was on the wire when recording batch 1 failed…
    assert {m.state for m in second} == {"SENT"}  # …and was recorded before dispatch gave up
    assert {(m.state, m.number_of_send_attempts) for m in first} == {("WAITING", 1)}
    assert all(m.lease_until is not None for m in first)  # left leased: claimed again once the lease expires
    db.session.execute(update(Message).where(Message.state == "WAITING")
                       .values(lease_until=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    report = dispatch(campaign.id)
    assert (report.stopped_because, report.possibly_resent) == ("finished", BATCH)
    assert _fresh(campaign.id).sent == BATCH + 10
