"""APNs push backend: token (.p8 JWT) or certificate auth, straight over one multiplexed HTTP/2 connection."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import tempfile
import time
import uuid as uuid_mod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, ClassVar

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hpack import NeverIndexedHeaderTuple

from ._h2 import H2Client, H2Failure, H2Response, cert_alert, open_h2
from .base import (
    ChannelAuthError,
    ConnectionCheck,
    CredentialField,
    ProviderOptions,
    ProviderUnavailable,
    PushBackend,
    PushMessage,
    SendResult,
)

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
JWT_RENEW_AFTER = 40 * 60  # Apple: refresh no more than once per 20 min, tokens older than 60 min are refused
MAX_COLLAPSE_ID_BYTES = 64
TEST_TOKEN = "webadmin-connection-test-not-a-device-token"

TOKEN_INVALID_400 = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic"})
TOPIC_REASONS = frozenset({"BadTopic", "MissingTopic", "TopicDisallowed"})
UNREGISTERED_REASONS = frozenset({"Unregistered", "ExpiredToken"})
RETRY_STATUSES = frozenset({429, 500, 503})

_JWT_CACHE: dict[tuple[str, str], tuple[str, float]] = {}  # (team id, key id) -> (jwt, issued at)


def _now() -> float:
    """Wall clock seconds (a seam for tests)."""
    return time.time()


class _ConnectFailed(Exception):
    """No connection could be opened for this batch."""


# --------------------------------------------------------------------------- auth


class _TokenAuth:
    """ES256 provider tokens, cached per (team id, key id) and renewed every ~40 minutes."""

    def __init__(self, key_pem: str, key_id: str, team_id: str) -> None:
        try:
            key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        except (ValueError, TypeError):
            raise ChannelAuthError("APNs: the .p8 signing key is not a readable PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ChannelAuthError("APNs: the .p8 signing key must be an EC P-256 key")
        self._key = key
        self.key_id = key_id
        self.team_id = team_id

    def __repr__(self) -> str:
        return f"<_TokenAuth team={self.team_id} kid={self.key_id}>"

    def bearer(self) -> str:
        """The current provider token (a new one only when the cached one is ~40 minutes old)."""
        cached = _JWT_CACHE.get((self.team_id, self.key_id))
        if cached is not None and _now() - cached[1] < JWT_RENEW_AFTER:
            return cached[0]
        return self._sign()

    def renew(self, stale: str) -> str:
        """Replace the token APNs called expired, unless another request already did."""
        cached = _JWT_CACHE.get((self.team_id, self.key_id))
        if cached is not None and cached[0] != stale:
            return cached[0]
        return self._sign()

    def _sign(self) -> str:
        issued = _now()
        token = jwt.encode({"iss": self.team_id, "iat": int(issued)}, self._key, algorithm="ES256",
                           headers={"kid": self.key_id})
        _JWT_CACHE[(self.team_id, self.key_id)] = (token, issued)
        return token


def _load_client_cert(ctx: ssl.SSLContext, cert_pem: str, key_pem: str, password: str | None) -> None:
    """Load PEM certificate + key text into ctx through a private temporary directory."""
    with tempfile.TemporaryDirectory(prefix="apns-") as tmp:
        path = os.path.join(tmp, "client.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(cert_pem.strip() + "\n" + key_pem.strip() + "\n")
        try:
            ctx.load_cert_chain(path, password=password or None)
        except (ssl.SSLError, ValueError):
            raise ChannelAuthError("APNs: the certificate or its private key could not be loaded") from None


# --------------------------------------------------------------------------- request building


def _message_uuid(value: str) -> str | None:
    try:
        return str(uuid_mod.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def _collapse_id(value: str) -> str:
    return value.encode()[:MAX_COLLAPSE_ID_BYTES].decode(errors="ignore")


def build_payload(msg: PushMessage) -> dict[str, Any]:
    """The APNs JSON payload: aps alert/sound/mutable-content, openDirect, image URL and custom data."""
    alert: dict[str, str] = {"body": msg.body}
    if msg.title:
        alert = {"title": msg.title, "body": msg.body}
    aps: dict[str, Any] = {"alert": alert, "sound": "default"}
    if msg.image_url:
        aps["mutable-content"] = 1
    doc: dict[str, Any] = {key: value for key, value in msg.data.items() if key != "aps"}
    doc["aps"] = aps
    if msg.open_direct:
        doc["openDirect"] = msg.open_direct
    if msg.image_url:
        doc["imageUrl"] = msg.image_url
    return doc


def build_headers(msg: PushMessage, authority: str, topic: str, bearer: str | None) -> list[tuple[str, str]]:
    """HTTP/2 request headers for one push (per-message values kept out of the HPACK table)."""
    expiration = int(_now()) + msg.ttl if msg.ttl else 0
    headers: list[tuple[str, str]] = [
        (":method", "POST"), (":scheme", "https"), (":authority", authority),
        NeverIndexedHeaderTuple(":path", f"/3/device/{msg.token}"),
        ("apns-topic", topic), ("apns-push-type", "alert"), ("apns-priority", "10"),
        ("apns-expiration", str(expiration)),
        NeverIndexedHeaderTuple("apns-collapse-id", _collapse_id(msg.uuid)),
    ]
    apns_id = _message_uuid(msg.uuid)
    if apns_id:
        headers.append(NeverIndexedHeaderTuple("apns-id", apns_id))
    if bearer:
        headers.append(("authorization", f"bearer {bearer}"))
    headers.append(("content-type", "application/json"))
    return headers


# --------------------------------------------------------------------------- answer classification


@dataclass(slots=True)
class _Verdict:
    """What one answer means: a final result, a channel refusal, or 'renew the JWT and resend'."""

    result: SendResult
    auth_refused: bool = False
    expired_jwt: bool = False


def _retry_after(headers: dict[str, str]) -> float | None:
    try:
        return max(0.0, float(headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _reason_of(resp: H2Response) -> tuple[str | None, dict[str, Any] | None]:
    """The JSON reason of an error answer; (None, None) if the body is not the documented JSON."""
    try:
        doc = json.loads(resp.body)
    except ValueError:
        return None, None
    if not isinstance(doc, dict) or not isinstance(doc.get("reason"), str):
        return None, None
    return doc["reason"], doc


def _fail(msg: PushMessage, code: str | None, text: str, **flags: Any) -> SendResult:
    return SendResult(message_id=msg.message_id, ok=False, error_code=code, error=text, **flags)


def _registered_after(msg: PushMessage, timestamp: Any) -> bool:
    """True when the token was (re)registered after the 410's timestamp (ms since epoch)."""
    if msg.token_registered_at is None or not isinstance(timestamp, int | float):
        return False
    registered = msg.token_registered_at
    if registered.tzinfo is None:
        registered = registered.replace(tzinfo=UTC)
    return registered.timestamp() * 1000 > timestamp


