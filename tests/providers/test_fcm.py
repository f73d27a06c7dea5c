"""FCM HTTP v1 backend against a local fake of FCM + its OAuth2 token endpoint over TLS: HTTP/2 sends (the
production path), HTTP/1.1 for the token and for servers that offer no HTTP/2 (tests/providers/fcm_fake.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from webadmin.providers import fcm as fcm_module
from webadmin.providers.base import (
    ChannelAuthError,
    ProviderOptions,
    ProviderUnavailable,
    PushMessage,
    SendResult,
)
from webadmin.providers.fcm import FcmBackend

from .apns_fake import TlsFiles, make_tls_files
from .fakes import (
    FakeServer,
    Recorded,
    Responder,
    counting,
    dispatch,
    free_port_url,
    html_page,
    reply,
    reset,
    sleep,
    truncated_json,
)
from .fcm_fake import FakeFcm, drop_connection, goaway, reset_stream

SEND = "/v1/projects/demo-proj/messages:send"
TOKEN = "/token"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


def msg(i: int, token: str | None = None, **kw: Any) -> PushMessage:
    """A push message with a fresh uuid."""
    return PushMessage(message_id=i, uuid=str(uuid.uuid4()), token=token or f"tok{i}", platform="android",
                       body=f"body {i}", **kw)


def token_ok() -> Responder:
    """OAuth2 token endpoint answering tok-1, tok-2, … in turn."""
    counter = {"n": 0}

    def responder(rec: Recorded) -> Any:
        counter["n"] += 1
        return reply({"access_token": f"tok-{counter['n']}", "expires_in": 3600, "token_type": "Bearer"})(rec)

    return responder


def sent(rec: Recorded) -> Any:
    """FCM success answer naming the message after its token."""
    return reply({"name": f"projects/demo-proj/messages/{rec.json['message']['token']}"})(rec)


def fcm_error(status: int, state: str, message: str, details: list[dict[str, Any]] | None = None,
              headers: dict[str, str] | None = None) -> Responder:
    """A v1 error body."""
    body = {"error": {"code": status, "message": message, "status": state, "details": details or []}}
    return reply(body, status=status, headers=headers)


def fcm_code(status: int, code: str, message: str = "failed", **kw: Any) -> Responder:
    """A v1 error carrying a google.firebase.fcm.v1.FcmError errorCode."""
    detail = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
    state = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
             429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}[status]
    return fcm_error(status, state, message, [detail], **kw)


def by_token(table: dict[str, Responder], default: Responder = sent) -> Responder:
    """Answer per FCM registration token."""
    return dispatch(lambda rec: rec.json["message"]["token"], table, default)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and the fake's certificate for 127.0.0.1."""
    return make_tls_files(Path(tmp_path_factory.mktemp("fcm-tls")))


@dataclass
class Fcm:
    """Runs backends against fresh fakes with the test's service account and the fake's CA."""

    service_account: dict[str, Any]
    tls: TlsFiles

    def options(self, srv: FakeFcm, **options: Any) -> ProviderOptions:
        """Options pointing at the fake (FCM and OAuth2 on the same server), trusting its CA."""
        values = {"endpoint": srv.url, "auth_endpoint": srv.url + TOKEN, "ca_file": self.tls.ca_file} | options
        return ProviderOptions(**values)

    def run(self, messages: list[PushMessage], *send: Responder, token: Responder | None = None,
            credentials: dict[str, Any] | None = None, fake: dict[str, Any] | None = None,
            **options: Any) -> tuple[FakeFcm, list[SendResult]]:
        """Send a batch through a fresh backend against a fresh fake; return the fake and the results."""

        async def scenario() -> tuple[FakeFcm, list[SendResult]]:
            async with FakeFcm(self.tls, **(fake or {})) as srv:
                srv.route("POST", TOKEN, token or token_ok())
                srv.route("POST", SEND, *(send or (sent,)))
                opts = self.options(srv, **{"timeout": 2.0, "concurrency": 8} | options)
                backend = FcmBackend(credentials or self.service_account, opts)
                try:
                    return srv, await backend.send_batch(messages)
                finally:
                    await backend.close()

        return asyncio.run(scenario())

    def scenario(self, body: Any, **fake: Any) -> Any:
        """Run body(srv, backend) against a fake answering tokens and sends; close both afterwards."""

        async def main() -> Any:
            async with FakeFcm(self.tls, **fake) as srv:
                srv.route("POST", TOKEN, token_ok())
                srv.route("POST", SEND, sent)
                backend = FcmBackend(self.service_account, self.options(srv))
                try:
                    return await body(srv, backend)
                finally:
                    await backend.close()

        return asyncio.run(main())


