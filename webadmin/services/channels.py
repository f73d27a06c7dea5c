"""Provider channels of an app: list, create, change, enable, delete and test them.

One enabled channel per (app, platform): enabling a channel disables the one that was enabled for that platform
(the change says which, and the audit row records it). A platform with no enabled channel goes to the Debug
backend, as `webadmin.sending.channels.routes_for_app` decides. Credentials are encrypted before they reach the
session and never appear in audit rows, log records, exceptions or messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from webadmin.crypto import decrypt_credentials, encrypt_credentials
from webadmin.extensions import db
from webadmin.models.app import PLATFORMS, App
from webadmin.models.campaign import Channel
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.providers import BACKENDS, create_backend, default_options
from webadmin.providers.base import ConnectionCheck, ProviderError, PushBackend
from webadmin.sending.channels import routes_for_app
from webadmin.sending.runtime import worker_runtime
from webadmin.services import ServiceError, audit
from webadmin.services.channel_credentials import (
    ChannelInvalid,
    clean_options,
    merge_credentials,
    redact,
    secret_fragments,
)

log = logging.getLogger(__name__)

Actor = User | str | None


@dataclass(frozen=True)
class ChannelInput:
    """What an admin submitted for a channel. A blank secret keeps the stored one; `clear` removes optional ones."""

    name: str
    enabled: bool
    credentials: Mapping[str, str | None] = field(default_factory=dict, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)
    clear: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ChannelChange:
    """A saved channel, and the channels of its platform that enabling it disabled."""

    channel: Channel
    disabled: list[Channel]


@dataclass(frozen=True)
class PlatformChannels:
    """One platform of an app on its page: its channels and where its pushes go now."""

    platform: str
    shipped: bool  # the app ships on this platform
    channels: list[Channel]
    active: Channel | None  # the enabled channel, None when pushes go to the Debug backend


def backend_label(type_name: str) -> str:
    """The backend's label; an unregistered type says so."""
    cls = BACKENDS.get(type_name)
    return cls.label if cls else f"{type_name} (backend not installed)"


def backend_for(type_name: str) -> type[PushBackend]:
    """The backend class of a type, or a ServiceError naming the field."""
    if not type_name:
        raise ServiceError("Choose a provider.", field="backend")
    cls = BACKENDS.get(type_name)
    if cls is None:
        raise ServiceError(f"The provider {type_name!r} is not installed here.", field="backend")
    return cls


def list_channels(app: App) -> list[Channel]:
    """An app's channels, by platform then age."""
    query = select(Channel).where(Channel.app_id == app.id).order_by(Channel.platform, Channel.id)
    return list(db.session.scalars(query))


def platform_channels(app: App) -> list[PlatformChannels]:
    """Per platform (the app's, plus any other that has channels): its channels and its effective route."""
    channels = list_channels(app)
    routes = routes_for_app(app.id)
    by_id = {c.id: c for c in channels}
    rows = []
    for platform in PLATFORMS:
        own = [c for c in channels if c.platform == platform]
        if platform in app.platforms or own:
            route = routes[platform]
            active = by_id.get(route.channel_id) if route.channel_id is not None else None
            rows.append(PlatformChannels(platform, platform in app.platforms, own, active))
    return rows


def active_channel(app: App, platform: str) -> Channel | None:
    """The channel a platform's pushes go through now; None means the Debug backend."""
    channel_id = routes_for_app(app.id)[platform].channel_id
    return db.session.get(Channel, channel_id) if channel_id is not None else None


def get_channel(app: App, channel_id: int) -> Channel | None:
    """One of the app's channels by id."""
    channel = db.session.get(Channel, channel_id)
    return channel if channel is not None and channel.app_id == app.id else None


def stored_credentials(channel: Channel) -> dict[str, Any]:
    """The decrypted credentials (for the edit form's hints and non-secret values, never rendered whole)."""
    try:
        return decrypt_credentials(channel.credentials_encrypted)
    except RuntimeError:
        raise ServiceError("Its credentials cannot be decrypted with the configured keys "
                           "(WEBADMIN_CREDENTIALS_KEYS).", code="undecryptable") from None


