"""Demo: six weeks of past campaigns with sends, failures, receipts and opens, so the console and its charts have
something to say on first run.

Messages are made by the engine's own audience query (one INSERT … SELECT per campaign), written at once as sent
through the Simulator with their receipts; the failures and opens drawn in Python for every campaign go into a
temporary table as plain rows, and two UPDATE … FROM statements apply them. The analytics rollups are recomputed
from those rows once at the end, the way `flask analytics rebuild` does it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, and_, case, func, literal, select, update
from sqlalchemy import text as sql

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.audience import Device, Group
from webadmin.models.campaign import Campaign, CampaignStatus
from webadmin.models.message import Message, MessageState
from webadmin.models.offer import Offer
from webadmin.models.types import UTCDateTime, utcnow
from webadmin.sending.audience import AudienceSpec, materialize
from webadmin.services import bulk, demo, rollups

DEMO_TAG = "demo"
# (days ago, UTC hour, title, text, group name or None for everyone, platforms, source)
PLAN = [
    (41, 9, "Welcome to Nibs", "Collect nibs with every purchase and swap them for treats.", "Beta testers", (),
     "adhoc"),
    (34, 12, "Weekend treat", "Double nibs on every hot chocolate this weekend.", "Key customers", (), "offer"),
    (31, 17, "Weekly stories", "This week's stories, in the app.", "Newsletter", (), "adhoc"),
    (29, 8, "Your friend shared a treat", "Ola sent you a free truffle.", "Beta testers", (), "social"),
    (27, 10, "Frania care", "Time to descale your Frania washer: here is how.", "Owners of the Frania washer",
     ("android",), "adhoc"),
    (24, 17, "Weekly stories", "This week's stories, in the app.", "Newsletter", (), "adhoc"),
    (21, 11, "Order on its way", "Your order left the shop.", "Key customers", (), "api"),
    (20, 12, "Chocolate week", "Seven days, seven chocolates at half price.", "Key customers", (), "offer"),
    (17, 17, "Weekly stories", "This week's stories, in the app.", "Newsletter", (), "adhoc"),
    (13, 9, "New flavours", "Three new truffles just landed in store.", "Key customers", ("ios",), "offer"),
    (10, 17, "Weekly stories", "This week's stories, in the app.", "Newsletter", (), "adhoc"),
    (8, 15, "Your friend shared a treat", "Kuba sent you a hot chocolate.", "Beta testers", (), "social"),
    (6, 11, "Order on its way", "Your order left the shop.", "Key customers", (), "api"),
    (5, 12, "Frania care", "Descaling tablets are back in stock.", "Owners of the Frania washer", ("android",),
     "offer"),
    (3, 17, "Weekly stories", "This week's stories, in the app.", "Newsletter", (), "adhoc"),
    (2, 10, "Newsletter extra", "A longer read for the weekend, in the app.", "Beta testers", (), "adhoc"),
    (1, 9, "Morning offer", "Free croissant with any coffee before 10.", "Key customers", (), "offer"),
]
# Final failures: (share of the campaign, stored error, failure class).
FAILURES = [
    (0.012, "UNREGISTERED: Requested entity was not found.", "invalid_token"),
    (0.006, "QUOTA_EXCEEDED: Quota exceeded for the sender (gave up after 5 attempts)", "quota"),
    (0.003, "INVALID_ARGUMENT: Message payload too large", "payload"),
    (0.004, "UNAVAILABLE: The service is currently unavailable (gave up after 5 attempts)", "other"),
]
RECEIPT_PLATFORMS = ("android", "ios")  # the demo apps report receipts; the web app does not
RECEIPT_EVERY = 7  # … except for one message in seven (the app was killed before it could report)
RECEIPT_DELAY = timedelta(seconds=4)


# The drawn outcomes, applied with UPDATE … FROM (a temporary table of this connection; not part of the schema).
_OUTCOMES = Table(
    "demo_outcomes", MetaData(),
    Column("id", Integer, primary_key=True),
    Column("error", String(300)),  # NULL: opened
    Column("failure_class", String(32)),
    Column("at", UTCDateTime),
    prefixes=["TEMPORARY"],
)


def _outcomes(ids: list[int], sent_at: datetime, rng: random.Random, now: datetime
              ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Failures (id, error, class, when) and opens (id, None, None, when) for a campaign's messages."""
    failed: list[tuple[Any, ...]] = []
    opens: list[tuple[Any, ...]] = []
    open_share = rng.uniform(0.08, 0.3)
    for message_id in ids:
        draw = rng.random()
        for share, error, reason in FAILURES:
            if draw < share:
                failed.append((message_id, error, reason, sent_at + timedelta(seconds=rng.uniform(1, 600))))
                break
            draw -= share
        else:
            if rng.random() < open_share:  # most opens in the first hours, a long tail over two days
                minutes = min(2880.0, max(0.1, rng.expovariate(1 / 120)))
                opens.append((message_id, None, None, min(now, sent_at + timedelta(minutes=minutes))))
    return failed, opens


