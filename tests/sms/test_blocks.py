"""Numbers the SMS provider refused are remembered: SMSAPI 13 (invalid), 57/59 (blacklist, opt-out), Twilio
21211/21614 (invalid) and 21610 (STOP) block the subscriber's number for later campaigns, until the number changes
or a marketer allows it again."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from tests.factories import make_device, make_subscriber
from tests.providers.fakes import reply
from tests.sms.conftest import later, send_campaign, sms_rows, smsapi_channel
from webadmin.extensions import db
from webadmin.models.audience import Subscriber
from webadmin.models.audit import AuditEvent
from webadmin.models.sms import SmsBlock
from webadmin.models.user import Role
from webadmin.services import sms_fallback
from webadmin.services.audience import SubscriberData, upsert_subscriber
from webadmin.sms.fallback import tick

TWILIO_SID = "AC" + "cd" * 16
TWILIO_PATH = f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"


def _person(push_app, key: str, phone: str) -> Subscriber:
    subscriber = make_subscriber(key, phone=phone)
    make_device(push_app, subscriber)
    return subscriber


@pytest.mark.parametrize(("refusal", "reason"), [("invalid", "invalid_number"), ("blacklisted", "opted_out"),
                                                  ("opted_out", "opted_out")])
def test_an_smsapi_refusal_blocks_the_number_for_the_next_campaign(push_app, sms_channel, smsapi, refusal, reason):
    getattr(smsapi, refusal).add("48100200300")
    smsapi_channel(sms_channel, smsapi.server)
    bad = _person(push_app, "bad@example.com", "+48100200300")
    good = _person(push_app, "good@example.com", "+48500100002")
    first = send_campaign(push_app)
    tick(later())
    rows = {r.subscriber_id: r for r in sms_rows(first.id)}
    assert (rows[bad.id].state, rows[bad.id].skip_reason) == ("SKIPPED", reason)
    block = db.session.get(SmsBlock, bad.id)
    assert (block.phone, block.reason, block.campaign_id) == ("+48100200300", reason, first.id)
    assert block.detail.startswith("SMSAPI_") and smsapi.token not in block.detail
    requests = len(smsapi.server.calls("/sms.do"))

    second = send_campaign(push_app)
    tick(later())
    rows = {r.subscriber_id: r for r in sms_rows(second.id)}
    assert (rows[bad.id].state, rows[bad.id].skip_reason) == ("SKIPPED", reason)  # skipped when the row was made
    assert rows[bad.id].error.startswith("refused earlier: SMSAPI_") and rows[good.id].state == "SENT"
    assert len(smsapi.server.calls("/sms.do")) == requests + 1  # only Good's SMS: Bad's number is not tried again
    assert smsapi.per_number() == {"48500100002": 2}


def _twilio(sms_channel, live_fake, answers: dict[str, int]) -> None:
    def create(rec):
        code = answers.get(rec.form["To"])
        if code is None:
            return reply({"sid": f"SM{rec.form['To'][1:]}", "status": "queued"}, status=201)(rec)
        return reply({"code": code, "message": f"Twilio says {code}", "status": 400}, status=400)(rec)

    live_fake.route("POST", TWILIO_PATH, create)
    sms_channel("twilio", sender="+15005550006", options={"endpoint": live_fake.url}, account_sid=TWILIO_SID,
                auth_token="twilio-secret")


def test_a_stop_reply_is_remembered_until_the_number_changes(push_app, sms_channel, live_fake):
    _twilio(sms_channel, live_fake, {"+48500100001": 21610, "+48500100003": 21211, "+48500100004": 21614})
    stop = _person(push_app, "stop@example.com", "+48500100001")
    _person(push_app, "invalid@example.com", "+48500100003")
    _person(push_app, "landline@example.com", "+48500100004")
    first = send_campaign(push_app)
    tick(later())
    assert {(r.phone, r.skip_reason) for r in sms_rows(first.id)} == {
        ("+48500100001", "opted_out"), ("+48500100003", "invalid_number"), ("+48500100004", "invalid_number")}
    assert len(db.session.scalars(select(SmsBlock)).all()) == 3
    calls = len(live_fake.calls(TWILIO_PATH))
    second = send_campaign(push_app)
    tick(later())
    assert {r.state for r in sms_rows(second.id)} == {"SKIPPED"} and len(live_fake.calls(TWILIO_PATH)) == calls
    assert dict(sms_fallback.funnel_rows(second.id)) == {
        "SMS fallback sent": 0, "SMS fallback failed": 0, "No phone number": 0, "Opted out": 1,
        "Invalid number": 2}

    # A new number (through the API's and console's own service) lifts the block; the old one is not used.
    upsert_subscriber(stop.subscriber_key, SubscriberData(phone="+48600100001"))
    assert sms_fallback.subscriber_block(stop.id) is None
    third = send_campaign(push_app)
    tick(later())
    rows = {r.subscriber_id: r for r in sms_rows(third.id)}
    assert (rows[stop.id].state, rows[stop.id].phone) == ("SENT", "+48600100001")
    assert live_fake.calls(TWILIO_PATH)[-1].form["To"] == "+48600100001"
    # Changing it back (a bulk load, say) brings the refusal back: it was about that number.
    db.session.execute(update(Subscriber).where(Subscriber.id == stop.id).values(phone="+48500100001"))
    db.session.commit()
    assert sms_fallback.subscriber_block(stop.id).reason == "opted_out"


def test_the_subscriber_page_shows_the_block_and_a_marketer_lifts_it(client, login_as, push_app, sms_channel,
                                                                      live_fake):
    _twilio(sms_channel, live_fake, {"+48500100001": 21610})
    stop = _person(push_app, "stop@example.com", "+48500100001")
    campaign = send_campaign(push_app)
    tick(later())
    login_as(Role.VIEWER)
    page = client.get(f"/audience/subscribers/{stop.id}").get_data(as_text=True)
    assert 'id="audience-subscriber-sms-block"' in page and "No SMS to +48500100001" in page
    assert "replied STOP" in page and f"#{campaign.id}" in page and "TWILIO_21610" in page
    assert "Allow SMS to this number again" not in page
    assert client.post(f"/audience/subscribers/{stop.id}/sms-block/clear").status_code == 403
    client.post("/logout")
    login_as(Role.MARKETER)
    page = client.post(f"/audience/subscribers/{stop.id}/sms-block/clear", follow_redirects=True)
    html = page.get_data(as_text=True)
    assert "SMS allowed again" in html and 'id="audience-subscriber-sms-block"' not in html
    assert db.session.get(SmsBlock, stop.id) is None
    [event] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "subscriber.sms_block_clear"))
    assert event.detail == {"reason": "opted_out"} and event.object_id == str(stop.id)
    again = client.post(f"/audience/subscribers/{stop.id}/sms-block/clear", follow_redirects=True)
    assert "was not blocked" in again.get_data(as_text=True)
    assert client.post("/audience/subscribers/999999/sms-block/clear").status_code == 404
