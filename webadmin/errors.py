"""Error pages in the console and JSON errors under /api/."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

logger = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    500: "server_error",
}


def wants_json() -> bool:
    """API paths always answer JSON."""
    return request.path.startswith("/api/")


def json_error(status: int, message: str, *, code: str | None = None, field: str | None = None) -> Any:
    """The API's error shape: {"error": {"code", "message", "field"}}."""
    body = {"error": {"code": code or CODES.get(status, "error"), "message": message, "field": field}}
    return jsonify(body), status


def _handle_http(exc: HTTPException) -> Any:
    """Render an HTTP error as JSON (API) or as a console page."""
    status = exc.code or 500
    # Keep what the exception says about the request (`Allow` on a 405, `Retry-After` on a 429, …).
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    if wants_json():
        body, _ = json_error(status, exc.description or exc.name)
        return body, status, headers
    template = f"errors/{status}.html" if status in (403, 404, 500) else "errors/generic.html"
    return render_template(template, error=exc, status=status), status, headers


def _handle_csrf(exc: CSRFError) -> Any:
    """A stale or missing CSRF token: say so plainly."""
    if wants_json():
        return json_error(400, exc.description, code="csrf")
    return render_template("errors/generic.html", error=exc, status=400, csrf=True), 400


def _handle_unexpected(exc: Exception) -> Any:
    """Anything else is a 500; the details go to the log, not to the user."""
    from webadmin.extensions import db

    db.session.rollback()
    logger.exception("unhandled error on %s %s", request.method, request.path)
    return _handle_http(InternalServerError())


def register_errors(app: Flask) -> None:
    """Install the handlers."""
    app.register_error_handler(CSRFError, _handle_csrf)
    app.register_error_handler(HTTPException, _handle_http)
    app.register_error_handler(Exception, _handle_unexpected)
