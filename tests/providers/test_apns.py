"""ApnsBackend against a real local HTTP/2 TLS fake of APNs (tests/providers/apns_fake.py)."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apns_fake import FakeApns, Reply, TlsFiles, make_signing_key, make_tls_files  # noqa: E402

from webadmin.providers import apns  # noqa: E402
from webadmin.providers.apns import ApnsBackend  # noqa: E402
from webadmin.providers.base import (  # noqa: E402
    ChannelAuthError,
    ProviderOptions,
    ProviderUnavailable,
    PushMessage,
    SendResult,
)

TEAM = "TEAM123456"
TOPIC = "com.example.app"

Scenario = Callable[[FakeApns, ApnsBackend], Awaitable[Any]]


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    """Throwaway CA, server and client certificates for this test."""
    return make_tls_files(tmp_path)


@pytest.fixture
def signing() -> tuple[str, Any]:
    """A throwaway .p8-like EC P-256 key (PEM text) and its public key."""
    return make_signing_key()


def token_creds(key_pem: str) -> dict[str, Any]:
    """Token-auth credentials with a fresh key id (so the process-wide JWT cache is not shared by tests)."""
    key_id = uuid.uuid4().hex[:10].upper()
    return {"auth_mode": "token", "environment": "sandbox", "team_id": TEAM, "key_id": key_id,
            "private_key": key_pem, "bundle_id": TOPIC}


def cert_creds(cert_file: str, key_file: str) -> dict[str, Any]:
    """Certificate-auth credentials from PEM files."""
    return {"auth_mode": "certificate", "environment": "production", "bundle_id": TOPIC,
            "certificate": Path(cert_file).read_text(), "certificate_key": Path(key_file).read_text()}


def push(i: int, token: str | None = None, **extra: Any) -> PushMessage:
    """A message numbered i (token tok{i} unless given)."""
    return PushMessage(message_id=i, uuid=str(uuid.uuid4()), token=token or f"tok{i}", platform="ios",
                       body=f"body {i}", **extra)


def run(
    tls: TlsFiles,
    creds: dict[str, Any],
    scenario: Scenario,
    *,
    public_key: Any = None,
    require_client_cert: bool = False,
    fake_options: dict[str, Any] | None = None,
    **options: Any,
) -> Any:
    """Start the fake, build the backend pointed at it, run the scenario, close both."""

    async def main() -> Any:
        async with FakeApns(tls, public_key=public_key, require_client_cert=require_client_cert,
                            **(fake_options or {})) as fake:
            opts = ProviderOptions(endpoint=fake.url, ca_file=tls.ca_file, **{"timeout": 5.0, **options})
            backend = ApnsBackend(creds, opts)
            try:
                return await scenario(fake, backend)
            finally:
                await backend.close()

    return asyncio.run(main())


def by_id(results: list[SendResult], messages: list[PushMessage]) -> dict[int, SendResult]:
    """Check one result per message and index them by message id."""
    assert sorted(r.message_id for r in results) == sorted(m.message_id for m in messages)
    return {r.message_id: r for r in results}


def send(messages: list[PushMessage]) -> Scenario:
    """A scenario sending one batch and returning (results by id, fake)."""

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> tuple[dict[int, SendResult], FakeApns]:
        return by_id(await backend.send_batch(messages), messages), fake

    return scenario


def test_success_headers_jwt_and_payload(tls: TlsFiles, signing: tuple[str, Any]) -> None:
    key_pem, public_key = signing
    creds = token_creds(key_pem)
    rich = push(1, token="a" * 64, title="Sale", open_direct="myapp://sale", image_url="https://img.test/x.png",
                data={"campaign": "wk47"}, ttl=3600)
    plain = push(2)
    results, fake = run(tls, creds, send([rich, plain]), public_key=public_key)

    assert results[1].ok and results[1].provider_message_id == rich.uuid
    assert results[2].ok
    seen = {s.token: s for s in fake.requests}
    first = seen["a" * 64]
    assert first.path == "/3/device/" + "a" * 64
    headers = first.headers
    assert headers[":method"] == "POST"
    assert headers["apns-topic"] == TOPIC
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert headers["apns-collapse-id"] == rich.uuid
    assert headers["apns-id"] == rich.uuid
    assert abs(int(headers["apns-expiration"]) - (time.time() + 3600)) < 60
    assert seen["tok2"].headers["apns-expiration"] == "0"
    assert first.jwt_header is not None and first.jwt_header["kid"] == creds["key_id"]
    assert first.jwt_header["alg"] == "ES256"
    assert first.jwt_claims is not None and first.jwt_claims["iss"] == TEAM
    assert abs(first.jwt_claims["iat"] - time.time()) < 60
    assert first.body == {
        "aps": {"alert": {"title": "Sale", "body": "body 1"}, "sound": "default", "mutable-content": 1},
        "openDirect": "myapp://sale",
        "imageUrl": "https://img.test/x.png",
        "campaign": "wk47",
    }
    assert seen["tok2"].body == {"aps": {"alert": {"body": "body 2"}, "sound": "default"}}


def test_410_respects_token_registration_time(tls: TlsFiles, signing: tuple[str, Any]) -> None:
    key_pem, public_key = signing
    stamp = datetime(2026, 11, 1, tzinfo=UTC)
    stamp_ms = int(stamp.timestamp() * 1000)
    old = push(1, token_registered_at=stamp - timedelta(days=3))
    renewed = push(2, token_registered_at=stamp + timedelta(hours=1))
    unknown = push(3)

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> dict[int, SendResult]:
        for token in ("tok1", "tok2", "tok3"):
            fake.script(token, Reply(410, "Unregistered", timestamp=stamp_ms))
        return by_id(await backend.send_batch([old, renewed, unknown]), [old, renewed, unknown])

    results = run(tls, token_creds(key_pem), scenario, public_key=public_key)
    assert results[1].token_invalid and not results[1].retryable and results[1].error_code == "Unregistered"
    assert results[3].token_invalid
    kept = results[2]
    assert not kept.ok and not kept.token_invalid and not kept.retryable and kept.error


@pytest.mark.parametrize("reason", ["BadDeviceToken", "DeviceTokenNotForTopic"])
def test_400_bad_token_is_invalid(tls: TlsFiles, signing: tuple[str, Any], reason: str) -> None:
    key_pem, public_key = signing

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> list[SendResult]:
        fake.script("tok1", Reply(400, reason))
        return await backend.send_batch([push(1), push(2)])

    results = {r.message_id: r for r in run(tls, token_creds(key_pem), scenario, public_key=public_key)}
    assert results[1].token_invalid and not results[1].payload_error and not results[1].retryable
    assert results[1].error_code == reason
    assert results[2].ok


@pytest.mark.parametrize(("status", "reason"), [(413, "PayloadTooLarge"), (400, "PayloadTooLarge"),
                                                (400, "BadCollapseId")])
def test_payload_errors(tls: TlsFiles, signing: tuple[str, Any], status: int, reason: str) -> None:
    key_pem, public_key = signing

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> list[SendResult]:
        fake.script("tok1", Reply(status, reason))
        return await backend.send_batch([push(1)])

    [result] = run(tls, token_creds(key_pem), scenario, public_key=public_key)
    assert result.payload_error and not result.token_invalid and not result.retryable
    assert result.error_code == reason


def test_expired_provider_token_renews_once(tls: TlsFiles, signing: tuple[str, Any]) -> None:
    key_pem, public_key = signing
    first = [push(i) for i in range(3)]
    second = [push(i) for i in range(10, 15)]
    third = [push(i) for i in range(20, 23)]

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> FakeApns:
        assert all(r.ok for r in await backend.send_batch(first))
        fake.expire_jwts()
        assert all(r.ok for r in by_id(await backend.send_batch(second), second).values())
        assert all(r.ok for r in await backend.send_batch(third))
        return fake

    fake = run(tls, token_creds(key_pem), scenario, public_key=public_key, concurrency=10)
    assert len(fake.jwts) == 2  # exactly one renewal
    assert len(fake.requests) == 3 + 5 + 5 + 3  # the five refused pushes were resent once


def test_expired_again_after_renewal_is_not_a_loop(tls: TlsFiles, signing: tuple[str, Any]) -> None:
    key_pem, public_key = signing

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> tuple[list[SendResult], FakeApns]:
        fake.default = lambda seen: Reply(403, "ExpiredProviderToken")
        return await backend.send_batch([push(1), push(2)]), fake

    results, fake = run(tls, token_creds(key_pem), scenario, public_key=public_key)
    assert all(r.retryable and r.error_code == "ExpiredProviderToken" for r in results)
    assert len(fake.jwts) == 2 and len(fake.requests) == 4


def test_invalid_provider_token_is_channel_auth_error(tls: TlsFiles, signing: tuple[str, Any]) -> None:
    key_pem, _ = signing
    _, other_public_key = make_signing_key()  # the fake knows a different key: signature refused

    with pytest.raises(ChannelAuthError, match="InvalidProviderToken") as caught:
        run(tls, token_creds(key_pem), send([push(i) for i in range(5)]), public_key=other_public_key)
    assert "PRIVATE KEY" not in str(caught.value)


@pytest.mark.parametrize("reason", ["MissingProviderToken", "BadCertificate", "Forbidden"])
def test_other_403_are_channel_auth_errors(tls: TlsFiles, signing: tuple[str, Any], reason: str) -> None:
    key_pem, public_key = signing

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> list[SendResult]:
        fake.default = lambda seen: Reply(403, reason)
        return await backend.send_batch([push(1), push(2)])

    with pytest.raises(ChannelAuthError, match=reason):
        run(tls, token_creds(key_pem), scenario, public_key=public_key)


@pytest.mark.parametrize(("status", "reason", "retry_after"), [
    (429, "TooManyRequests", 30.0), (429, "TooManyProviderTokenUpdates", None),
    (503, "ServiceUnavailable", 12.0), (500, "InternalServerError", None),
])
def test_retryable_statuses(
    tls: TlsFiles, signing: tuple[str, Any], status: int, reason: str, retry_after: float | None
) -> None:
    key_pem, public_key = signing
    headers = {"retry-after": f"{retry_after:g}"} if retry_after else {}

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> list[SendResult]:
        fake.script("tok1", Reply(status, reason, headers=headers))
        return await backend.send_batch([push(1), push(2)])

    results = {r.message_id: r for r in run(tls, token_creds(key_pem), scenario, public_key=public_key)}
    assert results[1].retryable and not results[1].token_invalid and not results[1].payload_error
    assert results[1].retry_after == retry_after and results[1].error_code == reason
    assert results[2].ok


def test_timeout_of_one_request_is_retryable(tls: TlsFiles, signing: tuple[str, Any]) -> None:
    key_pem, public_key = signing
    messages = [push(i) for i in range(4)]

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> dict[int, SendResult]:
        fake.script("tok2", Reply(delay=3.0))
        started = time.monotonic()
        results = by_id(await backend.send_batch(messages), messages)
        assert time.monotonic() - started < 2.5
        return results

    results = run(tls, token_creds(key_pem), scenario, public_key=public_key, timeout=0.5)
    assert results[2].retryable and "no answer" in (results[2].error or "")
    assert all(results[i].ok for i in (0, 1, 3))


def test_connection_reset_mid_batch(tls: TlsFiles, signing: tuple[str, Any]) -> None:
    key_pem, public_key = signing
    messages = [push(i) for i in range(10)]

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> tuple[dict[int, SendResult], int, int]:
        fake.script("tok3", Reply(action="abort_connection"))
        results = by_id(await backend.send_batch(messages), messages)
        return results, fake.connections, backend.connections_opened

    results, fake_connections, opened = run(tls, token_creds(key_pem), scenario, public_key=public_key,
                                            concurrency=2)
    assert results[3].retryable and "connection" in (results[3].error or "")
    failed = [r for r in results.values() if not r.ok]
    assert all(r.retryable and not r.token_invalid for r in failed)
    assert len(failed) <= 2  # only what was in flight on the dead connection
    assert all(results[i].ok for i in range(5, 10))  # the rest went over a new connection
    assert fake_connections == opened == 2


def test_goaway_resends_unprocessed_streams_on_a_new_connection(
    tls: TlsFiles, signing: tuple[str, Any]
) -> None:
    key_pem, public_key = signing
    messages = [push(i) for i in range(6)]

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> tuple[dict[int, SendResult], FakeApns]:
        fake.script("tok2", Reply(action="goaway", reason="Shutdown"))
        return by_id(await backend.send_batch(messages), messages), fake

    results, fake = run(tls, token_creds(key_pem), scenario, public_key=public_key, concurrency=1)
    assert all(r.ok for r in results.values())
    assert fake.connections == 2 and fake.tokens_sent().count("tok2") == 2


def test_stream_reset_is_retryable(tls: TlsFiles, signing: tuple[str, Any]) -> None:
    key_pem, public_key = signing

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> list[SendResult]:
        fake.script("tok1", Reply(action="reset_stream"))
        return await backend.send_batch([push(1), push(2)])

    results = {r.message_id: r for r in run(tls, token_creds(key_pem), scenario, public_key=public_key)}
    assert results[1].retryable and "reset" in (results[1].error or "")
    assert results[2].ok


@pytest.mark.parametrize("body", [b"<html>Bad Gateway</html>", b'{"no_reason": 1}', b"[]"])
def test_malformed_answer_is_retryable_not_an_exception(
    tls: TlsFiles, signing: tuple[str, Any], body: bytes
) -> None:
    key_pem, public_key = signing

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> list[SendResult]:
        fake.script("tok1", Reply(400, body=body))
        return await backend.send_batch([push(1), push(2)])

    results = {r.message_id: r for r in run(tls, token_creds(key_pem), scenario, public_key=public_key)}
    assert results[1].retryable and "malformed" in (results[1].error or "")
    assert results[2].ok


def test_one_jwt_per_period_and_one_connection(
    tls: TlsFiles, signing: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_pem, public_key = signing
    base = time.time()
    clock = {"now": base}
    monkeypatch.setattr(apns, "_now", lambda: clock["now"])

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> list[int]:
        counts = []
        for minutes in (0, 1, 10, 25, 39):  # several batches inside one renewal period
            clock["now"] = base + minutes * 60
            assert all(r.ok for r in await backend.send_batch([push(i) for i in range(5)]))
        counts.append(len(fake.jwts))
        clock["now"] = base + 41 * 60
        assert all(r.ok for r in await backend.send_batch([push(i) for i in range(5)]))
        counts += [len(fake.jwts), fake.connections, backend.connections_opened]
        return counts

    assert run(tls, token_creds(key_pem), scenario, public_key=public_key) == [1, 2, 1, 1]


def test_flow_control_and_stream_limit(tls: TlsFiles, signing: tuple[str, Any]) -> None:
    key_pem, public_key = signing
    messages = [push(i, data={"blob": "x" * 3000}) for i in range(40)]  # 120 kB > the 64 kB connection window

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> tuple[dict[int, SendResult], FakeApns]:
        return by_id(await backend.send_batch(messages), messages), fake

    results, fake = run(tls, token_creds(key_pem), scenario, public_key=public_key, concurrency=40,
                        fake_options={"window": 1000, "max_streams": 3})
    assert all(r.ok for r in results.values())
    assert len(fake.requests) == 40 and all(s.body["blob"] == "x" * 3000 for s in fake.requests)


def test_jwt_cache_is_shared_per_team_and_key(tls: TlsFiles, signing: tuple[str, Any]) -> None:
    key_pem, public_key = signing
    creds = token_creds(key_pem)

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> FakeApns:
        other = ApnsBackend(dict(creds), backend.options)
        try:
            await backend.send_batch([push(1)])
            await other.send_batch([push(2)])
        finally:
            await other.close()
        return fake

    fake = run(tls, creds, scenario, public_key=public_key)
    assert len(fake.jwts) == 1 and fake.connections == 2


def test_certificate_auth(tls: TlsFiles) -> None:
    messages = [push(1), push(2)]
    results, fake = run(tls, cert_creds(tls.client_cert, tls.client_key), send(messages),
                        require_client_cert=True)
    assert all(r.ok for r in results.values())
    assert {s.client_subject for s in fake.requests} == {"Apple Push Services: com.example.app"}
    assert all("authorization" not in s.headers and s.headers["apns-topic"] == TOPIC for s in fake.requests)


def test_certificate_refused_by_server(tls: TlsFiles, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    stranger = make_tls_files(other)  # a client certificate from a CA the server does not trust
    with pytest.raises(ChannelAuthError, match="certificate"):
        run(tls, cert_creds(stranger.client_cert, stranger.client_key), send([push(1), push(2)]),
            require_client_cert=True)

    async def probe(fake: FakeApns, backend: ApnsBackend) -> Any:
        return await backend.test_connection()

    check = run(tls, cert_creds(stranger.client_cert, stranger.client_key), probe, require_client_cert=True)
    assert not check.ok and "certificate" in check.message


def test_unreadable_credentials_are_channel_errors(tls: TlsFiles) -> None:
    creds = token_creds("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ChannelAuthError):
        run(tls, creds, send([push(1)]))
    with pytest.raises(ChannelAuthError, match="missing"):
        run(tls, {"auth_mode": "token", "bundle_id": TOPIC}, send([push(1)]))
    with pytest.raises(ChannelAuthError):
        broken = {**cert_creds(tls.client_cert, tls.client_key), "certificate_key": "garbage"}
        run(tls, broken, send([push(1)]))


def test_unreachable_endpoint_is_provider_unavailable(signing: tuple[str, Any]) -> None:
    key_pem, _ = signing

    async def main() -> None:
        options = ProviderOptions(endpoint="https://127.0.0.1:9", timeout=2.0)
        backend = ApnsBackend(token_creds(key_pem), options)
        try:
            await backend.send_batch([push(1), push(2)])
        finally:
            await backend.close()

    with pytest.raises(ProviderUnavailable):
        asyncio.run(main())


def test_test_connection(tls: TlsFiles, signing: tuple[str, Any]) -> None:
    key_pem, public_key = signing

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> list[Any]:
        fake.script(apns.TEST_TOKEN, Reply(400, "BadDeviceToken"))
        good = await backend.test_connection()
        fake.script(apns.TEST_TOKEN, Reply(403, "InvalidProviderToken"))
        bad = await backend.test_connection()
        return [good, bad]

    good, bad = run(tls, token_creds(key_pem), scenario, public_key=public_key)
    assert good.ok and "BadDeviceToken" in good.message
    assert not bad.ok and "InvalidProviderToken" in bad.message

    async def unreachable() -> Any:
        options = ProviderOptions(endpoint="https://127.0.0.1:9", timeout=2)
        backend = ApnsBackend(token_creds(key_pem), options)
        try:
            return await backend.test_connection()
        finally:
            await backend.close()

    check = asyncio.run(unreachable())
    assert not check.ok and "reach" in check.message


def test_no_credentials_in_repr_and_fields(signing: tuple[str, Any]) -> None:
    key_pem, _ = signing
    backend = ApnsBackend(token_creds(key_pem))
    assert "PRIVATE" not in repr(backend) and "PRIVATE" not in repr(backend.options)
    names = {f.name: f for f in ApnsBackend.credential_fields}
    assert names["auth_mode"].choices == ("token", "certificate")
    assert names["environment"].choices == ("production", "sandbox")
    assert names["private_key"].secret and names["certificate_key"].secret
    assert ApnsBackend.type_name == "apns" and ApnsBackend.platforms == ("ios",)
    assert backend.base_url == apns.SANDBOX_URL
    assert ApnsBackend({"environment": "production"}).base_url == apns.PRODUCTION_URL


def test_403_after_some_successes_returns_the_successes(tls: TlsFiles, signing: tuple[str, Any]) -> None:
    key_pem, public_key = signing
    messages = [push(i) for i in range(20)]
    answered = {"n": 0}

    def nine_then_refused(seen: Any) -> Reply:
        answered["n"] += 1
        return Reply() if answered["n"] <= 9 else Reply(403, "InvalidProviderToken")

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> tuple[dict[int, SendResult], FakeApns]:
        fake.default = nine_then_refused
        return by_id(await backend.send_batch(messages), messages), fake

    results, fake = run(tls, token_creds(key_pem), scenario, public_key=public_key, concurrency=1)
    ok = [r for r in results.values() if r.ok]
    refused = [r for r in results.values() if not r.ok]
    assert len(ok) == 9 and len(fake.requests) == 10  # nothing sent after the refusal
    assert len(refused) == 11
    assert all(r.channel_error and not r.token_invalid and not r.retryable for r in refused)
    assert {r.error_code for r in refused} == {"InvalidProviderToken", "NotSent"}
    assert all("InvalidProviderToken" in (r.error or "") for r in refused)


# Certificate auth answers with the same reasons as token auth; each class is checked over a client-certificate
# connection, since that is the mode the seeds use ("App ID + SSL certificate").
CERT_CASES = [
    (Reply(410, "Unregistered"), {"token_invalid": True}),
    (Reply(400, "BadDeviceToken"), {"token_invalid": True}),
    (Reply(400, "DeviceTokenNotForTopic"), {"token_invalid": True}),
    (Reply(429, "TooManyRequests", headers={"retry-after": "7"}), {"retryable": True, "retry_after": 7.0}),
    (Reply(500, "InternalServerError"), {"retryable": True}),
    (Reply(503, "ServiceUnavailable", headers={"retry-after": "3"}), {"retryable": True, "retry_after": 3.0}),
    (Reply(403, "BadCertificateEnvironment"), {"channel_error": True}),
    (Reply(400, "BadTopic"), {"channel_error": True}),
    (Reply(400, "TopicDisallowed"), {"channel_error": True}),
    (Reply(400, "MissingTopic"), {"channel_error": True}),
    (Reply(400, "IdleTimeout"), {"retryable": True}),
    (Reply(404, "BadPath"), {"payload_error": True}),
    (Reply(405, "MethodNotAllowed"), {"payload_error": True}),
]
FLAGS = ("token_invalid", "retryable", "channel_error", "payload_error")


def _assert_class(result: SendResult, reply: Reply, flags: dict[str, Any]) -> None:
    assert not result.ok and result.error_code == reply.reason
    for name in FLAGS:
        assert getattr(result, name) == flags.get(name, False), name
    assert result.retry_after == flags.get("retry_after")


@pytest.mark.parametrize(("reply", "flags"), CERT_CASES, ids=[f"{r.status}-{r.reason}" for r, _ in CERT_CASES])
def test_certificate_mode_error_classes(tls: TlsFiles, reply: Reply, flags: dict[str, Any]) -> None:
    messages = [push(1), push(2)]

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> tuple[dict[int, SendResult], FakeApns]:
        fake.script("tok1", reply)
        return by_id(await backend.send_batch(messages), messages), fake

    results, fake = run(tls, cert_creds(tls.client_cert, tls.client_key), scenario, require_client_cert=True)
    _assert_class(results[1], reply, flags)
    assert results[2].ok  # the other push of the batch is unaffected
    assert all("authorization" not in s.headers for s in fake.requests)
    assert {s.client_subject for s in fake.requests} == {"Apple Push Services: com.example.app"}


def test_certificate_mode_403_on_every_push_raises(tls: TlsFiles) -> None:
    async def scenario(fake: FakeApns, backend: ApnsBackend) -> list[SendResult]:
        fake.default = lambda seen: Reply(403, "BadCertificate")
        return await backend.send_batch([push(1), push(2)])

    with pytest.raises(ChannelAuthError, match="BadCertificate"):
        run(tls, cert_creds(tls.client_cert, tls.client_key), scenario, require_client_cert=True)


@pytest.mark.parametrize(("reply", "flags"), [c for c in CERT_CASES if c[0].reason in (
    "BadTopic", "TopicDisallowed", "MissingTopic", "IdleTimeout", "BadPath", "MethodNotAllowed")],
    ids=["BadTopic", "TopicDisallowed", "MissingTopic", "IdleTimeout", "404", "405"])
def test_token_mode_topic_idle_and_path_reasons(
    tls: TlsFiles, signing: tuple[str, Any], reply: Reply, flags: dict[str, Any]
) -> None:
    key_pem, public_key = signing

    async def scenario(fake: FakeApns, backend: ApnsBackend) -> list[SendResult]:
        fake.script("tok1", reply)
        return await backend.send_batch([push(1), push(2)])

    results = {r.message_id: r for r in run(tls, token_creds(key_pem), scenario, public_key=public_key)}
    _assert_class(results[1], reply, flags)
    assert results[2].ok