def _judge_gone(msg: PushMessage, reason: str, doc: dict[str, Any]) -> SendResult:
    stamp = doc.get("timestamp")
    if _registered_after(msg, stamp):
        return _fail(msg, reason, f"APNs {reason} at {stamp} predates the token's registration; token kept",
                     raw=doc)
    return _fail(msg, reason, f"APNs: device token inactive ({reason})", token_invalid=True, raw=doc)


def _judge_400(msg: PushMessage, reason: str, doc: dict[str, Any]) -> SendResult:
    if reason in TOKEN_INVALID_400:
        return _fail(msg, reason, f"APNs refused the device token ({reason})", token_invalid=True, raw=doc)
    if reason in TOPIC_REASONS:
        return _fail(msg, reason, f"APNs refused the topic/bundle id ({reason})", channel_error=True, raw=doc)
    if reason == "IdleTimeout":
        return _fail(msg, reason, "APNs: idle timeout", retryable=True, raw=doc)
    return _fail(msg, reason, f"APNs refused the notification ({reason})", payload_error=True, raw=doc)


def judge(msg: PushMessage, resp: H2Response) -> _Verdict:
    """Classify one APNs answer."""
    if resp.status == 200:
        apns_id = resp.headers.get("apns-id") or msg.uuid
        return _Verdict(SendResult(message_id=msg.message_id, ok=True, provider_message_id=apns_id))
    reason, doc = _reason_of(resp)
    if reason is None or doc is None:
        preview = resp.body[:120].decode(errors="replace")
        text = f"malformed APNs answer (status {resp.status}): {preview!r}"
        wait = _retry_after(resp.headers)
        return _Verdict(_fail(msg, "MalformedAnswer", text, retryable=True, retry_after=wait))
    return _judge_reason(msg, resp, reason, doc)


