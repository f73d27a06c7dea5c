"""Shared HTTP plumbing of the push backends: sessions, answers, Retry-After, batching, auth retry."""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import aiohttp
import orjson

from ._h2 import H2Failure
from .base import (
    ChannelAuthError,
    ProviderError,
    ProviderOptions,
    ProviderUnavailable,
    PushMessage,
    SendResult,
)

T = TypeVar("T")

#: Errors of one HTTP exchange that got no (complete) answer: refused, reset, timed out.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError, H2Failure)
TRANSPORT_CODES = frozenset({"TIMEOUT", "CONNECTION_ERROR"})
#: Internal marker: the provider refused the access token/key for this request.
AUTH_REFUSED = "AUTH_REFUSED"
_SNIPPET = 200


@dataclass(slots=True)
class Answer:
    """One HTTP answer, read completely: status, headers, parsed JSON (or None) and a text snippet."""

    status: int
    headers: Mapping[str, str]
    data: Any
    text: str
    json_ok: bool

    def describe(self) -> str:
        """Short human text of the answer for error messages."""
        kind = self.headers.get("Content-Type", "?")
        return f"HTTP {self.status} ({kind}): {self.text[:120]!r}"


def ssl_context(options: ProviderOptions) -> ssl.SSLContext:
    """TLS context honouring options.verify_tls and options.ca_file."""
    ctx = ssl.create_default_context(cafile=options.ca_file)
    if not options.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@functools.lru_cache(maxsize=64)
def _custom_tls(ca_file: str | None, verify_tls: bool) -> ssl.SSLContext:
    """One context per TLS configuration (loading a CA file per request would cost milliseconds)."""
    return ssl_context(ProviderOptions(ca_file=ca_file, verify_tls=verify_tls))


def tls_for(options: ProviderOptions) -> ssl.SSLContext | None:
    """The context a request must carry when the channel's TLS options differ from a shared session's defaults."""
    if options.ca_file is None and options.verify_tls:
        return None
    return _custom_tls(options.ca_file, options.verify_tls)


class SessionHolder:
    """Use the session handed in, or create one lazily (connector limit = concurrency) and close it."""

    def __init__(self, session: aiohttp.ClientSession | None, options: ProviderOptions) -> None:
        self._session = session
        self._owned = False
        self._options = options

    async def get(self) -> aiohttp.ClientSession:
        """The session to send with."""
        if self._session is None or self._session.closed:
            limit = max(1, self._options.concurrency)
            connector = aiohttp.TCPConnector(limit=limit, ssl=ssl_context(self._options))
            self._session = aiohttp.ClientSession(connector=connector)
            self._owned = True
        return self._session

    async def close(self) -> None:
        """Close the session if this holder created it."""
        if self._owned and self._session is not None:
            await self._session.close()
        self._session = None
        self._owned = False


def _parse_body(raw: bytes) -> tuple[Any, bool]:
    """JSON-decode a body (orjson, else the stdlib's more lenient parser); (None, False) when it is not JSON."""
    try:
        return orjson.loads(raw), True
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw.decode("utf-8")), True
    except (UnicodeDecodeError, ValueError):
        return None, False


async def request(
    session: aiohttp.ClientSession, method: str, url: str, options: ProviderOptions, **kwargs: Any
) -> Answer:
    """Make one request with the per-request timeout and the channel's TLS options; read the whole answer.

    The worker runtime's shared session has default TLS settings, so options.ca_file / verify_tls go on the request
    (aiohttp keeps connections made with a different context apart).
    """
    timeout = aiohttp.ClientTimeout(total=options.timeout)
    tls = tls_for(options)
    if tls is not None:
        kwargs.setdefault("ssl", tls)
    async with session.request(method, url, timeout=timeout, **kwargs) as resp:
        raw = await resp.read()
    return answer(resp.status, resp.headers, raw)


def answer(status: int, headers: Mapping[str, str], raw: bytes) -> Answer:
    """An Answer from a status, case-insensitive headers and the raw body."""
    data, ok = _parse_body(raw)
    return Answer(status, headers, data, raw[:_SNIPPET].decode("utf-8", "replace"), ok)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def transport_result(message_id: int, exc: BaseException) -> SendResult:
    """Retryable result of a request that got no answer (timeout, reset, refused)."""
    timed_out = isinstance(exc, TimeoutError) or getattr(exc, "timed_out", False)
    code = "TIMEOUT" if timed_out else "CONNECTION_ERROR"
    text = "no answer within the timeout" if timed_out else f"connection failed: {type(exc).__name__}: {exc}"
    return SendResult(message_id, ok=False, error_code=code, error=text, retryable=True)


def malformed_result(message_id: int, answer: Answer) -> SendResult:
    """Retryable result of an answer that could not be understood."""
    error = f"malformed answer from provider: {answer.describe()}"
    return SendResult(message_id, ok=False, error_code="MALFORMED_RESPONSE", error=error, retryable=True)


def error_result(message_id: int, code: str, error: str, **flags: Any) -> SendResult:
    """A failed result with the given code, text and flags."""
    return SendResult(message_id, ok=False, error_code=code, error=error, **flags)