def _sent(campaign_id: int, sent_at: datetime) -> Callable[[Any], dict[str, Any]]:
    """Column values of a message sent through the Simulator at `sent_at`, for materialize(values=…): every
    receipt arrives a few seconds after sending (so before any open), except from the web app and for one message
    in seven."""
    d = Device.__table__
    at = literal(sent_at, UTCDateTime)

    def values(audience: Any) -> dict[str, Any]:
        receipts = ((audience.c.device_id + campaign_id) % RECEIPT_EVERY != 0) & audience.c.device_id.in_(
            select(d.c.id).where(d.c.platform.in_(RECEIPT_PLATFORMS)))
        return {"state": literal(MessageState.SENT.value), "backend": literal("simulator"), "sent_at": at,
                "number_of_send_attempts": literal(1), "changed_at": at,
                "received_at": case((receipts, literal(sent_at + RECEIPT_DELAY, UTCDateTime)), else_=None)}

    return values


def _history(campaign: Campaign, rng: random.Random, now: datetime) -> list[tuple[Any, ...]]:
    """Set the campaign's counters from the outcomes drawn for its (sent) messages; returns the failures and
    opens, for _apply_outcomes."""
    m = Message.__table__
    ids = list(db.session.scalars(select(m.c.id).where(m.c.campaign_id == campaign.id)))
    failed, opens = _outcomes(ids, campaign.started_at, rng, now)
    invalid = sum(1 for f in failed if f[2] == "invalid_token")
    db.session.execute(update(Campaign).where(Campaign.id == campaign.id).values(
        targeted=len(ids), sent=len(ids) - len(failed), failed=len(failed), opened=len(opens),
        invalid_tokens=invalid))
    return failed + opens


def _apply_outcomes(rows: list[tuple[Any, ...]]) -> None:
    """Write every campaign's failures and opens: plain rows into a temporary table, then two UPDATE … FROM.

    The table is made and dropped inside the loader's transaction; if anything fails, the rollback removes it."""
    m, o = Message.__table__, _OUTCOMES
    connection = db.session.connection()
    o.create(connection)
    bulk.insert_rows(o, ["id", "error", "failure_class", "at"], rows)
    db.session.execute(update(m).where(m.c.id == o.c.id, o.c.error.is_not(None)).values(
        state=MessageState.ERROR.value, error=o.c.error, failure_class=o.c.failure_class, retry_sending=False,
        sent_at=None, received_at=None, changed_at=o.c.at))
    db.session.execute(update(m).where(m.c.id == o.c.id, o.c.error.is_(None)).values(opened_at=o.c.at))
    o.drop(connection)


def _campaign(app: App, when: datetime, title: str, text: str, group: Group | None, platforms: tuple[str, ...],
              source: str, offer: Offer | None) -> Campaign:
    """One past campaign with its messages."""
    audience = {"type": "groups", "group_ids": [group.id], "platforms": list(platforms)} if group else {
        "type": "all", "platforms": list(platforms)}
    campaign = Campaign(app_id=app.id, title=title, text=text, audience=audience, status=CampaignStatus.SENT.value,
                        source=source, tag=DEMO_TAG, created_by="demo", created_at=when - timedelta(minutes=20),
                        started_at=when, finished_at=when + timedelta(minutes=2),
                        open_direct=offer.deep_link if offer else f"{app.deep_link_scheme or 'nibs'}://home",
                        related_type="offer" if offer else None, related_id=str(offer.id) if offer else None)
    db.session.add(campaign)
    db.session.flush()
    materialize(campaign.id, app.id, AudienceSpec.from_dict(audience), "all", DEMO_TAG, analyze=False,
                values=_sent(campaign.id, when))
    return campaign


@demo.register_loader("campaigns")
def load_demo_campaigns() -> str | None:
    """Six weeks of past campaigns for the first app (idempotent: skipped when demo campaigns exist)."""
    app = db.session.scalar(select(App).order_by(App.id))
    if app is None or db.session.scalar(select(func.count(Campaign.id)).where(Campaign.tag == DEMO_TAG)):
        return None
    rng, now = random.Random(7), utcnow()
    groups = {g.name: g for g in db.session.scalars(select(Group))}
    offers = list(db.session.scalars(select(Offer).where(and_(Offer.app_id == app.id, Offer.kind == "offer"))))
    outcomes: list[tuple[Any, ...]] = []
    for index, (days, hour, title, text, group_name, platforms, source) in enumerate(PLAN):
        offer = offers[index % len(offers)] if offers and source == "offer" else None
        when = (now - timedelta(days=days)).replace(hour=hour, minute=rng.randrange(60), second=0, microsecond=0)
        campaign = _campaign(app, when, title, text, groups.get(group_name or ""), platforms,
                             source if offer or source != "offer" else "adhoc", offer)
        outcomes += _history(campaign, rng, now)
    _apply_outcomes(outcomes)
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sql("ANALYZE messages"))  # once, instead of after each campaign's INSERT … SELECT
    rollups.recompute()
    return f"{len(PLAN)} past campaigns over {-(-PLAN[0][0] // 7)} weeks"


demo.register_counter("Campaigns", lambda: db.session.scalar(select(func.count(Campaign.id))) or 0)
