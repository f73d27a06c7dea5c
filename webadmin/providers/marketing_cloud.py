"""Salesforce Marketing Cloud MobilePush backend (ExactTarget push/v1 API): sends by subscriber key."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp

from . import _http
from .base import (
    ChannelAuthError,
    ConnectionCheck,
    CredentialField,
    ProviderError,
    ProviderOptions,
    ProviderUnavailable,
    PushBackend,
    PushMessage,
    SendResult,
)

log = logging.getLogger(__name__)

LEGACY_AUTH = "https://auth.exacttargetapis.com"
LEGACY_REST = "https://www.exacttargetapis.com"
MAX_KEYS = 5_000
DEFAULT_LIFETIME = 1080.0  # seconds; v2 tokens live 20 minutes


@dataclass(frozen=True, slots=True)
class McToken:
    """A cached access token with its renewal deadline (monotonic clock) and REST base URL."""

    access_token: str
    deadline: float
    rest_url: str | None

    def __repr__(self) -> str:  # never show the token
        return f"<McToken rest_url={self.rest_url!r}>"


#: Access tokens shared by every backend instance of the process, keyed by client id.
_TOKENS: dict[str, McToken] = {}


def clear_token_cache() -> None:
    """Forget every cached access token (tests, credential changes)."""
    _TOKENS.clear()


def build_payload(m: PushMessage, keys: list[str] | None = None) -> dict[str, Any]:
    """The messageContact (with keys) or messageApp (without) send body."""
    payload: dict[str, Any] = {}
    if keys is not None:
        payload["subscriberKeys"] = keys
    payload |= {"override": True, "messageText": m.body}
    if m.title:
        payload["title"] = m.title
    if m.open_direct:
        payload["openDirect"] = m.open_direct
    return payload


def _not_authorized(data: Any) -> bool:
    """The seed's check: a body {"message": "Not Authorized"} means the token was refused."""
    return isinstance(data, dict) and data.get("message") == "Not Authorized"


def _error_text(answer: _http.Answer) -> str:
    """The API's error message, or a description of the answer."""
    data = answer.data if isinstance(answer.data, dict) else {}
    return str(data.get("message") or answer.describe())


def _error_flags(answer: _http.Answer) -> dict[str, Any] | None:
    """SendResult flags for an error answer; None when the answer is malformed."""
    status = answer.status
    if status == 429 or status >= 500:
        return {"retryable": True, "retry_after": _http.parse_retry_after(answer.headers.get("Retry-After"))}
    if not answer.json_ok:
        return None
    return {"channel_error": True} if status == 404 else {"payload_error": True}


def classify(messages: Sequence[PushMessage], answer: _http.Answer) -> list[SendResult]:
    """One result per message from a push/v1 send answer."""
    if _not_authorized(answer.data) or answer.status in (401, 403):
        return [_http.error_result(m.message_id, _http.AUTH_REFUSED, _error_text(answer)) for m in messages]
    if 200 <= answer.status < 300:
        token_id = answer.data.get("tokenId") if isinstance(answer.data, dict) else None
        if token_id:
            return [SendResult(m.message_id, ok=True, provider_message_id=str(token_id)) for m in messages]
        return [_http.malformed_result(m.message_id, answer) for m in messages]
    flags = _error_flags(answer)
    if flags is None:
        return [_http.malformed_result(m.message_id, answer) for m in messages]
    text = _error_text(answer)
    return [_http.error_result(m.message_id, f"HTTP_{answer.status}", text, **flags) for m in messages]


