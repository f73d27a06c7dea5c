"""Demo: a few weeks of past campaigns with sends and opens, so the console looks alive on first run.

Messages are made by the engine's own audience query; their outcome is then written set-based as history
(sent through the Simulator, ~3 % failed, 10–30 % opened), with the counters to match.
"""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import and_, func, select, update

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.audience import Group
from webadmin.models.campaign import Campaign, CampaignStatus
from webadmin.models.message import Message, MessageState
from webadmin.models.offer import Offer
from webadmin.models.types import utcnow
from webadmin.sending.audience import AudienceSpec, materialize
from webadmin.services import demo

DEMO_TAG = "demo"
PLAN = [  # (days ago, title, text, group name or None for everyone, platforms)
    (27, "Welcome to Nibs", "Collect nibs with every purchase and swap them for treats.", "Beta testers", ()),
    (20, "Weekend treat", "Double nibs on every hot chocolate this weekend.", "Key customers", ()),
    (13, "Frania care", "Time to descale your Frania washer: here is how.", "Owners of the Frania washer",
     ("android",)),
    (6, "New flavours", "Three new truffles just landed in store.", "Key customers", ("ios",)),
    (2, "Newsletter extra", "This week's stories, in the app.", "Beta testers", ()),
]


def _history(campaign: Campaign, rng: random.Random) -> None:
    """Write the campaign's outcome: sent, some failures, some opens; counters from the rows."""
    sent_at = campaign.started_at
    m = Message.__table__
    ids = list(db.session.scalars(select(m.c.id).where(m.c.campaign_id == campaign.id)))
    failed = set(rng.sample(ids, k=len(ids) * 3 // 100))
    opened = {i for i in ids if i not in failed and rng.random() < rng.uniform(0.1, 0.3)}
    db.session.execute(update(m).where(m.c.campaign_id == campaign.id).values(
        state=MessageState.SENT.value, backend="simulator", sent_at=sent_at, number_of_send_attempts=1))
    if failed:
        db.session.execute(update(m).where(m.c.id.in_(failed)).values(
            state=MessageState.ERROR.value, error="QUOTA_EXCEEDED: gave up after 5 attempts", sent_at=None))
    for message_id in opened:  # spread opens over the first day
        at = sent_at + timedelta(minutes=rng.expovariate(1 / 90))
        db.session.execute(update(m).where(m.c.id == message_id).values(opened_at=min(at, utcnow()), received_at=at))
    db.session.execute(update(Campaign).where(Campaign.id == campaign.id).values(
        targeted=len(ids), sent=len(ids) - len(failed), failed=len(failed), opened=len(opened)))


def _campaign(app: App, days_ago: int, title: str, text: str, group: Group | None, platforms: tuple[str, ...],
              offer: Offer | None) -> Campaign:
    """One past campaign."""
    when = utcnow() - timedelta(days=days_ago, hours=3)
    audience = {"type": "groups", "group_ids": [group.id], "platforms": list(platforms)} if group else {
        "type": "all", "platforms": list(platforms)}
    campaign = Campaign(app_id=app.id, title=title, text=text, audience=audience, status=CampaignStatus.SENT.value,
                        source="offer" if offer else "adhoc", tag=DEMO_TAG, created_by="demo", created_at=when,
                        started_at=when, finished_at=when + timedelta(minutes=2),
                        open_direct=offer.deep_link if offer else f"{app.deep_link_scheme or 'nibs'}://home",
                        related_type="offer" if offer else None, related_id=str(offer.id) if offer else None)
    db.session.add(campaign)
    db.session.flush()
    materialize(campaign.id, app.id, AudienceSpec.from_dict(audience), "all", DEMO_TAG)
    return campaign


@demo.register_loader("campaigns")
def load_demo_campaigns() -> str | None:
    """Past campaigns for the first app (idempotent: skipped when demo campaigns exist)."""
    app = db.session.scalar(select(App).order_by(App.id))
    if app is None or db.session.scalar(select(func.count(Campaign.id)).where(Campaign.tag == DEMO_TAG)):
        return None
    rng = random.Random(7)
    groups = {g.name: g for g in db.session.scalars(select(Group))}
    offers = list(db.session.scalars(select(Offer).where(and_(Offer.app_id == app.id, Offer.kind == "offer"))))
    made = 0
    for index, (days, title, text, group_name, platforms) in enumerate(PLAN):
        offer = offers[index % len(offers)] if offers and index % 2 else None
        campaign = _campaign(app, days, title, text, groups.get(group_name or ""), platforms, offer)
        _history(campaign, rng)
        made += 1
    return f"{made} past campaigns"


demo.register_counter("Campaigns", lambda: db.session.scalar(select(func.count(Campaign.id))) or 0)
