"""OneSignal backend against a local fake Create-message endpoint."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

import pytest

from webadmin.providers import create_backend, default_options
from webadmin.providers.base import (
    ChannelAuthError,
    ProviderOptions,
    ProviderUnavailable,
    PushMessage,
    SendResult,
)
from webadmin.providers.onesignal import OneSignalBackend, idempotency_key

from .fakes import (
    FakeServer,
    Recorded,
    Responder,
    dispatch,
    html_page,
    reply,
    reset,
    sleep,
    truncated_json,
)

PATH = "/notifications"
CREDS = {"app_id": "app-123", "api_key": "os-secret-key"}


CAMPAIGN = "5f0c1d7e-3b2a-4c59-9e61-2d7f8a0b4c13"


def msg(i: int, token: str | None = None, campaign: str = CAMPAIGN, **kw: Any) -> PushMessage:
    """A OneSignal push message (token = subscription id)."""
    return PushMessage(message_id=i, uuid=str(uuid.uuid4()), token=token or f"sub-{i}", platform="android",
                       body=kw.pop("body", "Hello"), campaign_uuid=campaign, **kw)


def created(rec: Recorded) -> Any:
    """Success answer: a notification id per request."""
    return reply({"id": f"notif-{len(rec.json['include_subscription_ids'])}", "external_id": None})(rec)


def by_first_id(table: dict[str, Responder], default: Responder = created) -> Responder:
    """Answer according to the first subscription id of the request."""
    return dispatch(lambda rec: rec.json["include_subscription_ids"][0], table, default)


async def run_batch(messages: list[PushMessage], *responders: Responder,
                    **options: Any) -> tuple[FakeServer, list[SendResult]]:
    """Send a batch through a fresh backend against a fresh fake."""
    async with FakeServer() as srv:
        srv.route("POST", PATH, *(responders or (created,)))
        opts = ProviderOptions(endpoint=srv.url, **{"timeout": 2.0, "batch_size": 2_000} | options)
        backend = OneSignalBackend(CREDS, opts)
        try:
            return srv, await backend.send_batch(messages)
        finally:
            await backend.close()


def by_id(results: list[SendResult]) -> dict[int, SendResult]:
    """Results keyed by message id (and exactly one per message)."""
    out = {r.message_id: r for r in results}
    assert len(out) == len(results)
    return out


def test_success_chunks_and_payload() -> None:
    messages = [msg(i, title="Title", open_direct="https://shop/offer", image_url="https://img/p.png",
                    ttl=600, data={"k": "v"}) for i in range(5)]
    srv, results = asyncio.run(run_batch(messages, batch_size=2))
    assert len(results) == 5 and all(r.ok for r in results)
    calls = srv.calls(PATH)
    assert len(calls) == math.ceil(5 / 2)
    assert sorted(len(c.json["include_subscription_ids"]) for c in calls) == [1, 2, 2]
    first = calls[0]
    assert first.query == {"c": "push"}
    assert first.headers["Authorization"] == "Key os-secret-key"
    assert first.headers["Content-Type"].startswith("application/json")
    carried = [m for m in messages if m.token in first.json["include_subscription_ids"]]
    assert first.json == {
        "app_id": "app-123",
        "target_channel": "push",
        "include_subscription_ids": [m.token for m in carried],
        "contents": {"en": "Hello"},
        "headings": {"en": "Title"},
        "idempotency_key": idempotency_key(carried),
        "collapse_id": CAMPAIGN,
        "web_push_topic": CAMPAIGN.replace("-", ""),
        "data": {"k": "v", "openDirect": "https://shop/offer"},
        "ttl": 600,
        "url": "https://shop/offer",
        "big_picture": "https://img/p.png",
        "ios_attachments": {"image": "https://img/p.png"},
        "chrome_web_image": "https://img/p.png",
    }
    assert {r.provider_message_id for r in results} <= {"notif-1", "notif-2"}


def test_app_deep_link_goes_to_app_url() -> None:
    srv, _ = asyncio.run(run_batch([msg(1, open_direct="myapp://offer/7")]))
    body = srv.calls(PATH)[0].json
    assert body["app_url"] == "myapp://offer/7" and "url" not in body and "headings" not in body


def test_campaigns_are_sent_separately_and_tokens_deduplicated() -> None:
    messages = [msg(1, "a"), msg(2, "b"), msg(3, "a"), msg(4, "x", campaign="camp-2", body="Other")]
    srv, results = asyncio.run(run_batch(messages))
    assert all(r.ok for r in results) and len(results) == 4
    calls = srv.calls(PATH)
    assert sorted(tuple(c.json["include_subscription_ids"]) for c in calls) == [("a", "b"), ("x",)]


def test_idempotency_key_is_deterministic() -> None:
    a, b = msg(1), msg(2)
    assert idempotency_key([a, b]) == idempotency_key([b, a])
    assert idempotency_key([a]) != idempotency_key([a, b])
    assert uuid.UUID(idempotency_key([a])).version == 4  # a UUID of the version OneSignal's docs ask for
    other_campaign = PushMessage(**{**_fields(a), "campaign_uuid": "another"})
    assert idempotency_key([other_campaign]) != idempotency_key([a])
    srv1, _ = asyncio.run(run_batch([a, b]))
    srv2, _ = asyncio.run(run_batch([b, a]))
    assert srv1.calls(PATH)[0].json["idempotency_key"] == srv2.calls(PATH)[0].json["idempotency_key"]


def _fields(m: PushMessage) -> dict[str, Any]:
    return {name: getattr(m, name) for name in PushMessage.__dataclass_fields__}


def test_a_resend_in_another_make_up_collapses_on_the_device() -> None:
    # The engine re-claims after a failure in a batch of another make-up: the request (and its idempotency key)
    # differs, so what keeps device b from showing the campaign twice is the campaign's collapse_id/topic.
    a, b, c = msg(1, "a"), msg(2, "b"), msg(3, "c")
    first, _ = asyncio.run(run_batch([a, b]))
    again, _ = asyncio.run(run_batch([b, c]))
    one, two = first.calls(PATH)[0].json, again.calls(PATH)[0].json
    assert one["idempotency_key"] != two["idempotency_key"]
    assert one["collapse_id"] == two["collapse_id"] == CAMPAIGN
    assert one["web_push_topic"] == two["web_push_topic"] == CAMPAIGN.replace("-", "")
    other, _ = asyncio.run(run_batch([msg(4, "b", campaign="0d9e8f7a-1111-4222-8333-444455556666")]))
    assert other.calls(PATH)[0].json["collapse_id"] != CAMPAIGN  # another campaign is another notification


def test_collapse_id_and_topic_keep_onesignal_limits() -> None:
    long = "x" * 70 + "-ü-" + "y" * 10
    srv, _ = asyncio.run(run_batch([msg(1, campaign=long)]))
    body = srv.calls(PATH)[0].json
    assert len(body["collapse_id"]) == 64 and body["collapse_id"] == long[:64]
    assert len(body["web_push_topic"]) == 32 and body["web_push_topic"].isalnum()
    loose = PushMessage(message_id=9, uuid="0b1c2d3e-0000-4000-8000-00000000000f", token="t", platform="web",
                        body="b")  # no campaign: the message's own identity
    srv, _ = asyncio.run(run_batch([loose]))
    assert srv.calls(PATH)[0].json["collapse_id"] == loose.uuid


def test_invalid_subscription_ids_are_token_invalid() -> None:
    answer = reply({"id": "notif-9", "errors": {"invalid_player_ids": ["sub-2"]}})
    _, results = asyncio.run(run_batch([msg(1), msg(2), msg(3)], answer))
    res = by_id(results)
    assert res[2].token_invalid and not res[2].ok and not res[2].retryable
    assert res[1].ok and res[3].ok and res[1].provider_message_id == "notif-9"


def test_all_not_subscribed_marks_every_token_invalid() -> None:
    answer = reply({"id": "", "errors": ["All included players are not subscribed"]})
    _, results = asyncio.run(run_batch([msg(1), msg(2)], answer))
    assert all(r.token_invalid and not r.ok for r in results)


def test_429_retry_after_applies_to_that_request_only() -> None:
    limited = reply({"errors": ["API rate limit exceeded."]}, status=429, headers={"Retry-After": "17"})
    _, results = asyncio.run(run_batch([msg(i) for i in range(4)], by_first_id({"sub-0": limited}),
                                       batch_size=2))
    res = by_id(results)
    assert res[0].retryable and res[0].retry_after == 17 and res[1].retry_after == 17
    assert res[2].ok and res[3].ok


def test_5xx_is_retryable() -> None:
    _, results = asyncio.run(run_batch([msg(1), msg(2)], html_page(503)))
    assert all(r.retryable and r.error_code == "HTTP_503" for r in results)


def test_400_is_a_payload_error() -> None:
    bad = reply({"errors": ["Message Notifications must have English language content"]}, status=400)
    _, results = asyncio.run(run_batch([msg(1)], bad))
    assert results[0].payload_error and not results[0].retryable and "English" in (results[0].error or "")


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_raises_channel_auth_error(status: int) -> None:
    text = "Access denied. Please include an 'Authorization: ...' header."
    refused = reply({"errors": [text]}, status=status)
    with pytest.raises(ChannelAuthError):
        asyncio.run(run_batch([msg(1), msg(2)], refused))


def test_timeout_of_one_request_is_retryable() -> None:
    _, results = asyncio.run(run_batch([msg(i) for i in range(4)], by_first_id({"sub-0": sleep(3)}),
                                       batch_size=2, timeout=0.3))
    res = by_id(results)
    assert res[0].error_code == "TIMEOUT" and res[0].retryable and res[1].retryable
    assert res[2].ok and res[3].ok


def test_timeout_of_every_request_raises_provider_unavailable() -> None:
    with pytest.raises(ProviderUnavailable):
        asyncio.run(run_batch([msg(1), msg(2)], sleep(3), timeout=0.3))


def test_connection_reset_is_retryable() -> None:
    _, results = asyncio.run(run_batch([msg(i) for i in range(4)], by_first_id({"sub-0": reset()}),
                                       batch_size=2))
    res = by_id(results)
    assert res[0].error_code == "CONNECTION_ERROR" and res[0].retryable
    assert res[2].ok


@pytest.mark.parametrize("responder", [html_page(200), truncated_json(200), reply(["not", "an", "object"])],
                         ids=["html", "truncated", "list"])
def test_malformed_answers_are_retryable(responder: Responder) -> None:
    _, results = asyncio.run(run_batch([msg(1), msg(2)], responder))
    assert all(r.retryable and r.error_code == "MALFORMED_RESPONSE" for r in results)


def test_batch_size_defaults_and_cap() -> None:
    assert OneSignalBackend(CREDS).batch_size == 2_000
    assert OneSignalBackend(CREDS, ProviderOptions(batch_size=50_000)).batch_size == 20_000
    assert "os-secret-key" not in repr(OneSignalBackend(CREDS))


def test_connection_check() -> None:
    async def scenario(responder: Responder) -> tuple[FakeServer, Any]:
        async with FakeServer() as srv:
            srv.route("GET", PATH, responder)
            backend = OneSignalBackend(CREDS, ProviderOptions(endpoint=srv.url))
            try:
                return srv, await backend.test_connection()
            finally:
                await backend.close()

    srv, check = asyncio.run(scenario(reply({"total_count": 0, "notifications": []})))
    assert check.ok
    call = srv.calls(PATH, "GET")[0]
    assert call.query == {"app_id": "app-123", "limit": "1"}
    assert call.headers["Authorization"] == "Key os-secret-key"
    _, check = asyncio.run(scenario(reply({"errors": ["Access denied"]}, status=403)))
    assert not check.ok and "Access denied" in check.message


def test_404_is_a_channel_error() -> None:
    missing = reply({"errors": ["App not found"]}, status=404)
    _, results = asyncio.run(run_batch([msg(1), msg(2)], missing))
    assert all(r.channel_error and not r.token_invalid and not r.retryable for r in results)
    assert all(r.error_code == "HTTP_404" and "App not found" in (r.error or "") for r in results)


@pytest.mark.parametrize("key", ["invalid_subscription_ids", "invalid_player_ids"])
def test_ids_reported_invalid_in_the_answer(key: str) -> None:
    answer = reply({"id": "notif-7", "errors": {key: ["sub-1", "sub-3"]}})
    _, results = asyncio.run(run_batch([msg(i) for i in range(1, 5)], answer))
    res = by_id(results)
    assert [i for i, r in res.items() if r.token_invalid] == [1, 3]
    assert all(res[i].error_code == "INVALID_SUBSCRIPTION" and not res[i].retryable for i in (1, 3))
    assert res[2].ok and res[4].ok and res[2].provider_message_id == "notif-7"


@pytest.mark.parametrize(("count", "batch_size", "sizes"), [
    (4_001, None, [2_000, 2_000, 1]),  # the default batch
    (20_001, 20_000, [20_000, 1]),  # the maximum
    (20_001, 50_000, [20_000, 1]),  # more is capped at the maximum
], ids=["default-2000", "max-20000", "capped"])
def test_calls_are_ceil_n_over_batch(count: int, batch_size: int | None, sizes: list[int]) -> None:
    messages = [msg(i) for i in range(count)]

    async def main() -> tuple[FakeServer, list[SendResult]]:
        async with FakeServer() as srv:
            srv.route("POST", PATH, created)
            # default_options: what a channel without a batch size option gets (the backend's own default)
            sized = {"batch_size": batch_size} if batch_size else {}
            backend = create_backend("onesignal", CREDS, default_options("onesignal", endpoint=srv.url, **sized))
            try:
                return srv, await backend.send_batch(messages)
            finally:
                await backend.close()

    srv, results = asyncio.run(main())
    calls = srv.calls(PATH)
    assert len(calls) == math.ceil(count / min(batch_size or 2_000, 20_000)) == len(sizes)
    assert sorted((len(c.json["include_subscription_ids"]) for c in calls), reverse=True) == sizes
    assert len(results) == count and all(r.ok for r in results)
    assert len({c.json["idempotency_key"] for c in calls}) == len(calls)


def test_the_per_message_id_neither_splits_requests_nor_goes_into_them() -> None:
    # The engine adds data["messageId"] (each message's own UUID) to every message: a request carrying 3 devices
    # cannot carry three of them, and grouping by it would send one request per device.
    messages = [msg(i, data={"screen": "offers", "messageId": f"uuid-{i}"}) for i in range(3)]
    srv, results = asyncio.run(run_batch(messages))
    [call] = srv.calls(PATH)
    assert call.json["include_subscription_ids"] == ["sub-0", "sub-1", "sub-2"]
    assert call.json["data"] == {"screen": "offers"}
    assert all(r.ok for r in results)