@pytest.fixture
def fcm(service_account: dict[str, Any], tls: TlsFiles) -> Fcm:
    """The FCM test harness."""
    return Fcm(service_account, tls)


def by_id(results: list[SendResult]) -> dict[int, SendResult]:
    """Results keyed by message id (and exactly one per message)."""
    out = {r.message_id: r for r in results}
    assert len(out) == len(results)
    return out


def test_success_requests_and_payload(fcm: Fcm) -> None:
    messages = [msg(1, title="Hi", open_direct="app://offer/1", image_url="https://img/x.png", ttl=3600,
                    data={"campaign": "c1", "n": "2"}), msg(2), msg(3)]
    srv, results = fcm.run(messages)
    res = by_id(results)
    assert all(r.ok for r in results)
    assert res[1].provider_message_id == "projects/demo-proj/messages/tok1"
    sends = srv.calls(SEND)
    assert len(sends) == 3 and len(srv.calls(TOKEN)) == 1
    first = next(r for r in sends if r.json["message"]["token"] == "tok1")
    assert first.headers["Authorization"] == "Bearer tok-1"
    assert first.headers["Content-Type"].startswith("application/json")
    assert first.headers[":method"] == "POST" and first.headers[":authority"] == srv.url.removeprefix("https://")
    m = first.json["message"]
    u = messages[0].uuid
    assert m["notification"] == {"title": "Hi", "body": "body 1", "image": "https://img/x.png"}
    assert m["data"] == {"campaign": "c1", "n": "2", "openDirect": "app://offer/1"}
    assert m["android"] == {"priority": "high", "ttl": "3600s", "notification": {"tag": u}}
    assert m["apns"]["headers"]["apns-collapse-id"] == u
    assert abs(int(m["apns"]["headers"]["apns-expiration"]) - (time.time() + 3600)) < 60
    assert m["apns"]["payload"]["aps"]["mutable-content"] == 1
    assert m["apns"]["fcm_options"] == {"image": "https://img/x.png"}
    assert m["webpush"]["headers"] == {"TTL": "3600", "Topic": u.replace("-", "")}
    assert m["webpush"]["notification"] == {"tag": u}
    plain = next(r for r in sends if r.json["message"]["token"] == "tok2").json["message"]
    assert "data" not in plain and "ttl" not in plain["android"] and "TTL" not in plain["webpush"]["headers"]
    assert all(isinstance(v, str) for v in m["data"].values())


def test_sends_share_one_http2_connection_and_the_token_goes_over_http11(fcm: Fcm) -> None:
    srv, results = fcm.run([msg(i) for i in range(20)], sleep(0.02, sent))
    assert all(r.ok for r in results)
    # the token request (urllib) is HTTP/1.1; all 20 sends are concurrent streams of one HTTP/2 connection
    assert srv.protocols == ["http/1.1", "h2"]
    assert len(srv.calls(SEND)) == 20 and srv.max_in_flight[2] > 1


def test_connection_is_kept_between_batches(fcm: Fcm) -> None:
    async def body(srv: FakeFcm, backend: FcmBackend) -> None:
        await backend.send_batch([msg(1), msg(2)])
        await backend.send_batch([msg(3)])
        assert backend.connections_opened == 1

    fcm.scenario(body)


def test_token_request_is_a_signed_jwt_grant(fcm: Fcm, rsa_key: Any) -> None:
    srv, _ = fcm.run([msg(1)])
    form = srv.calls(TOKEN)[0].form
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    # google-auth always puts Google's token endpoint in `aud`, whatever token_uri is
    claims = jwt.decode(form["assertion"], rsa_key.public_key(), algorithms=["RS256"],
                        audience="https://oauth2.googleapis.com/token")
    assert claims["iss"] == fcm.service_account["client_email"] and claims["scope"] == SCOPE


def test_token_is_cached_between_batches(fcm: Fcm) -> None:
    async def body(srv: FakeFcm, backend: FcmBackend) -> FakeFcm:
        await backend.send_batch([msg(1)])
        await backend.send_batch([msg(2)])
        return srv

    srv = fcm.scenario(body)
    assert len(srv.calls(TOKEN)) == 1 and len(srv.calls(SEND)) == 2


