"""Debug SMS backend: sends nothing and reports every SMS as accepted (the fallback run records state DEBUG).

Two optional credentials exist for tests only (the settings form does not show them): `delay_ms` makes each batch
take that long, like a provider's round trip, so a run lasts long enough to kill a worker mid-way; `journal` is a
file that gets one line "<sms uuid> <pid> <number>" per SMS accepted, so a test can count deliveries.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import ClassVar

from webadmin.sms.base import ConnectionCheck, OutgoingSms, SmsBackend, SmsResult


def append_journal(path: str, messages: Sequence[OutgoingSms]) -> None:
    """Append one line per SMS with one write, and make it durable before returning (a SIGKILL loses nothing)."""
    data = "".join(f"{m.uuid} {os.getpid()} {m.to}\n" for m in messages).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


class DebugSmsBackend(SmsBackend):
    """For trying the fallback out: no network, every SMS ok with id debug-<uuid>."""

    type_name: ClassVar[str] = "debug"
    label: ClassVar[str] = "Debug (sends nothing)"
    sender_help: ClassVar[str] = "Shown on the SMS rows only; nothing is sent."

    async def send_one(self, sms: OutgoingSms) -> SmsResult:
        """Accept one SMS."""
        return SmsResult(sms.sms_id, ok=True, provider_message_id=f"debug-{sms.uuid}")

    async def send_batch(self, messages: Sequence[OutgoingSms]) -> list[SmsResult]:
        """Accept the batch half-way through the optional delay: a worker killed in the first half delivered
        nothing, one killed in the second half delivered the batch without recording it."""
        delay = float(self.credentials.get("delay_ms") or 0) / 1000
        journal = self.credentials.get("journal")
        if messages and (delay or journal):
            await asyncio.sleep(delay / 2)
            if journal:
                append_journal(str(journal), messages)
            await asyncio.sleep(delay / 2)
        return [await self.send_one(m) for m in messages]

    async def test_connection(self) -> ConnectionCheck:
        """Always fine: there is nothing to connect to."""
        return ConnectionCheck(ok=True, message="Debug SMS: nothing is sent, no connection needed.")
