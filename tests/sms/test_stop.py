"""Stopping a campaign's SMS fallback: a sent campaign cannot be cancelled (its pushes went out in seconds), but its
fallback is still to come, so the SMS section stops it. Also: rows held too long end as "too old"."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.factories import make_device, make_subscriber
from tests.sms.conftest import fresh, journal_lines, later, send_campaign, set_halted, sms_rows
from webadmin.extensions import db
from webadmin.models.audit import AuditEvent
from webadmin.models.sms import SmsMessage
from webadmin.models.types import utcnow
from webadmin.models.user import Role
from webadmin.services import ServiceError, sms_fallback
from webadmin.sms.fallback import send_pending, tick


def _people(push_app, n: int = 3) -> None:
    for i in range(n):
        make_device(push_app, make_subscriber(phone=f"+4850010000{i}"))


def test_stopping_a_sent_campaign_before_its_window_ends_sends_no_fallback(push_app, sms_channel, journal):
    sms_channel()
    _people(push_app)
    campaign = send_campaign(push_app, window=600)
    assert campaign.status == "sent"  # the campaign's own Cancel is gone now
    assert sms_fallback.stop(campaign, actor="marketer@example.com") == 0
    report = tick(later(minutes=11))
    assert (report["created"], report["send_tasks"]) == (0, 0)
    assert sms_rows(campaign.id) == [] and journal_lines(journal) == []
    stopped = fresh(campaign)
    assert stopped.status == "sent" and stopped.sms_fallback_stopped_at is not None
    assert stopped.sms_fallback_done_at is not None
    [event] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "campaign.sms_fallback_stop"))
    assert (event.actor, event.object_id, event.detail["rows_ended"]) == ("marketer@example.com", str(campaign.id), 0)
    with pytest.raises(ServiceError, match="already stopped"):
        sms_fallback.stop(stopped, actor="test")


def test_stopping_ends_the_waiting_rows_and_nothing_goes_out_later(push_app, sms_channel, journal):
    sms_channel()
    _people(push_app)
    campaign = send_campaign(push_app)
    set_halted(True)  # the rows are made but wait
    assert tick(later())["created"] == 3
    assert sms_fallback.stop(fresh(campaign), actor="test") == 3
    assert {(r.state, r.error) for r in sms_rows(campaign.id)} == {("ERROR", "fallback cancelled")}
    set_halted(False)
    assert send_pending().sent == 0 and tick(later(minutes=5))["send_tasks"] == 0
    assert journal_lines(journal) == []
    assert dict(sms_fallback.funnel_rows(campaign.id))["SMS fallback failed"] == 3


def test_rows_made_by_a_run_racing_the_stop_are_never_claimed(push_app, sms_channel, journal):
    sms_channel()
    _people(push_app, 2)
    campaign = send_campaign(push_app)
    set_halted(True)
    tick(later())
    sms_fallback.stop(fresh(campaign), actor="test")
    # A worker that read the open fallbacks before the stop committed inserts its rows after it.
    db.session.execute(update(SmsMessage).values(state="WAITING", error=None))
    db.session.commit()
    set_halted(False)
    assert send_pending().sent == 0 and journal_lines(journal) == []
    assert tick(later())["cancelled"] == 2  # the next periodic run ends them


def test_a_campaign_without_a_fallback_has_nothing_to_stop(push_app):
    from webadmin.services import campaigns

    campaign = campaigns.create_campaign(campaigns.CampaignDraft(app_id=push_app.id, text="No SMS"), actor="test")
    db.session.commit()
    with pytest.raises(ServiceError, match="no SMS fallback"):
        sms_fallback.stop(campaign, actor="test")


def test_the_campaign_page_stops_the_fallback_for_marketers_only(client, login_as, push_app, sms_channel):
    sms_channel()
    _people(push_app, 1)
    campaign = send_campaign(push_app, window=1800)
    login_as(Role.VIEWER)
    assert 'id="campaigns-sms-stop"' not in client.get(f"/campaigns/{campaign.id}").get_data(as_text=True)
    assert client.post(f"/campaigns/{campaign.id}/sms/stop").status_code == 403
    client.post("/logout")
    login_as(Role.MARKETER)
    page = client.get(f"/campaigns/{campaign.id}").get_data(as_text=True)
    assert 'id="campaigns-sms-stop"' in page and "Stop SMS fallback" in page
    response = client.post(f"/campaigns/{campaign.id}/sms/stop", follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "SMS fallback stopped" in page and 'id="campaigns-sms-stopped"' in page
    assert 'id="campaigns-sms-stop"' not in page and "every 5s" not in page  # nothing left to watch
    again = client.post(f"/campaigns/{campaign.id}/sms/stop", follow_redirects=True).get_data(as_text=True)
    assert "already stopped" in again
    assert client.post("/campaigns/999999/sms/stop").status_code == 404


def test_the_stop_needs_a_csrf_token(app, client, login_as, push_app, sms_channel):
    sms_channel()
    campaign = send_campaign(push_app)
    login_as(Role.MARKETER)
    app.config["WTF_CSRF_ENABLED"] = True
    assert client.post(f"/campaigns/{campaign.id}/sms/stop").status_code == 400
    assert fresh(campaign).sms_fallback_stopped_at is None


def test_rows_held_past_the_age_ceiling_end_as_too_old_and_never_go_out(app, push_app, sms_channel, journal):
    app.config["ENGINE_MAX_AGE_HOURS"] = 24
    sms_channel()
    _people(push_app, 2)
    campaign = send_campaign(push_app)
    set_halted(True)
    tick(later())
    day_ago = utcnow() - timedelta(hours=25)  # the halt lasted a day; the admin fixes the channel now
    db.session.execute(update(SmsMessage).values(created_at=day_ago))
    db.session.commit()
    set_halted(False)
    assert send_pending().sent == 0  # not claimable, even before the periodic run ends them
    report = tick()
    assert (report["expired"], report["send_tasks"]) == (2, 0)
    assert {(r.state, r.error.split(":")[0]) for r in sms_rows(campaign.id)} == {("ERROR", "too old")}
    assert journal_lines(journal) == []
    assert dict(sms_fallback.funnel_rows(campaign.id))["SMS fallback failed"] == 2
