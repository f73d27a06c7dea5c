"""The install's SMS channel: choose a backend, store its credentials encrypted, test the connection.

The backend's `credential_fields` drive validation (the redash pattern). A secret left blank keeps the stored one
(same backend only). Messages name fields, never values; anything a provider answered is redacted of the stored
secrets before it is shown, stored, audited or logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from webadmin.crypto import decrypt_credentials, encrypt_credentials
from webadmin.extensions import db
from webadmin.models.sms import SmsChannel
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.providers.base import ConnectionCheck, ProviderError
from webadmin.sending.runtime import worker_runtime
from webadmin.services import ServiceError, audit
from webadmin.sms import BACKENDS, OPTION_NAMES, create_backend, sms_options
from webadmin.sms.base import SmsBackend, redact
from webadmin.sms.fallback import current_channel
from webadmin.sms.twilio import SERVICE_SID

log = logging.getLogger(__name__)
Actor = User | str | None
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
SMSAPI_SENDER = re.compile(r"^[A-Za-z0-9 .\-]{1,11}$")
TWILIO_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
MAX_VALUE = 500


@dataclass(frozen=True)
class SmsChannelInput:
    """What an admin submitted. A blank secret keeps the stored one when the backend stays the same."""

    backend: str
    sender: str | None = None
    credentials: Mapping[str, str | None] = field(default_factory=dict, repr=False)


class SmsChannelInvalid(ServiceError):
    """The submission has problems; `problems` maps each field (credential name, "sender", "backend") to one."""

    def __init__(self, problems: dict[str, str]) -> None:
        name, message = next(iter(problems.items()))
        super().__init__(message, field=name)
        self.problems = problems


def backend_for(type_name: str) -> type[SmsBackend]:
    """The backend class, or a ServiceError on the backend field."""
    cls = BACKENDS.get(type_name)
    if cls is None:
        raise SmsChannelInvalid({"backend": "Choose one of the listed SMS providers."})
    return cls


def stored_credentials(channel: SmsChannel | None) -> dict[str, Any]:
    """The decrypted credentials (for non-secret values and "a secret is stored" hints; never rendered whole)."""
    return decrypt_credentials(channel.credentials_encrypted) if channel is not None else {}


def stored_secrets(channel: SmsChannel | None) -> list[str]:
    """Names of the secret fields that have a stored value."""
    if channel is None or channel.backend not in BACKENDS:
        return []
    stored = stored_credentials(channel)
    return [f.name for f in BACKENDS[channel.backend].credential_fields if f.secret and stored.get(f.name)]


def _merge(cls: type[SmsBackend], submitted: Mapping[str, str | None], stored: Mapping[str, Any]
           ) -> tuple[dict[str, Any], dict[str, str]]:
    """The credentials to store and the problems found."""
    merged, problems = dict(stored), {}
    for spec in cls.credential_fields:
        value = (submitted.get(spec.name) or "").strip()
        if spec.secret and not value:
            value = str(stored.get(spec.name) or "")
        if spec.kind == "choice" and not value:
            value = spec.choices[0]
        if spec.kind == "choice" and value not in spec.choices:
            problems[spec.name] = f"{spec.label}: choose one of {', '.join(spec.choices)}."
        elif spec.required and not value:
            problems[spec.name] = f"{spec.label} is required."
        elif len(value) > MAX_VALUE or (spec.secret and any(ch.isspace() for ch in value)):
            problems[spec.name] = f"{spec.label} is too long or contains spaces."
        if value:
            merged[spec.name] = value
        else:
            merged.pop(spec.name, None)
    return merged, problems


def _sender_problem(backend: str, sender: str | None) -> str | None:
    """What is wrong with the sender for this backend, if anything."""
    if backend == "twilio" and not (sender and (E164.match(sender) or SERVICE_SID.match(sender))):
        return "Twilio needs a sender: your Twilio number in E.164 (+15005550006) or a Messaging Service SID (MG…)."
    if backend == "smsapi" and sender and not SMSAPI_SENDER.match(sender):
        return "An SMSAPI sender name has at most 11 letters, digits, spaces, dots or dashes."
    if sender and len(sender) > 32:
        return "The sender is at most 32 characters."
    return None


def _validated(data: SmsChannelInput, channel: SmsChannel | None) -> tuple[dict[str, Any], str | None]:
    """Credentials and sender to store, or SmsChannelInvalid listing every problem."""
    cls = backend_for(data.backend)
    same = channel is not None and channel.backend == data.backend
    credentials, problems = _merge(cls, data.credentials, stored_credentials(channel) if same else {})
    if data.backend == "twilio" and "account_sid" not in problems and not TWILIO_SID.match(
            credentials.get("account_sid", "")):
        problems["account_sid"] = "The Account SID is AC followed by 32 hexadecimal digits."
    sender = (data.sender or "").strip() or None
    if problem := _sender_problem(data.backend, sender):
        problems["sender"] = problem
    if problems:
        raise SmsChannelInvalid(problems)
    return credentials, sender


def _clean_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Endpoint/timeout/concurrency overrides (tests point the endpoint at a local fake)."""
    cleaned = {k: v for k, v in (options or {}).items() if k in OPTION_NAMES and v not in (None, "")}
    endpoint = cleaned.get("endpoint")
    if endpoint is not None and urlsplit(str(endpoint)).scheme not in ("http", "https"):
        raise SmsChannelInvalid({"endpoint": "The endpoint is an http(s) URL."})
    return cleaned