@pytest.mark.parametrize(("responder", "flags"), [
    (fcm_code(404, "UNREGISTERED", "Requested entity was not found."), {"token_invalid": True}),
    (fcm_code(403, "SENDER_ID_MISMATCH", "SenderId mismatch"), {"token_invalid": True}),
    (fcm_code(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token"),
     {"token_invalid": True}),
    (fcm_error(400, "INVALID_ARGUMENT", "Invalid value", [
        {"@type": "type.googleapis.com/google.rpc.BadRequest",
         "fieldViolations": [{"field": "message.token", "description": "Invalid token"}]}]),
     {"token_invalid": True}),
    (fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.data[0].value' (TYPE_STRING), 12", [
        {"@type": "type.googleapis.com/google.rpc.BadRequest",
         "fieldViolations": [{"field": "message.data[0].value", "description": "Invalid value"}]}]),
     {"payload_error": True}),
    (fcm_code(401, "THIRD_PARTY_AUTH_ERROR", "APNs certificate invalid"), {"channel_error": True}),
], ids=["unregistered", "sender-mismatch", "invalid-token", "token-field", "payload", "third-party-auth"])
def test_per_token_errors(fcm: Fcm, responder: Responder, flags: dict[str, bool]) -> None:
    srv, results = fcm.run([msg(1, "bad"), msg(2)], by_token({"bad": responder}))
    res = by_id(results)
    assert res[2].ok
    bad = res[1]
    assert not bad.ok and not bad.retryable
    for name in ("token_invalid", "payload_error", "channel_error"):
        assert getattr(bad, name) == flags.get(name, False), name
    assert len(srv.calls(TOKEN)) == 1  # no refresh for per-token errors (even 401/403 ones)


def test_retryable_errors_with_retry_after(fcm: Fcm) -> None:
    when = formatdate(time.time() + 120, usegmt=True)
    table = {
        "quota": fcm_code(429, "QUOTA_EXCEEDED", "quota", headers={"Retry-After": "30"}),
        "unavail": fcm_code(503, "UNAVAILABLE", "overloaded", headers={"Retry-After": when}),
        "internal": fcm_code(500, "INTERNAL", "oops"),
        "gateway": html_page(502),
    }
    _, results = fcm.run([msg(1, "quota"), msg(2, "unavail"), msg(3, "internal"), msg(4, "gateway")],
                         by_token(table))
    res = by_id(results)
    assert all(r.retryable and not r.token_invalid for r in results)
    assert res[1].error_code == "QUOTA_EXCEEDED" and res[1].retry_after == 30
    assert res[2].error_code == "UNAVAILABLE" and 100 < (res[2].retry_after or 0) <= 120
    assert res[3].error_code == "INTERNAL" and res[3].retry_after is None
    assert res[4].error_code == "HTTP_502"


def test_401_forces_exactly_one_token_refresh(fcm: Fcm) -> None:
    unauth = fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
    srv, results = fcm.run([msg(1)], unauth, sent)
    assert results[0].ok
    assert len(srv.calls(TOKEN)) == 2
    sends = srv.calls(SEND)
    assert [r.headers["Authorization"] for r in sends] == ["Bearer tok-1", "Bearer tok-2"]


def test_second_401_raises_channel_auth_error(fcm: Fcm) -> None:
    unauth = fcm_error(401, "UNAUTHENTICATED", "invalid credentials")
    srv_box: list[FakeFcm] = []

    async def body(srv: FakeFcm, backend: FcmBackend) -> None:
        srv_box.append(srv)
        srv.route("POST", SEND, unauth)
        await backend.send_batch([msg(1), msg(2)])

    with pytest.raises(ChannelAuthError):
        fcm.scenario(body)
    assert len(srv_box[0].calls(TOKEN)) == 2 and len(srv_box[0].calls(SEND)) == 4


def test_403_permission_denied_after_partial_success_is_data(fcm: Fcm) -> None:
    denied = fcm_error(403, "PERMISSION_DENIED", "caller lacks permission")
    _, results = fcm.run([msg(1, "denied"), msg(2)], by_token({"denied": denied}))
    res = by_id(results)
    assert res[2].ok
    assert res[1].channel_error and res[1].error_code == "UNAUTHENTICATED" and not res[1].token_invalid


