"""Simulator backend: simulated (`sim-`) tokens are delivered, anything else is an unregistered token."""

from __future__ import annotations

import asyncio

from webadmin.providers import create_backend
from webadmin.providers.base import PushMessage
from webadmin.providers.simulator import TOKEN_PREFIX, SimulatorBackend


def push(i: int, token: str) -> PushMessage:
    """A message to one token."""
    return PushMessage(message_id=i, uuid=f"00000000-0000-4000-8000-{i:012d}", token=token, platform="android",
                       body="Hello")


def test_simulated_tokens_are_delivered_and_others_are_invalid() -> None:
    backend = create_backend("simulator", {})
    assert isinstance(backend, SimulatorBackend) and TOKEN_PREFIX == "sim-"
    messages = [push(1, "sim-phone-1"), push(2, "fcm-real-token"), push(3, "SIM-upper"), push(4, "sim-x")]
    results = {r.message_id: r for r in asyncio.run(backend.send_batch(messages))}
    assert sorted(results) == [1, 2, 3, 4]
    delivered = results[1]
    assert delivered.ok and delivered.provider_message_id == f"sim-{messages[0].uuid}" and not delivered.error
    assert results[4].ok
    for bad in (results[2], results[3]):  # only the exact prefix is a simulated install
        assert not bad.ok and bad.token_invalid and bad.error_code == "UNREGISTERED"
        assert not bad.retryable and not bad.payload_error and not bad.channel_error


def test_empty_batch_and_connection_check() -> None:
    backend = SimulatorBackend({})
    assert asyncio.run(backend.send_batch([])) == []
    check = asyncio.run(backend.test_connection())
    assert check.ok and "Simulator" in check.message
