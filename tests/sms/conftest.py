"""SMS fallback fixtures: an app, campaigns really sent through the queue, SMS channels, a fake SMS provider."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.factories import make_app
from tests.providers.fakes import FakeServer
from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.sms import SmsChannel, SmsMessage
from webadmin.models.types import utcnow
from webadmin.services import campaigns, sms_fallback
from webadmin.services.campaigns import CampaignDraft
from webadmin.services.events import DeviceEvent, record_events

LINK = "https://nibs.example/offers/1"


@pytest.fixture(autouse=True)
def _engine_config(request):
    """Tests on a database: temporary runtimes (no connections kept between tests) and small batches. Tests of the
    backends alone need no database and run once, not once per database."""
    if "app" in request.fixturenames:
        request.getfixturevalue("app").config.update(ENGINE_KEEP_CONNECTIONS=False, ENGINE_BATCH_SIZE=50,
                                                     SMS_BATCH_SIZE=10)


@pytest.fixture
def push_app(app):
    """The app pushes go to (no push channel: the Debug push backend)."""
    return make_app("Nibs")


@pytest.fixture
def journal(tmp_path) -> Path:
    """Where the Debug SMS backend writes one line per SMS it accepted."""
    return tmp_path / "sms-journal.txt"


@pytest.fixture
def sms_channel(app, journal) -> Callable[..., SmsChannel]:
    """Configure the SMS channel (Debug, journaling, unless told otherwise)."""

    def _make(backend: str = "debug", sender: str | None = "Nibs", options: dict[str, Any] | None = None,
              **credentials: Any) -> SmsChannel:
        if backend == "debug":
            credentials.setdefault("journal", str(journal))
        channel = SmsChannel(backend=backend, sender=sender, options=options or {},
                             credentials_encrypted=encrypt_credentials(credentials))
        db.session.add(channel)
        db.session.commit()
        return channel

    return _make


def send_campaign(push_app, window: int = 60, text: str | None = None, **audience: Any) -> Campaign:
    """A campaign with an SMS fallback, sent now through the real (immediate) queue and the Debug push backend."""
    draft = CampaignDraft(app_id=push_app.id, text="Half price today", open_direct=LINK,
                          audience=audience or {"type": "all"}, sms_fallback_seconds=window, sms_fallback_text=text)
    sms_fallback.apply_to_draft(draft)
    campaign = campaigns.create_campaign(draft, actor="test")
    db.session.commit()
    campaigns.start(campaign, actor="test")
    return fresh(campaign)


def fresh(campaign: Campaign) -> Campaign:
    """The campaign as stored now."""
    db.session.expire_all()
    return db.session.get(Campaign, campaign.id)


def open_push(device) -> None:
    """The device reports an open of its message (the events API's own function)."""
    uuid = db.session.scalar(select(Message.uuid).where(Message.device_id == device.id))
    record_events([DeviceEvent(uuid, "opened")], app_id=None)


def later(minutes: float = 2) -> datetime:
    """A moment after the window (instead of waiting for it)."""
    return utcnow() + timedelta(minutes=minutes)


def sms_rows(campaign_id: int) -> list[SmsMessage]:
    """The campaign's SMS rows, fresh, by id."""
    db.session.expire_all()
    return list(db.session.scalars(select(SmsMessage).where(SmsMessage.campaign_id == campaign_id)
                                   .order_by(SmsMessage.id)))


def journal_lines(path: Path) -> list[tuple[str, int, str]]:
    """(sms uuid, pid, number) per SMS the Debug backend accepted."""
    if not path.exists():
        return []
    return [(u, int(pid), to) for u, pid, to in (line.split() for line in path.read_text().splitlines())]


class LiveFake:
    """A FakeServer running on its own event loop thread, for code that sends from synchronous callers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = FakeServer()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self.loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def live_fake() -> Iterator[FakeServer]:
    """A fake SMS provider on 127.0.0.1."""
    with LiveFake() as server:
        yield server


def set_halted(halted: bool) -> None:
    """Halt or resume the SMS channel (as a refused token and an admin's fix would)."""
    from sqlalchemy import update

    db.session.execute(update(SmsChannel).values(halted=halted))
    db.session.commit()


@pytest.fixture
def smsapi(live_fake):
    """A stateful fake SMSAPI account on the live fake server."""
    from tests.sms.fake_smsapi import FakeSmsapi

    return FakeSmsapi(live_fake, SMSAPI_TOKEN)


SMSAPI_TOKEN = "smsapi-account-token-0123456789"


def smsapi_channel(sms_channel, fake: FakeServer, **options: Any) -> SmsChannel:
    """An SMSAPI channel pointed at a fake."""
    return sms_channel("smsapi", sender="Nibs", options={"endpoint": fake.url, "timeout": 5.0, **options},
                       token=SMSAPI_TOKEN, account="smsapi.pl")