class MarketingCloudBackend(PushBackend):
    """MobilePush messageContact sends (≤5,000 subscriber keys a request) with v2 or legacy auth."""

    type_name: ClassVar[str] = "marketing_cloud"
    label: ClassVar[str] = "Salesforce Marketing Cloud MobilePush"
    platforms: ClassVar[tuple[str, ...]] = ("android", "ios")
    default_batch_size: ClassVar[int] = MAX_KEYS
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField("client_id", "Client ID"),
        CredentialField("client_secret", "Client secret", kind="secret", secret=True),
        CredentialField("message_id", "MobilePush message ID", help="API key of the message definition."),
        CredentialField("auth_mode", "Authentication", kind="choice", choices=("v2", "legacy"),
                        help="v2: Installed Packages (OAuth 2.0); legacy: v1/requestToken."),
        CredentialField("auth_base_url", "Authentication base URI", required=False,
                        help="v2 only: https://YOUR_SUBDOMAIN.auth.marketingcloudapis.com"),
        CredentialField("account_id", "Account ID (MID)", required=False,
                        help="v2 only: business unit to act for."),
    )

    def __init__(self, credentials: dict[str, Any], options: ProviderOptions | None = None,
                 session: aiohttp.ClientSession | None = None) -> None:
        super().__init__(credentials, options or ProviderOptions(batch_size=self.default_batch_size), session)
        self._http = _http.SessionHolder(session, self.options)
        self._lock: asyncio.Lock | None = None

    @property
    def client_id(self) -> str:
        """The API integration's client id (also the token cache key)."""
        return str(self.credentials.get("client_id", ""))

    @property
    def legacy(self) -> bool:
        """Whether the legacy v1/requestToken authentication is used."""
        return str(self.credentials.get("auth_mode", "v2")).lower() == "legacy"

    @property
    def batch_size(self) -> int:
        """Distinct subscriber keys per request (1…5,000)."""
        return min(MAX_KEYS, max(1, self.options.batch_size))

    def _auth_base(self) -> str:
        base = self.options.auth_endpoint or self.credentials.get("auth_base_url") or LEGACY_AUTH
        return str(base).rstrip("/")

    def _rest_base(self) -> str:
        cached = _TOKENS.get(self.client_id)
        base = self.options.endpoint or (cached and cached.rest_url) or self.credentials.get("rest_base_url")
        return str(base or LEGACY_REST).rstrip("/")

    def _token_request(self) -> tuple[str, dict[str, Any]]:
        """URL and JSON body of the token request for the configured auth mode."""
        secret = str(self.credentials.get("client_secret", ""))
        if self.legacy:
            legacy_body = {"clientId": self.client_id, "clientSecret": secret}
            return f"{self._auth_base()}/v1/requestToken", legacy_body
        body: dict[str, Any] = {"grant_type": "client_credentials", "client_id": self.client_id,
                                "client_secret": secret}
        if self.credentials.get("account_id"):
            body["account_id"] = self.credentials["account_id"]
        return f"{self._auth_base()}/v2/token", body

    async def _fetch_token(self) -> McToken:
        """Request a new access token from the auth endpoint."""
        url, body = self._token_request()
        try:
            session = await self._http.get()
            answer = await _http.request(session, "POST", url, self.options, json=body)
        except _http.TRANSPORT_ERRORS as exc:
            raise ProviderUnavailable(f"Marketing Cloud auth unreachable: {type(exc).__name__}") from None
        return self._parse_token(answer)

    def _parse_token(self, answer: _http.Answer) -> McToken:
        """McToken from a token answer; raise ChannelAuthError/ProviderUnavailable otherwise."""
        if answer.status == 429 or answer.status >= 500:
            retry_after = _http.parse_retry_after(answer.headers.get("Retry-After"))
            raise ProviderUnavailable(f"Marketing Cloud auth unavailable: HTTP {answer.status}",
                                      retry_after=retry_after)
        data = answer.data if isinstance(answer.data, dict) else {}
        if answer.status != 200:
            reason = data.get("error_description") or data.get("error") or data.get("message") or ""
            raise ChannelAuthError(
                f"Marketing Cloud refused the client id/secret (HTTP {answer.status}) {reason}".strip())
        token = data.get("accessToken" if self.legacy else "access_token")
        if not token:
            raise ProviderUnavailable(f"Marketing Cloud auth: malformed token answer: {answer.describe()}")
        lifetime = float(data.get("expiresIn" if self.legacy else "expires_in") or DEFAULT_LIFETIME)
        deadline = time.monotonic() + lifetime - min(300.0, lifetime / 4)
        return McToken(str(token), deadline, data.get("rest_instance_url"))

    async def access_token(self, stale: str | None = None) -> str:
        """The cached token of this client id; renewed near expiry or when `stale` is the cached one."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            cached = _TOKENS.get(self.client_id)
            if cached is None or time.monotonic() >= cached.deadline or cached.access_token == stale:
                cached = await self._fetch_token()
                _TOKENS[self.client_id] = cached
                log.info("Marketing Cloud token renewed for client %s…", self.client_id[:4])
            return cached.access_token

    async def _post(self, path: str, body: dict[str, Any], token: str) -> _http.Answer:
        """POST a push/v1 request with the bearer token."""
        session = await self._http.get()
        url = f"{self._rest_base()}/push/v1/{path}/{self.credentials.get('message_id', '')}/send"
        headers = {"Authorization": f"Bearer {token}"}
        return await _http.request(session, "POST", url, self.options, json=body, headers=headers)

    async def _send_chunk(self, chunk: _http.Chunk, token: str) -> list[SendResult]:
        """messageContact send for one chunk of distinct subscriber keys."""
        try:
            answer = await self._post("messageContact", build_payload(chunk.sample, chunk.keys), token)
        except _http.TRANSPORT_ERRORS as exc:
            return [_http.transport_result(m.message_id, exc) for m in chunk.messages]
        return classify(chunk.messages, answer)

    async def _send_app(self, message: PushMessage, token: str) -> list[SendResult]:
        """messageApp send ("all users of the app") of one message."""
        try:
            answer = await self._post("messageApp", build_payload(message), token)
        except _http.TRANSPORT_ERRORS as exc:
            return [_http.transport_result(message.message_id, exc)]
        return classify([message], answer)

    async def _run(self, items: Sequence[Any], send: _http.Sender) -> list[SendResult]:
        """Send with one forced token renewal on refusal, then apply the batch-level rules."""
        results = await _http.send_with_token(items, send, self.access_token, limit=self.options.concurrency)
        _http.resolve_refused(results, self.label)
        _http.raise_if_all_transport(results, self.label)
        return results

    async def send_batch(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        """Group by content, dedupe subscriber keys, send ≤5,000 keys per request."""
        chunks, keyless = _http.plan_chunks(messages, lambda m: m.recipient, self.batch_size)
        results = [_http.error_result(m.message_id, "NO_SUBSCRIBER_KEY", "message has no subscriber key",
                                      payload_error=True) for m in keyless]
        if chunks:
            results += await self._run(chunks, self._send_chunk)
        return results

    async def send_to_app(self, message: PushMessage) -> SendResult:
        """Send one message to every user of the app (messageApp)."""
        return (await self._run([message], self._send_app))[0]

    async def test_connection(self) -> ConnectionCheck:
        """Get a fresh token and read the message definition (GET push/v1/message/{id})."""
        message_id = str(self.credentials.get("message_id", ""))
        try:
            token = await self.access_token(stale=getattr(_TOKENS.get(self.client_id), "access_token", None))
            session = await self._http.get()
            answer = await _http.request(session, "GET", f"{self._rest_base()}/push/v1/message/{message_id}",
                                         self.options, headers={"Authorization": f"Bearer {token}"})
        except ProviderError as exc:
            return ConnectionCheck(ok=False, message=str(exc))
        except _http.TRANSPORT_ERRORS as exc:
            return ConnectionCheck(ok=False, message=f"Marketing Cloud unreachable: {type(exc).__name__}")
        details = {"status": answer.status, "rest_url": self._rest_base()}
        if answer.status == 200:
            return ConnectionCheck(ok=True, message="Token obtained and message definition found.",
                                   details=details)
        return ConnectionCheck(ok=False, message=f"Token obtained, but message {message_id!r}: "
                               f"{_error_text(answer)}", details=details)

    async def close(self) -> None:
        """Close the session if this backend created it."""
        await self._http.close()