def raise_if_all_transport(results: Sequence[SendResult], label: str) -> None:
    """Raise ProviderUnavailable when no message of the batch got any answer."""
    if results and all(r.error_code in TRANSPORT_CODES for r in results):
        raise ProviderUnavailable(f"{label} could not be reached: {results[0].error}")


def resolve_refused(results: list[SendResult], label: str) -> None:
    """Raise ChannelAuthError if credentials were refused and nothing was sent; else mark those results."""
    refused = [r for r in results if r.error_code == AUTH_REFUSED]
    if not refused:
        return
    if not any(r.ok for r in results):
        raise ChannelAuthError(f"{label} refused the channel's credentials: {refused[0].error}")
    for r in refused:
        r.error_code, r.channel_error, r.retryable = "UNAUTHENTICATED", True, False


#: Data keys the engine sets per message (the message UUID the app reports events with). A request that carries
#: many recipients cannot carry them, so they neither split such requests nor go into them.
PER_MESSAGE_DATA = frozenset({"messageId"})


def shared_data(message: PushMessage) -> dict[str, str]:
    """The message's custom data without the per-message keys: what a many-recipient request can carry."""
    return {str(k): str(v) for k, v in message.data.items() if k not in PER_MESSAGE_DATA}


def content_key(message: PushMessage) -> Hashable:
    """Messages with the same key have identical content and can share one provider request."""
    data = tuple(sorted(shared_data(message).items()))
    return (message.campaign_uuid, message.title, message.body, message.open_direct,
            message.image_url, message.ttl, data)


@dataclass(slots=True)
class Chunk:
    """One provider request: distinct recipient keys, and the messages behind each key."""

    sample: PushMessage
    members: dict[str, list[PushMessage]]

    @property
    def keys(self) -> list[str]:
        """The distinct recipient keys of this request, in first-seen order."""
        return list(self.members)

    @property
    def messages(self) -> list[PushMessage]:
        """Every message carried by this request."""
        return [m for group in self.members.values() for m in group]


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most size items."""
    size = max(1, size)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def plan_chunks(
    messages: Sequence[PushMessage], key_of: Callable[[PushMessage], str | None], size: int
) -> tuple[list[Chunk], list[PushMessage]]:
    """Group by identical content, dedupe recipient keys, chunk by size; also return keyless messages."""
    groups: dict[Hashable, dict[str, list[PushMessage]]] = {}
    keyless: list[PushMessage] = []
    for m in messages:
        key = key_of(m)
        if not key:
            keyless.append(m)
            continue
        groups.setdefault(content_key(m), {}).setdefault(key, []).append(m)
    chunks = []
    for members in groups.values():
        for keys in chunked(list(members), size):
            sample = members[keys[0]][0]
            chunks.append(Chunk(sample, {k: members[k] for k in keys}))
    return chunks, keyless


TokenSource = Callable[[str | None], Awaitable[str]]
Sender = Callable[[T, str], Awaitable[list[SendResult]]]


async def _gather_bounded(items: Sequence[T], send: Sender, token: str, limit: int) -> list[list[SendResult]]:
    """Run send(item, token) for every item, at most limit at a time, in input order.

    `limit` workers take the next item when they are done (not a task and a semaphore turn per item: with one
    HTTP/2 stream per FCM message those were a tenth of the client's CPU).
    """
    outcomes: list[list[SendResult]] = [[] for _ in items]
    queue = iter(enumerate(items))

    async def worker() -> None:
        for index, item in queue:
            outcomes[index] = await send(item, token)

    await asyncio.gather(*(worker() for _ in range(min(max(1, limit), len(items)))))
    return outcomes


def _is_refused(results: list[SendResult]) -> bool:
    return any(r.error_code == AUTH_REFUSED for r in results)


async def send_with_token(
    items: Sequence[T], send: Sender, token_source: TokenSource, *, limit: int, refresh: bool = True
) -> list[SendResult]:
    """Send every item; on an auth refusal renew the token once (forced) and resend those items once.

    When that renewal itself fails after other items were accepted, the accepted results are returned (they were
    delivered: raising would make the engine send them again) and the refused items say why they were not sent.
    """
    token = await token_source(None)
    outcomes = await _gather_bounded(items, send, token, limit)
    refused = [i for i, out in enumerate(outcomes) if _is_refused(out)]
    if refused and refresh:
        try:
            token = await token_source(token)
        except ProviderError as exc:
            if not any(r.ok for out in outcomes for r in out):
                raise
            for i in refused:
                _not_renewed(outcomes[i], exc)
        else:
            again = await _gather_bounded([items[i] for i in refused], send, token, limit)
            for i, out in zip(refused, again, strict=True):
                outcomes[i] = out
    return [r for out in outcomes for r in out]


def _not_renewed(results: list[SendResult], exc: ProviderError) -> None:
    """Refused results whose token could not be renewed: a channel error, or retryable if auth was unreachable."""
    for r in results:
        if r.error_code != AUTH_REFUSED:
            continue
        r.error = f"refused, and the access token could not be renewed: {exc}"
        if isinstance(exc, ChannelAuthError):
            r.error_code, r.channel_error, r.retryable = "UNAUTHENTICATED", True, False
        else:
            r.error_code, r.retryable, r.retry_after = "UNAVAILABLE", True, exc.retry_after
