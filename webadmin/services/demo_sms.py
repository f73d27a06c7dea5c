"""Demo: a Debug SMS channel, and a simulated phone with a known name for two demo subscribers who have numbers,
so a marketer can watch an SMS fallback happen (send with a one-minute window, tap on one phone only)."""

from __future__ import annotations

from sqlalchemy import select

from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.audience import Device, Subscriber
from webadmin.models.sms import SmsChannel
from webadmin.services import demo
from webadmin.services.demo_audience import APP_NAME

TOKENS = ("sim-android-smsdemo-1", "sim-android-smsdemo-2")


def _debug_channel() -> bool:
    """A Debug SMS channel when none is configured; whether one was added."""
    if db.session.scalar(select(SmsChannel.id).limit(1)) is not None:
        return False
    db.session.add(SmsChannel(backend="debug", sender="Nibs", credentials_encrypted=encrypt_credentials({})))
    return True


def _phones(app: App) -> list[str]:
    """Keys of the first two demo subscribers with a number, each given a simulated phone (when missing)."""
    existing = db.session.scalars(select(Device.token).where(Device.app_id == app.id, Device.token.in_(TOKENS)))
    if set(existing) == set(TOKENS):
        return []
    people = db.session.execute(
        select(Subscriber.id, Subscriber.subscriber_key)
        .where(Subscriber.phone.is_not(None), Subscriber.opted_out.is_(False))
        .order_by(Subscriber.id).limit(len(TOKENS))
    ).all()
    if len(people) < len(TOKENS):
        return []
    db.session.add_all(Device(app_id=app.id, platform="android", token=token, subscriber_id=person.id)
                       for token, person in zip(TOKENS, people, strict=True))
    db.session.flush()
    return [person.subscriber_key for person in people]


@demo.register_loader("sms")
def load_sms_demo() -> str | None:
    """`demo load`: the Debug SMS channel and the two SMS demo phones (idempotent)."""
    app = db.session.scalar(select(App).where(App.name == APP_NAME))
    parts = ["a Debug SMS channel"] if _debug_channel() else []
    keys = _phones(app) if app is not None else []
    if keys:
        parts.append(f"SMS demo phones {TOKENS[0]} ({keys[0]}) and {TOKENS[1]} ({keys[1]})")
    return " and ".join(parts) or None
