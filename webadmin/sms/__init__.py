"""SMS backends for the fallback: a registry of type name → backend class, like the push providers'."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp

from webadmin.sms.base import ProviderOptions, SmsBackend
from webadmin.sms.debug import DebugSmsBackend
from webadmin.sms.smsapi import SmsapiBackend
from webadmin.sms.twilio import TwilioBackend

BACKENDS: dict[str, type[SmsBackend]] = {cls.type_name: cls for cls in (DebugSmsBackend, SmsapiBackend, TwilioBackend)}
# Options an SMS channel may carry (set by tests and operators, not the settings form); the rest are defaults.
OPTION_NAMES = ("endpoint", "timeout", "concurrency")


def backend_class(type_name: str) -> type[SmsBackend]:
    """The backend class of a type; KeyError naming the known types otherwise."""
    try:
        return BACKENDS[type_name]
    except KeyError:
        raise KeyError(f"unknown SMS backend {type_name!r} (known: {', '.join(sorted(BACKENDS))})") from None


def sms_options(stored: dict[str, Any] | None = None) -> ProviderOptions:
    """ProviderOptions for an SMS channel: its stored endpoint/timeout/concurrency over the defaults."""
    values: dict[str, Any] = {"timeout": 10.0, "concurrency": 20, "batch_size": 100}
    values.update({k: v for k, v in (stored or {}).items() if k in OPTION_NAMES})
    return ProviderOptions(**values)


def create_backend(type_name: str, credentials: dict[str, Any], sender: str | None = None,
                   options: ProviderOptions | None = None, session: aiohttp.ClientSession | None = None) -> SmsBackend:
    """Instantiate the backend of a type."""
    return backend_class(type_name)(credentials, sender, options or sms_options(), session)


def backend_choices() -> list[tuple[str, str]]:
    """(type_name, label) pairs for a form select, Debug last."""
    return sorted(((name, cls.label) for name, cls in BACKENDS.items()), key=lambda c: (c[0] == "debug", c[1]))


def dedupe_windows() -> dict[str, timedelta]:
    """Backend type → how long its provider refuses a repeated SMS (only backends that do)."""
    return {name: cls.dedupe_window for name, cls in BACKENDS.items() if cls.dedupe_window is not None}


__all__ = ["BACKENDS", "backend_choices", "backend_class", "create_backend", "dedupe_windows", "sms_options"]
