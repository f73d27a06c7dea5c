"""Which backend sends to which platform of an app: its channels, or the Debug backend when none is set."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import select, update

from webadmin.crypto import decrypt_credentials
from webadmin.extensions import db
from webadmin.models.app import PLATFORMS
from webadmin.models.campaign import Channel
from webadmin.models.types import utcnow
from webadmin.providers import BACKENDS
from webadmin.providers.base import ProviderOptions, PushBackend
from webadmin.sending.runtime import WorkerRuntime
from webadmin.services.channel_credentials import redact, secret_fragments


@dataclass(frozen=True)
class ChannelRoute:
    """A platform's way out: backend type, credentials and options (hashable: used as a cache key)."""

    channel_id: int | None
    type_name: str
    label: str
    version: str  # changes when credentials or options change, so cached backends are rebuilt
    credentials_blob: str | None = None
    options_items: tuple[tuple[str, Any], ...] = ()

    def backend(self, runtime: WorkerRuntime) -> PushBackend:
        """The runtime's cached backend for this route."""
        credentials = decrypt_credentials(self.credentials_blob) if self.credentials_blob else {}
        key = (self.channel_id, self.type_name, self.version)
        return runtime.backend(key, self.type_name, credentials, dict(self.options_items))

    @property
    def batch_size(self) -> int:
        """Messages per `send_batch` call: the channel's option, else its backend's default."""
        configured = dict(self.options_items).get("batch_size")
        if configured:
            return int(configured)
        return int(getattr(BACKENDS.get(self.type_name), "default_batch_size", ProviderOptions().batch_size))

    @cached_property
    def secrets(self) -> list[str]:
        """The secret material of this route's credentials (decrypted once per route object)."""
        if not self.credentials_blob:
            return []
        return secret_fragments(BACKENDS.get(self.type_name), decrypt_credentials(self.credentials_blob))

    def redact(self, text: str) -> str:
        """Provider text with this channel's secrets masked: providers may echo a key back (a OneSignal 401)."""
        return redact(text, self.secrets) if self.secrets else text

    def mark_error(self, message: str) -> None:
        """Show the failure on the channel in Settings (redacted)."""
        if self.channel_id is not None:
            error = self.redact(message)[:500]
            db.session.execute(update(Channel).where(Channel.id == self.channel_id).values(error=error,
                                                                                        error_at=utcnow()))
            db.session.commit()


def redact_for(text: str, routes: Iterable[ChannelRoute]) -> str:
    """Text with the secrets of every given route masked."""
    for route in set(routes):
        text = route.redact(text)
    return text


def _route(channel: Channel) -> ChannelRoute:
    """A route for a configured channel."""
    options = tuple(sorted((channel.options or {}).items()))
    digest = hashlib.sha256(f"{channel.credentials_encrypted}|{options}".encode()).hexdigest()[:16]
    return ChannelRoute(channel.id, channel.backend, channel.name, digest, channel.credentials_encrypted, options)


DEBUG_ROUTE = ChannelRoute(None, "debug", "Debug (no channel configured)", "debug")


def routes_for_app(app_id: int) -> dict[str, ChannelRoute]:
    """platform → route. A platform without an enabled channel goes to the Debug backend (state DEBUG)."""
    channels = db.session.scalars(
        select(Channel).where(Channel.app_id == app_id, Channel.enabled.is_(True)).order_by(Channel.id)
    )
    routes = {platform: DEBUG_ROUTE for platform in PLATFORMS}
    for channel in channels:
        routes[channel.platform] = _route(channel)
    return routes
