"""The SMS backend interface: plain SMS data in, one result per SMS out (the push providers' pattern)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp

from webadmin.providers import _http
from webadmin.providers.base import (
    ChannelAuthError,
    ConnectionCheck,
    CredentialField,
    ProviderOptions,
    ProviderUnavailable,
)

MASK = "••••"
AUTH_REFUSED = "AUTH_REFUSED"  # a result's marker: the provider refused the credentials for this request

__all__ = ["ConnectionCheck", "CredentialField", "OutgoingSms", "ProviderOptions", "SmsBackend", "SmsResult"]


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    """One SMS to one phone number, as the fallback run hands it to a backend (no ORM objects)."""

    sms_id: int
    uuid: str  # also the provider's idempotency key where it has one
    to: str  # E.164, e.g. +48500100200
    text: str


@dataclass(slots=True)
class SmsResult:
    """What happened to one SMS; per-number failures are data, only whole-batch failures raise."""

    sms_id: int
    ok: bool
    provider_message_id: str | None = None
    error_code: str | None = None
    error: str | None = None
    retryable: bool = False
    # The request may have reached the provider (timeout, dropped connection, unreadable 2xx): re-sending could
    # deliver it twice, so the fallback run retries it only within a backend's `dedupe_window`.
    unknown_outcome: bool = False
    invalid_number: bool = False  # skipped and counted, like a dead push token
    opted_out: bool = False  # the recipient unsubscribed at the provider (e.g. replied STOP)
    payload_error: bool = False  # the text was refused: final, not retried
    channel_error: bool = False  # the account or sender is wrong: sending halts until an admin fixes it
    retry_after: float | None = None


class SmsBackend(ABC):
    """An SMS provider. Subclasses set type_name/label/credential_fields and implement send_one."""

    type_name: ClassVar[str]
    label: ClassVar[str]
    credential_fields: ClassVar[tuple[CredentialField, ...]] = ()
    sender_help: ClassVar[str] = ""
    # How long the provider refuses a second SMS with the same idempotency key (None: it never does). Within it a
    # retry after an unknown outcome cannot deliver twice; after it, or without one, such an SMS is not sent again.
    dedupe_window: ClassVar[timedelta | None] = None

    def __init__(self, credentials: dict[str, Any], sender: str | None = None,
                 options: ProviderOptions | None = None, session: aiohttp.ClientSession | None = None) -> None:
        self.credentials = credentials
        self.sender = sender or None
        self.options = options or ProviderOptions(concurrency=20, batch_size=100)
        self._http = _http.SessionHolder(session, self.options)

    @abstractmethod
    async def send_one(self, sms: OutgoingSms) -> SmsResult:
        """Send one SMS and classify the answer (transport errors included)."""

    async def send_batch(self, messages: Sequence[OutgoingSms]) -> list[SmsResult]:
        """Send each SMS (one request each, at most `concurrency` at a time); one result per SMS.

        Raises ProviderUnavailable when no request could even connect (nothing was sent, the batch is retried) and
        ChannelAuthError when the provider refused the credentials for every SMS.
        """
        results = await bounded(messages, self.send_one, self.options.concurrency)
        if results and all(r.error_code == "CONNECTION_REFUSED" for r in results):
            raise ProviderUnavailable(f"{self.label} could not be reached: {results[0].error}")
        refused = [r for r in results if r.error_code == AUTH_REFUSED]
        if refused and not any(r.ok for r in results):
            raise ChannelAuthError(f"{self.label} refused the credentials: {refused[0].error}")
        for r in refused:  # some went through: the refusal is still the channel's problem, not the number's
            r.error_code, r.channel_error, r.retryable = "UNAUTHENTICATED", True, False
        return results

    @classmethod
    def secrets_of(cls, credentials: dict[str, Any]) -> list[str]:
        """The secret values among these credentials (to redact them from anything a provider answered)."""
        return [str(credentials[f.name]) for f in cls.credential_fields if f.secret and credentials.get(f.name)]

    def redact(self, text: str) -> str:
        """Text with this backend's secrets masked."""
        return redact(text, self.secrets_of(self.credentials))

    async def test_connection(self) -> ConnectionCheck:
        """Check the credentials without sending an SMS."""
        return ConnectionCheck(ok=True, message=f"{self.label} needs no connection.")

    async def close(self) -> None:
        """Close the HTTP session if this backend opened it."""
        await self._http.close()

    def __repr__(self) -> str:  # never show credentials
        return f"<{type(self).__name__} {self.type_name}>"


def redact(text: str, secrets: list[str]) -> str:
    """The text with every secret (and its URL-encoded form) replaced by a mask."""
    forms = {form for secret in secrets if len(secret) >= 4 for form in (secret, quote(secret, safe=""))}
    for secret in sorted(forms, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


async def bounded(items: Sequence[OutgoingSms], send: Callable[[OutgoingSms], Awaitable[SmsResult]],
                  limit: int) -> list[SmsResult]:
    """Run send(item) for every item, at most `limit` at a time."""
    gate = asyncio.Semaphore(max(1, limit))

    async def one(item: OutgoingSms) -> SmsResult:
        async with gate:
            return await send(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


def transport_result(sms_id: int, exc: BaseException) -> SmsResult:
    """The result of a request that got no answer.

    A refused connection never reached the provider (safe to retry); a timeout or a dropped connection may have
    been accepted before the answer was lost (unknown outcome).
    """
    if isinstance(exc, aiohttp.ClientConnectorError):
        return SmsResult(sms_id, ok=False, error_code="CONNECTION_REFUSED", retryable=True,
                         error=f"connection failed: {type(exc).__name__}")
    if isinstance(exc, TimeoutError):
        return SmsResult(sms_id, ok=False, error_code="TIMEOUT", retryable=True, unknown_outcome=True,
                         error="no answer within the timeout")
    return SmsResult(sms_id, ok=False, error_code="CONNECTION_ERROR", retryable=True, unknown_outcome=True,
                     error=f"connection lost: {type(exc).__name__}")


def malformed_result(sms_id: int, answer: _http.Answer) -> SmsResult:
    """An answer that could not be understood: a 2xx may mean the SMS was accepted (unknown outcome)."""
    accepted = 200 <= answer.status < 300
    return SmsResult(sms_id, ok=False, error_code="MALFORMED_RESPONSE", retryable=True, unknown_outcome=accepted,
                     error=f"malformed answer from provider: {answer.describe()}")


# A 500, or a 502/504 from a gateway in front of the provider, can come after the provider accepted the SMS: its
# outcome is unknown. 429 and 503 say the request was not taken.
MAYBE_ACCEPTED = frozenset({500, 502, 504})


def throttled_result(sms_id: int, answer: _http.Answer, code: str) -> SmsResult:
    """429 or 5xx: retried later, never before the provider's Retry-After (500/502/504: the outcome is unknown)."""
    retry_after = _http.parse_retry_after(answer.headers.get("Retry-After"))
    return SmsResult(sms_id, ok=False, error_code=code, retryable=True, retry_after=retry_after,
                     unknown_outcome=answer.status in MAYBE_ACCEPTED,
                     error=f"provider busy or failing: {answer.describe()}")
