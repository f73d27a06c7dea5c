"""Simulator backend: delivers to simulated devices inside webadmin (their phone page shows the push)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from .base import ConnectionCheck, PushBackend, PushMessage, SendResult

TOKEN_PREFIX = "sim-"


class SimulatorBackend(PushBackend):
    """Accepts pushes for `sim-` tokens; the message row itself is the simulated device's inbox."""

    type_name: ClassVar[str] = "simulator"
    label: ClassVar[str] = "Simulator (simulated devices in the browser)"
    default_batch_size: ClassVar[int] = 1000

    async def send_batch(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        """A simulated device accepts its push; a token that is not simulated is reported unregistered."""
        return [self._deliver(m) for m in messages]

    @staticmethod
    def _deliver(message: PushMessage) -> SendResult:
        """One delivery."""
        if not message.token.startswith(TOKEN_PREFIX):
            return SendResult(message.message_id, ok=False, error_code="UNREGISTERED", token_invalid=True,
                              error="not a simulated device token")
        return SendResult(message.message_id, ok=True, provider_message_id=f"sim-{message.uuid}")

    async def test_connection(self) -> ConnectionCheck:
        """Nothing to connect to."""
        return ConnectionCheck(ok=True, message="Simulator: pushes appear on the simulated devices' pages.")