def check_choice(app: App, platform: str, backend: str) -> type[PushBackend]:
    """The backend class, when the platform is one the app ships on and the backend serves."""
    cls = backend_for(backend)
    if platform not in app.platforms:
        raise ServiceError(f"{app.name} does not ship on {platform}; add the platform to the app first.",
                           field="platform")
    if platform not in cls.platforms:
        raise ServiceError(f"{cls.label} does not send to {platform}.", field="platform")
    return cls


def _validated(cls: type[PushBackend], data: ChannelInput, stored: Mapping[str, Any]) -> tuple[str, dict, dict]:
    """Name, credentials and options, or ChannelInvalid listing every problem."""
    credentials, problems = merge_credentials(cls, data.credentials, stored, data.clear)
    options, option_problems = clean_options(cls.type_name, data.options)
    problems.update({f"option_{k}": v for k, v in option_problems.items()})
    name = (data.name or "").strip()
    if not name or len(name) > 120:
        problems = {"name": "Give the channel a name of at most 120 characters.", **problems}
    if problems:
        raise ChannelInvalid(problems)
    return name, credentials, options


def _lock_app(app_id: int) -> None:
    """Serialise enable/disable changes of one app (PostgreSQL row lock; SQLite writes are serial anyway)."""
    db.session.execute(select(App.id).where(App.id == app_id).with_for_update())


def _disable_others(channel: Channel) -> list[Channel]:
    """Disable the other enabled channels of the channel's platform; return them."""
    others = list(db.session.scalars(select(Channel).where(
        Channel.app_id == channel.app_id, Channel.platform == channel.platform,
        Channel.enabled.is_(True), Channel.id != channel.id)))
    for other in others:
        other.enabled = False
    return others


def _summary(channel: Channel) -> dict[str, Any]:
    """What the audit log says about a channel (no credentials, not even their non-secret parts)."""
    return {"app_id": channel.app_id, "platform": channel.platform, "backend": channel.backend,
            "name": channel.name}


def create_channel(app: App, platform: str, backend: str, data: ChannelInput, *, actor: Actor) -> ChannelChange:
    """Add a channel (validated, encrypted, audited, committed)."""
    cls = check_choice(app, platform, backend)
    name, credentials, options = _validated(cls, data, {})
    _lock_app(app.id)
    channel = Channel(app_id=app.id, platform=platform, backend=backend, name=name, options=options,
                      credentials_encrypted=encrypt_credentials(credentials), enabled=data.enabled)
    db.session.add(channel)
    db.session.flush()
    disabled = _disable_others(channel) if data.enabled else []
    audit.record("channel.create", actor=actor, obj=("channel", channel.id), **_summary(channel),
                 enabled=data.enabled, options=options, credential_fields=sorted(credentials),
                 disabled=[c.id for c in disabled])
    db.session.commit()
    return ChannelChange(channel, disabled)


def update_channel(channel: Channel, data: ChannelInput, *, actor: Actor) -> ChannelChange:
    """Change a channel's name, credentials, options or state; its platform and backend stay."""
    cls = backend_for(channel.backend)
    stored = stored_credentials(channel)
    name, credentials, options = _validated(cls, data, stored)
    changes: dict[str, Any] = {key: [old, new] for key, old, new in (
        ("name", channel.name, name), ("options", channel.options or {}, options),
        ("enabled", channel.enabled, data.enabled)) if old != new}
    changed_fields = sorted(k for k in set(stored) | set(credentials) if stored.get(k) != credentials.get(k))
    if not changes and not changed_fields:
        return ChannelChange(channel, [])
    _lock_app(channel.app_id)
    channel.name, channel.options, channel.enabled = name, options, data.enabled
    if changed_fields:
        channel.credentials_encrypted = encrypt_credentials(credentials)
        channel.error = channel.error_at = None  # the error was about the credentials that were just replaced
    disabled = _disable_others(channel) if data.enabled else []
    audit.record("channel.update", actor=actor, obj=("channel", channel.id), **(_summary(channel) | changes),
                 credentials_changed=changed_fields, disabled=[c.id for c in disabled])
    db.session.commit()
    return ChannelChange(channel, disabled)


