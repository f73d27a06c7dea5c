"""Flask's signed-cookie session, minus its set-up cost on requests that bring no cookie at all."""

from __future__ import annotations

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface


class SessionInterface(SecureCookieSessionInterface):
    """Like Flask's, but a request without a Cookie header gets its empty session without building the signing
    serializer first (Flask builds one per request: tens of µs, a visible part of an API call, and API clients
    send no cookies). Saving is Flask's own, so a request that does write the session still gets its cookie."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """An empty session when there is no cookie to read; otherwise Flask's."""
        if app.secret_key and "HTTP_COOKIE" not in request.environ:
            return self.session_class()
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    """Install the session interface."""
    app.session_interface = SessionInterface()
