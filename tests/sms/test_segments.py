"""SMS parts: GSM-7 vs UCS-2, the 160/153 and 70/67 limits, two-position characters never split across parts."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import timedelta

import pytest

from webadmin.sms import backend_choices, create_backend, dedupe_windows
from webadmin.sms.base import OutgoingSms
from webadmin.sms.segments import count_segments


@pytest.mark.parametrize(("text", "expected"), [
    ("", ("GSM-7", 0, 0)),
    ("a" * 160, ("GSM-7", 160, 1)),
    ("a" * 161, ("GSM-7", 161, 2)),
    ("a" * 306, ("GSM-7", 306, 2)),
    ("a" * 307, ("GSM-7", 307, 3)),
    ("€" * 80, ("GSM-7", 160, 1)),  # the euro sign takes two positions
    ("a" * 152 + "€" + "a" * 10, ("GSM-7", 164, 2)),
    ("a" * 152 + "€" + "a" * 152, ("GSM-7", 306, 3)),  # € does not straddle parts 1 and 2
    ("Zażółć", ("UCS-2", 6, 1)),
    ("ż" * 70, ("UCS-2", 70, 1)),
    ("ż" * 71, ("UCS-2", 71, 2)),
    ("😀" * 35, ("UCS-2", 70, 1)),  # a surrogate pair counts two
    ("ż" * 66 + "😀" + "ż" * 66, ("UCS-2", 134, 3)),  # the pair does not straddle parts 1 and 2
])
def test_parts(text: str, expected: tuple[str, int, int]) -> None:
    segments = count_segments(text)
    assert (segments.encoding, segments.units, segments.parts) == expected


def test_registry_lists_debug_last_and_knows_which_providers_dedupe() -> None:
    assert [name for name, _ in backend_choices()] == ["smsapi", "twilio", "debug"]
    assert dedupe_windows() == {"smsapi": timedelta(hours=24)}  # SMSAPI's check_idx covers "the last 24h"
    with pytest.raises(KeyError, match="unknown SMS backend 'pigeon'"):
        create_backend("pigeon", {})
    assert "secret" not in repr(create_backend("smsapi", {"token": "secret"}))


def test_debug_backend_accepts_everything_and_journals_once_per_sms(tmp_path) -> None:
    journal = tmp_path / "journal.txt"
    backend = create_backend("debug", {"journal": str(journal), "delay_ms": 10})
    messages = [OutgoingSms(i, str(uuid.uuid4()), f"+4850010000{i}", "hi") for i in range(3)]
    results = asyncio.run(backend.send_batch(messages))
    assert [(r.sms_id, r.ok, r.provider_message_id) for r in results] == [
        (m.sms_id, True, f"debug-{m.uuid}") for m in messages]
    assert journal.read_text().splitlines() == [f"{m.uuid} {os.getpid()} {m.to}" for m in messages]
    assert asyncio.run(backend.test_connection()).ok
