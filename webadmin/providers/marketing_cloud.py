"""Salesforce Marketing Cloud MobilePush backend (ExactTarget push/v1 API): sends by subscriber key.

`messageContact` reaches every device of a contact, while the engine has one message per device. So each subscriber
key gets one send per campaign: a second message of the campaign to the same key (another device of the subscriber,
on the other platform's channel or in a later batch) is recorded as sent by that earlier request, not sent again.
The ledger of sent keys lives in the worker process (see ContactLedger for its bounds).

`send_to_app` is the messageApp ("all users") request. The engine makes it at most once per campaign, claimed in the
database first (webadmin/sending/app_sends.py), so it reports a request that may have reached Marketing Cloud as
OUTCOME_UNKNOWN rather than retryable.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
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


def _clock() -> float:
    """Monotonic seconds for token deadlines (a seam for tests)."""
    return time.monotonic()


#: Access tokens shared by every backend instance of the process, keyed by client id.
_TOKENS: dict[str, McToken] = {}


def clear_token_cache() -> None:
    """Forget every cached access token (tests, credential changes)."""
    _TOKENS.clear()


LEDGER_MAX_KEYS = 250_000  # subscriber keys remembered per worker process (~100 bytes each)


class ContactLedger:
    """Which subscriber keys each notification already reached, shared by the backends and threads of a process.

    A scope is (client id, MobilePush message id, the notification's content including its campaign). Keys being
    sent right now are "in flight": a second backend meeting one (the other platform's channel in the same batch)
    gets a retryable answer and finds the key sent when the engine retries. Only the most recent `max_keys` keys
    are kept (oldest notifications forgotten first); a worker restart, or another worker process, starts empty, so
    a subscriber whose devices are sent by different processes can get the notification once per process.
    """

    def __init__(self, max_keys: int = LEDGER_MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._sent: OrderedDict[Hashable, dict[str, str]] = OrderedDict()  # scope → key → tokenId
        self._in_flight: dict[Hashable, set[str]] = {}
        self._count = 0

    def claim(self, scope: Hashable, keys: Iterable[str]) -> tuple[dict[str, str], set[str], list[str]]:
        """Split keys into (already sent: key → tokenId, in flight elsewhere, claimed now by the caller)."""
        with self._lock:
            sent = self._sent.get(scope, {})
            busy = self._in_flight.setdefault(scope, set())
            done: dict[str, str] = {}
            waiting: set[str] = set()
            mine: list[str] = []
            for key in keys:
                if key in sent:
                    done[key] = sent[key]
                elif key in busy:
                    waiting.add(key)
                else:
                    mine.append(key)
            busy.update(mine)
            return done, waiting, mine

    def settle(self, scope: Hashable, claimed: Iterable[str], delivered: dict[str, str]) -> None:
        """End the caller's claims: delivered keys (key → tokenId) are remembered, the others may be sent again."""
        with self._lock:
            busy = self._in_flight.get(scope, set())
            busy.difference_update(claimed)
            if not busy:
                self._in_flight.pop(scope, None)
            if not delivered:
                return
            sent = self._sent.setdefault(scope, {})
            self._sent.move_to_end(scope)
            before = len(sent)
            sent.update(delivered)
            self._count += len(sent) - before
            self._evict()

    def _evict(self) -> None:
        """Forget the oldest notifications' keys beyond max_keys."""
        while self._count > self.max_keys and self._sent:
            scope, sent = next(iter(self._sent.items()))
            excess = self._count - self.max_keys
            if excess >= len(sent):
                del self._sent[scope]
                self._count -= len(sent)
                continue
            for key in list(itertools.islice(sent, excess)):
                del sent[key]
            self._count -= excess

    def clear(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._sent.clear()
            self._in_flight.clear()
            self._count = 0


LEDGER = ContactLedger()


@dataclass(slots=True)
class _Plan:
    """One batch after the ledger: what to send, what earlier sends cover, what waits, and the claims to settle."""

    to_send: list[PushMessage] = field(default_factory=list)
    results: list[SendResult] = field(default_factory=list)
    claims: dict[Hashable, set[str]] = field(default_factory=dict)  # scope → keys this batch claimed
    scope_of: dict[int, Hashable] = field(default_factory=dict)  # message id → its scope


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


#: No connection was made, so the request cannot have been sent.
NOT_CONNECTED: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError,
                                                  *((aiohttp.ConnectionTimeoutError,)
                                                    if hasattr(aiohttp, "ConnectionTimeoutError") else ()))
#: The error code of a messageApp request that may or may not have been accepted.
OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"


def _outcome_unknown(message_id: int, text: str) -> SendResult:
    """A messageApp result that must not be retried: Marketing Cloud may have sent it."""
    return _http.error_result(message_id, OUTCOME_UNKNOWN, f"{text}; it may have gone out to all users, so it is "
                              "not sent again: check the MobilePush message's send log in Marketing Cloud")


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
        deadline = _clock() + lifetime - min(300.0, lifetime / 4)
        return McToken(str(token), deadline, data.get("rest_instance_url"))

    async def access_token(self, stale: str | None = None) -> str:
        """The cached token of this client id; renewed near expiry or when `stale` is the cached one."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            cached = _TOKENS.get(self.client_id)
            if cached is None or _clock() >= cached.deadline or cached.access_token == stale:
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
        """messageApp send ("all users of the app") of one message.

        Sent once per campaign, so a request that may have reached Marketing Cloud is never reported retryable:
        only a connection that was never made is (CONNECTION_ERROR); a timeout, a reset after the request was
        written, or a 2xx without a tokenId is OUTCOME_UNKNOWN.
        """
        try:
            answer = await self._post("messageApp", build_payload(message), token)
        except NOT_CONNECTED as exc:
            return [_http.transport_result(message.message_id, exc)]
        except _http.TRANSPORT_ERRORS as exc:
            return [_outcome_unknown(message.message_id, f"no answer to the messageApp request "
                                                         f"({type(exc).__name__}: {exc})")]
        results = classify([message], answer)
        if 200 <= answer.status < 300 and not results[0].ok:
            return [_outcome_unknown(message.message_id, f"accepted without a tokenId: {answer.describe()}")]
        return results

    async def _run(self, items: Sequence[Any], send: _http.Sender) -> list[SendResult]:
        """Send with one forced token renewal on refusal, then apply the batch-level rules."""
        results = await _http.send_with_token(items, send, self.access_token, limit=self.options.concurrency)
        _http.resolve_refused(results, self.label)
        _http.raise_if_all_transport(results, self.label)
        return results

    async def send_batch(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        """Group by content, dedupe subscriber keys (within the batch and per campaign), send ≤5,000 per request."""
        plan = self._plan(messages)
        sent: list[SendResult] = []
        try:
            chunks, _ = _http.plan_chunks(plan.to_send, lambda m: m.recipient, self.batch_size)
            if chunks:
                sent = await self._run(chunks, self._send_chunk)
        finally:
            self._settle(plan, sent)
        return plan.results + sent

    def _scope(self, m: PushMessage) -> Hashable | None:
        """The ledger scope of a message; None without a campaign (two sends of the same text are two sends)."""
        if m.campaign_uuid is None:
            return None
        return (self.client_id, str(self.credentials.get("message_id", "")), _http.content_key(m))

    def _plan(self, messages: Sequence[PushMessage]) -> _Plan:
        """Messages without a key fail; keys the ledger knows are covered or wait; the rest is claimed and sent."""
        plan = _Plan()
        by_scope: dict[Hashable, list[PushMessage]] = {}
        for m in messages:
            if not m.recipient:
                # Not a payload problem (it must not count towards pausing the campaign): the device is anonymous.
                plan.results.append(_http.error_result(m.message_id, "NO_SUBSCRIBER_KEY",
                                                       "message has no subscriber key (messageContact needs one)"))
                continue
            scope = self._scope(m)
            if scope is None:
                plan.to_send.append(m)
            else:
                by_scope.setdefault(scope, []).append(m)
        for scope, group in by_scope.items():
            done, waiting, mine = LEDGER.claim(scope, dict.fromkeys(str(m.recipient) for m in group))
            plan.claims[scope] = claimed = set(mine)
            for m in group:
                known = self._known(m, done, waiting)
                if known is not None:
                    plan.results.append(known)
                elif m.recipient in claimed:
                    plan.to_send.append(m)
                    plan.scope_of[m.message_id] = scope
        return plan

    def _known(self, m: PushMessage, done: dict[str, str], waiting: set[str]) -> SendResult | None:
        """The result of a message whose key an earlier or concurrent send of the campaign covers."""
        key = str(m.recipient)
        if key in done:
            return SendResult(m.message_id, ok=True, provider_message_id=done[key])
        if key in waiting:
            text = "another message of this campaign to the same subscriber key is being sent"
            return _http.error_result(m.message_id, "CONTACT_IN_FLIGHT", text, retryable=True,
                                      retry_after=self.options.timeout)
        return None

    def _settle(self, plan: _Plan, sent: list[SendResult]) -> None:
        """Remember the claimed keys that were accepted; release the others (a retry may send them)."""
        delivered: dict[Hashable, dict[str, str]] = {scope: {} for scope in plan.claims}
        accepted = {r.message_id: r.provider_message_id for r in sent if r.ok and r.provider_message_id}
        for m in plan.to_send:
            scope = plan.scope_of.get(m.message_id)
            if scope is not None and m.message_id in accepted:
                delivered[scope][str(m.recipient)] = str(accepted[m.message_id])
        for scope, keys in plan.claims.items():
            LEDGER.settle(scope, keys, delivered[scope])

    async def send_to_app(self, message: PushMessage) -> SendResult:
        """Send one message to every user of the app (messageApp): the result, or ChannelAuthError (credentials
        refused) / ProviderUnavailable (auth or API unreachable: nothing was sent)."""
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