def _judge_reason(msg: PushMessage, resp: H2Response, reason: str, doc: dict[str, Any]) -> _Verdict:
    status = resp.status
    if status == 403:
        expired = reason == "ExpiredProviderToken"
        result = _fail(msg, reason, f"APNs refused the credentials ({reason})", channel_error=not expired,
                       retryable=expired, raw=doc)
        return _Verdict(result, auth_refused=not expired, expired_jwt=expired)
    if status == 410:
        return _Verdict(_judge_gone(msg, reason, doc))
    if status == 400:
        return _Verdict(_judge_400(msg, reason, doc))
    if status in (404, 405, 413):
        return _Verdict(_fail(msg, reason, f"APNs refused the notification ({reason})", payload_error=True,
                              raw=doc))
    text = f"APNs is busy or failing ({status} {reason})"
    if status not in RETRY_STATUSES:
        text = f"unexpected APNs answer ({status} {reason})"
    return _Verdict(_fail(msg, reason, text, retryable=True, retry_after=_retry_after(resp.headers), raw=doc))


# --------------------------------------------------------------------------- the backend


@dataclass(slots=True)
class _Batch:
    """Shared state of one send_batch call."""

    answered: int = 0
    auth_error: str | None = None
    connect_error: str | None = None
    cert_refused: bool = False
    renewed: bool = False


def _not_sent(msg: PushMessage, batch: _Batch) -> SendResult:
    """A push the batch gave up on: a channel error once APNs refused the credentials, else retryable."""
    if batch.auth_error:
        return _fail(msg, "NotSent", f"not sent: {batch.auth_error}", channel_error=True)
    text = batch.connect_error or "APNs: gave up after repeated resends"
    return _fail(msg, "NotSent", text, retryable=True)


