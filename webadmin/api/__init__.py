"""The /api/v1 blueprint: API-key auth, JSON in and out, JSON errors only, and its OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template

from webadmin.access import public
from webadmin.api import openapi
from webadmin.api.auth import authenticate
from webadmin.api.validation import ApiError, from_service_error
from webadmin.errors import json_error
from webadmin.extensions import csrf
from webadmin.services import ServiceError

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)
bp.before_request(authenticate)


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Any:
    """Answer an ApiError in the API's error shape."""
    body, status = json_error(exc.status, exc.message, code=exc.code, field=exc.field)
    headers = {"WWW-Authenticate": 'Bearer realm="webadmin"'} if status == 401 else {}
    return body, status, {**headers, **exc.headers}


@bp.errorhandler(ServiceError)
def _service_error(exc: ServiceError) -> Any:
    """A refused domain operation: 422 (or 403/404/409 by its code)."""
    return _api_error(from_service_error(exc))


@bp.route("/health")
@public
def health() -> Any:
    """Liveness: answers without touching the database (also the benchmarks' baseline endpoint)."""
    return jsonify({"status": "ok"})


@bp.get("/openapi.json")
@public
def openapi_document() -> Any:
    """The OpenAPI 3.1 document of every /api/v1 operation."""
    return jsonify(openapi.document())


@bp.get("/docs")
@public
def docs() -> Any:
    """The API reference as a page, rendered from the same document."""
    return render_template(
        "api/docs.html",
        info=openapi.INFO,
        operations=openapi.page_model(),
        schemas=openapi.schema_model(),
    )


_STATUS = {
    "type": "object",
    "required": ["status"],
    "additionalProperties": False,
    "properties": {"status": {"type": "string", "enum": ["ok"]}},
}
openapi.register(
    {
        "/health": {
            "get": openapi.operation(
                "health", "Liveness (no database)", public=True, ok={200: ("The server is up.", _STATUS)}
            )
        },
        "/openapi.json": {
            "get": openapi.operation(
                "openapiDocument", "This OpenAPI document", public=True, ok={200: ("The document.", {"type": "object"})}
            )
        },
        "/docs": {
            "get": openapi.operation(
                "apiDocs",
                "The API reference as a page",
                public=True,
                ok={200: ("An HTML page.", {"type": "string"})},
                media_type="text/html",
            )
        },
    }
)

# The endpoint modules register their routes and their part of the document on import.
from webadmin.api import devices, events, groups, messaging, subscribers  # noqa: E402,F401
