"""Marketing Cloud "all users": one messageApp request per campaign and MobilePush message, across every worker.

A campaign to all users (no platform filter) on a Marketing Cloud channel that opts in ("All users → messageApp")
is not sent by subscriber key. The first batch that reaches the route claims the request in the database
(`campaign_app_sends`, unique per campaign and target = client id + MobilePush message) and commits the claim
before the request goes out; only the claimer sends. Its answer settles the claim, and every message of the
campaign on such a route is then recorded with that answer: the claimer's batch at once, every later batch (any
worker) from the settled claim without a request.

    no row          → INSERT … ON CONFLICT DO NOTHING: claimed (state sending, lease like a batch's)
    sending         → another worker is on the wire: the batch's rows wait (released, due again shortly)
    sending, lease over → unknown: its worker died after the claim; it may have sent: never sent again
    sent            → rows recorded SENT with its tokenId, no request
    retry, due      → re-claimed by a conditional UPDATE (the engine's retry policy, on the same row)
    retry, not due  → rows wait until it is due
    refused         → credentials/payload refused, the campaign paused: re-claimed once it is resumed
    failed, unknown → rows end as ERROR with the claim's reason
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from webadmin.crypto import decrypt_credentials
from webadmin.extensions import db
from webadmin.models.campaign import AppSendState, CampaignAppSend
from webadmin.models.types import utcnow
from webadmin.providers.base import ChannelAuthError, ProviderError, SendResult
from webadmin.providers.marketing_cloud import OUTCOME_UNKNOWN
from webadmin.sending.channels import ChannelRoute
from webadmin.sending.retry import RetryPolicy

log = logging.getLogger(__name__)

APP_SEND_BACKENDS = frozenset({"marketing_cloud"})
WAIT_SECONDS = 2.0  # how long a batch that met another worker's claim in flight waits before it looks again
LOST = ("the worker that claimed the messageApp request ({by}) stopped before it recorded an answer: it may have "
        "gone out to all users, so it is not sent again; check the MobilePush message's send log in Marketing Cloud")


def wants_app_send(audience: dict[str, Any] | None, route: ChannelRoute) -> bool:
    """Whether a campaign's messages on this route go out as one messageApp request: the channel opts in and the
    audience is all users without a platform filter (messageApp cannot filter by webadmin's platforms)."""
    audience = audience or {"type": "all"}
    return (route.type_name in APP_SEND_BACKENDS and bool(dict(route.options_items).get("all_users_app"))
            and audience.get("type", "all") == "all" and not audience.get("platforms"))


def target_of(route: ChannelRoute) -> str:
    """What one messageApp request reaches: the client id and MobilePush message (hashed, never stored in clear).
    Two channels of the same message (the Android and the iOS one) share one request."""
    credentials = decrypt_credentials(route.credentials_blob) if route.credentials_blob else {}
    raw = f"{credentials.get('client_id', '')}|{credentials.get('message_id', '')}"
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AppClaim:
    """A claim this worker holds: the row, its fencing token, and the attempts made with it so far."""

    id: int
    token: str
    attempts: int
    key: tuple[str, str] = ("", "")  # (campaign UUID, target): where a `sent` answer is remembered


@dataclass(frozen=True, slots=True)
class Decision:
    """What a batch does with its messages on an app-send route: `send` (it holds `claim`), `sent`, `wait`
    (until), or `failed`/`unknown` (error says why)."""

    kind: str
    claim: AppClaim | None = None
    provider_message_id: str | None = None
    until: datetime | None = None
    error: str | None = None


#: (campaign UUID, target) → tokenId of requests known to be sent: `sent` is final, so later batches of this
#: process record their messages from here without touching the claim row. Bounded; the oldest go first.
_SENT: OrderedDict[tuple[str, str], str | None] = OrderedDict()
_SENT_MAX = 1_000
_SENT_LOCK = threading.Lock()


def _remember_sent(key: tuple[str, str], provider_message_id: str | None) -> None:
    with _SENT_LOCK:
        _SENT[key] = provider_message_id
        _SENT.move_to_end(key)
        while len(_SENT) > _SENT_MAX:
            _SENT.popitem(last=False)


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def take(campaign_id: int, campaign_uuid: str, route: ChannelRoute, lease_seconds: float,
         policy: RetryPolicy) -> Decision:
    """Claim the campaign's messageApp request for this route's target, or say what became of it. Commits."""
    target = target_of(route)
    key = (campaign_uuid, target)
    with _SENT_LOCK:
        if key in _SENT:
            return Decision("sent", provider_message_id=_SENT[key])
    db.session.commit()
    t = CampaignAppSend.__table__
    now = utcnow()
    token = str(uuid.uuid4())
    claimed = {"state": AppSendState.SENDING.value, "claim_token": token, "claimed_by": _worker(),
               "lease_until": now + timedelta(seconds=lease_seconds), "next_attempt_at": None, "updated_at": now,
               "channel_id": route.channel_id, "error": None}
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    first = (dialect.insert(t).values(campaign_id=campaign_id, target=target, attempts=1, created_at=now, **claimed)
             .on_conflict_do_nothing(index_elements=["campaign_id", "target"]).returning(t.c.id, t.c.attempts))
    row = db.session.execute(first).first()
    mine = (t.c.campaign_id == campaign_id, t.c.target == target)
    if row is None:
        due = and_(t.c.state == AppSendState.RETRY.value, t.c.attempts < policy.max_attempts,
                   or_(t.c.next_attempt_at.is_(None), t.c.next_attempt_at <= now))
        again = (update(t).where(*mine, or_(t.c.state == AppSendState.REFUSED.value, due))
                 .values(**claimed, attempts=t.c.attempts + 1).returning(t.c.id, t.c.attempts))
        row = db.session.execute(again).first()
    if row is not None:
        db.session.commit()
        return Decision("send", AppClaim(row.id, token, row.attempts, key))
    lost = db.session.execute(update(t).where(*mine, t.c.state == AppSendState.SENDING.value, t.c.lease_until < now)
                              .values(state=AppSendState.UNKNOWN.value, lease_until=None, updated_at=now, error=None))
    if lost.rowcount:
        log.warning("campaign %s: its messageApp claim's worker stopped before recording an answer: outcome unknown, "
                    "not sent again (check Marketing Cloud's send log)", campaign_id)
    current = db.session.execute(select(t).where(*mine)).one()
    db.session.commit()
    if current.state == AppSendState.SENT.value:
        _remember_sent(key, current.provider_message_id)
    return _decision(current, now, policy)


def _decision(row: Any, now: datetime, policy: RetryPolicy) -> Decision:
    """What a claim someone else holds or settled means for a batch."""
    state = row.state
    if state == AppSendState.SENT.value:
        return Decision("sent", provider_message_id=row.provider_message_id)
    if state == AppSendState.SENDING.value:
        return Decision("wait", until=min(row.lease_until, now + timedelta(seconds=WAIT_SECONDS)))
    if state == AppSendState.RETRY.value and row.attempts < policy.max_attempts:
        return Decision("wait", until=row.next_attempt_at or now)
    if state == AppSendState.UNKNOWN.value:
        return Decision("unknown", error=row.error or LOST.format(by=row.claimed_by))
    return Decision("failed", error=row.error or f"the messageApp request was not sent ({state})")


def _outcome(result: SendResult | None, error: ProviderError | None) -> tuple[AppSendState, dict[str, Any],
                                                                            float | None]:
    """The claim's new state, the columns to write and the provider's Retry-After, from the request's answer."""
    if error is not None:
        state = AppSendState.REFUSED if isinstance(error, ChannelAuthError) else AppSendState.RETRY
        return state, {"error": str(error)}, error.retry_after
    if result is None:
        return AppSendState.UNKNOWN, {"error": "the backend returned no result for the messageApp request"}, None
    if result.ok:
        return AppSendState.SENT, {"provider_message_id": result.provider_message_id, "error": None}, None
    text = f"{result.error_code}: {result.error}" if result.error_code else str(result.error)
    if result.error_code == OUTCOME_UNKNOWN:
        state = AppSendState.UNKNOWN
    else:
        state = AppSendState.RETRY if result.retryable else AppSendState.REFUSED
    return state, {"error": text}, result.retry_after


def settle(claim: AppClaim, route: ChannelRoute, result: SendResult | None, error: ProviderError | None,
           policy: RetryPolicy, now: datetime) -> str | None:
    """Write the answer to the claim (fenced by its token; provider text with the route's secrets masked);
    returns the state written, None if the fence lost."""
    state, values, retry_after = _outcome(result, error)
    if state == AppSendState.RETRY:
        if claim.attempts >= policy.max_attempts:
            state = AppSendState.FAILED
            values["error"] = f"{values['error']} (gave up after {claim.attempts} attempts)"
        else:
            values["next_attempt_at"] = now + timedelta(seconds=policy.delay(claim.attempts, retry_after))
    if values.get("error"):
        values["error"] = route.redact(values["error"])[:2000]
    t = CampaignAppSend.__table__
    written = db.session.execute(update(t).where(t.c.id == claim.id, t.c.claim_token == claim.token)
                                 .values(state=state.value, lease_until=None, updated_at=now, **values)).rowcount
    db.session.commit()
    if not written:
        log.warning("messageApp claim %s was taken over before its answer (%s) was recorded", claim.id, state)
        return None
    if state == AppSendState.SENT:
        _remember_sent(claim.key, values["provider_message_id"])
    if state == AppSendState.UNKNOWN:
        log.warning("messageApp claim %s: outcome unknown, not sent again: %s", claim.id, values["error"])
    return state.value


def renew(claims: list[AppClaim], lease_seconds: float) -> None:
    """Extend the lease of claims this worker is sending (with its batch's rows); the caller commits."""
    if not claims:
        return
    t = CampaignAppSend.__table__
    until = utcnow() + timedelta(seconds=lease_seconds)
    for claim in claims:
        db.session.execute(update(t).where(t.c.id == claim.id, t.c.claim_token == claim.token,
                                           t.c.state == AppSendState.SENDING.value).values(lease_until=until))
