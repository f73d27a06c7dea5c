"""SMSAPI backend against a local fake sms.do that speaks SMSAPI's form-in, JSON-out wire format."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from tests.providers.fakes import FakeServer, Recorded, Responder, free_port_url, raw, reply, sleep, truncated_json
from tests.sms.fake_smsapi import FakeSmsapi
from webadmin.providers.base import ChannelAuthError, ProviderOptions, ProviderUnavailable
from webadmin.sms.base import OutgoingSms, SmsResult
from webadmin.sms.smsapi import SmsapiBackend

TOKEN = "smsapi-secret-token-0123456789"
CREDS = {"token": TOKEN, "account": "smsapi.pl", "normalize": "no"}


def sms(i: int, to: str = "+48500100200", text: str = "Half price today https://nibs.example/o/1") -> OutgoingSms:
    """One SMS."""
    return OutgoingSms(sms_id=i, uuid=str(uuid.uuid4()), to=to, text=text)


def accepted(rec: Recorded) -> Any:
    """SMSAPI's success answer for the number in the request."""
    return reply({"count": 1, "list": [{"id": f"id-{rec.form['to']}", "points": 0.16, "number": rec.form["to"],
                                        "date_sent": 1700000000, "submitted_number": rec.form["to"],
                                        "status": "QUEUE"}]})(rec)


async def run(messages: list[OutgoingSms], *responders: Responder, sender: str | None = "Nibs",
              creds: dict[str, str] | None = None, **options: Any) -> tuple[FakeServer, list[SmsResult]]:
    """Send through a fresh backend against a fresh fake."""
    async with FakeServer() as srv:
        srv.route("POST", "/sms.do", *(responders or (accepted,)))
        backend = SmsapiBackend(creds or CREDS, sender, ProviderOptions(endpoint=srv.url, **{"timeout": 2.0} | options))
        try:
            return srv, await backend.send_batch(messages)
        finally:
            await backend.close()


def test_success_sends_the_exact_form_with_bearer_token_and_idx() -> None:
    message = sms(1)
    srv, results = asyncio.run(run([message]))
    assert results == [SmsResult(1, ok=True, provider_message_id="id-48500100200")]
    [call] = srv.calls("/sms.do")
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert call.form == {"to": "48500100200", "message": message.text, "format": "json", "encoding": "utf-8",
                         "idx": message.uuid.replace("-", ""), "check_idx": "1", "from": "Nibs"}


def test_one_request_per_sms_and_normalize_when_chosen() -> None:
    messages = [sms(i, to=f"+4850010020{i}") for i in range(3)]
    srv, results = asyncio.run(run(messages, sender=None, creds={**CREDS, "normalize": "yes"}))
    assert all(r.ok for r in results) and len(results) == 3
    calls = srv.calls("/sms.do")
    assert sorted(c.form["to"] for c in calls) == ["48500100200", "48500100201", "48500100202"]
    assert all(c.form["normalize"] == "1" and "from" not in c.form for c in calls)


def test_invalid_number_is_data_not_an_exception() -> None:
    invalid = reply({"invalid_numbers": [{"number": "48100200300", "submitted_number": "48100200300",
                                          "message": "Invalid phone number"}],
                     "error": 13, "message": "No correct phone numbers"})
    _, [result] = asyncio.run(run([sms(1, to="+48100200300")], invalid))
    assert (result.ok, result.invalid_number, result.retryable, result.error_code) == (False, True, False, "SMSAPI_13")
    assert "No correct phone numbers" in (result.error or "")


async def against_account(*batches: list[OutgoingSms], token: str = TOKEN,
                          **fake: Any) -> tuple[FakeSmsapi, list[list[SmsResult]]]:
    """Send batches one after another through fresh backends to one stateful fake SMSAPI account."""
    async with FakeServer() as srv:
        account = FakeSmsapi(srv, TOKEN, **fake)
        results = []
        for batch in batches:
            backend = SmsapiBackend({**CREDS, "token": token}, "Nibs", ProviderOptions(endpoint=srv.url, timeout=2.0))
            try:
                results.append(await backend.send_batch(batch))
            finally:
                await backend.close()
        return account, results


def test_a_repeated_idx_is_refused_by_smsapi_and_means_already_accepted() -> None:
    first, other = sms(1), sms(2, to="+48500100201")
    account, [[sent], [again, new]] = asyncio.run(against_account([first], [first, other]))
    assert sent.ok and sent.provider_message_id == "fake-1" and sent.error is None
    assert again.ok and again.provider_message_id is None and "error 53" in again.error
    assert "accepted earlier" in again.error and new.ok
    assert account.per_idx() == {first.uuid.replace("-", ""): 1, other.uuid.replace("-", ""): 1}
    assert account.refused_duplicates == [first.uuid.replace("-", "")]


