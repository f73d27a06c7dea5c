"""Leases: renewed while a batch is on the wire, lost ones logged and counted, re-sends reported."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from flask import Flask
from sqlalchemy import select, update

from tests.factories import make_device, make_subscriber
from webadmin.extensions import db
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.models.user import Role
from webadmin.sending.engine import Claimed, claim, dispatch, possibly_resent
from webadmin.services import campaigns
from webadmin.services.campaigns import CampaignDraft


def _started(push_app, devices: int = 3) -> Campaign:
    for i in range(devices):
        make_device(push_app, make_subscriber(), token=f"ok-{i}")
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Hi"), actor="test")
    db.session.commit()
    campaigns.start(campaign, actor="test")
    return campaign


def _leased() -> bool:
    db.session.commit()
    return db.session.scalar(select(Message.id).where(Message.lease_until.is_not(None)).limit(1)) is not None


def _later(app: Flask, seconds: float, work) -> tuple[threading.Thread, list]:
    """Run `work()` in another worker thread (own app context and session) `seconds` after the batch is claimed."""
    out: list = []

    def body() -> None:
        with app.app_context():
            try:
                deadline = time.monotonic() + 10
                while not _leased() and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(seconds)
                out.append(work())
            finally:
                db.session.remove()

    thread = threading.Thread(target=body)
    thread.start()
    return thread, out


def test_the_lease_is_renewed_while_a_batch_outlasts_it(app, push_app, scripted_channel, manual_dispatch):
    app.config["ENGINE_LEASE_SECONDS"] = 1.0
    scripted_channel("android", delay=2.0)  # the provider takes twice the lease
    campaign = _started(push_app)
    # Another worker looks for claimable rows when the first lease would have expired.
    thread, stolen = _later(app, 1.4, lambda: claim(campaign.id, 10, lease_seconds=60)[1])
    report = dispatch(campaign.id)
    thread.join()
    assert stolen == [[]]  # nothing to take: the lease was renewed
    assert (report.sent, report.lost_lease, report.stopped_because) == (3, 0, "finished")
    db.session.expire_all()
    assert {m.number_of_send_attempts for m in db.session.scalars(select(Message))} == {1}


def test_a_lost_lease_is_logged_and_counted(app, push_app, scripted_channel, manual_dispatch, caplog):
    scripted_channel("android", delay=0.5)
    campaign = _started(push_app)

    def reclaim() -> int:
        """What a second worker does once our lease has expired (simulated: it is long, so we stamp theirs)."""
        theirs = utcnow() + timedelta(minutes=5)
        count = db.session.execute(update(Message).values(lease_until=theirs)).rowcount
        db.session.commit()
        return count

    thread, reclaimed = _later(app, 0.0, reclaim)
    with caplog.at_level(logging.WARNING, logger="webadmin.sending.engine"):
        report = dispatch(campaign.id)
    thread.join()
    assert reclaimed == [3]
    assert (report.sent, report.lost_lease, report.stopped_because) == (3, 3, "in flight elsewhere")
    assert f"campaign {campaign.id}: 3 message(s) of a batch lost their lease" in caplog.text
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).sent == 0  # the other worker records them, not us


def test_messages_sent_after_a_lost_claim_are_reported_as_possibly_resent(push_app, manual_dispatch, caplog):
    campaign = _started(push_app, devices=4)
    _, rows = claim(campaign.id, 2, lease_seconds=-1)  # a worker claimed two and died
    assert all(isinstance(r, Claimed) for r in rows)
    # A third failed once (recorded) and is retried now: sent on a later attempt, but never possibly twice.
    retried = db.session.scalar(select(Message.id).where(Message.lease_until.is_(None)).limit(1))
    db.session.execute(update(Message).where(Message.id == retried).values(
        state="ERROR_RETRY", number_of_send_attempts=1, next_attempt_at=utcnow() - timedelta(seconds=1)))
    db.session.execute(update(Campaign).where(Campaign.id == campaign.id).values(retrying=1))
    db.session.commit()
    with caplog.at_level(logging.INFO, logger="webadmin.sending.engine"):
        report = dispatch(campaign.id)
    assert (report.sent, report.possibly_resent, report.stopped_because) == (4, 2, "finished")
    assert f"campaign {campaign.id}: 2 message(s) sent again after an earlier claim of them was lost" in caplog.text
    assert possibly_resent(campaign.id) == 3  # the campaign-wide upper bound counts the retry too
    assert f"campaign {campaign.id} sent; 3 message(s) went out on a later attempt" in caplog.text
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).possibly_resent == 2  # the counter the campaign page shows


def test_the_campaign_page_says_how_many_may_have_gone_out_twice(app, push_app, manual_dispatch, client, login_as):
    campaign = _started(push_app, devices=3)
    login_as(Role.VIEWER)
    claim(campaign.id, 2, lease_seconds=-1)  # a worker claimed two and died
    db.session.commit()
    assert "count-possibly-resent" not in client.get(f"/campaigns/{campaign.id}").get_data(as_text=True)
    dispatch(campaign.id)
    page = client.get(f"/campaigns/{campaign.id}").get_data(as_text=True)
    assert 'id="count-possibly-resent"' in page and "2 message(s) went out again" in page
