"""Recovery: a consumer can die mid-batch and Huey can lose its task; the database says what is left."""

from __future__ import annotations

from sqlalchemy import select

from webadmin.extensions import db
from webadmin.models.campaign import Campaign, CampaignStatus
from webadmin.models.message import PENDING_STATES, Message
from webadmin.models.types import utcnow


def stalled_campaign_ids() -> list[int]:
    """Sending campaigns with messages that are claimable now (unleased or lease expired, due, under the attempt
    ceiling). Rows at the ceiling are ended by `finish_if_done` (via `engine.give_up_stranded`) instead."""
    from webadmin.sending.engine import retry_policy

    now = utcnow()
    m = Message.__table__
    claimable = (
        select(m.c.campaign_id)
        .where(
            m.c.campaign_id == Campaign.id,
            m.c.state.in_(PENDING_STATES),
            (m.c.lease_until.is_(None)) | (m.c.lease_until < now),
            (m.c.next_attempt_at.is_(None)) | (m.c.next_attempt_at <= now),
            m.c.number_of_send_attempts < retry_policy().max_attempts,
        )
        .exists()
    )
    return list(db.session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.SENDING.value,
                                                             claimable)))


def sweep_once() -> dict[str, int]:
    """Start due campaigns, re-enqueue stalled ones, and close campaigns with nothing left."""
    from webadmin.sending.engine import finish_if_done
    from webadmin.services.campaigns import due_campaign_ids, pending_count, start_if_due
    from webadmin.tasks import enqueue_dispatch

    started = sum(1 for cid in due_campaign_ids() if start_if_due(cid) == "started")
    stalled = stalled_campaign_ids()
    for cid in stalled:
        enqueue_dispatch(cid, pending_count(cid))
    sending = db.session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.SENDING.value))
    finished = sum(1 for cid in list(sending) if cid not in stalled and finish_if_done(cid) == "finished")
    return {"started": started, "requeued": len(stalled), "finished": finished}
