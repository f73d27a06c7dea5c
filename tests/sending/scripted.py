"""A scripted backend for engine tests: the token's prefix decides the answer (mocks only at the edge)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

from webadmin.providers import BACKENDS
from webadmin.providers.base import ChannelAuthError, ProviderUnavailable, PushBackend, PushMessage, SendResult

SENT: list[PushMessage] = []  # every message any scripted backend was asked to send


class ScriptedBackend(PushBackend):
    """ok-* succeed; retry-* answer 503 with Retry-After; quota-* answer 429; dead-* are unregistered;
    payload-* are refused for their content; a credential `fail` = "auth" or "down" fails the whole batch
    (from call `fail_from_call` of this backend on, the first by default); `delay` (seconds) is each call's round
    trip."""

    type_name: ClassVar[str] = "scripted"
    label: ClassVar[str] = "Scripted (tests)"
    calls = 0

    async def send_batch(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        """Answer by token prefix."""
        self.calls += 1
        await asyncio.sleep(float(self.credentials.get("delay", 0)))
        if self.calls >= int(self.credentials.get("fail_from_call", 1)):
            if self.credentials.get("fail") == "auth":
                raise ChannelAuthError("401 invalid credentials")
            if self.credentials.get("fail") == "down":
                raise ProviderUnavailable("connection refused", retry_after=7)
        SENT.extend(messages)
        return [self._answer(m) for m in messages]

    @staticmethod
    def _answer(m: PushMessage) -> SendResult:
        """One answer."""
        if m.token.startswith("retry-"):
            return SendResult(m.message_id, ok=False, error_code="UNAVAILABLE", error="503", retryable=True,
                              retry_after=120)
        if m.token.startswith("quota-"):
            return SendResult(m.message_id, ok=False, error_code="QUOTA_EXCEEDED", error="429", retryable=True)
        if m.token.startswith("dead-"):
            return SendResult(m.message_id, ok=False, error_code="UNREGISTERED", error="gone", token_invalid=True)
        if m.token.startswith("payload-"):
            return SendResult(m.message_id, ok=False, error_code="INVALID_ARGUMENT", error="bad data",
                              payload_error=True)
        return SendResult(m.message_id, ok=True, provider_message_id=f"scripted-{m.uuid}")


BACKENDS[ScriptedBackend.type_name] = ScriptedBackend
