"""Route access declarations. Every route says who may use it; a route that says nothing is refused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, abort, current_app, redirect, request, url_for
from flask_login import current_user

from webadmin.models.user import Role

F = TypeVar("F", bound=Callable[..., Any])

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Access:
    """Who may call a route: anyone (public), an API key holder, or staff of at least a role."""

    kind: str  # "public" | "staff" | "api"
    read: Role | None = None
    write: Role | None = None

    def required_role(self, method: str) -> Role | None:
        """The minimum staff role for this HTTP method (None when not a staff route)."""
        if self.kind != "staff":
            return None
        return self.read if method in READ_METHODS else self.write


PUBLIC_ASSETS = Access("public")


def _declare(access: Access) -> Callable[[F], F]:
    """Attach an access declaration to a view function."""

    def decorator(view: F) -> F:
        view.access = access  # type: ignore[attr-defined]
        return view

    return decorator


# Changing anything needs at least a marketer unless a route says otherwise: "a viewer can look but never send or
# change anything" then holds for every route that forgets to name a write role.
DEFAULT_WRITE = Role.MARKETER


def allow(read: Role, write: Role | None = None) -> Callable[[F], F]:
    """Staff of at least `read` may GET; other methods need `write` (default: `read`, but never below a marketer).

    A viewer-safe write (signing yourself out) must say `write=Role.VIEWER` explicitly, and tests/test_access.py
    lists each such route with the reason it changes nothing a viewer may not change.
    """
    if write is None:
        write = read if read.at_least(DEFAULT_WRITE) else DEFAULT_WRITE
    return _declare(Access("staff", read, write))


def public(view: F) -> F:
    """Anyone may use this route (sign-in, first-run, error pages, assets)."""
    return _declare(Access("public"))(view)


def api_key(view: F) -> F:
    """The route authenticates with an API key itself (the /api/v1 blueprint)."""
    return _declare(Access("api"))(view)


def access_of(app: Flask, endpoint: str | None) -> Access | None:
    """The declaration of the view behind an endpoint, or None when it has none."""
    if endpoint is None:
        return None
    if endpoint == "static" or endpoint.endswith(".static"):
        return PUBLIC_ASSETS  # Flask's and extensions' own file routes
    view = app.view_functions.get(endpoint)
    return getattr(view, "access", None)


def enforce_access() -> Any:
    """before_request hook: refuse undeclared routes, send anonymous staff routes to sign-in."""
    if request.endpoint is None:  # 404/405: let Flask answer
        return None
    access = access_of(current_app, request.endpoint)
    if access is None:
        current_app.logger.error("route %s has no access declaration; refused", request.endpoint)
        abort(403)
    if access.kind != "staff":
        return None
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    needed = access.required_role(request.method)
    if needed is None or not current_user.can(needed):
        abort(403)
    return None
