"""A channel's credentials and options: validated, merged with what is stored, described without being shown.

The backend's `credential_fields` drive everything here (the redash pattern). A secret left blank on edit keeps
the stored value. Error messages name the field and the rule, never the value, and `redact` removes secret
material from anything a provider answered before it is shown, stored or logged.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import ssl
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webadmin.providers.base import CredentialField, PushBackend
from webadmin.services import ServiceError

MASK = "••••"
Problems = dict[str, str]  # field name → what is wrong with it (never the value)

# Which ProviderOptions a backend honours. Kept here rather than on the backend classes because fcm.py is
# owned elsewhere; a backend type missing from the table gets the batch size only.
OPTION_NAMES: dict[str, tuple[str, ...]] = {
    "fcm": ("endpoint", "auth_endpoint", "timeout", "batch_size", "concurrency", "ca_file"),
    "marketing_cloud": ("all_users_app", "endpoint", "auth_endpoint", "timeout", "batch_size", "concurrency",
                        "ca_file"),
    "onesignal": ("endpoint", "timeout", "batch_size", "concurrency", "ca_file"),
    "apns": ("endpoint", "timeout", "batch_size", "concurrency", "ca_file"),
}
# concurrency = requests (HTTP/2 streams for FCM and APNs) in flight per worker thread; past ~1,000 a worker only
# queues more work than one event loop can serve and risks the provider's own rate limits.
OPTION_LIMITS = {"batch_size": (1, 20_000), "timeout": (1, 120), "concurrency": (1, 1_000)}
INTEGER_OPTIONS = frozenset({"batch_size", "concurrency"})
BOOLEAN_OPTIONS = frozenset({"all_users_app"})  # stored only when on: off is the default
LOOPBACK_NAMES = frozenset({"localhost"})
KEY_ID = re.compile(r"^[A-Z0-9]{10}$")


class ChannelInvalid(ServiceError):
    """The submitted channel has problems; `problems` maps each field to its message."""

    def __init__(self, problems: Problems) -> None:
        first_field, first = next(iter(problems.items()))
        super().__init__(first, field=first_field)
        self.problems = problems


def option_names(type_name: str) -> tuple[str, ...]:
    """The options a backend type honours, in form order."""
    return OPTION_NAMES.get(type_name, ("batch_size",))


# ---- merging what was submitted with what is stored


def merge_credentials(
    cls: type[PushBackend], submitted: Mapping[str, str | None], stored: Mapping[str, Any], clear: Iterable[str] = ()
) -> tuple[dict[str, Any], Problems]:
    """The credentials to store and the problems found; a blank secret keeps its stored value."""
    merged = dict(stored)  # keys the form does not show (the Debug backend's test knobs) are kept
    problems: Problems = {}
    for spec in cls.credential_fields:
        value = (submitted.get(spec.name) or "").strip()
        if spec.secret and not value and spec.name not in clear:
            value = str(stored.get(spec.name) or "")
        if spec.kind == "choice" and not value and spec.choices:
            value = spec.choices[0]
        if value:
            merged[spec.name] = value
        else:
            merged.pop(spec.name, None)
        problem = _field_problem(spec, value)
        if problem:
            problems[spec.name] = problem
    check = BACKEND_CHECKS.get(cls.type_name)
    if check is not None:
        for name, problem in check(merged).items():
            problems.setdefault(name, problem)
    return merged, problems


def _field_problem(spec: CredentialField, value: str) -> str | None:
    """The generic rules of one field: required, one of its choices, an integer."""
    if not value:
        return "Required." if spec.required else None
    if spec.kind == "choice" and spec.choices and value not in spec.choices:
        return f"Choose one of: {', '.join(spec.choices)}."
    if spec.kind == "int" and not value.lstrip("-").isdigit():
        return "Enter a whole number."
    return None


def clean_options(type_name: str, submitted: Mapping[str, Any]) -> tuple[dict[str, Any], Problems]:
    """The options to store (only those the backend honours, blanks dropped) and the problems found."""
    options: dict[str, Any] = {}
    problems: Problems = {}
    for name in option_names(type_name):
        value = submitted.get(name)
        if name in BOOLEAN_OPTIONS:
            if value is True or str(value).strip().lower() in ("1", "true", "on", "y", "yes"):
                options[name] = True
            continue
        if value is None or str(value).strip() == "":
            continue
        try:
            options[name] = _clean_option(name, value)
        except ValueError as exc:
            problems[name] = str(exc)
    return options, problems


def _clean_option(name: str, value: Any) -> Any:
    """One option value, checked; ValueError says what is wrong."""
    if name in ("endpoint", "auth_endpoint"):
        return check_url(str(value).strip())
    if name == "ca_file":
        return check_ca_file(str(value).strip())
    low, high = OPTION_LIMITS[name]
    try:
        number = int(value) if name in INTEGER_OPTIONS else float(value)
    except (TypeError, ValueError):
        raise ValueError("Enter a whole number." if name in INTEGER_OPTIONS else "Enter a number.") from None
    if not low <= number <= high:
        raise ValueError(f"Enter a number from {low:,} to {high:,}.")
    return number


def check_url(url: str) -> str:
    """An https URL, or http to this machine (local fakes); ValueError otherwise.

    Credentials travel to these URLs, so plain http is refused anywhere but loopback, and so is a user:password@.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("Enter a full URL such as https://fcm.googleapis.com.")
    if parts.username or parts.password:
        raise ValueError("The URL must not carry a user name or password.")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("Use https:// (plain http is only allowed to this machine, e.g. a local test server).")
    return url.rstrip("/")