def set_enabled(channel: Channel, enabled: bool, *, actor: Actor) -> ChannelChange:
    """Enable (disabling the platform's other channel) or disable a channel; no change when already so."""
    if channel.enabled == enabled:
        return ChannelChange(channel, [])
    _lock_app(channel.app_id)
    channel.enabled = enabled
    disabled = _disable_others(channel) if enabled else []
    action = "channel.enable" if enabled else "channel.disable"
    audit.record(action, actor=actor, obj=("channel", channel.id), **_summary(channel),
                 disabled=[c.id for c in disabled])
    db.session.commit()
    return ChannelChange(channel, disabled)


def delete_channel(channel: Channel, *, actor: Actor) -> None:
    """Delete a channel and its stored credentials."""
    audit.record("channel.delete", actor=actor, obj=("channel", channel.id), **_summary(channel),
                 enabled=channel.enabled)
    db.session.delete(channel)
    db.session.commit()


# ---- Test connection


def test_connection(channel_id: int, *, actor: Actor = None) -> ConnectionCheck:
    """Build the channel's backend from its stored credentials and run its check.

    A failure is stored on the channel (error, error_at) as the engine does for refused credentials; a success
    clears it. The message is redacted of any credential before it is stored, audited or returned.
    """
    channel = db.session.get(Channel, channel_id)
    if channel is None:
        raise ServiceError("No such channel.", code="not_found")
    cls = BACKENDS.get(channel.backend)
    try:
        credentials = stored_credentials(channel)
    except ServiceError as exc:
        return _record_check(channel, ConnectionCheck(ok=False, message=exc.message), [], actor)
    check = _run_check(channel, credentials)
    return _record_check(channel, check, secret_fragments(cls, credentials), actor)


def _run_check(channel: Channel, credentials: dict[str, Any]) -> ConnectionCheck:
    """Run the backend's test_connection on a temporary event loop (works under a running loop too)."""
    if channel.backend not in BACKENDS:
        return ConnectionCheck(ok=False, message=f"The backend {channel.backend!r} is not installed here.")
    try:
        options = default_options(channel.backend, **(channel.options or {}))
        backend = create_backend(channel.backend, credentials, options)
        with worker_runtime(keep=False) as runtime:
            return runtime.run(_check(backend, 2 * options.timeout + 5))
    except Exception as exc:  # a backend bug must not break the page, and its text may hold secrets
        log.warning("test connection of channel %s raised %s", channel.id, type(exc).__name__)
        return ConnectionCheck(ok=False, message=f"The check failed unexpectedly ({type(exc).__name__}).")


test_connection.__test__ = False  # type: ignore[attr-defined]  # a service, not a test for pytest to collect


async def _check(backend: PushBackend, timeout: float) -> ConnectionCheck:
    """The backend's check within a time limit; its connections are closed afterwards."""
    try:
        return await asyncio.wait_for(backend.test_connection(), timeout)
    except TimeoutError:
        return ConnectionCheck(ok=False, message=f"No answer from {backend.label} within {timeout:.0f} seconds.")
    except ProviderError as exc:
        return ConnectionCheck(ok=False, message=str(exc))
    finally:
        await backend.close()


def _record_check(channel: Channel, check: ConnectionCheck, fragments: list[str], actor: Actor) -> ConnectionCheck:
    """Redact the outcome, store it on the channel, audit it, commit."""
    message = redact(check.message, fragments)
    details = {k: redact(v, fragments) if isinstance(v, str) else v for k, v in check.details.items()}
    safe = ConnectionCheck(ok=check.ok, message=message, details=details)
    channel.error, channel.error_at = (None, None) if check.ok else (message[:500], utcnow())
    audit.record("channel.test", actor=actor, obj=("channel", channel.id), **_summary(channel), ok=check.ok,
                 message=message[:500])
    db.session.commit()
    log.info("test connection of channel %s (%s): %s", channel.id, channel.backend, "ok" if check.ok else message)
    return safe
