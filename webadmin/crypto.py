"""Encryption of provider credentials at rest (Fernet: AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app


def _keys() -> list[bytes]:
    """The credential keys, newest first: WEBADMIN_CREDENTIALS_KEYS (comma-separated) or one kept in instance/."""
    configured = current_app.config.get("CREDENTIALS_KEYS")
    if configured:
        return [k.strip().encode() for k in configured.split(",") if k.strip()]
    key_file = Path(current_app.config["INSTANCE_PATH"]) / "credentials_key"
    if not key_file.exists():
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return [key_file.read_bytes().strip()]
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key())
    return [key_file.read_bytes().strip()]


class CredentialsKeyError(RuntimeError):
    """The configured credentials keys are unusable (malformed, or none given)."""


class UnreadableCredentials(CredentialsKeyError):
    """None of the configured keys opens a stored blob (its key was dropped too soon)."""


def _fernet() -> MultiFernet:
    """Encrypt with the first key, decrypt with any (rotation)."""
    keys = _keys()
    if not keys:
        raise CredentialsKeyError("WEBADMIN_CREDENTIALS_KEYS is set but holds no key")
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except ValueError as exc:  # never echo the key itself
            raise CredentialsKeyError(
                f"credentials key #{position} is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from exc
    return MultiFernet(fernets)


def encrypt_credentials(credentials: dict[str, Any]) -> str:
    """Serialise and encrypt a credentials mapping."""
    return _fernet().encrypt(json.dumps(credentials).encode()).decode()


def decrypt_credentials(token: str | None) -> dict[str, Any]:
    """Decrypt a stored credentials blob; a blob no key can open raises a clear error."""
    if not token:
        return {}
    try:
        return json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken as exc:
        raise UnreadableCredentials("channel credentials cannot be decrypted with the configured keys") from exc


def rotate(token: str) -> str:
    """Re-encrypt a blob under the newest key; a blob none of the keys opens raises UnreadableCredentials."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise UnreadableCredentials("channel credentials cannot be decrypted with the configured keys") from exc
