"""Request hooks shared by the console: access control, first-run, template globals."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, redirect, request, url_for
from flask_login import current_user

from webadmin.access import access_of, enforce_access
from webadmin.console import NAVIGATION
from webadmin.extensions import login_manager
from webadmin.models.user import Role
from webadmin.services import accounts


@login_manager.user_loader
def _load_user(session_id: str) -> Any:
    """Flask-Login: the cookie holds a server-side session id."""
    return accounts.load_session_user(session_id)


def _first_run_redirect() -> Any:
    """Until the first admin exists, every staff page leads to the first-run page."""
    if current_app.config.get("_HAS_USERS"):
        return None
    access = access_of(current_app, request.endpoint)
    if access is None or access.kind != "staff":
        return None
    if accounts.has_users():
        # Once an account exists it never goes back to none (accounts are deactivated, not deleted).
        current_app.config["_HAS_USERS"] = True
        return None
    return redirect(url_for("auth.setup"))


def _navigation() -> list[tuple[str, str]]:
    """Navigation entries whose section exists and that the current user may open."""
    if not current_user.is_authenticated:
        return []
    items = []
    for endpoint, label in NAVIGATION:
        access = access_of(current_app, endpoint)
        if access is not None and access.read is not None and current_user.can(access.read):
            items.append((endpoint, label))
    return items


def _can(role: str) -> bool:
    """Template helper: whether the current user holds at least this role."""
    return bool(current_user.is_authenticated and current_user.can(Role(role)))


def register_console_hooks(app: Flask) -> None:
    """Install the hooks on the app."""
    app.before_request(_first_run_redirect)
    app.before_request(enforce_access)
    app.context_processor(lambda: {"navigation": _navigation, "can": _can, "Role": Role})

    @app.after_request
    def _security_headers(response: Any) -> Any:
        """Conservative headers for a console that serves everything itself."""
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response
