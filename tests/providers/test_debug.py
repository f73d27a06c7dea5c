"""Debug backend: nothing is sent, every message is ok with a debug-<uuid> id."""

from __future__ import annotations

import asyncio
import uuid

from webadmin.providers.base import PushMessage
from webadmin.providers.debug import DebugBackend


def test_every_message_is_ok_with_a_debug_id() -> None:
    messages = [PushMessage(message_id=i, uuid=str(uuid.uuid4()), token=f"t{i}", platform="web", body="b")
                for i in range(3)]
    backend = DebugBackend({})
    results = asyncio.run(backend.send_batch(messages))
    assert [r.message_id for r in results] == [0, 1, 2]
    assert all(r.ok and not r.retryable for r in results)
    ids = [r.provider_message_id or "" for r in results]
    assert all(i.startswith("debug-") and uuid.UUID(i.removeprefix("debug-")) for i in ids)
    assert len(set(ids)) == 3


def test_empty_batch_and_connection_check() -> None:
    backend = DebugBackend({})
    assert asyncio.run(backend.send_batch([])) == []
    check = asyncio.run(backend.test_connection())
    assert check.ok
    asyncio.run(backend.close())
