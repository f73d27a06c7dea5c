"""Twilio backend against a local fake Messages endpoint that speaks Twilio's form-in, JSON-out wire format."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import pytest

from tests.providers.fakes import FakeServer, Recorded, Responder, raw, reply, reset, sleep
from webadmin.providers.base import ChannelAuthError, ProviderOptions
from webadmin.sms.base import OutgoingSms, SmsResult
from webadmin.sms.twilio import TwilioBackend

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token-secret"
PATH = f"/2010-04-01/Accounts/{SID}/Messages.json"
FROM = "+15005550006"


def sms(i: int, to: str = "+48500100200") -> OutgoingSms:
    """One SMS."""
    return OutgoingSms(sms_id=i, uuid=str(uuid.uuid4()), to=to, text="Half price today")


def created(rec: Recorded) -> Any:
    """Twilio's 201 Message resource."""
    return reply({"sid": f"SM{rec.form['To'][-4:]}", "status": "queued", "to": rec.form["To"],
                  "body": rec.form["Body"]}, status=201)(rec)


def error(code: int, message: str, status: int = 400, headers: dict[str, str] | None = None) -> Responder:
    """Twilio's error document."""
    return reply({"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                  "status": status}, status=status, headers=headers)


async def run(messages: list[OutgoingSms], *responders: Responder, sender: str = FROM,
              **options: Any) -> tuple[FakeServer, list[SmsResult]]:
    """Send through a fresh backend against a fresh fake."""
    async with FakeServer() as srv:
        srv.route("POST", PATH, *(responders or (created,)))
        creds = {"account_sid": SID, "auth_token": TOKEN}
        backend = TwilioBackend(creds, sender, ProviderOptions(endpoint=srv.url, **{"timeout": 2.0} | options))
        try:
            return srv, await backend.send_batch(messages)
        finally:
            await backend.close()


def test_success_posts_to_from_body_with_basic_auth() -> None:
    srv, results = asyncio.run(run([sms(1)]))
    assert results == [SmsResult(1, ok=True, provider_message_id="SM0200")]
    [call] = srv.calls(PATH)
    assert call.headers["Authorization"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert call.form == {"To": "+48500100200", "Body": "Half price today", "From": FROM}


def test_a_messaging_service_sid_is_sent_as_such() -> None:
    service = "MG" + "f" * 32
    srv, _ = asyncio.run(run([sms(1)], sender=service))
    assert srv.calls(PATH)[0].form == {"To": "+48500100200", "Body": "Half price today", "MessagingServiceSid": service}


def test_invalid_number_and_unsubscribed_recipient_are_data() -> None:
    table = {"+48100": error(21211, "The 'To' number +48100 is not a valid phone number."),
             "+48200": error(21610, "Attempt to send to unsubscribed recipient")}

    def by_to(rec: Recorded) -> Any:
        return table.get(rec.form["To"], created)(rec)

    _, results = asyncio.run(run([sms(1, "+48100"), sms(2, "+48200"), sms(3)], by_to))
    by_id = {r.sms_id: r for r in results}
    assert (by_id[1].invalid_number, by_id[1].error_code) == (True, "TWILIO_21211")
    assert (by_id[2].opted_out, by_id[2].invalid_number) == (True, False)
    assert by_id[3].ok


def test_refused_credentials_raise_channel_auth_error() -> None:
    with pytest.raises(ChannelAuthError, match="20003"):
        asyncio.run(run([sms(1)], error(20003, "Authenticate", status=401)))


def test_wrong_from_number_is_a_channel_error() -> None:
    _, [result] = asyncio.run(run([sms(1)], error(21606, "The From phone number is not a valid, SMS-capable number")))
    assert (result.channel_error, result.retryable) == (True, False)


def test_429_with_retry_after() -> None:
    busy = error(20429, "Too Many Requests", status=429, headers={"Retry-After": "7"})
    _, [result] = asyncio.run(run([sms(1)], busy))
    assert (result.retryable, result.retry_after, result.unknown_outcome) == (True, 7.0, False)


def test_503_is_retryable_but_500_502_504_may_come_after_twilio_created_the_message() -> None:
    _, [busy] = asyncio.run(run([sms(1)], raw("upstream error", status=503)))
    assert (busy.retryable, busy.error_code, busy.unknown_outcome) == (True, "HTTP_503", False)
    for status in (500, 502, 504):
        _, [result] = asyncio.run(run([sms(1)], raw("<h1>Bad gateway</h1>", status=status)))
        assert (result.error_code, result.unknown_outcome) == (f"HTTP_{status}", True)


def test_timeout_and_reset_are_unknown_outcomes_and_twilio_cannot_dedupe() -> None:
    _, [timed_out] = asyncio.run(run([sms(1)], sleep(3, created), timeout=0.3))
    _, [dropped] = asyncio.run(run([sms(1)], reset()))
    assert (timed_out.error_code, timed_out.unknown_outcome) == ("TIMEOUT", True)
    assert (dropped.error_code, dropped.unknown_outcome) == ("CONNECTION_ERROR", True)
    assert TwilioBackend.dedupe_window is None  # so the fallback run does not send these again


def test_malformed_answers() -> None:
    _, [ok_without_sid] = asyncio.run(run([sms(1)], reply({"status": "queued"}, status=201)))
    _, [html_404] = asyncio.run(run([sms(1)], raw("<h1>Not Found</h1>", status=404)))
    assert (ok_without_sid.error_code, ok_without_sid.unknown_outcome) == ("MALFORMED_RESPONSE", True)
    assert (html_404.error_code, html_404.unknown_outcome) == ("MALFORMED_RESPONSE", False)


def test_test_connection_fetches_the_account() -> None:
    async def go(responder: Responder):
        async with FakeServer() as srv:
            srv.route("GET", f"/2010-04-01/Accounts/{SID}.json", responder)
            backend = TwilioBackend({"account_sid": SID, "auth_token": TOKEN}, FROM,
                                    ProviderOptions(endpoint=srv.url, timeout=2.0))
            try:
                return await backend.test_connection()
            finally:
                await backend.close()

    assert asyncio.run(go(reply({"sid": SID, "status": "active"}))).ok
    suspended = asyncio.run(go(reply({"sid": SID, "status": "suspended"})))
    assert not suspended.ok and "suspended" in suspended.message
    refused = asyncio.run(go(error(20003, "Authenticate", status=401)))
    assert not refused.ok and TOKEN not in refused.message
