"""OneSignal backend: one Create-message request carries many subscription ids of identical content."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

import aiohttp

from . import _http
from .base import (
    ConnectionCheck,
    CredentialField,
    ProviderOptions,
    PushBackend,
    PushMessage,
    SendResult,
)

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://api.onesignal.com"
MAX_BATCH = 20_000
MAX_COLLAPSE_ID = 64  # OneSignal: collapse_id has a "limit of 64 characters"
MAX_WEB_TOPIC = 32  # web_push_topic becomes the Web Push Topic header: at most 32 URL-safe characters (RFC 8030)
_INVALID_KEYS = ("invalid_player_ids", "invalid_subscription_ids")


def idempotency_key(messages: Sequence[PushMessage]) -> str:
    """The same key for the same request: its campaign(s) and message uuids, whatever their order.

    OneSignal keeps a key for 30 days and answers a repeated one with the earlier result instead of sending again,
    so an engine retry of an unchanged request (a timeout, a lost answer) delivers once. A retry that carries a
    different set of messages gets a different key; collapse_id below keeps that from showing twice on a device.
    The key must be a UUID (older OneSignal docs: version 3 or 4), so the SHA-256 is laid out as a version 4 one.
    """
    campaigns = ",".join(sorted({m.campaign_uuid or "" for m in messages}))
    identities = ",".join(sorted(m.uuid for m in messages))
    digest = hashlib.sha256(f"webadmin:onesignal:{campaigns}|{identities}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def collapse_id(m: PushMessage) -> str:
    """One notification per device and campaign: a re-sent push replaces the one shown instead of adding one."""
    return (m.campaign_uuid or m.uuid)[:MAX_COLLAPSE_ID]


def web_push_topic(m: PushMessage) -> str:
    """collapse_id for browsers (Chrome, Edge, Firefox replace a shown notification of the same topic)."""
    return re.sub(r"[^A-Za-z0-9]", "", m.campaign_uuid or m.uuid)[:MAX_WEB_TOPIC]


def _media(m: PushMessage) -> dict[str, Any]:
    """Image fields for Android, iOS and web push."""
    if not m.image_url:
        return {}
    return {"big_picture": m.image_url, "ios_attachments": {"image": m.image_url},
            "chrome_web_image": m.image_url}


def _link(m: PushMessage) -> dict[str, Any]:
    """`url` for web links (every platform), `app_url` for app deep links."""
    if not m.open_direct:
        return {}
    if m.open_direct.startswith(("https://", "http://")):
        return {"url": m.open_direct}
    return {"app_url": m.open_direct}


def build_payload(app_id: str, chunk: _http.Chunk) -> dict[str, Any]:
    """The Create-message JSON for one chunk."""
    m = chunk.sample
    payload: dict[str, Any] = {
        "app_id": app_id,
        "target_channel": "push",
        "include_subscription_ids": chunk.keys,
        "contents": {"en": m.body},
        "idempotency_key": idempotency_key(chunk.messages),
        "collapse_id": collapse_id(m),
        "web_push_topic": web_push_topic(m),
    }
    if m.title:
        payload["headings"] = {"en": m.title}
    data = _http.shared_data(m)
    if m.open_direct:
        data["openDirect"] = m.open_direct
    if data:
        payload["data"] = data
    if m.ttl is not None:
        payload["ttl"] = max(0, m.ttl)
    return payload | _link(m) | _media(m)


def _invalid_ids(errors: Any) -> set[str]:
    """Subscription ids the answer reports as invalid."""
    if not isinstance(errors, dict):
        return set()
    found: set[str] = set()
    for key in _INVALID_KEYS:
        ids = errors.get(key)
        if isinstance(ids, list):
            found.update(str(i) for i in ids)
    return found


def _errors_text(errors: Any) -> str:
    """The `errors` member as one line."""
    if isinstance(errors, list):
        return "; ".join(str(e) for e in errors)
    return str(errors) if errors else ""


def _not_subscribed(errors: Any) -> bool:
    """OneSignal's 'All included players are not subscribed' (no recipient could receive it)."""
    return isinstance(errors, list) and any("not subscribed" in str(e).lower() for e in errors)


def _result_ok(m: PushMessage, key: str, invalid: set[str], notification_id: str, errors: Any) -> SendResult:
    """Result of one message of a 200 answer."""
    if key in invalid:
        text = "subscription id invalid or unsubscribed"
        return _http.error_result(m.message_id, "INVALID_SUBSCRIPTION", text, token_invalid=True)
    if notification_id:
        return SendResult(m.message_id, ok=True, provider_message_id=notification_id)
    text = f"no notification created: {_errors_text(errors) or 'no id in answer'}"
    return _http.error_result(m.message_id, "NOT_CREATED", text, payload_error=True)


def _results_ok(chunk: _http.Chunk, data: dict[str, Any]) -> list[SendResult]:
    """Results of a 200 answer: invalid ids token_invalid, the rest ok (or failed if nothing was created)."""
    notification_id, errors = str(data.get("id") or ""), data.get("errors")
    invalid = _invalid_ids(errors)
    if not notification_id and not invalid and _not_subscribed(errors):
        invalid = set(chunk.keys)
    return [_result_ok(m, key, invalid, notification_id, errors)
            for key, group in chunk.members.items() for m in group]


