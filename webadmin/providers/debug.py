"""Debug backend: sends nothing and reports every message as sent (the engine records state DEBUG).

Two optional credentials exist for tests and benchmarks only (the settings form does not show them):
`delay_ms` makes each batch take that long, like a provider's round trip, so a campaign lasts long enough
to kill a worker mid-way; `journal` is a file that gets one line "<message uuid> <pid>" per message the
backend accepted, so a test can count deliveries — a re-send after a crash shows as a duplicate line.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import ClassVar

from .base import ConnectionCheck, PushBackend, PushMessage, SendResult


def append_journal(path: str, messages: Sequence[PushMessage]) -> None:
    """Append one line per message and make it durable before returning (a SIGKILL right after loses nothing).

    One os.write per batch on an O_APPEND descriptor, so lines of concurrent workers never interleave.
    """
    data = "".join(f"{m.uuid} {os.getpid()}\n" for m in messages).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


class DebugBackend(PushBackend):
    """A backend for trying campaigns out: no network, every message ok with id debug-<uuid>."""

    type_name: ClassVar[str] = "debug"
    label: ClassVar[str] = "Debug (sends nothing)"
    default_batch_size: ClassVar[int] = 500

    async def send_batch(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        """Return an ok result per message without sending anything (after the optional delay and journal)."""
        delay = float(self.credentials.get("delay_ms") or 0) / 1000
        journal = self.credentials.get("journal")
        if messages and (delay or journal):
            # The provider accepts the batch half-way through the round trip: a worker killed in the first
            # half delivered nothing, one killed in the second half delivered the batch without recording it.
            await asyncio.sleep(delay / 2)
            if journal:
                append_journal(str(journal), messages)
            await asyncio.sleep(delay / 2)
        return [SendResult(m.message_id, ok=True, provider_message_id=f"debug-{m.uuid}") for m in messages]

    async def test_connection(self) -> ConnectionCheck:
        """Always fine: there is nothing to connect to."""
        return ConnectionCheck(ok=True, message="Debug channel: nothing is sent, no connection needed.")
