"""Facts about the current request that services need as plain values."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import request


def client_address() -> str:
    """The client's address (behind a proxy, configure ProxyFix so this is the real client)."""
    return (request.remote_addr or "unknown")[:64]


def safe_next(target: str | None, default: str) -> str:
    """Only redirect to a path on this site: no scheme, no host, no `//` or backslash tricks."""
    if not target:
        return default
    target = target.strip()
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if "\\" in target or any(ord(ch) < 32 for ch in target):
        return default
    return target