def test_token_endpoint_refusal_raises_channel_auth_error(fcm: Fcm) -> None:
    refused = reply({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, status=400)
    with pytest.raises(ChannelAuthError, match="invalid_grant"):
        fcm.run([msg(1)], token=refused)


def test_token_endpoint_unreachable_raises_provider_unavailable(service_account: dict[str, Any]) -> None:
    async def scenario() -> None:
        backend = FcmBackend(service_account, ProviderOptions(endpoint=free_port_url(),
                                                              auth_endpoint=free_port_url() + TOKEN))
        try:
            await backend.send_batch([msg(1)])
        finally:
            await backend.close()

    with pytest.raises(ProviderUnavailable):
        asyncio.run(scenario())


def test_unusable_service_account(service_account: dict[str, Any]) -> None:
    broken = {k: v for k, v in service_account.items() if k != "private_key"}
    backend = FcmBackend(broken)
    with pytest.raises(ChannelAuthError, match="unusable"):
        asyncio.run(backend.send_batch([msg(1)]))
    assert "PRIVATE" not in repr(FcmBackend(service_account))


def test_service_account_json_string_under_a_key(fcm: Fcm) -> None:
    import json

    wrapped = {"service_account_json": json.dumps(fcm.service_account)}
    _, results = fcm.run([msg(1)], credentials=wrapped)
    assert results[0].ok


def test_timeout_of_one_request_is_retryable(fcm: Fcm) -> None:
    _, results = fcm.run([msg(1, "slow"), msg(2)], by_token({"slow": sleep(3)}), timeout=0.3)
    res = by_id(results)
    assert res[2].ok
    assert res[1].retryable and res[1].error_code == "TIMEOUT"


def test_timeout_of_whole_batch_raises_provider_unavailable(fcm: Fcm) -> None:
    with pytest.raises(ProviderUnavailable):
        fcm.run([msg(1), msg(2)], sleep(3), timeout=0.3)


def test_stream_reset_is_retryable(fcm: Fcm) -> None:
    srv, results = fcm.run([msg(1, "reset"), msg(2)], by_token({"reset": reset_stream()}))
    res = by_id(results)
    assert res[2].ok
    assert res[1].retryable and res[1].error_code == "CONNECTION_ERROR" and "reset" in (res[1].error or "")
    assert len(srv.calls(SEND)) == 2  # reset after the server saw it: not resent at once (it may have acted)


def test_connection_reset_is_retryable(fcm: Fcm) -> None:
    srv, results = fcm.run([msg(1, "drop"), msg(2)], by_token({"drop": drop_connection(after=0.2)}))
    res = by_id(results)
    assert res[2].ok  # answered before the connection went
    assert res[1].retryable and res[1].error_code == "CONNECTION_ERROR"


def test_goaway_resends_the_refused_stream_on_a_new_connection(fcm: Fcm) -> None:
    srv, results = fcm.run([msg(1, "first")], goaway(), sent)
    assert results[0].ok
    assert [r.json["message"]["token"] for r in srv.calls(SEND)] == ["first", "first"]
    assert srv.protocols.count("h2") == 2


def test_server_stream_limit_is_respected(fcm: Fcm) -> None:
    srv, results = fcm.run([msg(i) for i in range(12)], sleep(0.05, sent), concurrency=8,
                           fake={"max_streams": 2})
    assert all(r.ok for r in results) and len(srv.calls(SEND)) == 12
    assert max(srv.max_in_flight.values()) <= 2  # SETTINGS_MAX_CONCURRENT_STREAMS of each connection
    assert 2 <= srv.protocols.count("h2") <= 4  # more connections only because each takes 2 streams


def test_provider_unreachable_raises(fcm: Fcm) -> None:
    async def scenario() -> None:
        async with FakeFcm(fcm.tls) as srv:
            srv.route("POST", TOKEN, token_ok())
            nobody = free_port_url().replace("http:", "https:")
            backend = FcmBackend(fcm.service_account, fcm.options(srv, endpoint=nobody))
            try:
                await backend.send_batch([msg(1), msg(2), msg(3)])
            finally:
                await backend.close()

    with pytest.raises(ProviderUnavailable, match="could not be reached"):
        asyncio.run(scenario())


def test_untrusted_certificate_is_refused_unless_configured(fcm: Fcm) -> None:
    async def scenario(**options: Any) -> list[SendResult]:
        # the token endpoint is plain HTTP here, so only the trust of the FCM endpoint varies
        async with FakeFcm(fcm.tls) as srv, FakeServer() as oauth:
            oauth.route("POST", TOKEN, token_ok())
            srv.route("POST", SEND, sent)
            backend = FcmBackend(fcm.service_account, fcm.options(srv, auth_endpoint=oauth.url + TOKEN, **options))
            try:
                return await backend.send_batch([msg(1)])
            finally:
                await backend.close()

    with pytest.raises(ProviderUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(scenario(ca_file=None))
    assert asyncio.run(scenario(ca_file=None, verify_tls=False))[0].ok
    assert asyncio.run(scenario())[0].ok


@pytest.mark.parametrize("responder", [html_page(200), truncated_json(200), reply({"unexpected": 1}),
                                       html_page(400)], ids=["html", "truncated", "no-name", "html-400"])
def test_malformed_answers_are_retryable(fcm: Fcm, responder: Responder) -> None:
    _, results = fcm.run([msg(1, "odd"), msg(2)], by_token({"odd": responder}))
    res = by_id(results)
    assert res[2].ok
    assert res[1].retryable and res[1].error_code == "MALFORMED_RESPONSE"
    assert "malformed answer" in (res[1].error or "")


def test_concurrency_is_bounded(fcm: Fcm) -> None:
    state: dict[str, int] = {}
    _, results = fcm.run([msg(i) for i in range(10)], counting(sleep(0.05, sent), state), concurrency=3)
    assert all(r.ok for r in results) and len(results) == 10
    assert state["max"] <= 3


def test_http11_when_the_server_offers_no_http2(fcm: Fcm) -> None:
    messages = [msg(1, title="Hi", ttl=60), msg(2)]
    srv, results = fcm.run(messages, fake={"h2": False})
    assert all(r.ok for r in results)
    assert set(srv.protocols) == {"http/1.1"}
    first = next(r for r in srv.calls(SEND) if r.json["message"]["token"] == "tok1")
    assert first.headers["Authorization"] == "Bearer tok-1"
    assert first.json["message"]["android"] == {"priority": "high", "ttl": "60s",
                                                "notification": {"tag": messages[0].uuid}}


def test_plain_http_endpoint_uses_the_shared_session_and_leaves_it_open(service_account: dict[str, Any]) -> None:
    async def scenario() -> bool:
        async with FakeServer() as srv, aiohttp.ClientSession() as session:
            srv.route("POST", TOKEN, token_ok())
            srv.route("POST", SEND, sent)
            opts = ProviderOptions(endpoint=srv.url, auth_endpoint=srv.url + TOKEN)
            backend = FcmBackend(service_account, opts, session=session)
            results = await backend.send_batch([msg(1)])
            await backend.close()
            return results[0].ok and not session.closed and len(srv.calls(SEND)) == 1

    assert asyncio.run(scenario())


def test_empty_batch_sends_nothing(fcm: Fcm) -> None:
    srv, results = fcm.run([])
    assert results == [] and srv.requests == []


def _check(fcm: Fcm, responder: Responder) -> tuple[FakeFcm, Any]:
    async def body(srv: FakeFcm, backend: FcmBackend) -> tuple[FakeFcm, Any]:
        srv.route("POST", SEND, responder)
        return srv, await backend.test_connection()

    return fcm.scenario(body)


def test_connection_check_ok_on_invalid_dummy_token(fcm: Fcm) -> None:
    text = "The registration token is not a valid FCM registration token"
    srv, check = _check(fcm, fcm_code(400, "INVALID_ARGUMENT", text))
    assert check.ok and "demo-proj" in check.message
    body = srv.calls(SEND)[0].json
    assert body["validate_only"] is True and body["message"]["token"]


def test_connection_check_reports_refusal(fcm: Fcm) -> None:
    _, check = _check(fcm, fcm_error(403, "PERMISSION_DENIED", "FCM API not enabled"))
    assert not check.ok and "refused" in check.message


def test_connection_check_reports_token_failure(service_account: dict[str, Any]) -> None:
    async def scenario() -> Any:
        backend = FcmBackend(service_account, ProviderOptions(auth_endpoint=free_port_url() + TOKEN))
        try:
            return await backend.test_connection()
        finally:
            await backend.close()

    check = asyncio.run(scenario())
    assert not check.ok and "token" in check.message.lower()


def _token(access_token: str, expires_in: int) -> Responder:
    """One OAuth2 token answer."""
    return reply({"access_token": access_token, "expires_in": expires_in, "token_type": "Bearer"})


def _batches(fcm: Fcm, count: int, *token_answers: Responder) -> FakeFcm:
    """Send `count` one-message batches through one backend whose token endpoint answers token_answers in turn."""

    async def body(srv: FakeFcm, backend: FcmBackend) -> FakeFcm:
        srv.route("POST", TOKEN, *token_answers)
        for i in range(count):
            assert (await backend.send_batch([msg(i)]))[0].ok
        return srv

    return fcm.scenario(body)


def test_token_is_renewed_renew_early_seconds_before_it_expires(fcm: Fcm) -> None:
    # A token with RENEW_EARLY seconds left is renewed although it has not expired yet; one with a minute more is
    # kept. (No clock is faked: google-auth's expiry and our deadline are both computed from expires_in.)
    srv = _batches(fcm, 3, _token("short", int(fcm_module.RENEW_EARLY)), _token("long", 3600))
    assert len(srv.calls(TOKEN)) == 2
    assert [r.headers["Authorization"] for r in srv.calls(SEND)] == ["Bearer short", "Bearer long", "Bearer long"]
    srv = _batches(fcm, 3, _token("roomy", int(fcm_module.RENEW_EARLY) + 60))
    assert len(srv.calls(TOKEN)) == 1
    assert {r.headers["Authorization"] for r in srv.calls(SEND)} == {"Bearer roomy"}


@pytest.mark.parametrize(("delay", "expected"), [("30s", 30.0), ("1.5s", 1.5)])
def test_retry_delay_from_google_rpc_retry_info(fcm: Fcm, delay: str, expected: float) -> None:
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
    quota = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "QUOTA_EXCEEDED"}
    limited = fcm_error(429, "RESOURCE_EXHAUSTED", "quota exceeded", [quota, retry_info])  # no Retry-After header
    _, results = fcm.run([msg(1, "limited"), msg(2)], by_token({"limited": limited}))
    res = by_id(results)
    assert res[2].ok
    assert res[1].retryable and res[1].error_code == "QUOTA_EXCEEDED" and res[1].retry_after == expected


def test_404_without_unregistered_is_a_channel_error_not_a_dead_token(fcm: Fcm) -> None:
    missing = fcm_error(404, "NOT_FOUND", "Requested entity was not found.")  # no FcmError detail
    _, results = fcm.run([msg(1, "x"), msg(2)], by_token({"x": missing}))
    res = by_id(results)
    assert res[2].ok
    bad = res[1]
    assert bad.error_code == "NOT_FOUND" and bad.channel_error
    assert not bad.token_invalid and not bad.payload_error and not bad.retryable


def test_refused_token_renewal_after_successes_keeps_the_successes(fcm: Fcm) -> None:
    unauth = fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
    refused = reply({"error": "invalid_grant", "error_description": "account deleted"}, status=400)

    async def body(srv: FakeFcm, backend: FcmBackend) -> list[SendResult]:
        srv.route("POST", TOKEN, _token("first", 3600), refused)
        srv.route("POST", SEND, by_token({"stale": unauth}))
        return await backend.send_batch([msg(1), msg(2, "stale"), msg(3)])

    res = by_id(fcm.scenario(body))
    assert res[1].ok and res[3].ok  # delivered: raising would have made the engine send them again
    assert res[2].channel_error and res[2].error_code == "UNAUTHENTICATED" and not res[2].retryable
    assert "invalid_grant" in (res[2].error or "")


def test_unreachable_token_renewal_after_successes_is_retryable(fcm: Fcm) -> None:
    unauth = fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")

    async def body(srv: FakeFcm, backend: FcmBackend) -> list[SendResult]:
        srv.route("POST", TOKEN, _token("first", 3600), reset())
        srv.route("POST", SEND, by_token({"stale": unauth}))
        return await backend.send_batch([msg(1), msg(2, "stale")])

    res = by_id(fcm.scenario(body))
    assert res[1].ok
    assert res[2].retryable and res[2].error_code == "UNAVAILABLE" and not res[2].channel_error


def test_refused_token_renewal_without_successes_raises(fcm: Fcm) -> None:
    unauth = fcm_error(401, "UNAUTHENTICATED", "invalid credentials")
    refused = reply({"error": "invalid_grant", "error_description": "account deleted"}, status=400)

    async def body(srv: FakeFcm, backend: FcmBackend) -> None:
        srv.route("POST", TOKEN, _token("first", 3600), refused)
        srv.route("POST", SEND, unauth)
        await backend.send_batch([msg(1), msg(2)])

    with pytest.raises(ChannelAuthError, match="invalid_grant"):
        fcm.scenario(body)
