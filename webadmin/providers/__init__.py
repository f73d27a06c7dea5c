"""Registry of push backends: type name → backend class, factories and form choices."""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any

import aiohttp

from .base import ProviderOptions, PushBackend
from .debug import DebugBackend
from .fcm import FcmBackend
from .marketing_cloud import MarketingCloudBackend
from .onesignal import OneSignalBackend

log = logging.getLogger(__name__)

BACKENDS: dict[str, type[PushBackend]] = {}


def register(cls: type[PushBackend]) -> type[PushBackend]:
    """Add a backend class under its type_name (usable as a decorator)."""
    BACKENDS[cls.type_name] = cls
    return cls


def _register_optional(module_name: str) -> None:
    """Register the backends of a module that may not exist yet (apns, simulator)."""
    qualified = f"{__name__}.{module_name}"
    try:
        module = importlib.import_module(qualified)
    except ImportError as exc:
        if getattr(exc, "name", None) != qualified:
            log.warning("push backend module %s could not be imported: %s", qualified, exc)
        return
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if issubclass(obj, PushBackend) and obj.__module__ == qualified and not inspect.isabstract(obj):
            register(obj)


for _cls in (DebugBackend, FcmBackend, OneSignalBackend, MarketingCloudBackend):
    register(_cls)
_register_optional("apns")  # ApnsBackend, type_name "apns"
_register_optional("simulator")  # the lead's simulator backend


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
