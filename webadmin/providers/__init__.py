"""Registry of push backends: type name → backend class, factories and form choices."""

from __future__ import annotations

from typing import Any

import aiohttp

from .apns import ApnsBackend
from .base import ProviderOptions, PushBackend
from .debug import DebugBackend
from .fcm import FcmBackend
from .marketing_cloud import MarketingCloudBackend
from .onesignal import OneSignalBackend
from .simulator import SimulatorBackend

BACKENDS: dict[str, type[PushBackend]] = {}


def register(cls: type[PushBackend]) -> type[PushBackend]:
    """Add a backend class under its type_name (usable as a decorator)."""
    BACKENDS[cls.type_name] = cls
    return cls


# Imported, not discovered: a backend module that fails to import stops the app at start-up with its traceback
# instead of leaving its channels "not installed" behind a log line.
for _cls in (DebugBackend, SimulatorBackend, FcmBackend, ApnsBackend, OneSignalBackend, MarketingCloudBackend):
    register(_cls)


def backend_class(type_name: str) -> type[PushBackend]:
    """The backend class of a channel type; KeyError naming the known types otherwise."""
    try:
        return BACKENDS[type_name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS)) or "none"
        raise KeyError(f"unknown push backend type {type_name!r} (known: {known})") from None


def default_options(type_name: str, **overrides: Any) -> ProviderOptions:
    """ProviderOptions with the backend's own default batch size, plus overrides."""
    cls = backend_class(type_name)
    values: dict[str, Any] = {"batch_size": getattr(cls, "default_batch_size", ProviderOptions().batch_size)}
    values.update(overrides)
    return ProviderOptions(**values)


def create_backend(
    type_name: str,
    credentials: dict[str, Any],
    options: ProviderOptions | None = None,
    session: aiohttp.ClientSession | None = None,
) -> PushBackend:
    """Instantiate the backend of a channel type."""
    cls = backend_class(type_name)
    return cls(credentials, options or default_options(type_name), session)


def backend_choices() -> list[tuple[str, str]]:
    """(type_name, label) pairs for a form select, sorted by label."""
    return sorted(((name, cls.label) for name, cls in BACKENDS.items()), key=lambda c: c[1].lower())


__all__ = [
    "BACKENDS",
    "backend_choices",
    "backend_class",
    "create_backend",
    "default_options",
    "register",
]
