"""The viewer's time zone: `?tz=` (remembered in a cookie), else the cookie the page script sets from the
browser's zone, else WEBADMIN_DEFAULT_TIME_ZONE."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from flask import current_app, request

from webadmin.services.analytics import zone_named

ZONE_COOKIE = "wa_tz"
ONE_YEAR = 365 * 24 * 3600


def viewer_zone() -> tuple[ZoneInfo, str | None]:
    """The zone to show times in, and a problem to show if the one asked for is unknown."""
    name = request.args.get("tz") or unquote(request.cookies.get(ZONE_COOKIE, ""))
    return zone_named(name, current_app.config.get("DEFAULT_TIME_ZONE", "UTC"))


def remember_zone(response: Any, zone: ZoneInfo, problem: str | None) -> Any:
    """Keep a zone chosen with ?tz= for the next pages (a cookie the page script may read and write)."""
    if request.args.get("tz") and problem is None:
        response.set_cookie(ZONE_COOKIE, zone.key, max_age=ONE_YEAR, samesite="Lax",
                            secure=current_app.config.get("SESSION_COOKIE_SECURE", False))
    return response
