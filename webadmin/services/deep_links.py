"""Deep links (`openDirect`): only the app's own scheme and https are accepted."""

from __future__ import annotations

from urllib.parse import urlsplit

from webadmin.services import ServiceError

MAX_LENGTH = 2048


def validate_deep_link(value: str | None, scheme: str | None, *, field: str = "open_direct") -> str | None:
    """The link stripped, or None when empty; refuses `javascript:`, `data:`, other apps' schemes and the like.

    An in-app route typed without a scheme (`offers/7`, `/offers/7`) becomes `<scheme>://offers/7`.
    """
    if value is None or not value.strip():
        return None
    link = value.strip()
    if len(link) > MAX_LENGTH or any(ord(ch) < 32 or ch.isspace() for ch in link):
        raise ServiceError("The deep link is too long or contains spaces or control characters.", field=field)
    parts = urlsplit(link)
    if not parts.scheme:
        if not scheme:
            raise ServiceError("This app has no deep-link scheme; use an https:// link.", field=field)
        return f"{scheme}://{link.lstrip('/')}"
    allowed = {"https"} | ({scheme.lower()} if scheme else set())
    if parts.scheme.lower() not in allowed:
        choices = " or ".join(f"{s}://" for s in sorted(allowed))
        raise ServiceError(f"Only {choices} links are allowed, not {parts.scheme}:.", field=field)
    if parts.scheme.lower() == "https" and not parts.netloc:
        raise ServiceError("An https link needs a host.", field=field)
    return link


def validate_image_url(value: str | None, *, field: str = "image_url") -> str | None:
    """Images are shown by the devices: https only."""
    if value is None or not value.strip():
        return None
    link = value.strip()
    parts = urlsplit(link)
    if parts.scheme.lower() != "https" or not parts.netloc or len(link) > MAX_LENGTH:
        raise ServiceError("The image must be an https:// URL.", field=field)
    return link
