"""The console: one blueprint per section."""

from __future__ import annotations

from flask import Flask

# (endpoint, label, icon) in navigation order; a section appears once its blueprint is registered.
NAVIGATION: list[tuple[str, str]] = [
    ("dashboard.index", "Dashboard"),
    ("compose.index", "Compose"),
    ("campaigns.index", "Campaigns"),
    ("offers.index", "Offers"),
    ("audience.subscribers", "Audience"),
    ("templates.index", "Templates"),
    ("analytics.index", "Analytics"),
    ("settings.index", "Settings"),
    ("users.index", "Users"),
]


def register_console(app: Flask) -> None:
    """Register every console blueprint."""
    from webadmin.console.analytics.views import bp as analytics_bp
    from webadmin.console.audience.views import bp as audience_bp
    from webadmin.console.auth.views import bp as auth_bp
    from webadmin.console.campaigns.views import bp as campaigns_bp
    from webadmin.console.compose.views import bp as compose_bp
    from webadmin.console.dashboard.views import bp as dashboard_bp
    from webadmin.console.offers.views import bp as offers_bp
    from webadmin.console.settings.views import bp as settings_bp
    from webadmin.console.simulator.views import bp as simulator_bp
    from webadmin.console.sms.views import bp as sms_bp
    from webadmin.console.templates.views import bp as templates_bp
    from webadmin.console.users.views import bp as users_bp

    for blueprint in (
        analytics_bp,
        audience_bp,
        auth_bp,
        campaigns_bp,
        compose_bp,
        dashboard_bp,
        offers_bp,
        settings_bp,
        simulator_bp,
        sms_bp,
        templates_bp,
        users_bp,
    ):
        app.register_blueprint(blueprint)
