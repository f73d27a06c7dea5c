"""The fallback run against fake SMSAPI and Twilio servers: bad numbers, refused credentials, 429 with Retry-After,
5xx up to the attempt ceiling and timeouts are handled as the push engine handles them, and nobody gets two SMS."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.factories import make_device, make_subscriber
from tests.providers.fakes import Recorded, raw, reply, sleep
from tests.sms.conftest import fresh, later, send_campaign, set_halted, sms_rows, smsapi_channel
from webadmin.extensions import db
from webadmin.models.sms import SmsChannel, SmsMessage
from webadmin.models.types import utcnow
from webadmin.services import sms_channel as channel_service
from webadmin.services import sms_fallback
from webadmin.services.sms_channel import SmsChannelInput
from webadmin.sms.fallback import current_channel, send_pending, tick

TOKEN = "smsapi-token-secret-42"
TWILIO_SID = "AC" + "ab" * 16


def accepted(rec: Recorded):
    """SMSAPI accepts the SMS."""
    return reply({"count": 1, "list": [{"id": f"id-{rec.form['to']}", "points": 0.16, "number": rec.form["to"],
                                        "status": "QUEUE"}]})(rec)


def by_number(table: dict[str, object], default=accepted):
    """Answer by the SMSAPI `to` field."""
    return lambda rec: table.get(rec.form["to"], default)(rec)


def _smsapi(sms_channel, fake, **options) -> SmsChannel:
    return sms_channel("smsapi", sender="Nibs", options={"endpoint": fake.url, "timeout": 5.0, **options},
                       token=TOKEN, account="smsapi.pl")


def _people(push_app, *phones: str) -> None:
    for phone in phones:
        make_device(push_app, make_subscriber(phone=phone))


def _due_now() -> None:
    """Time passes: retries become due."""
    db.session.execute(update(SmsMessage).where(SmsMessage.state == "ERROR_RETRY").values(next_attempt_at=utcnow()))
    db.session.commit()


def test_bad_numbers_are_skipped_and_counted(push_app, sms_channel, live_fake):
    invalid = reply({"invalid_numbers": [{"number": "48100200300", "message": "Invalid phone number"}],
                     "error": 13, "message": "No correct phone numbers"})
    live_fake.route("POST", "/sms.do", by_number({"48100200300": invalid}))
    _smsapi(sms_channel, live_fake)
    _people(push_app, "+48100200300", "+48500100002")
    campaign = send_campaign(push_app)
    make_subscriber("nophone@example.com")
    tick(later())
    rows = {r.phone: r for r in sms_rows(campaign.id)}
    assert (rows["+48100200300"].state, rows["+48100200300"].skip_reason) == ("SKIPPED", "invalid_number")
    assert "SMSAPI_13" in rows["+48100200300"].error
    assert (rows["+48500100002"].state, rows["+48500100002"].provider_message_id) == ("SENT", "id-48500100002")
    assert dict(sms_fallback.funnel_rows(campaign.id))["Invalid number"] == 1
    assert len(live_fake.calls("/sms.do")) == 2


def test_429_with_retry_after_waits_at_least_that_long_then_sends_with_the_same_idx(app, push_app, sms_channel,
                                                                                     live_fake):
    app.config["ENGINE_RETRY_BASE_SECONDS"] = 1.0
    busy = reply({"message": "Too many requests"}, status=429, headers={"Retry-After": "120"})
    live_fake.route("POST", "/sms.do", busy, accepted)
    _smsapi(sms_channel, live_fake)
    _people(push_app, "+48500100002")
    campaign = send_campaign(push_app)
    before = utcnow()
    tick(later())
    [row] = sms_rows(campaign.id)
    assert row.state == "ERROR_RETRY" and row.attempts == 1 and "HTTP_429" in row.error
    assert row.next_attempt_at >= before + timedelta(seconds=120)  # never before Retry-After
    assert tick(later())["send_tasks"] == 0  # not due yet
    _due_now()
    tick(later())
    [row] = sms_rows(campaign.id)
    assert (row.state, row.attempts, row.error) == ("SENT", 2, None)
    first, second = live_fake.calls("/sms.do")
    assert first.form["idx"] == second.form["idx"] == row.uuid.replace("-", "")  # SMSAPI can refuse a duplicate


def test_5xx_retries_until_the_attempt_ceiling_then_fails(app, push_app, sms_channel, live_fake):
    app.config.update(ENGINE_MAX_ATTEMPTS=3, ENGINE_RETRY_BASE_SECONDS=1.0)
    live_fake.route("POST", "/sms.do", raw(f"<h1>502</h1> token={TOKEN}", status=502))
    _smsapi(sms_channel, live_fake)
    _people(push_app, "+48500100002")
    campaign = send_campaign(push_app)
    tick(later())
    for _ in range(2):
        _due_now()
        tick(later())
    [row] = sms_rows(campaign.id)
    assert (row.state, row.attempts) == ("ERROR", 3) and "gave up after 3 attempts" in row.error
    assert TOKEN not in row.error and "token=••••" in row.error
    assert len(live_fake.calls("/sms.do")) == 3, row.error
    assert dict(sms_fallback.funnel_rows(campaign.id))["SMS fallback failed"] == 1


def test_refused_credentials_halt_the_channel_and_release_the_rows(push_app, sms_channel, live_fake):
    def refused(rec: Recorded):  # a provider that echoes the credentials it refused
        message = f"Invalid authorization info ({rec.headers['Authorization']})"
        return reply({"error": 101, "message": message}, status=401)(rec)

    live_fake.route("POST", "/sms.do",
                    lambda rec: (accepted if rec.headers["Authorization"] == "Bearer a-new-token" else refused)(rec))
    _smsapi(sms_channel, live_fake)
    _people(push_app, "+48500100002", "+48500100003")
    campaign = send_campaign(push_app)
    tick(later())
    channel = current_channel()
    assert channel.halted and "Invalid authorization info (Bearer ••••)" in channel.error
    assert {(r.state, r.attempts) for r in sms_rows(campaign.id)} == {("WAITING", 0)}  # the claim was no attempt
    calls = len(live_fake.calls("/sms.do"))
    assert tick(later())["send_tasks"] == 0 and send_pending().stopped_because == "SMS channel halted"
    assert len(live_fake.calls("/sms.do")) == calls
    # An admin saves a new token: the halt is lifted and the waiting SMS go out.
    channel_service.save_channel(SmsChannelInput("smsapi", "Nibs", {"token": "a-new-token", "account": "smsapi.pl"}),
                                 actor="test")
    tick(later())
    assert {r.state for r in sms_rows(campaign.id)} == {"SENT"}
    assert live_fake.calls("/sms.do")[-1].headers["Authorization"] == "Bearer a-new-token"


def test_a_timeout_is_retried_with_smsapi_whose_idx_refuses_a_duplicate(push_app, sms_channel, smsapi):
    smsapi.accept_delay = 2.0  # SMSAPI takes the SMS, but its answer comes after the client gave up
    smsapi_channel(sms_channel, smsapi.server, timeout=0.3)
    _people(push_app, "+48500100002")
    campaign = send_campaign(push_app)
    tick(later())
    [row] = sms_rows(campaign.id)
    assert row.state == "ERROR_RETRY" and "TIMEOUT" in row.error
    _due_now()
    tick(later())
    [row] = sms_rows(campaign.id)
    assert row.state == "SENT" and "accepted earlier" in row.error  # the provider had it: recorded, not re-sent
    idx = row.uuid.replace("-", "")
    assert smsapi.per_idx() == {idx: 1} and smsapi.refused_duplicates == [idx]


def test_an_unknown_outcome_is_not_retried_once_smsapi_forgot_the_idx(app, push_app, sms_channel, smsapi):
    app.config["ENGINE_MAX_AGE_HOURS"] = 72  # retries may go on for three days, SMSAPI's idx check lasts one
    smsapi.accept_delay = 2.0
    smsapi_channel(sms_channel, smsapi.server, timeout=0.3)
    _people(push_app, "+48500100002")
    campaign = send_campaign(push_app)
    tick(later())
    [row] = sms_rows(campaign.id)
    assert row.state == "ERROR_RETRY" and "TIMEOUT" in row.error  # SMSAPI would refuse a duplicate today
    db.session.execute(update(SmsMessage).values(created_at=utcnow() - timedelta(hours=25)))  # a day passes
    _due_now()
    assert send_pending().sent == 0  # not claimable: SMSAPI might take the retry as a new SMS now
    assert tick(later())["expired"] == 1
    [row] = sms_rows(campaign.id)
    assert (row.state, row.attempts) == ("ERROR", 1) and row.error.startswith("too old to try again")
    assert len(smsapi.deliveries) == 1 and smsapi.refused_duplicates == []


def test_a_first_send_after_smsapis_window_is_not_retried_after_an_unknown_outcome(app, push_app, sms_channel,
                                                                                   smsapi):
    app.config["ENGINE_MAX_AGE_HOURS"] = 72
    smsapi.accept_delay = 2.0
    smsapi_channel(sms_channel, smsapi.server, timeout=0.3)
    _people(push_app, "+48500100002")
    campaign = send_campaign(push_app)
    set_halted(True)
    tick(later())
    db.session.execute(update(SmsMessage).values(created_at=utcnow() - timedelta(hours=25)))  # held for a day
    set_halted(False)
    send_pending()
    [row] = sms_rows(campaign.id)
    assert (row.state, row.attempts) == ("ERROR", 1) and row.error.startswith("outcome unknown (TIMEOUT")
    assert len(smsapi.deliveries) == 1


def test_a_gateway_502_is_retried_with_smsapi(app, push_app, sms_channel, smsapi):
    smsapi.fail_next(raw("<h1>502 Bad Gateway</h1>", status=502))
    smsapi_channel(sms_channel, smsapi.server)
    _people(push_app, "+48500100002")
    campaign = send_campaign(push_app)
    tick(later())
    [row] = sms_rows(campaign.id)
    assert row.state == "ERROR_RETRY" and "HTTP_502" in row.error
    _due_now()
    tick(later())
    [row] = sms_rows(campaign.id)
    assert (row.state, row.attempts) == ("SENT", 2) and smsapi.per_idx() == {row.uuid.replace("-", ""): 1}


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_twilio_5xx_that_may_follow_a_created_message_is_not_sent_again(push_app, sms_channel, live_fake, status):
    path = f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    live_fake.route("POST", path, raw("<html><h1>Bad gateway</h1></html>", status=status),
                    reply({"sid": "SM2", "status": "queued"}, status=201))
    sms_channel("twilio", sender="+15005550006", options={"endpoint": live_fake.url},
                account_sid=TWILIO_SID, auth_token="twilio-secret")
    _people(push_app, "+48500100002")
    campaign = send_campaign(push_app)
    tick(later())
    _due_now()
    tick(later(minutes=10))
    [row] = sms_rows(campaign.id)
    assert (row.state, row.attempts) == ("ERROR", 1) and row.error.startswith(f"outcome unknown (HTTP_{status}")
    assert "Twilio would not refuse a duplicate" in row.error and len(live_fake.calls(path)) == 1


def test_a_twilio_503_is_retried(app, push_app, sms_channel, live_fake):
    path = f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    live_fake.route("POST", path, raw("busy", status=503, headers={"Retry-After": "1"}),
                    reply({"sid": "SM3", "status": "queued"}, status=201))
    sms_channel("twilio", sender="+15005550006", options={"endpoint": live_fake.url},
                account_sid=TWILIO_SID, auth_token="twilio-secret")
    _people(push_app, "+48500100002")
    campaign = send_campaign(push_app)
    tick(later())
    _due_now()
    tick(later())
    [row] = sms_rows(campaign.id)
    assert (row.state, row.provider_message_id, row.attempts) == ("SENT", "SM3", 2)


def test_a_timeout_is_not_retried_with_twilio_which_cannot_refuse_a_duplicate(push_app, sms_channel, live_fake):
    path = f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    live_fake.route("POST", path, sleep(2, reply({"sid": "SM1", "status": "queued"}, status=201)))
    sms_channel("twilio", sender="+15005550006", options={"endpoint": live_fake.url, "timeout": 0.3},
                account_sid=TWILIO_SID, auth_token="twilio-secret")
    _people(push_app, "+48500100002")
    campaign = send_campaign(push_app)
    tick(later())
    _due_now()
    tick(later(minutes=10))
    [row] = sms_rows(campaign.id)
    assert (row.state, row.attempts) == ("ERROR", 1) and "may have been delivered" in row.error
    assert len(live_fake.calls(path)) == 1


def test_twilio_stop_replies_count_as_opted_out(push_app, sms_channel, live_fake):
    path = f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    live_fake.route("POST", path, reply({"code": 21610, "message": "Attempt to send to unsubscribed recipient",
                                         "status": 400}, status=400))
    sms_channel("twilio", sender="+15005550006", options={"endpoint": live_fake.url},
                account_sid=TWILIO_SID, auth_token="twilio-secret")
    _people(push_app, "+48500100002")
    campaign = send_campaign(push_app)
    tick(later())
    [row] = sms_rows(campaign.id)
    assert (row.state, row.skip_reason) == ("SKIPPED", "opted_out")
    assert dict(sms_fallback.funnel_rows(campaign.id))["Opted out"] == 1
    assert fresh(campaign).sms_fallback_done_at is not None
