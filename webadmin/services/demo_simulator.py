"""Demo: route every platform of apps without channels to the Simulator, so a fresh install sends and
sees pushes arrive with no credentials at all."""

from __future__ import annotations

from sqlalchemy import select

from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.campaign import Channel
from webadmin.services import demo


@demo.register_loader("simulator")
def load_simulator_channels() -> str | None:
    """A Simulator channel per platform for each app that has no channel yet (idempotent)."""
    with_channels = select(Channel.app_id)
    apps = db.session.scalars(select(App).where(App.id.not_in(with_channels))).all()
    for app in apps:
        for platform in app.platforms or ("android", "ios", "web"):
            db.session.add(Channel(app_id=app.id, platform=platform, backend="simulator",
                                   name=f"Simulator ({platform})", credentials_encrypted=encrypt_credentials({})))
    db.session.flush()
    return f"Simulator channels for {len(apps)} app(s)" if apps else None
