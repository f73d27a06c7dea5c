"""webadmin: a self-hosted push-notification console. `create_app` builds the Flask application."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from webadmin.config import load_config, resource_folder


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the application; `config` overrides settings read from the environment."""
    app = Flask(
        __name__,
        template_folder=str(resource_folder("templates")),
        static_folder=str(resource_folder("static")),
        instance_relative_config=False,
    )
    app.config.from_mapping(load_config())
    if config:
        app.config.update(config)
    logging.basicConfig(level=app.config["LOG_LEVEL"])
    logging.getLogger("alembic").setLevel(logging.WARNING)
    register_extensions(app)
    register_converters(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_hooks(app)
    register_commands(app)
    register_proxy(app)
    return app


def register_extensions(app: Flask) -> None:
    """Bind the unbound extensions to this app."""
    from webadmin import cookie_session, driver_sql, models  # noqa: F401  (models: every table known to SQLAlchemy)
    from webadmin.database import configure_engine, engine_options
    from webadmin.extensions import bootstrap, csrf, db, htmx, login_manager, migrate
    from webadmin.queue import init_queue

    engine_options(app)
    db.init_app(app)
    configure_engine(app)
    driver_sql.init_app(app)
    cookie_session.init_app(app)
    migrate.init_app(app, db, directory=str(resource_folder("migrations")), render_as_batch=True)
    csrf.init_app(app)
    htmx.init_app(app)
    bootstrap.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Sign in to continue."
    login_manager.login_message_category = "info"
    init_queue(app)
    import webadmin.services.demo_loaders  # noqa: F401  (each section's demo data registers)
    from webadmin.services.sms_fallback import register_funnel_stages

    register_funnel_stages()  # the campaign funnel's SMS stages
    import webadmin.tasks  # noqa: F401  (tasks register on the queue)


def register_converters(app: Flask) -> None:
    """URL converters shared by every blueprint (bounded `<int:…>` ids)."""
    from webadmin.converters import register_converters as register

    register(app)


def register_blueprints(app: Flask) -> None:
    """Attach the console sections and the API."""
    from webadmin.api import bp as api_bp
    from webadmin.console import register_console

    register_console(app)
    app.register_blueprint(api_bp)


def register_errorhandlers(app: Flask) -> None:
    """Console error pages and JSON errors under /api/."""
    from webadmin.errors import register_errors

    register_errors(app)


def register_hooks(app: Flask) -> None:
    """Request hooks: access control, first-run redirect, template globals."""
    from webadmin.console.hooks import register_console_hooks

    register_console_hooks(app)


def register_commands(app: Flask) -> None:
    """`flask --app webadmin …` commands."""
    from webadmin.cli import register_cli

    register_cli(app)


def register_proxy(app: Flask) -> None:
    """Behind PROXY_HOPS proxies, take the client address, scheme and host from their X-Forwarded-* headers.

    Without this the sign-in limit per address counts every visitor as the proxy, and the audit log records
    the proxy's address. Left at 0 (no proxy), the headers are ignored, since any client could forge them.
    """
    hops = app.config["PROXY_HOPS"]
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