class ApnsBackend(PushBackend):
    """Apple Push Notification service over HTTP/2 (token or certificate auth)."""

    type_name: ClassVar[str] = "apns"
    label: ClassVar[str] = "Apple Push Notification service (APNs)"
    platforms: ClassVar[tuple[str, ...]] = ("ios",)
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField("auth_mode", "Authentication", kind="choice", choices=("token", "certificate"),
                        help="Token: a .p8 signing key. Certificate: App ID + SSL certificate."),
        CredentialField("environment", "Environment", kind="choice", choices=("production", "sandbox")),
        CredentialField("bundle_id", "Bundle ID (topic)", help="e.g. com.example.app"),
        CredentialField("team_id", "Team ID", required=False, help="Token auth: 10-character Team ID"),
        CredentialField("key_id", "Key ID", required=False, help="Token auth: Key ID of the .p8 key"),
        CredentialField("private_key", "Signing key (.p8)", kind="textarea", required=False, secret=True,
                        help="Token auth: contents of AuthKey_XXXXXXXXXX.p8"),
        CredentialField("certificate", "SSL certificate (PEM)", kind="textarea", required=False,
                        help="Certificate auth: the push certificate in PEM"),
        CredentialField("certificate_key", "Certificate private key (PEM)", kind="textarea", required=False,
                        secret=True, help="Certificate auth: its private key in PEM"),
        CredentialField("certificate_password", "Private key password", kind="secret", required=False,
                        secret=True),
    )

    def __init__(
        self,
        credentials: dict[str, Any],
        options: ProviderOptions | None = None,
        session: aiohttp.ClientSession | None = None,  # unused: aiohttp has no HTTP/2 client
    ) -> None:
        super().__init__(credentials, options, session)
        self._client: H2Client | None = None
        self._connect_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._token_auth: _TokenAuth | None = None
        self._ssl: ssl.SSLContext | None = None
        self.connections_opened = 0

    # ---- configuration

    @property
    def mode(self) -> str:
        """'token' or 'certificate'."""
        return str(self.credentials.get("auth_mode") or "token")

    @property
    def base_url(self) -> str:
        """The endpoint: options.endpoint, else production or sandbox."""
        if self.options.endpoint:
            return self.options.endpoint.rstrip("/")
        sandbox = self.credentials.get("environment") == "sandbox"
        return SANDBOX_URL if sandbox else PRODUCTION_URL

    @property
    def topic(self) -> str:
        """The apns-topic (bundle id)."""
        topic = str(self.credentials.get("bundle_id") or "").strip()
        if not topic:
            raise ChannelAuthError("APNs: the bundle id (topic) is missing")
        return topic

    def _need(self, *names: str) -> list[str]:
        missing = [name for name in names if not str(self.credentials.get(name) or "").strip()]
        if missing:
            raise ChannelAuthError(f"APNs {self.mode} auth: missing {', '.join(missing)}")
        return [str(self.credentials[name]).strip() for name in names]

    def _auth(self) -> _TokenAuth | None:
        if self.mode != "token":
            return None
        if self._token_auth is None:
            team_id, key_id, key_pem = self._need("team_id", "key_id", "private_key")
            self._token_auth = _TokenAuth(key_pem, key_id, team_id)
        return self._token_auth

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is not None:
            return self._ssl
        ctx = ssl.create_default_context(cafile=self.options.ca_file)
        if not self.options.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        if self.mode == "certificate":
            cert_pem, key_pem = self._need("certificate", "certificate_key")
            _load_client_cert(ctx, cert_pem, key_pem, self.credentials.get("certificate_password"))
        self._ssl = ctx
        return ctx

    # ---- connection

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._connect_lock is None or self._connect_lock[0] is not loop:
            self._connect_lock = (loop, asyncio.Lock())
            self._drop_foreign_client(loop)
        return self._connect_lock[1]

    def _drop_foreign_client(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._client is not None and self._client.loop is not loop:
            try:
                self._client.abort()
            except RuntimeError:
                pass  # its event loop is already closed
            self._client = None

    async def _connection(self, batch: _Batch) -> H2Client:
        """The live connection, opened (once, whatever the concurrency) when there is none."""
        async with self._lock():
            client = self._client
            if client is not None and client.usable:
                return client
            if batch.connect_error:
                raise _ConnectFailed(batch.connect_error)
            try:
                self._client = await open_h2(self.base_url, self._ssl_context(), self.options.timeout, "APNs")
            except (OSError, H2Failure) as exc:  # OSError covers ssl.SSLError and TimeoutError
                raise self._connect_failed(batch, exc) from None
            self.connections_opened += 1
            if client is not None and client.transport is not None and not client.streams:
                client.close()
            return self._client

    def _connect_failed(self, batch: _Batch, exc: OSError | H2Failure) -> _ConnectFailed:
        refused = isinstance(exc, H2Failure) and (exc.cert_refused or exc.early) or cert_alert(exc)
        batch.cert_refused = batch.cert_refused or (refused and self.mode == "certificate")
        batch.connect_error = f"cannot connect to APNs at {self.base_url}: {exc or type(exc).__name__}"
        return _ConnectFailed(batch.connect_error)

    async def close(self) -> None:
        """Close the HTTP/2 connection."""
        client, self._client = self._client, None
        if client is not None and client.loop is asyncio.get_running_loop():
            await client.aclose()

    # ---- sending

    async def _post(self, msg: PushMessage, bearer: str | None, batch: _Batch) -> H2Response:
        client = await self._connection(batch)
        headers = build_headers(msg, client.authority, self.topic, bearer)
        body = json.dumps(build_payload(msg), separators=(",", ":"), ensure_ascii=False).encode()
        return await client.request(headers, body, self.options.timeout)

    async def _attempt(self, msg: PushMessage, batch: _Batch) -> _Verdict | None:
        """One try; None means 'resend now' (unprocessed stream or JWT renewed)."""
        auth = self._auth()
        bearer = auth.bearer() if auth else None
        try:
            resp = await self._post(msg, bearer, batch)
        except _ConnectFailed as exc:
            return _Verdict(_fail(msg, "ConnectError", str(exc), retryable=True))
        except H2Failure as exc:
            return self._on_failure(msg, batch, exc)
        batch.answered += 1
        verdict = judge(msg, resp)
        if verdict.expired_jwt and auth is not None and bearer is not None and not batch.renewed:
            batch.renewed = True
            auth.renew(bearer)
            return None
        if verdict.expired_jwt and auth is not None and bearer != auth.bearer():
            return None  # another stream already renewed it
        return verdict

    def _on_failure(self, msg: PushMessage, batch: _Batch, exc: H2Failure) -> _Verdict | None:
        if exc.unprocessed:
            return None
        return _Verdict(_fail(msg, "TransportError", f"APNs: {exc}", retryable=True))

    async def _send_one(self, msg: PushMessage, batch: _Batch, slots: asyncio.Semaphore) -> SendResult:
        async with slots:
            for _ in range(3):
                if batch.auth_error or batch.connect_error:
                    break
                verdict = await self._attempt(msg, batch)
                if verdict is None:
                    continue
                if verdict.auth_refused:
                    batch.auth_error = verdict.result.error
                return verdict.result
        return _not_sent(msg, batch)

    async def send_batch(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        """Send every message over the one connection; one result per message."""
        if not messages:
            return []
        self._auth()
        self._ssl_context()
        batch = _Batch()
        slots = asyncio.Semaphore(max(1, self.options.concurrency))
        results = await asyncio.gather(*(self._send_one(msg, batch, slots) for msg in messages))
        self._raise_for_batch(batch, results)
        return list(results)

    def _raise_for_batch(self, batch: _Batch, results: list[SendResult]) -> None:
        # Pushes APNs accepted before it refused the credentials were delivered: they are returned as results
        # (raising would make the engine release and later resend them); only a batch with none raises.
        if batch.auth_error and not any(r.ok for r in results):
            raise ChannelAuthError(batch.auth_error)
        if batch.cert_refused and not batch.answered:
            raise ChannelAuthError("APNs closed the TLS connection at the handshake: the push certificate "
                                   "was refused (expired, revoked, or for the other environment?)")
        if not batch.answered:
            text = batch.connect_error or next((r.error for r in results if r.error), "no answer from APNs")
            raise ProviderUnavailable(text)

    # ---- test connection

    async def test_connection(self) -> ConnectionCheck:
        """Send to an obviously-invalid token: BadDeviceToken proves the credentials, 403 refutes them."""
        details: dict[str, Any] = {"endpoint": self.base_url, "auth_mode": self.mode}
        probe = PushMessage(message_id=0, uuid=str(uuid_mod.uuid4()), token=TEST_TOKEN, platform="ios",
                            body="webadmin connection test")
        batch = _Batch()
        try:
            auth = self._auth()
            self._ssl_context()
            resp = await self._post(probe, auth.bearer() if auth else None, batch)
        except ChannelAuthError as exc:
            return ConnectionCheck(ok=False, message=str(exc), details=details)
        except (H2Failure, _ConnectFailed) as exc:
            if batch.cert_refused:
                return ConnectionCheck(ok=False, message=f"APNs refused the push certificate: {exc}",
                                       details=details)
            return ConnectionCheck(ok=False, message=f"Could not reach APNs: {exc}", details=details)
        return _probe_verdict(resp, details)


def _probe_verdict(resp: H2Response, details: dict[str, Any]) -> ConnectionCheck:
    reason, _doc = _reason_of(resp)
    details.update(status=resp.status, reason=reason)
    if resp.status == 400 and reason == "BadDeviceToken":
        return ConnectionCheck(ok=True, message="APNs accepted the credentials (the test token was refused "
                                                "as BadDeviceToken, as expected).", details=details)
    if resp.status == 403:
        return ConnectionCheck(ok=False, message=f"APNs refused the credentials: {reason}.", details=details)
    if reason in TOPIC_REASONS:
        return ConnectionCheck(ok=False, message=f"APNs refused the bundle id (topic): {reason}.",
                               details=details)
    if resp.status == 200:
        return ConnectionCheck(ok=True, message="APNs accepted the test push.", details=details)
    return ConnectionCheck(ok=False, message=f"Unexpected APNs answer: {resp.status} {reason or ''}".strip(),
                           details=details)