def check_ca_file(path: str) -> str:
    """An absolute path to a readable PEM file of CA certificates; ValueError otherwise.

    A path, not PEM text, because the TLS layer loads it as a file (once per configuration); it must exist on every
    worker machine, which this check (made where the form is saved) cannot see. The messages never quote the file.
    """
    if not os.path.isabs(path):
        raise ValueError("Enter an absolute path such as /etc/webadmin/provider-ca.pem.")
    if not os.path.isfile(path):
        raise ValueError("There is no file at this path on this machine.")
    if not os.access(path, os.R_OK):
        raise ValueError("webadmin cannot read this file (check its permissions).")
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError, OSError):
        raise ValueError("This file holds no PEM certificate (-----BEGIN CERTIFICATE-----).") from None
    return path


def _is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- provider-specific rules (what each backend will need at send time)


def _fcm_problems(creds: Mapping[str, Any]) -> Problems:
    """The service-account JSON must parse and hold project_id, client_email and a PEM private_key."""
    text = creds.get("service_account_json")
    if not text:
        return {}
    try:
        info = json.loads(text)
    except ValueError:
        return {"service_account_json": "This is not a JSON file. Upload the service-account key file."}
    if not isinstance(info, dict):
        return {"service_account_json": "The JSON must be an object (the service-account key file)."}
    missing = [k for k in ("project_id", "client_email", "private_key") if not str(info.get(k) or "").strip()]
    if missing:
        return {"service_account_json": f"The service-account JSON has no {', '.join(missing)}. "
                                        "Download a new key in the Firebase console (Service accounts)."}
    if _private_key(str(info["private_key"])) is None:
        return {"service_account_json": "The private_key in the service-account JSON is not a readable PEM key."}
    return {}


def _apns_problems(creds: Mapping[str, Any]) -> Problems:
    """Token auth needs team id, key id and an EC P-256 .p8 key; certificate auth a certificate and its key."""
    if creds.get("auth_mode", "token") == "certificate":
        return _apns_certificate_problems(creds)
    problems: Problems = {}
    for name in ("team_id", "key_id"):
        value = str(creds.get(name) or "")
        if not value:
            problems[name] = "Required for token authentication."
        elif not KEY_ID.fullmatch(value):
            problems[name] = "Ten characters, capital letters and digits (as shown in the Apple developer account)."
    key_pem = creds.get("private_key")
    if not key_pem:
        problems["private_key"] = "Required for token authentication: the contents of the .p8 file."
    else:
        key = _private_key(str(key_pem))
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            problems["private_key"] = "This is not an APNs .p8 signing key (a PEM EC P-256 private key)."
    return problems