def save_channel(data: SmsChannelInput, *, actor: Actor, options: Mapping[str, Any] | None = None) -> SmsChannel:
    """Create or change the SMS channel (validated, encrypted, audited, committed); clears a halt."""
    channel = current_channel()
    credentials, sender = _validated(data, channel)
    stored = stored_credentials(channel) if channel is not None and channel.backend == data.backend else {}
    changed = sorted(k for k in set(stored) | set(credentials) if stored.get(k) != credentials.get(k))
    if channel is None:
        channel = SmsChannel(backend=data.backend)
        db.session.add(channel)
    previous = (channel.backend, channel.sender)
    channel.backend, channel.sender = data.backend, sender
    channel.credentials_encrypted = encrypt_credentials(credentials)
    if options is not None:
        channel.options = _clean_options(options)
    channel.halted, channel.error, channel.error_at = False, None, None
    db.session.flush()
    audit.record("sms_channel.save", actor=actor, obj=("sms_channel", channel.id), backend=data.backend,
                 previous_backend=previous[0], sender=sender, credentials_changed=changed)
    db.session.commit()
    return channel


def test_connection(*, actor: Actor) -> ConnectionCheck:
    """Run the backend's check with the stored credentials; a pass clears a halt, a failure is shown on the channel."""
    channel = current_channel()
    if channel is None:
        raise ServiceError("No SMS channel is configured yet.", code="not_found")
    try:
        credentials = stored_credentials(channel)
    except RuntimeError as exc:  # no configured key opens the blob
        return _record_check(channel, ConnectionCheck(ok=False, message=str(exc)), [], actor)
    cls = BACKENDS.get(channel.backend)
    secrets = cls.secrets_of(credentials) if cls else []
    return _record_check(channel, _run_check(channel, credentials), secrets, actor)


def _run_check(channel: SmsChannel, credentials: dict[str, Any]) -> ConnectionCheck:
    """The backend's test_connection on a temporary event loop."""
    if channel.backend not in BACKENDS:
        return ConnectionCheck(ok=False, message=f"The SMS backend {channel.backend!r} is not installed here.")
    try:
        options = sms_options(channel.options)
        backend = create_backend(channel.backend, credentials, channel.sender, options)
        with worker_runtime(keep=False) as runtime:
            return runtime.run(_check(backend, 2 * options.timeout + 5))
    except Exception as exc:  # a backend bug must not break the page, and its text may hold secrets
        log.warning("SMS test connection raised %s", type(exc).__name__)
        return ConnectionCheck(ok=False, message=f"The check failed unexpectedly ({type(exc).__name__}).")


async def _check(backend: SmsBackend, timeout: float) -> ConnectionCheck:
    """The check within a time limit; the backend's connections are closed afterwards."""
    try:
        return await asyncio.wait_for(backend.test_connection(), timeout)
    except TimeoutError:
        return ConnectionCheck(ok=False, message=f"No answer from {backend.label} within {timeout:.0f} seconds.")
    except ProviderError as exc:
        return ConnectionCheck(ok=False, message=str(exc))
    finally:
        await backend.close()


def _record_check(channel: SmsChannel, check: ConnectionCheck, secrets: list[str], actor: Actor) -> ConnectionCheck:
    """Redact, store on the channel (a pass clears a halt), audit, commit."""
    message = redact(check.message, secrets)
    if check.ok:
        channel.halted, channel.error, channel.error_at = False, None, None
    else:
        channel.error, channel.error_at = message[:500], utcnow()
    audit.record("sms_channel.test", actor=actor, obj=("sms_channel", channel.id), backend=channel.backend,
                 ok=check.ok, message=message[:500])
    db.session.commit()
    log.info("SMS test connection (%s): %s", channel.backend, "ok" if check.ok else message)
    return ConnectionCheck(ok=check.ok, message=message, details=dict(check.details))
