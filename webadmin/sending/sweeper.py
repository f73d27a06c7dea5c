"""Recovery: a consumer can die mid-batch and Huey can lose its task; the database says what is left."""

from __future__ import annotations

import logging

from sqlalchemy import select

from webadmin.extensions import db
from webadmin.models.campaign import Campaign, CampaignStatus
from webadmin.models.message import PENDING_STATES, Message
from webadmin.models.types import utcnow
from webadmin.services import ServiceError

log = logging.getLogger(__name__)


def stalled_campaign_ids() -> list[int]:
    """Sending campaigns whose work no worker is doing: claimable rows (unleased or lease expired, due, under the
    attempt ceiling), and either a lease that expired (a worker died) or no live lease at all (its tasks were
    lost) — and no dispatch task of theirs waiting in the queue.

    A campaign being sent normally has live leases (renewed while a batch is on the wire), so it is left alone:
    re-queueing it every minute only because some rows are not claimed yet added `fanout` tasks a minute. Rows
    at the ceiling are ended by `finish_if_done` (via `engine.give_up_stranded`) instead.
    """
    from webadmin.sending.engine import retry_policy

    now = utcnow()
    m = Message.__table__
    pending = (m.c.campaign_id == Campaign.id) & m.c.state.in_(PENDING_STATES)
    under_ceiling = m.c.number_of_send_attempts < retry_policy().max_attempts
    claimable = select(m.c.id).where(
        pending, under_ceiling, (m.c.lease_until.is_(None)) | (m.c.lease_until < now),
        (m.c.next_attempt_at.is_(None)) | (m.c.next_attempt_at <= now),
    ).exists()
    expired = select(m.c.id).where(pending, under_ceiling, m.c.lease_until < now).exists()
    live = select(m.c.id).where(pending, m.c.lease_until >= now).exists()
    query = select(Campaign.id).where(Campaign.status == CampaignStatus.SENDING.value, claimable, expired | ~live)
    queued = queued_dispatch_ids()
    return [cid for cid in db.session.scalars(query) if cid not in queued]


def queued_dispatch_ids() -> set[int]:
    """Campaigns with a dispatch task waiting in the queue (a worker will take it: nothing to re-queue)."""
    from webadmin.queue import huey
    from webadmin.tasks import dispatch_campaign

    name = dispatch_campaign.task_class.__name__
    try:
        return {int(task.args[0]) for task in huey.pending() if task.name == name and task.args}
    except Exception:  # an unreadable queue entry must not stop recovery: re-queue as if none were waiting
        log.exception("could not read the queue's pending tasks")
        return set()


def start_due(campaign_id: int) -> str:
    """Start a scheduled campaign whose time has come. Never raises: a campaign whose start fails is moved to
    `failed` with the reason, so one bad campaign cannot stop the sweep (and crash recovery) for all the others."""
    from webadmin.services.campaigns import fail_scheduled, start_if_due

    try:
        return start_if_due(campaign_id)
    except Exception as exc:  # whatever start() raised: the other campaigns must still be swept
        db.session.rollback()
        log.exception("campaign %s: the scheduled start failed", campaign_id)
        why = exc.message if isinstance(exc, ServiceError) else f"an internal error ({type(exc).__name__})"
        reason = f"Could not start at its scheduled time: {why}"
        try:
            return "failed" if fail_scheduled(campaign_id, reason, actor="scheduler") else "not started"
        except Exception:  # e.g. the database went away as well: the next sweep tries again
            db.session.rollback()
            log.exception("campaign %s: could not mark the failed start", campaign_id)
            return "not started"


def cancelled_with_pending_ids() -> list[int]:
    """Cancelled campaigns with pending rows no worker holds (a worker died with them after the cancel, or
    recorded them while cancel() ran)."""
    now = utcnow()
    m = Message.__table__
    unheld = (
        select(m.c.campaign_id)
        .where(m.c.campaign_id == Campaign.id, m.c.state.in_(PENDING_STATES),
               (m.c.lease_until.is_(None)) | (m.c.lease_until < now))
        .exists()
    )
    return list(db.session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.CANCELLED.value,
                                                             unheld)))


def sweep_once() -> dict[str, int]:
    """Start due campaigns, re-enqueue stalled ones, end what cancelled ones left, close those with nothing left."""
    from webadmin.sending.engine import end_cancelled, finish_if_done
    from webadmin.services.campaigns import due_campaign_ids, pending_count
    from webadmin.tasks import enqueue_dispatch

    started = sum(1 for cid in due_campaign_ids() if start_due(cid) == "started")
    stalled = stalled_campaign_ids()
    for cid in stalled:
        enqueue_dispatch(cid, pending_count(cid))
    sending = db.session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.SENDING.value))
    finished = sum(1 for cid in list(sending) if cid not in stalled and finish_if_done(cid) == "finished")
    cancelled = sum(end_cancelled(cid) for cid in cancelled_with_pending_ids())
    db.session.commit()
    return {"started": started, "requeued": len(stalled), "finished": finished, "cancelled": cancelled}