def _error_flags(answer: _http.Answer) -> dict[str, Any] | None:
    """SendResult flags for a non-200 answer; None when the answer is malformed."""
    status = answer.status
    if status == 429 or status >= 500:
        return {"retryable": True, "retry_after": _http.parse_retry_after(answer.headers.get("Retry-After"))}
    if status in (401, 403):
        return {}
    if not answer.json_ok:
        return None
    return {"channel_error": True} if status == 404 else {"payload_error": True}


def _results_error(chunk: _http.Chunk, answer: _http.Answer) -> list[SendResult]:
    """Results of a non-200 answer, the same for every message of the request."""
    flags = _error_flags(answer)
    if flags is None:
        return [_http.malformed_result(m.message_id, answer) for m in chunk.messages]
    data = answer.data if isinstance(answer.data, dict) else {}
    text = _errors_text(data.get("errors")) or answer.describe()
    code = _http.AUTH_REFUSED if answer.status in (401, 403) else f"HTTP_{answer.status}"
    return [_http.error_result(m.message_id, code, text, **flags) for m in chunk.messages]


def classify(chunk: _http.Chunk, answer: _http.Answer) -> list[SendResult]:
    """One result per message of the chunk from OneSignal's answer."""
    if answer.status in (200, 201, 202):
        if not isinstance(answer.data, dict):
            return [_http.malformed_result(m.message_id, answer) for m in chunk.messages]
        return _results_ok(chunk, answer.data)
    return _results_error(chunk, answer)


class OneSignalBackend(PushBackend):
    """OneSignal Create message (POST {endpoint}/notifications) targeting include_subscription_ids."""

    type_name: ClassVar[str] = "onesignal"
    label: ClassVar[str] = "OneSignal"
    default_batch_size: ClassVar[int] = 2_000
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField("app_id", "App ID", help="Settings > Keys & IDs in the OneSignal dashboard."),
        CredentialField("api_key", "App API key", kind="secret", secret=True,
                        help="The app's REST API key (sent as 'Authorization: Key …')."),
    )

    def __init__(self, credentials: dict[str, Any], options: ProviderOptions | None = None,
                 session: aiohttp.ClientSession | None = None) -> None:
        super().__init__(credentials, options or ProviderOptions(batch_size=self.default_batch_size), session)
        self._http = _http.SessionHolder(session, self.options)

    @property
    def batch_size(self) -> int:
        """Subscription ids per request (1…20,000)."""
        return min(MAX_BATCH, max(1, self.options.batch_size))

    def _base(self) -> str:
        return (self.options.endpoint or DEFAULT_ENDPOINT).rstrip("/")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.credentials.get('api_key', '')}", "Accept": "application/json"}

    async def _send_chunk(self, chunk: _http.Chunk, _token: str) -> list[SendResult]:
        """POST one Create-message request for a chunk."""
        payload = build_payload(str(self.credentials.get("app_id", "")), chunk)
        try:
            session = await self._http.get()
            answer = await _http.request(session, "POST", f"{self._base()}/notifications?c=push",
                                         self.options, json=payload, headers=self._headers())
        except _http.TRANSPORT_ERRORS as exc:
            return [_http.transport_result(m.message_id, exc) for m in chunk.messages]
        return classify(chunk, answer)

    async def send_batch(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        """Group by content, dedupe and chunk the subscription ids, send the chunks concurrently."""
        chunks, keyless = _http.plan_chunks(messages, lambda m: m.token, self.batch_size)
        results = [_http.error_result(m.message_id, "NO_SUBSCRIPTION_ID", "message has no subscription id",
                                      token_invalid=True) for m in keyless]

        async def static_key(_stale: str | None) -> str:
            return ""

        results += await _http.send_with_token(chunks, self._send_chunk, static_key,
                                               limit=self.options.concurrency, refresh=False)
        _http.resolve_refused(results, self.label)
        _http.raise_if_all_transport(results, self.label)
        return results

    async def test_connection(self) -> ConnectionCheck:
        """List one message of the app (View messages) to check the app id and key."""
        app_id = str(self.credentials.get("app_id", ""))
        url = f"{self._base()}/notifications"
        try:
            session = await self._http.get()
            answer = await _http.request(session, "GET", url, self.options, headers=self._headers(),
                                         params={"app_id": app_id, "limit": "1"})
        except _http.TRANSPORT_ERRORS as exc:
            return ConnectionCheck(ok=False, message=f"OneSignal unreachable: {type(exc).__name__}: {exc}")
        details = {"status": answer.status, "app_id": app_id}
        if answer.status == 200 and answer.json_ok:
            msg = "OneSignal accepted the app id and API key."
            return ConnectionCheck(ok=True, message=msg, details=details)
        return ConnectionCheck(ok=False, message=f"OneSignal refused the check: {answer.describe()}",
                               details=details)

    async def close(self) -> None:
        """Close the session if this backend created it."""
        await self._http.close()
