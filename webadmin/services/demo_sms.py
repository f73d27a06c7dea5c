"""Demo: a Debug SMS channel and two simulated phones whose subscribers have numbers, so a marketer can watch an SMS
fallback happen (send with a one-minute window, tap on one phone, not on the other)."""

from __future__ import annotations

from sqlalchemy import select

from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.audience import Device, Subscriber
from webadmin.models.sms import SmsChannel
from webadmin.services import demo
from webadmin.services.demo_audience import APP_NAME

# (subscriber key, display name, phone, simulated device token)
PEOPLE = (
    ("anna.sms@example.com", "Anna (SMS demo)", "+48500100200", "sim-android-smsdemo-anna"),
    ("ben.sms@example.com", "Ben (SMS demo)", "+48500100201", "sim-android-smsdemo-ben"),
)


def _debug_channel() -> bool:
    """A Debug SMS channel when none is configured; whether one was added."""
    if db.session.scalar(select(SmsChannel.id).limit(1)) is not None:
        return False
    db.session.add(SmsChannel(backend="debug", sender="Nibs", credentials_encrypted=encrypt_credentials({})))
    return True


def _phones(app: App) -> int:
    """The demo people and their simulated Android phones (only the missing ones); returns how many were added."""
    added = 0
    for key, name, phone, token in PEOPLE:
        subscriber = db.session.scalar(select(Subscriber).where(Subscriber.subscriber_key == key))
        if subscriber is None:
            subscriber = Subscriber(subscriber_key=key, display_name=name, phone=phone, locale="pl-PL",
                                    time_zone="Europe/Warsaw")
            db.session.add(subscriber)
            db.session.flush()
            added += 1
        if db.session.scalar(select(Device.id).where(Device.app_id == app.id, Device.token == token)) is None:
            db.session.add(Device(app_id=app.id, platform="android", token=token, subscriber_id=subscriber.id))
    db.session.flush()
    return added


@demo.register_loader("sms")
def load_sms_demo() -> str | None:
    """`demo load`: the Debug SMS channel and the two SMS demo subscribers (idempotent)."""
    app = db.session.scalar(select(App).where(App.name == APP_NAME))
    channel = _debug_channel()
    people = _phones(app) if app is not None else 0
    parts = (["a Debug SMS channel"] if channel else []) + ([f"{people} SMS demo subscribers"] if people else [])
    return " and ".join(parts) or None
