"""The provider interface: plain message data in, one result per message out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import aiohttp


@dataclass(frozen=True, slots=True)
class PushMessage:
    """One push to one device, as the engine hands it to a backend (no ORM objects)."""

    message_id: int
    uuid: str
    token: str
    platform: str  # android | ios | web
    body: str
    title: str | None = None
    open_direct: str | None = None
    image_url: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    ttl: int | None = None  # seconds
    recipient: str | None = None  # subscriber key
    campaign_uuid: str | None = None  # same content for every message of one campaign
    token_registered_at: datetime | None = None  # APNs: a 410 older than this is ignored


@dataclass(slots=True)
class SendResult:
    """What happened to one message; per-token failures are data, not exceptions."""

    message_id: int
    ok: bool
    provider_message_id: str | None = None
    error_code: str | None = None
    error: str | None = None
    retryable: bool = False
    token_invalid: bool = False
    payload_error: bool = False
    channel_error: bool = False  # credentials/config of the channel are wrong (e.g. THIRD_PARTY_AUTH_ERROR)
    retry_after: float | None = None
    raw: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CredentialField:
    """One credential or setting a channel of this backend needs; drives the settings form."""

    name: str
    label: str
    kind: str = "text"  # text | secret | file | textarea | choice | int
    required: bool = True
    secret: bool = False
    help: str = ""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """Tunables that tests and benchmarks point at local fakes."""

    endpoint: str | None = None  # base URL override (fake servers)
    auth_endpoint: str | None = None  # token URL override
    timeout: float = 10.0
    concurrency: int = 100
    batch_size: int = 500
    verify_tls: bool = True
    ca_file: str | None = None
    # Marketing Cloud only, read by the engine (not the backend): an "all users" campaign without a platform
    # filter goes out as ONE messageApp request per campaign instead of messageContact (engine.app_sends).
    all_users_app: bool = False


@dataclass(slots=True)
class ConnectionCheck:
    """Outcome of a channel's Test connection button."""

    ok: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """A failure of the whole batch (not of one token)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ChannelAuthError(ProviderError):
    """The provider refused the channel's credentials; the channel shows an error in Settings."""


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or is overloaded; the batch is retried later."""


class PushBackend(ABC):
    """A push provider. Subclasses set type_name/label/credential_fields and implement send_batch."""

    type_name: ClassVar[str]
    label: ClassVar[str]
    platforms: ClassVar[tuple[str, ...]] = ("android", "ios", "web")
    credential_fields: ClassVar[tuple[CredentialField, ...]] = ()

    def __init__(
        self,
        credentials: dict[str, Any],
        options: ProviderOptions | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.credentials = credentials
        self.options = options or ProviderOptions()
        self._session = session

    @abstractmethod
    async def send_batch(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        """Send messages; return exactly one result per message, in any order."""

    async def test_connection(self) -> ConnectionCheck:
        """Check credentials (and a validate-only send where the provider has one)."""
        return ConnectionCheck(ok=True, message=f"{self.label} needs no connection.")

    async def close(self) -> None:
        """Release anything the backend opened itself (not the shared session)."""
        return None

    def __repr__(self) -> str:  # never show credentials
        return f"<{type(self).__name__} {self.type_name}>"