def test_smsapi_forgets_an_idx_after_its_window_so_the_fallback_run_must_not_rely_on_it_later() -> None:
    clock = iter([0.0, SmsapiBackend.dedupe_window.total_seconds() + 1]).__next__
    message = sms(1)
    account, [[sent], [again]] = asyncio.run(against_account([message], [message], clock=clock))
    assert sent.ok and again.ok and again.error is None  # accepted as a new SMS: the phone got two
    assert account.per_idx() == {message.uuid.replace("-", ""): 2}


def test_a_wrong_bearer_token_is_refused_for_every_sms() -> None:
    with pytest.raises(ChannelAuthError, match="Invalid authorization info"):
        asyncio.run(against_account([sms(1), sms(2)], token="not-the-account-token"))


def test_refused_token_raises_channel_auth_error() -> None:
    refused = reply({"error": 101, "message": "Invalid authorization info"}, status=401)
    with pytest.raises(ChannelAuthError, match="Invalid authorization info"):
        asyncio.run(run([sms(1), sms(2)], refused))


def test_no_points_halts_the_channel_without_retrying() -> None:
    _, [result] = asyncio.run(run([sms(1)], reply({"error": 103, "message": "Not enough points"})))
    assert (result.channel_error, result.retryable) == (True, False)


def test_429_with_retry_after_is_retryable_with_the_delay() -> None:
    busy = reply({"message": "Too many requests"}, status=429, headers={"Retry-After": "120"})
    srv, [result] = asyncio.run(run([sms(1)], busy))
    assert (result.retryable, result.retry_after, result.unknown_outcome) == (True, 120.0, False)
    assert len(srv.calls("/sms.do")) == 1  # the backend itself never retries


def test_5xx_is_retryable_and_a_gateway_502_is_an_unknown_outcome() -> None:
    _, [result] = asyncio.run(run([sms(1)], raw("<h1>502 Bad Gateway</h1>", status=502)))
    assert (result.retryable, result.error_code, result.unknown_outcome) == (True, "HTTP_502", True)
    _, [busy] = asyncio.run(run([sms(1)], raw("<h1>503</h1>", status=503)))
    assert (busy.retryable, busy.unknown_outcome) == (True, False)


@pytest.mark.parametrize(("code", "message"), [(57, "The number is blacklisted for this user."),
                                               (59, "Number is added to OptOut list")])
def test_a_blacklisted_or_opted_out_number_is_an_opt_out_not_a_payload_error(code: int, message: str) -> None:
    _, [result] = asyncio.run(run([sms(1)], reply({"error": code, "message": message})))
    assert (result.ok, result.opted_out, result.payload_error, result.retryable) == (False, True, False, False)
    assert result.error_code == f"SMSAPI_{code}"


def test_timeout_is_an_unknown_outcome_that_smsapi_may_retry() -> None:
    _, [result] = asyncio.run(run([sms(1)], sleep(3, accepted), timeout=0.3))
    assert (result.error_code, result.retryable, result.unknown_outcome) == ("TIMEOUT", True, True)
    assert SmsapiBackend.dedupe_window == timedelta(hours=24)  # check_idx=1 makes the retry safe for a day


@pytest.mark.parametrize("answer", [raw("<html>ok</html>"), truncated_json(), reply({"count": 0, "list": []})])
def test_malformed_2xx_is_an_unknown_outcome(answer: Responder) -> None:
    _, [result] = asyncio.run(run([sms(1)], answer))
    assert (result.ok, result.error_code, result.unknown_outcome) == (False, "MALFORMED_RESPONSE", True)


def test_unreachable_provider_raises_provider_unavailable() -> None:
    backend = SmsapiBackend(CREDS, None, ProviderOptions(endpoint=free_port_url(), timeout=2.0))

    async def go() -> None:
        try:
            await backend.send_batch([sms(1)])
        finally:
            await backend.close()

    with pytest.raises(ProviderUnavailable):
        asyncio.run(go())


def test_test_connection_reads_the_profile() -> None:
    async def go(*responders: Responder):
        async with FakeServer() as srv:
            srv.route("GET", "/profile", *responders)
            backend = SmsapiBackend(CREDS, None, ProviderOptions(endpoint=srv.url, timeout=2.0))
            try:
                return srv, await backend.test_connection()
            finally:
                await backend.close()

    srv, ok = asyncio.run(go(reply({"name": "Nibs", "points": 41.5, "payment_type": "prepaid"})))
    assert ok.ok and "41.5" in ok.message
    assert srv.calls("/profile", "GET")[0].headers["Authorization"] == f"Bearer {TOKEN}"
    _, refused = asyncio.run(go(reply({"error": 101, "message": "Invalid authorization info"}, status=401)))
    assert not refused.ok and "101" in refused.message and TOKEN not in refused.message
