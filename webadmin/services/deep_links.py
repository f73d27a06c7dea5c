"""Deep links (`openDirect`): only the app's own scheme and https are accepted; an app's https address for them."""

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


WEB_LINK_BASE_MAX = 200


def normalize_web_link_base(value: str | None, *, field: str = "web_link_base") -> str | None:
    """An app's web address for its deep links (https, a host, no credentials, query or fragment), without a trailing
    slash; None when empty. An SMS cannot open `nibs://`, so the fallback links the same route under this address."""
    if value is None or not value.strip():
        return None
    link = value.strip()
    if len(link) > WEB_LINK_BASE_MAX or any(ord(ch) < 32 or ch.isspace() for ch in link):
        raise ServiceError(f"The web address has at most {WEB_LINK_BASE_MAX} characters and no spaces.", field=field)
    parts = urlsplit(link)
    try:
        host = parts.hostname if parts.port is None or parts.port > 0 else None
    except ValueError:  # a port that is not a number
        host = None
    if parts.scheme.lower() != "https" or not host:
        raise ServiceError("The web address must be an https:// URL such as https://nibs.example.", field=field)
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment or "?" in link:
        raise ServiceError("The web address cannot contain a user name, a ? query or a # fragment.", field=field)
    return link.rstrip("/")


def web_link(link: str | None, scheme: str | None, base: str | None) -> str | None:
    """The deep link as an https URL a phone's browser opens: an https link itself, an app-scheme link
    (`nibs://offers/1`) as the same route under the app's web address (`https://nibs.example/offers/1`); None when
    there is no such URL."""
    if not link:
        return None
    if link.lower().startswith("https://"):
        return link
    prefix = f"{scheme}://".lower() if scheme else None
    if base and prefix and link.lower().startswith(prefix):
        return f"{base.rstrip('/')}/{link[len(prefix):].lstrip('/')}"
    return None
