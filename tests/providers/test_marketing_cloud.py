"""Marketing Cloud MobilePush backend against a local fake auth + push/v1 server."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

import pytest

from webadmin.providers import marketing_cloud
from webadmin.providers.base import (
    ChannelAuthError,
    ProviderOptions,
    ProviderUnavailable,
    PushMessage,
    SendResult,
)
from webadmin.providers.marketing_cloud import ContactLedger, MarketingCloudBackend

from .fakes import (
    FakeServer,
    Recorded,
    Responder,
    dispatch,
    free_port_url,
    html_page,
    reply,
    reset,
    sleep,
    truncated_json,
)

MESSAGE_ID = "MTIzOjExNDow"
CONTACT = f"/push/v1/messageContact/{MESSAGE_ID}/send"
APP = f"/push/v1/messageApp/{MESSAGE_ID}/send"
V2 = "/v2/token"
LEGACY = "/v1/requestToken"
CREDS = {"client_id": "cid-1", "client_secret": "mc-secret", "message_id": MESSAGE_ID, "auth_mode": "v2"}


def msg(i: int, key: str | None = None, campaign: str = "camp-1", **kw: Any) -> PushMessage:
    """A Marketing Cloud push message (recipient = subscriber key)."""
    return PushMessage(message_id=i, uuid=str(uuid.uuid4()), token=f"dev-{i}", platform="ios",
                       body=kw.pop("body", "Exclusive offer"), recipient=key if key is not None else f"k{i}",
                       campaign_uuid=campaign, **kw)


def v2_token(rest_url: str | None = None) -> Responder:
    """v2/token answering tok-1, tok-2, … (rest_instance_url points back at the fake)."""
    counter = {"n": 0}

    def responder(rec: Recorded) -> Any:
        counter["n"] += 1
        assert rec.request is not None
        rest = rest_url or f"http://{rec.request.host}/"
        return reply({"access_token": f"tok-{counter['n']}", "token_type": "Bearer", "expires_in": 1079,
                      "scope": "push_send", "rest_instance_url": rest})(rec)

    return responder


def accepted(rec: Recorded) -> Any:
    """202 with a tokenId, as the push/v1 send endpoints answer."""
    return reply({"tokenId": f"job-{len((rec.json or {}).get('subscriberKeys', []))}"}, status=202)(rec)


def by_first_key(table: dict[str, Responder], default: Responder = accepted) -> Responder:
    """Answer according to the first subscriber key of the request."""
    return dispatch(lambda rec: rec.json["subscriberKeys"][0], table, default)


async def run_batch(messages: list[PushMessage], *send: Responder, token: Responder | None = None,
                    creds: dict[str, Any] | None = None,
                    **options: Any) -> tuple[FakeServer, list[SendResult]]:
    """Send a batch through a fresh backend against a fresh fake (auth and REST on the same fake)."""
    async with FakeServer() as srv:
        srv.route("POST", V2, token or v2_token())
        srv.route("POST", CONTACT, *(send or (accepted,)))
        opts = ProviderOptions(auth_endpoint=srv.url, **{"timeout": 2.0, "batch_size": 5_000} | options)
        backend = MarketingCloudBackend(creds or CREDS, opts)
        try:
            return srv, await backend.send_batch(messages)
        finally:
            await backend.close()


def by_id(results: list[SendResult]) -> dict[int, SendResult]:
    """Results keyed by message id (and exactly one per message)."""
    out = {r.message_id: r for r in results}
    assert len(out) == len(results)
    return out


def test_success_v2_auth_and_payload() -> None:
    same = {"title": "Nibs", "open_direct": "offer/42"}
    messages = [msg(1, **same), msg(2, **same), msg(3, "k1", **same)]  # k1 has two devices
    srv, results = asyncio.run(run_batch(messages))
    res = by_id(results)
    assert all(r.ok for r in results) and res[1].provider_message_id == res[3].provider_message_id == "job-2"
    token_call = srv.calls(V2)[0]
    assert token_call.json == {"grant_type": "client_credentials", "client_id": "cid-1",
                               "client_secret": "mc-secret"}
    send = srv.calls(CONTACT)[0]
    assert send.headers["Authorization"] == "Bearer tok-1"
    assert send.headers["Content-Type"].startswith("application/json")
    assert send.json == {"subscriberKeys": ["k1", "k2"], "override": True, "messageText": "Exclusive offer",
                         "title": "Nibs", "openDirect": "offer/42"}


def test_distinct_keys_are_chunked_by_5000() -> None:
    n = 12_001
    messages = [msg(i) for i in range(n)] + [msg(n + 1, "k0"), msg(n + 2, "k5")]  # repeated keys
    srv, results = asyncio.run(run_batch(messages))
    assert len(results) == n + 2 and all(r.ok for r in results)
    calls = srv.calls(CONTACT)
    assert len(calls) == math.ceil(n / 5_000)
    sizes = sorted(len(c.json["subscriberKeys"]) for c in calls)
    assert sizes == [2_001, 5_000, 5_000]
    assert sum(len(set(c.json["subscriberKeys"])) for c in calls) == n


def test_campaigns_are_separate_requests() -> None:
    messages = [msg(1), msg(2, campaign="camp-2", body="Other"), msg(3)]
    srv, _ = asyncio.run(run_batch(messages))
    assert sorted(c.json["messageText"] for c in srv.calls(CONTACT)) == ["Exclusive offer", "Other"]


def test_legacy_auth() -> None:
    async def scenario() -> tuple[FakeServer, list[SendResult]]:
        async with FakeServer() as srv:
            srv.route("POST", LEGACY, reply({"accessToken": "legacy-tok", "expiresIn": 3600}))
            srv.route("POST", CONTACT, accepted)
            creds = CREDS | {"auth_mode": "legacy"}
            backend = MarketingCloudBackend(creds, ProviderOptions(auth_endpoint=srv.url, endpoint=srv.url))
            try:
                return srv, await backend.send_batch([msg(1)])
            finally:
                await backend.close()

    srv, results = asyncio.run(scenario())
    assert results[0].ok
    assert srv.calls(LEGACY)[0].json == {"clientId": "cid-1", "clientSecret": "mc-secret"}
    assert srv.calls(CONTACT)[0].headers["Authorization"] == "Bearer legacy-tok"


def test_token_cache_is_shared_between_instances() -> None:
    async def scenario() -> FakeServer:
        async with FakeServer() as srv:
            srv.route("POST", V2, v2_token())
            srv.route("POST", CONTACT, accepted)
            for i in range(2):
                backend = MarketingCloudBackend(CREDS, ProviderOptions(auth_endpoint=srv.url))
                try:
                    await backend.send_batch([msg(i)])
                finally:
                    await backend.close()
            return srv

    srv = asyncio.run(scenario())
    assert len(srv.calls(V2)) == 1 and len(srv.calls(CONTACT)) == 2


@pytest.mark.parametrize("refusal", [reply({"message": "Not Authorized", "errorcode": 1}, status=401),
                                     reply({"message": "Not Authorized"}, status=200)],
                         ids=["401", "seed-body"])
def test_refusal_forces_exactly_one_token_refresh(refusal: Responder) -> None:
    srv, results = asyncio.run(run_batch([msg(1)], refusal, accepted))
    assert results[0].ok
    assert len(srv.calls(V2)) == 2
    assert [c.headers["Authorization"] for c in srv.calls(CONTACT)] == ["Bearer tok-1", "Bearer tok-2"]


def test_second_refusal_raises_channel_auth_error() -> None:
    refusal = reply({"message": "Not Authorized"}, status=401)
    with pytest.raises(ChannelAuthError):
        asyncio.run(run_batch([msg(1), msg(2)], refusal))


def test_token_refused_raises_channel_auth_error() -> None:
    refused = reply({"error": "invalid_client", "error_description": "Client authentication failed."},
                    status=401)
    with pytest.raises(ChannelAuthError, match="invalid_client|Client authentication"):
        asyncio.run(run_batch([msg(1)], token=refused))


def test_token_endpoint_overloaded_raises_with_retry_after() -> None:
    busy = reply({"message": "busy"}, status=503, headers={"Retry-After": "42"})
    with pytest.raises(ProviderUnavailable) as info:
        asyncio.run(run_batch([msg(1)], token=busy))
    assert info.value.retry_after == 42


def test_token_endpoint_malformed_raises_provider_unavailable() -> None:
    with pytest.raises(ProviderUnavailable, match="malformed"):
        asyncio.run(run_batch([msg(1)], token=html_page(200)))


def test_auth_unreachable_raises_provider_unavailable() -> None:
    async def scenario() -> None:
        backend = MarketingCloudBackend(CREDS, ProviderOptions(auth_endpoint=free_port_url()))
        try:
            await backend.send_batch([msg(1)])
        finally:
            await backend.close()

    with pytest.raises(ProviderUnavailable):
        asyncio.run(scenario())


def test_rate_limit_and_server_errors_are_retryable() -> None:
    table = {"k0": reply({"message": "Too many"}, status=429, headers={"Retry-After": "9"}),
             "k2": html_page(500)}
    _, results = asyncio.run(run_batch([msg(i) for i in range(6)], by_first_key(table), batch_size=2))
    res = by_id(results)
    assert res[0].retryable and res[0].retry_after == 9 and res[1].retry_after == 9
    assert res[2].retryable and res[2].error_code == "HTTP_500" and res[2].retry_after is None
    assert res[4].ok and res[5].ok


def test_bad_request_and_unknown_message() -> None:
    table = {"k0": reply({"message": "messageText is required", "errorcode": 10001}, status=400),
             "k2": reply({"message": "Message not found", "errorcode": 10002}, status=404)}
    _, results = asyncio.run(run_batch([msg(i) for i in range(4)], by_first_key(table), batch_size=2))
    res = by_id(results)
    assert res[0].payload_error and not res[0].retryable and res[0].error == "messageText is required"
    assert res[2].channel_error and not res[2].retryable


def test_timeout_and_reset_are_retryable() -> None:
    table = {"k0": sleep(3), "k2": reset()}
    _, results = asyncio.run(run_batch([msg(i) for i in range(6)], by_first_key(table), batch_size=2,
                                       timeout=0.3))
    res = by_id(results)
    assert res[0].error_code == "TIMEOUT" and res[0].retryable
    assert res[2].error_code == "CONNECTION_ERROR" and res[2].retryable
    assert res[4].ok


def test_timeout_of_every_request_raises_provider_unavailable() -> None:
    with pytest.raises(ProviderUnavailable):
        asyncio.run(run_batch([msg(1)], sleep(3), timeout=0.3))


@pytest.mark.parametrize("responder", [html_page(200), truncated_json(202), reply({"ok": True}, status=202),
                                       html_page(400)], ids=["html", "truncated", "no-token-id", "html-400"])
def test_malformed_answers_are_retryable(responder: Responder) -> None:
    _, results = asyncio.run(run_batch([msg(1)], responder))
    assert results[0].retryable and results[0].error_code == "MALFORMED_RESPONSE"


def test_message_without_subscriber_key() -> None:
    srv, results = asyncio.run(run_batch([msg(1, key=""), msg(2)]))
    res = by_id(results)
    # a final failure, but not a payload error: anonymous devices must not make the engine pause the campaign
    assert res[1].error_code == "NO_SUBSCRIBER_KEY" and not res[1].ok
    assert not (res[1].payload_error or res[1].retryable or res[1].token_invalid or res[1].channel_error)
    assert res[2].ok and srv.calls(CONTACT)[0].json["subscriberKeys"] == ["k2"]


def test_send_to_app() -> None:
    async def scenario() -> tuple[FakeServer, SendResult]:
        async with FakeServer() as srv:
            srv.route("POST", V2, v2_token())
            srv.route("POST", APP, reply({"tokenId": "app-job"}, status=202))
            backend = MarketingCloudBackend(CREDS, ProviderOptions(auth_endpoint=srv.url))
            try:
                return srv, await backend.send_to_app(msg(7, key="", title="All"))
            finally:
                await backend.close()

    srv, result = asyncio.run(scenario())
    assert result.ok and result.provider_message_id == "app-job" and result.message_id == 7
    assert srv.calls(APP)[0].json == {"override": True, "messageText": "Exclusive offer", "title": "All"}


async def _app_send(*answers: Responder, rest: str | None = None, timeout: float = 2.0) -> tuple[FakeServer, Any]:
    """send_to_app through a fresh backend: its result, or the ProviderError it raised."""
    async with FakeServer() as srv:
        srv.route("POST", V2, v2_token(rest))
        srv.route("POST", APP, *answers)
        backend = MarketingCloudBackend(CREDS, ProviderOptions(auth_endpoint=srv.url, timeout=timeout))
        try:
            return srv, await backend.send_to_app(msg(7, key=""))
        except ProviderUnavailable as exc:
            return srv, exc
        finally:
            await backend.close()


@pytest.mark.parametrize(("answer", "code"), [
    (sleep(3), "OUTCOME_UNKNOWN"),  # no answer within the 1 s timeout: it may have gone out
    (reset(), "OUTCOME_UNKNOWN"),  # the connection dropped after the request was written
    (reply({"status": "queued"}, status=202), "OUTCOME_UNKNOWN"),  # accepted, but no tokenId
    (reply({"message": "busy"}, status=503, headers={"Retry-After": "7"}), "HTTP_503"),
    (reply({"message": "messageText is required"}, status=400), "HTTP_400"),
])
def test_send_to_app_never_calls_a_request_that_may_have_gone_out_retryable(answer: Responder, code: str) -> None:
    srv, result = asyncio.run(_app_send(answer, timeout=1.0))
    assert len(srv.calls(APP)) == 1 and result.error_code == code and not result.ok
    assert result.retryable is (code == "HTTP_503")
    if code == "OUTCOME_UNKNOWN":
        assert "not sent again" in result.error
    if code == "HTTP_503":
        assert result.retry_after == 7.0
    if code == "HTTP_400":
        assert result.payload_error


def test_send_to_app_that_cannot_connect_is_unavailable_and_safe_to_retry() -> None:
    _, result = asyncio.run(_app_send(accepted, rest=free_port_url()))  # the REST base nobody listens on
    assert isinstance(result, ProviderUnavailable) and "could not be reached" in str(result)


def test_connection_check() -> None:
    async def scenario(responder: Responder) -> Any:
        async with FakeServer() as srv:
            srv.route("POST", V2, v2_token())
            srv.route("GET", f"/push/v1/message/{MESSAGE_ID}", responder)
            backend = MarketingCloudBackend(CREDS, ProviderOptions(auth_endpoint=srv.url))
            try:
                return await backend.test_connection()
            finally:
                await backend.close()

    assert asyncio.run(scenario(reply([{"id": MESSAGE_ID, "name": "Offer"}]))).ok
    check = asyncio.run(scenario(reply({"message": "Message not found"}, status=404)))
    assert not check.ok and "not found" in check.message
    assert "mc-secret" not in repr(MarketingCloudBackend(CREDS))


# ---- legacy v1/requestToken authentication (the seed's)

LEGACY_CREDS = CREDS | {"auth_mode": "legacy"}


def legacy_tokens(*names: str, expires_in: int = 3600) -> list[Responder]:
    """v1/requestToken answers handing out the given tokens in turn."""
    return [reply({"accessToken": name, "expiresIn": expires_in}) for name in names]


async def legacy_batches(token_answers: list[Responder], batches: list[list[PushMessage]], *send: Responder,
                         creds: list[dict[str, Any]] | None = None) -> tuple[FakeServer, list[list[SendResult]]]:
    """Send each batch through its own legacy-auth backend (creds[i], default LEGACY_CREDS) against one fake."""
    async with FakeServer() as srv:
        srv.route("POST", LEGACY, *token_answers)
        srv.route("POST", CONTACT, *(send or (accepted,)))
        out = []
        for i, batch in enumerate(batches):
            backend = MarketingCloudBackend((creds or [])[i] if creds else LEGACY_CREDS,
                                            ProviderOptions(auth_endpoint=srv.url, endpoint=srv.url, timeout=2.0))
            try:
                out.append(await backend.send_batch(batch))
            finally:
                await backend.close()
        return srv, out


@pytest.mark.parametrize("refusal", [reply({"message": "Not Authorized"}, status=401),
                                     reply({"message": "Not Authorized"}, status=200)], ids=["401", "seed-body"])
def test_legacy_refusal_renews_the_token_once(refusal: Responder) -> None:
    srv, [results] = asyncio.run(legacy_batches(legacy_tokens("old", "new"), [[msg(1)]], refusal, accepted))
    assert results[0].ok
    assert [c.json for c in srv.calls(LEGACY)] == [{"clientId": "cid-1", "clientSecret": "mc-secret"}] * 2
    assert [c.headers["Authorization"] for c in srv.calls(CONTACT)] == ["Bearer old", "Bearer new"]


def test_legacy_token_is_cached_per_client_id() -> None:
    other = LEGACY_CREDS | {"client_id": "cid-2"}
    srv, results = asyncio.run(legacy_batches(legacy_tokens("one", "two"), [[msg(1)], [msg(2)], [msg(3)]],
                                              creds=[LEGACY_CREDS, LEGACY_CREDS, other]))
    assert all(r.ok for batch in results for r in batch)
    assert [c.json["clientId"] for c in srv.calls(LEGACY)] == ["cid-1", "cid-2"]  # cid-1's token was reused
    assert [c.headers["Authorization"] for c in srv.calls(CONTACT)] == ["Bearer one", "Bearer one", "Bearer two"]


def test_legacy_token_is_renewed_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"now": 1_000.0}
    monkeypatch.setattr(marketing_cloud, "_clock", lambda: clock["now"])

    async def scenario() -> FakeServer:
        async with FakeServer() as srv:
            srv.route("POST", LEGACY, *legacy_tokens("first", "second"))
            srv.route("POST", CONTACT, accepted)
            backend = MarketingCloudBackend(LEGACY_CREDS, ProviderOptions(auth_endpoint=srv.url, endpoint=srv.url))
            try:
                for at in (1_000.0, 1_000.0 + 3_299, 1_000.0 + 3_300, 1_000.0 + 3_301):
                    clock["now"] = at  # expiresIn 3600: renewed 300 s before it runs out
                    assert (await backend.send_batch([msg(int(at))]))[0].ok
            finally:
                await backend.close()
            return srv

    srv = asyncio.run(scenario())
    assert len(srv.calls(LEGACY)) == 2
    assert [c.headers["Authorization"] for c in srv.calls(CONTACT)] == \
        ["Bearer first", "Bearer first", "Bearer second", "Bearer second"]


@pytest.mark.parametrize("answer", [reply({"expiresIn": 3600}), reply({"access_token": "v2-shaped"}),
                                    html_page(200)], ids=["no-token", "v2-field", "html"])
def test_legacy_token_answer_without_access_token_is_malformed(answer: Responder) -> None:
    with pytest.raises(ProviderUnavailable, match="malformed token answer"):
        asyncio.run(legacy_batches([answer], [[msg(1)]]))


def test_legacy_refused_secret_raises_channel_auth_error() -> None:
    refused = reply({"message": "Unauthorized", "errorcode": 1, "documentation": ""}, status=401)
    with pytest.raises(ChannelAuthError, match="refused the client id/secret"):
        asyncio.run(legacy_batches([refused], [[msg(1)]]))


def test_accepted_chunk_survives_a_refused_renewal() -> None:
    stale = reply({"message": "Not Authorized"}, status=401)
    refused = reply({"message": "Unauthorized"}, status=401)

    async def scenario() -> tuple[FakeServer, list[SendResult]]:
        async with FakeServer() as srv:
            srv.route("POST", LEGACY, *legacy_tokens("old"), refused)
            srv.route("POST", CONTACT, by_first_key({"k2": stale}))
            options = ProviderOptions(auth_endpoint=srv.url, endpoint=srv.url, batch_size=2, timeout=2.0)
            backend = MarketingCloudBackend(LEGACY_CREDS, options)
            try:
                return srv, await backend.send_batch([msg(i) for i in range(4)])
            finally:
                await backend.close()

    srv, results = asyncio.run(scenario())
    res = by_id(results)
    assert res[0].ok and res[1].ok  # delivered by the first chunk: not to be sent again
    assert all(res[i].channel_error and res[i].error_code == "UNAUTHENTICATED" for i in (2, 3))
    assert len(srv.calls(LEGACY)) == 2 and len(srv.calls(CONTACT)) == 2


# ---- one send per subscriber key and campaign (messageContact reaches every device of a contact)

ANDROID_CREDS = CREDS
IOS_CREDS = CREDS | {}  # the iOS channel of the same MobilePush app: same client id and message


async def channels(*batches: tuple[dict[str, Any], list[PushMessage]], concurrent: bool = False,
                   send: Responder = accepted) -> tuple[FakeServer, list[list[SendResult]]]:
    """Send batches through one backend per batch (like the engine's per-platform routes), in turn or at once."""
    async with FakeServer() as srv:
        srv.route("POST", V2, v2_token())
        srv.route("POST", CONTACT, send)
        backends = [MarketingCloudBackend(creds, ProviderOptions(auth_endpoint=srv.url, timeout=2.0))
                    for creds, _ in batches]
        try:
            if concurrent:
                out = list(await asyncio.gather(*(b.send_batch(m) for b, (_, m) in zip(backends, batches,
                                                                                      strict=True))))
            else:
                out = [await b.send_batch(m) for b, (_, m) in zip(backends, batches, strict=True)]
        finally:
            for backend in backends:
                await backend.close()
        return srv, out


def sent_keys(srv: FakeServer) -> list[str]:
    """Every subscriber key the fake received, in order."""
    return [k for c in srv.calls(CONTACT) for k in c.json["subscriberKeys"]]


def test_a_key_is_sent_once_per_campaign_across_platform_channels_and_batches() -> None:
    android = [msg(1, "anna"), msg(2, "ben")]
    ios = [msg(3, "anna"), msg(4, "cleo")]  # anna's iPhone: her Android send already reached it
    later = [msg(5, "ben")]  # ben's second device in a later batch
    srv, (first, second, third) = asyncio.run(channels((ANDROID_CREDS, android), (IOS_CREDS, ios),
                                                       (ANDROID_CREDS, later)))
    assert sent_keys(srv) == ["anna", "ben", "cleo"]
    assert all(r.ok for r in first + second + third)
    ids = {r.message_id: r.provider_message_id for r in first + second + third}
    assert ids[3] == ids[1] and ids[5] == ids[2]  # recorded as sent by the request that reached them


def test_the_same_key_in_another_campaign_or_message_definition_is_sent() -> None:
    other_app = CREDS | {"message_id": "T3RoZXI6MTox"}
    other_path = "/push/v1/messageContact/T3RoZXI6MTox/send"

    async def scenario() -> FakeServer:
        async with FakeServer() as srv:
            srv.route("POST", V2, v2_token())
            srv.route("POST", CONTACT, accepted)
            srv.route("POST", other_path, accepted)
            for creds, message in ((CREDS, msg(1, "anna")), (CREDS, msg(2, "anna", campaign="camp-2")),
                                   (other_app, msg(3, "anna"))):
                backend = MarketingCloudBackend(creds, ProviderOptions(auth_endpoint=srv.url))
                try:
                    assert (await backend.send_batch([message]))[0].ok
                finally:
                    await backend.close()
            return srv

    srv = asyncio.run(scenario())
    assert len(srv.calls(CONTACT)) == 2 and len(srv.calls(other_path)) == 1


def test_a_key_in_flight_on_the_other_channel_waits_for_it() -> None:
    android, ios = [msg(1, "anna"), msg(2, "ben")], [msg(3, "anna")]
    srv, (first, second) = asyncio.run(channels((ANDROID_CREDS, android), (IOS_CREDS, ios), concurrent=True,
                                                send=sleep(0.2, accepted)))
    assert sent_keys(srv) == ["anna", "ben"]
    assert all(r.ok for r in first)
    [waiting] = second
    assert waiting.retryable and waiting.error_code == "CONTACT_IN_FLIGHT" and waiting.retry_after == 2.0
    _, [[retried]] = asyncio.run(channels((IOS_CREDS, [msg(3, "anna")])))  # the engine's retry, later
    assert retried.ok and retried.provider_message_id == first[0].provider_message_id


def test_a_failed_send_is_not_remembered() -> None:
    busy = reply({"message": "busy"}, status=503)
    srv, [[failed]] = asyncio.run(channels((CREDS, [msg(1, "anna")]), send=busy))
    assert failed.retryable
    marketing_cloud.clear_token_cache()  # the next fake listens elsewhere (the token names its REST URL)
    srv, [[again]] = asyncio.run(channels((CREDS, [msg(2, "anna")])))
    assert again.ok and sent_keys(srv) == ["anna"]  # sent again: the first attempt reached nobody


def test_the_ledger_forgets_the_oldest_notifications_beyond_its_bound() -> None:
    ledger = ContactLedger(max_keys=3)
    ledger.settle("old", [], {"a": "t1", "b": "t1"})
    ledger.settle("new", [], {"c": "t2", "d": "t2"})
    assert ledger.claim("old", ["a", "b"]) == ({"b": "t1"}, set(), ["a"])  # the oldest key is forgotten
    assert ledger.claim("new", ["c", "d"]) == ({"c": "t2", "d": "t2"}, set(), [])
    ledger.settle("old", ["a"], {})
    ledger.settle("one", [], {str(i): "t" for i in range(5)})  # one notification larger than the bound
    done, _, mine = ledger.claim("one", [str(i) for i in range(5)])
    assert sorted(done) == ["2", "3", "4"] and mine == ["0", "1"]


def test_the_per_message_id_does_not_split_requests() -> None:
    messages = [msg(i, data={"messageId": f"uuid-{i}"}) for i in range(3)]
    srv, results = asyncio.run(run_batch(messages))
    assert [c.json["subscriberKeys"] for c in srv.calls(CONTACT)] == [["k0", "k1", "k2"]]
    assert all(r.ok for r in results)