def _apns_certificate_problems(creds: Mapping[str, Any]) -> Problems:
    """The PEM certificate must load, be current, and match its private key."""
    problems: Problems = {}
    cert = None
    if not creds.get("certificate"):
        problems["certificate"] = "Required for certificate authentication."
    else:
        try:
            cert = x509.load_pem_x509_certificate(str(creds["certificate"]).encode())
        except ValueError:
            problems["certificate"] = "This is not a PEM certificate (export it from Keychain as .pem)."
        else:
            if cert.not_valid_after_utc < datetime.now(UTC):
                problems["certificate"] = f"The certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}."
    if not creds.get("certificate_key"):
        problems["certificate_key"] = "Required for certificate authentication."
        return problems
    key = _private_key(str(creds["certificate_key"]), creds.get("certificate_password"))
    if key is None:
        problems["certificate_key"] = "This is not a readable PEM private key (or its password is wrong)."
    elif cert is not None and _public_der(cert.public_key()) != _public_der(key.public_key()):
        problems["certificate_key"] = "This private key does not belong to the certificate."
    return problems


def _onesignal_problems(creds: Mapping[str, Any]) -> Problems:
    """The OneSignal app id is a UUID."""
    app_id = creds.get("app_id")
    if app_id:
        try:
            uuid.UUID(str(app_id))
        except ValueError:
            return {"app_id": "A OneSignal App ID looks like 8-4-4-4-12 hex digits (Settings > Keys & IDs)."}
    return {}


def _marketing_cloud_problems(creds: Mapping[str, Any]) -> Problems:
    """The authentication base URI, when given, is an https URL."""
    url = creds.get("auth_base_url")
    if url:
        try:
            check_url(str(url))
        except ValueError as exc:
            return {"auth_base_url": str(exc)}
    return {}


BACKEND_CHECKS: dict[str, Callable[[Mapping[str, Any]], Problems]] = {
    "fcm": _fcm_problems,
    "apns": _apns_problems,
    "onesignal": _onesignal_problems,
    "marketing_cloud": _marketing_cloud_problems,
}


def _private_key(pem: str, password: Any = None) -> Any:
    """The private key in a PEM text, or None when it cannot be read."""
    try:
        secret = str(password).encode() if password else None
        return serialization.load_pem_private_key(pem.strip().encode(), password=secret)
    except (ValueError, TypeError):
        return None


def _public_der(public_key: Any) -> bytes:
    """A public key in DER, to compare two keys."""
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# ---- describing and hiding stored secrets


def stored_hint(spec: CredentialField, value: Any) -> str:
    """What the edit form says about a stored secret: that it is there, never what it is."""
    text = str(value or "")
    if not text:
        return "Nothing stored."
    if spec.name == "service_account_json":
        try:
            info = json.loads(text)
            return f"{MASK} stored (project {info['project_id']}, {info['client_email']})"
        except (ValueError, KeyError, TypeError):
            return f"{MASK} stored"
    if "-----BEGIN" in text:
        return f"{MASK} stored (PEM)"
    # The last four characters say which key it is; of a short secret they would give away too much.
    return f"{MASK} stored (ends …{text[-4:]})" if len(text) >= 16 else f"{MASK} stored"


def secret_fragments(cls: type[PushBackend] | None, credentials: Mapping[str, Any]) -> list[str]:
    """Every piece of secret material in the credentials that must never be shown: whole values and PEM lines."""
    secret_names = {f.name for f in cls.credential_fields if f.secret} if cls else set(credentials)
    fragments: set[str] = set()
    for name in secret_names:
        value = str(credentials.get(name) or "")
        texts = [value]
        try:
            info = json.loads(value)
        except ValueError:
            info = None
        if isinstance(info, dict):
            texts += [str(info.get("private_key") or ""), str(info.get("private_key_id") or "")]
        for text in texts:
            fragments.add(text.strip())
            fragments.update(line.strip() for line in text.splitlines() if len(line.strip()) >= 16)
    return sorted((f for f in fragments if len(f) >= 6), key=len, reverse=True)


def redact(text: str, fragments: Iterable[str]) -> str:
    """The text with every secret fragment masked."""
    for fragment in fragments:
        text = text.replace(fragment, MASK)
    return text
