"""Facts about the current request that services need as plain values."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import request

from webadmin.converters import MAX_ID


def client_address() -> str:
    """The client's address (behind a proxy, configure ProxyFix so this is the real client)."""
    return (request.remote_addr or "unknown")[:64]


# Far beyond any real list (a billion pages), yet small enough that (page - 1) * page size fits a 64-bit OFFSET.
MAX_PAGE = 1_000_000_000


def page_arg(name: str = "page") -> int:
    """The 1-based page number from the query string: garbage gives 1, out-of-range numbers are clamped."""
    page = request.args.get(name, 1, type=int)  # "abc", "1e23" and 5,000-digit strings all fail int() -> 1
    return min(max(page, 1), MAX_PAGE)


def id_arg(name: str) -> int | None:
    """A row id from the query string, or None when it is missing, not a number or beyond any id."""
    value = request.args.get(name, type=int)
    return value if value is not None and 0 < value <= MAX_ID else None


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
