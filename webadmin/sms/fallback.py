"""The SMS fallback run: make one SMS row per subscriber who opened none of a campaign's pushes within the window,
then claim → send → record them at most once, like the push engine.

- **Make** (`materialize`): one INSERT … SELECT … ON CONFLICT DO NOTHING per due campaign. A subscriber (the push
  messages' `recipient`) is due when at least one of their messages was accepted (SENT/DEBUG), none is opened or
  still pending, and the last one went out at least the window ago. Subscribers without a phone number, with one
  that is not E.164, with a number the provider refused before (`sms_blocks`) or opted out get a SKIPPED row, so
  they are counted. The unique (campaign_id, subscriber_id) makes repeated and concurrent runs harmless. A cancelled
  campaign or a stopped fallback gets no new rows and its waiting rows are ended.
- **Claim** (`claim`): WAITING/ERROR_RETRY rows that are due, and younger than the retry policy's age ceiling,
  become SENDING with a lease (PostgreSQL: FOR UPDATE SKIP LOCKED, so workers claim disjoint rows; SQLite: the
  single UPDATE is a short write transaction). Older ones end as ERROR "too old" in the periodic run.
- **Send**: one batch through the SMS channel's backend, to the subscriber's phone as it is *now*; a subscriber who
  was deleted, opted out, opened a push, lost their number or whose number got blocked meanwhile is skipped.
- **Record**: every update is fenced on the lease and state SENDING, so a worker presumed dead changes nothing. A
  number the provider refused as invalid or opted out (STOP) is blocked for later campaigns.
- **At most once**: a SENDING row whose lease expired (its worker died mid-send) may already be on a phone. It is
  retried only with a backend whose provider refuses duplicates (SMSAPI's idx + check_idx), within the time the
  provider remembers the key; otherwise it ends as ERROR "worker lost". Likewise an unknown outcome (a timeout, a
  dropped connection, a 500/502/504) is retried only then.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import (
    String,
    and_,
    bindparam,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from webadmin.crypto import decrypt_credentials
from webadmin.extensions import db
from webadmin.models.audience import Subscriber
from webadmin.models.campaign import Campaign, CampaignStatus
from webadmin.models.message import PENDING_STATES, Message, MessageState
from webadmin.models.sms import SMS_PENDING_STATES, SmsBlock, SmsChannel, SmsMessage, SmsState
from webadmin.models.types import UTCDateTime, utcnow
from webadmin.providers.base import ChannelAuthError, ProviderError
from webadmin.sending.retry import RetryPolicy
from webadmin.sending.runtime import worker_runtime
from webadmin.sms import create_backend, dedupe_windows, sms_options
from webadmin.sms.base import OutgoingSms, SmsBackend, SmsResult

log = logging.getLogger(__name__)
S = CampaignStatus
PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")
PUSH_ACCEPTED = (MessageState.SENT.value, MessageState.DEBUG.value)
MAKE_STATUSES = (S.SENDING.value, S.SENT.value, S.FAILED.value)  # paused: wait; cancelled: nothing new
SEND_STATUSES = MAKE_STATUSES
FINISHED = (S.SENT.value, S.FAILED.value)
LOOKAHEAD = timedelta(seconds=60)  # the periodic run's interval: windows ending sooner get a run of their own
SETTLE = timedelta(seconds=5)  # that run waits this long after the window, for pushes sent just after the start
# Literals, so the planners can match the partial index ix_sms_messages_active (as the engine does for messages).
_PENDING = [literal_column(f"'{state}'") for state in SMS_PENDING_STATES]
_SENDING = literal_column(f"'{SmsState.SENDING.value}'")
WORKER_LOST_RETRY = "worker lost while sending; retried (the provider refuses a duplicate)"
WORKER_LOST = "worker lost while sending: the SMS may have gone out, so it is not sent again"
CAMPAIGN_CANCELLED = "campaign cancelled"
FALLBACK_CANCELLED = "fallback cancelled"
TOO_OLD = "too old: not sent within {age} of its window ending (held by a halted channel or retries)"
TOO_OLD_TO_RESEND = ("too old to try again: an earlier attempt may have gone out, and the provider refuses a "
                     "duplicate only within {window}")


def _config(name: str, default: Any) -> Any:
    """A setting from the app config."""
    return current_app.config.get(name, default)


def retry_policy() -> RetryPolicy:
    """The engine's retry policy (same settings as push: attempts, age, backoff)."""
    return RetryPolicy(max_attempts=_config("ENGINE_MAX_ATTEMPTS", 5),
                       max_age=timedelta(hours=_config("ENGINE_MAX_AGE_HOURS", 24)),
                       base_delay=_config("ENGINE_RETRY_BASE_SECONDS", 30.0))


def current_channel() -> SmsChannel | None:
    """The install's SMS channel, if one is configured."""
    return db.session.scalar(select(SmsChannel).order_by(SmsChannel.id).limit(1))


def valid_phone(column: Any) -> Any:
    """SQL for "this column holds an E.164 number" (PHONE), without a Python function per row on SQLite."""
    if db.engine.dialect.name == "postgresql":
        return column.op("~", is_comparison=True)(PHONE.pattern)
    return and_(column.op("GLOB", is_comparison=True)("+[1-9]*"),
                column.op("NOT GLOB", is_comparison=True)("+*[^0-9]*"), func.length(column).between(8, 16))


# ---------------------------------------------------------------------------------------------------- the run


def tick(now: datetime | None = None) -> dict[str, int]:
    """One run: recover stranded rows, end stale and cancelled ones, make due rows, queue sending, time the next run.

    `now` defaults to the clock; tests pass a later time instead of waiting for a window to pass.
    """
    now = now or utcnow()
    report = {"recovered": recover_stranded(now), "expired": expire_stale(now), "cancelled": stop_cancelled(now),
              "created": materialize_due(now)}
    report["send_tasks"] = enqueue_sends()
    report["scheduled"] = schedule_upcoming(now)
    return report


@dataclass(frozen=True)
class FallbackCampaign:
    """What the run needs to know about a campaign with a fallback that is not done yet."""

    id: int
    status: str
    started_at: datetime
    ended_at: datetime | None
    window: timedelta

    @property
    def due_at(self) -> datetime:
        """When the first subscribers can become due."""
        return self.started_at + self.window


def open_fallbacks() -> list[FallbackCampaign]:
    """Started campaigns with a fallback that is not done (few: done ones are skipped by their done_at)."""
    c = Campaign.__table__
    rows = db.session.execute(
        select(c.c.id, c.c.status, c.c.started_at, c.c.finished_at, c.c.updated_at, c.c.sms_fallback_seconds)
        .where(c.c.sms_fallback_seconds.is_not(None), c.c.sms_fallback_done_at.is_(None), c.c.started_at.is_not(None))
    )
    return [FallbackCampaign(r.id, r.status, r.started_at, (r.finished_at or r.updated_at) if r.status in FINISHED
                             else None, timedelta(seconds=r.sms_fallback_seconds)) for r in rows]


def materialize_due(now: datetime) -> int:
    """Make the SMS rows of every campaign whose window has begun to pass; returns the rows made."""
    return sum(materialize(c, now) for c in open_fallbacks() if c.due_at <= now)


def materialize(campaign: FallbackCampaign, now: datetime) -> int:
    """One INSERT … SELECT for a campaign's due subscribers; marks the fallback done when none can follow."""
    if campaign.status == S.CANCELLED.value:
        _mark_done(campaign.id, now)
        db.session.commit()
        return 0
    if campaign.status not in MAKE_STATUSES:
        return 0
    cutoff = now - campaign.window
    statement = _insert_due(campaign.id, cutoff, now)
    created = db.session.execute(statement).rowcount or 0
    if campaign.ended_at is not None and campaign.ended_at <= cutoff:
        _mark_done(campaign.id, now)  # every push went out before the campaign ended: all windows have passed
    db.session.commit()
    if created:
        log.info("campaign %s: %s SMS fallback row(s) made", campaign.id, created)
    return created


def _due_recipients(campaign_id: int, cutoff: datetime) -> Any:
    """Subscriber keys of the campaign that got a push, opened none, have none pending, last one before cutoff."""
    m = Message.__table__
    accepted = func.sum(case((m.c.state.in_(PUSH_ACCEPTED), 1), else_=0))
    pending = func.sum(case((m.c.state.in_(PENDING_STATES), 1), else_=0))
    return (
        select(m.c.recipient.label("key"))
        .where(m.c.campaign_id == campaign_id, m.c.recipient.is_not(None))
        .group_by(m.c.recipient)
        .having(and_(func.count(m.c.opened_at) == 0, accepted > 0, pending == 0,
                     func.max(m.c.sent_at) <= literal(cutoff, UTCDateTime)))
        .subquery()
    )


def _insert_due(campaign_id: int, cutoff: datetime, now: datetime) -> Any:
    """INSERT … SELECT … ON CONFLICT (campaign_id, subscriber_id) DO NOTHING of the due subscribers."""
    s, t, b, c = Subscriber.__table__, SmsMessage.__table__, SmsBlock.__table__, Campaign.__table__
    due = _due_recipients(campaign_id, cutoff)
    no_phone = (s.c.phone.is_(None)) | (s.c.phone == "")
    skips = [(s.c.opted_out.is_(True), literal("opted_out")), (no_phone, literal("no_phone")),
             (~valid_phone(s.c.phone), literal("invalid_number")), (b.c.reason.is_not(None), b.c.reason)]
    reason = case(*skips, else_=literal(None, String))
    state = case((reason.is_not(None), SmsState.SKIPPED.value), else_=SmsState.WAITING.value)
    error = case((b.c.reason.is_not(None) & ~s.c.opted_out.is_(True), literal("refused earlier: ") + b.c.detail),
                 else_=literal(None, String))
    live = ~exists(select(c.c.id).where(c.c.id == campaign_id, c.c.sms_fallback_stopped_at.is_not(None)))
    rows = (
        select(_uuid_sql(), literal(campaign_id), s.c.id, s.c.phone, state, reason, error, literal(0),
               literal(now, UTCDateTime))
        .select_from(s.join(due, due.c.key == s.c.subscriber_key)
                     .outerjoin(b, and_(b.c.subscriber_id == s.c.id, b.c.phone == s.c.phone)))
        .where(live)  # a fallback stopped while this run was under way gets nothing (also: SQLite needs a WHERE)
    )
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    columns = ["uuid", "campaign_id", "subscriber_id", "phone", "state", "skip_reason", "error", "attempts",
               "created_at"]
    return (dialect.insert(t).from_select(columns, rows)
            .on_conflict_do_nothing(index_elements=["campaign_id", "subscriber_id"])
            .execution_options(preserve_rowcount=True))


def _uuid_sql() -> Any:
    """A random UUID per row, made by the database."""
    if db.engine.dialect.name == "postgresql":
        return cast(func.gen_random_uuid(), String)
    hexed = [func.lower(func.hex(func.randomblob(n))) for n in (4, 2, 2, 2, 6)]
    variant = func.substr("89ab", 1 + func.abs(func.random()) % 4, 1)
    return (hexed[0] + "-" + hexed[1] + "-4" + func.substr(hexed[2], 2) + "-" + variant
            + func.substr(hexed[3], 2) + "-" + hexed[4])


def _mark_done(campaign_id: int, now: datetime) -> None:
    """No subscriber of this campaign can become due any more (compare-and-set, updated_at untouched)."""
    c = Campaign.__table__
    db.session.execute(update(c).where(c.c.id == campaign_id, c.c.sms_fallback_done_at.is_(None))
                       .values(sms_fallback_done_at=now, updated_at=c.c.updated_at))


def _dedupe_possible(now: datetime, max_age: timedelta) -> Any:
    """SQL: the row's backend refuses a duplicate of it still (a row's first send is never before its created_at,
    so a row younger than the provider's window was first sent within it)."""
    t = SmsMessage.__table__
    within = [and_(t.c.backend == name, t.c.created_at > literal(now - min(window, max_age), UTCDateTime))
              for name, window in dedupe_windows().items()]
    return or_(*within) if within else false()


def recover_stranded(now: datetime) -> int:
    """SENDING rows whose lease expired: retried with a deduplicating provider, otherwise ended (at most once)."""
    t, policy = SmsMessage.__table__, retry_policy()
    retry = and_(_dedupe_possible(now, policy.max_age), t.c.attempts < policy.max_attempts)
    recovered = db.session.execute(
        update(t)
        .where(t.c.state.in_([_SENDING]), t.c.lease_until < literal(now, UTCDateTime))
        .values(state=case((retry, SmsState.ERROR_RETRY.value), else_=SmsState.ERROR.value),
                error=case((retry, WORKER_LOST_RETRY), else_=WORKER_LOST),
                next_attempt_at=case((retry, literal(now, UTCDateTime)), else_=literal(None, UTCDateTime)),
                lease_until=None, changed_at=now)
    ).rowcount or 0
    db.session.commit()
    if recovered:
        log.warning("SMS fallback: %s row(s) left SENDING by a lost worker", recovered)
    return recovered


def _resend_unsafe(now: datetime) -> Any:
    """SQL: a row already tried through a provider that deduplicates, older than the provider's window. Its earlier
    attempt may have been an unknown outcome, and a retry now could reach the phone twice."""
    t = SmsMessage.__table__
    old = [and_(t.c.backend == name, t.c.created_at <= literal(now - window, UTCDateTime))
           for name, window in dedupe_windows().items()]
    return and_(t.c.attempts > 0, or_(*old)) if old else false()


def expire_stale(now: datetime) -> int:
    """Waiting rows older than the retry policy's age ceiling end as ERROR "too old" (a halt held them that long),
    and so do retries the provider could no longer tell from the first attempt."""
    t, max_age = SmsMessage.__table__, retry_policy().max_age
    expired = end_pending(t.c.created_at <= literal(now - max_age, UTCDateTime), TOO_OLD.format(age=max_age), now)
    for name, window in dedupe_windows().items():
        expired += end_pending(and_(t.c.backend == name, _resend_unsafe(now)), TOO_OLD_TO_RESEND.format(window=window),
                               now)
    db.session.commit()
    if expired:
        log.warning("SMS fallback: %s waiting row(s) older than %s ended as too old", expired, max_age)
    return expired


def stop_cancelled(now: datetime) -> int:
    """Waiting rows of cancelled campaigns and of stopped fallbacks end as ERROR (rows in flight finish)."""
    t, c = SmsMessage.__table__, Campaign.__table__
    stopped = 0
    for condition, reason in ((c.c.status == S.CANCELLED.value, CAMPAIGN_CANCELLED),
                              (c.c.sms_fallback_stopped_at.is_not(None), FALLBACK_CANCELLED)):
        stopped += end_pending(t.c.campaign_id.in_(select(c.c.id).where(condition)), reason, now)
    db.session.commit()
    return stopped


def end_pending(condition: Any, reason: str, now: datetime) -> int:
    """End the WAITING/ERROR_RETRY rows matching a condition as ERROR with a reason (not committed)."""
    t = SmsMessage.__table__
    return db.session.execute(
        update(t).where(t.c.state.in_(_PENDING), condition)
        .values(state=SmsState.ERROR.value, error=reason, next_attempt_at=None, changed_at=now)
    ).rowcount or 0


def _claimable(now: datetime) -> Any:
    """The WHERE clause of rows a worker may claim now."""
    t, c, policy = SmsMessage.__table__, Campaign.__table__, retry_policy()
    sending = select(c.c.id).where(c.c.status.in_(SEND_STATUSES), c.c.sms_fallback_stopped_at.is_(None))
    return and_(
        t.c.state.in_(_PENDING),
        (t.c.next_attempt_at.is_(None)) | (t.c.next_attempt_at <= literal(now, UTCDateTime)),
        t.c.attempts < policy.max_attempts,
        t.c.created_at > literal(now - policy.max_age, UTCDateTime),  # older ones are stale: expire_stale ends them
        ~_resend_unsafe(now),
        t.c.campaign_id.in_(sending),
    )


def enqueue_sends() -> int:
    """Queue send tasks for what is claimable now (several when there is much, so workers share it)."""
    channel = current_channel()
    if channel is None or channel.halted:
        return 0
    t = SmsMessage.__table__
    claimable = db.session.scalar(select(func.count()).select_from(t).where(_claimable(utcnow()))) or 0
    db.session.commit()
    if not claimable:
        return 0
    from webadmin.tasks import send_sms_fallbacks

    tasks = max(1, min(_config("ENGINE_DISPATCH_FANOUT", 4), math.ceil(claimable / _batch_size())))
    for _ in range(tasks):
        send_sms_fallbacks()
    return tasks


def schedule_upcoming(now: datetime) -> int:
    """A run at the exact end of each window that ends before the next periodic run (short demo windows)."""
    from webadmin.tasks import sms_fallback

    upcoming = [c.due_at + SETTLE for c in open_fallbacks() if now < c.due_at + SETTLE <= now + LOOKAHEAD]
    for eta in upcoming:
        sms_fallback.schedule(eta=eta)
    return len(upcoming)


def _batch_size() -> int:
    """SMS per claim."""
    return max(1, int(_config("SMS_BATCH_SIZE", 100)))


# ------------------------------------------------------------------------------------------ claim, send, record


@dataclass(slots=True)
class ClaimedSms:
    """A leased SMS row with what is needed to send it."""

    id: int
    uuid: str
    campaign_id: int
    subscriber_id: int | None
    phone: str | None  # the number when the row was made; send_batch replaces it with the subscriber's current one
    attempts: int
    created_at: datetime


def claim(limit: int, lease_seconds: float, backend: str) -> tuple[datetime, list[ClaimedSms]]:
    """Mark up to `limit` due rows SENDING under a lease (a fencing token); returns the lease and the rows."""
    db.session.commit()  # a fresh transaction whose first statement is the write
    now = utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    t = SmsMessage.__table__
    ready = select(t.c.id).where(_claimable(now)).order_by(t.c.id).limit(limit)
    if db.engine.dialect.name == "postgresql":
        ready = ready.with_for_update(skip_locked=True, of=t)
    statement = (
        update(t).where(t.c.id.in_(ready.scalar_subquery()))
        .values(state=SmsState.SENDING.value, lease_until=lease, attempts=t.c.attempts + 1, backend=backend,
                changed_at=now)
        .returning(t.c.id, t.c.uuid, t.c.campaign_id, t.c.subscriber_id, t.c.phone, t.c.attempts, t.c.created_at)
    )
    rows = [ClaimedSms(*row) for row in db.session.execute(statement)]
    db.session.commit()
    return lease, rows


@dataclass
class SendReport:
    """What one send task did."""

    batches: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    stopped_because: str = ""


def send_pending(max_batches: int | None = None) -> SendReport:
    """Claim and send batches until nothing is claimable or the channel halts."""
    report = SendReport()
    channel = current_channel()
    if channel is None or channel.halted:
        report.stopped_because = "no SMS channel" if channel is None else "SMS channel halted"
        return report
    with worker_runtime(keep=_config("ENGINE_KEEP_CONNECTIONS", True)) as runtime:
        try:
            backend = create_backend(channel.backend, decrypt_credentials(channel.credentials_encrypted),
                                     channel.sender, sms_options(channel.options))
        except (KeyError, RuntimeError) as exc:
            halt(channel.id, f"The SMS channel cannot be used: {exc}")
            db.session.commit()
            report.stopped_because = "SMS channel halted"
            return report
        try:
            _send_loop(report, channel, backend, runtime, max_batches)
        finally:
            runtime.run(backend.close())
    return report


def _send_loop(report: SendReport, channel: SmsChannel, backend: SmsBackend, runtime: Any,
               max_batches: int | None) -> None:
    """Claim → send → record until done."""
    while max_batches is None or report.batches < max_batches:
        lease, rows = claim(_batch_size(), _config("ENGINE_LEASE_SECONDS", 60.0), channel.backend)
        if not rows:
            report.stopped_because = "nothing to send"
            return
        recorder = send_batch(channel.id, backend, lease, rows, runtime)
        report.batches += 1
        for name in ("sent", "skipped", "failed", "retried", "released"):
            setattr(report, name, getattr(report, name) + getattr(recorder, name))
        if recorder.halt_reason:
            report.stopped_because = f"SMS channel halted: {recorder.halt_reason}"
            return


def send_batch(channel_id: int, backend: SmsBackend, lease: datetime, rows: list[ClaimedSms],
               runtime: Any) -> Recorder:
    """Send one claimed batch and record every outcome in one transaction."""
    recorder = Recorder(lease, retry_policy(), utcnow(), backend)
    now, texts = _recipients_now([r.id for r in rows]), _texts({r.campaign_id for r in rows})
    outgoing: list[OutgoingSms] = []
    for row in rows:
        recipient = now.get(row.id) or Recipient()
        row.phone = recipient.phone
        skip = recipient.skip()
        if skip is not None:
            recorder.skip(row, *skip)
        else:
            outgoing.append(OutgoingSms(row.id, row.uuid, str(row.phone), texts[row.campaign_id]))
    answer = runtime.run(_send(backend, outgoing)) if outgoing else []
    recorder.apply({r.id: r for r in rows}, outgoing, answer)
    recorder.write()
    if recorder.halt_reason:
        halt(channel_id, recorder.halt_reason)
        log.warning("SMS channel halted: %s", recorder.halt_reason)
    db.session.commit()
    return recorder


async def _send(backend: SmsBackend, messages: Sequence[OutgoingSms]) -> list[SmsResult] | ProviderError:
    """The backend's results, or the whole-batch error it raised."""
    try:
        return await backend.send_batch(messages)
    except ProviderError as exc:
        return exc


@dataclass(frozen=True, slots=True)
class Recipient:
    """A claimed row's subscriber as they are now (the row may have waited hours since it was made)."""

    exists: bool = False
    opted_out: bool = False
    phone: str | None = None
    opened: bool = False
    blocked: str | None = None  # the block's reason, while it applies to this phone
    block_detail: str | None = None

    def skip(self) -> tuple[str, str] | None:
        """(reason, note) when no SMS may go to this subscriber now; None to send."""
        if not self.exists:
            return "deleted", "the subscriber was deleted before the SMS went"
        if self.opted_out:
            return "opted_out", "opted out before the SMS went"
        if self.opened:
            return "opened", "opened a push of the campaign before the SMS went"
        if not self.phone:
            return "no_phone", "the phone number was removed before the SMS went"
        if not PHONE.match(self.phone):
            return "invalid_number", "not an E.164 phone number"
        if self.blocked:
            return self.blocked, f"refused earlier: {self.block_detail or self.blocked}"
        return None


def _recipients_now(ids: list[int]) -> dict[int, Recipient]:
    """Each row's subscriber now: gone or not, opted out, current phone, opened a push meanwhile, blocked."""
    t, s, m, b = SmsMessage.__table__, Subscriber.__table__, Message.__table__, SmsBlock.__table__
    opened = exists(select(m.c.id).where(m.c.campaign_id == t.c.campaign_id, m.c.recipient == s.c.subscriber_key,
                                         m.c.opened_at.is_not(None)))
    query = (
        select(t.c.id, s.c.id.label("subscriber"), s.c.opted_out, s.c.phone, opened.label("opened"), b.c.reason,
               b.c.detail)
        .select_from(t.outerjoin(s, s.c.id == t.c.subscriber_id)
                     .outerjoin(b, and_(b.c.subscriber_id == s.c.id, b.c.phone == s.c.phone)))
        .where(t.c.id.in_(ids))
    )
    return {r.id: Recipient(r.subscriber is not None, bool(r.opted_out), r.phone, bool(r.opened), r.reason, r.detail)
            for r in db.session.execute(query)}


def _texts(campaign_ids: set[int]) -> dict[int, str]:
    """Each campaign's SMS text (its push text if none was stored)."""
    c = Campaign.__table__
    rows = db.session.execute(select(c.c.id, c.c.sms_fallback_text, c.c.text).where(c.c.id.in_(campaign_ids)))
    return {r.id: r.sms_fallback_text or r.text for r in rows}


def halt(channel_id: int, reason: str) -> None:
    """Stop sending until an admin saves or tests the channel; Settings shows why."""
    db.session.execute(update(SmsChannel).where(SmsChannel.id == channel_id)
                       .values(halted=True, error=reason[:500], error_at=utcnow()))


@dataclass
class Recorder:
    """The per-row updates of one batch, written in a few fenced statements."""

    lease: datetime
    policy: RetryPolicy
    now: datetime
    backend: SmsBackend
    updates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    blocks: list[dict[str, Any]] = field(default_factory=list)  # numbers the provider refused, for sms_blocks
    halt_reason: str | None = None
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0

    def _add(self, kind: str, row: ClaimedSms, **values: Any) -> None:
        if values.get("b_error"):  # what a provider answered may echo a credential
            values["b_error"] = self.backend.redact(values["b_error"])
        self.updates.setdefault(kind, []).append({"b_id": row.id, "b_phone": row.phone, **values})

    def ok(self, row: ClaimedSms, result: SmsResult) -> None:
        """Accepted (DEBUG for the Debug backend)."""
        state = SmsState.DEBUG if self.backend.type_name == "debug" else SmsState.SENT
        self._add("done", row, b_state=state.value, b_pid=result.provider_message_id, b_error=result.error)
        self.sent += 1

    def skip(self, row: ClaimedSms, reason: str, error: str) -> None:
        """Not sent on purpose (counted in the funnel)."""
        self._add("skip", row, b_reason=reason, b_error=error[:2000])
        self.skipped += 1

    def refused(self, row: ClaimedSms, reason: str, error: str) -> None:
        """The provider refused the number (invalid, or the recipient opted out): skipped, and blocked for later
        campaigns while the subscriber keeps this number."""
        self.skip(row, reason, error)
        if row.subscriber_id is not None and row.phone:
            self.blocks.append({"subscriber_id": row.subscriber_id, "phone": row.phone, "reason": reason,
                                "detail": self.backend.redact(error)[:500], "campaign_id": row.campaign_id,
                                "blocked_at": self.now})

    def fail(self, row: ClaimedSms, error: str) -> None:
        """A final failure."""
        self._add("error", row, b_error=error[:2000])
        self.failed += 1

    def retry(self, row: ClaimedSms, error: str, retry_after: float | None) -> None:
        """Try again after the backoff, or give up at the attempt or age ceiling."""
        gave_up = self.policy.gives_up(row.attempts, row.created_at, self.now)
        if gave_up is not None:
            self.fail(row, f"{error} ({gave_up})")
            return
        when = self.now + timedelta(seconds=self.policy.delay(row.attempts, retry_after))
        self._add("retry", row, b_next=when, b_error=error[:2000])
        self.retried += 1

    def release(self, row: ClaimedSms, reason: str) -> None:
        """Not sent because the channel refused: back to WAITING, the claim was no attempt."""
        self._add("release", row)
        self.released += 1
        self.halt_reason = self.halt_reason or self.backend.redact(reason)

    def apply(self, rows: dict[int, ClaimedSms], outgoing: list[OutgoingSms],
              answer: list[SmsResult] | ProviderError) -> None:
        """Sort the backend's answer (results or a whole-batch error) into updates."""
        if isinstance(answer, ChannelAuthError):
            for sms in outgoing:
                self.release(rows[sms.sms_id], f"{self.backend.label} refused the credentials ({answer})")
            return
        if isinstance(answer, ProviderError):
            for sms in outgoing:
                self.retry(rows[sms.sms_id], f"UNAVAILABLE: {answer}", answer.retry_after)
            return
        results = {r.sms_id: r for r in answer}
        for sms in outgoing:
            self.classify(rows[sms.sms_id], results.get(sms.sms_id))

    def classify(self, row: ClaimedSms, result: SmsResult | None) -> None:
        """One result into its update."""
        if result is None:
            result = SmsResult(row.id, ok=False, error_code="NO_RESULT", error="the backend returned no result",
                               retryable=True, unknown_outcome=True)
        text = f"{result.error_code}: {result.error}" if result.error_code else (result.error or "send failed")
        if result.ok:
            self.ok(row, result)
        elif result.invalid_number or result.opted_out:
            self.refused(row, "invalid_number" if result.invalid_number else "opted_out", text)
        elif result.channel_error:
            self.release(row, f"{self.backend.label}: {text}")
        elif result.payload_error:
            self.fail(row, text)
        elif result.unknown_outcome and not self.can_resend(row):
            self.fail(row, f"outcome unknown ({text}); not sent again: it may have been delivered and "
                           f"{self.backend.label} would not refuse a duplicate")
        elif result.retryable:
            self.retry(row, text, result.retry_after)
        else:
            self.fail(row, text)

    def can_resend(self, row: ClaimedSms) -> bool:
        """Whether the provider would still refuse a duplicate of this row (see _dedupe_possible)."""
        window = self.backend.dedupe_window
        return window is not None and self.now - row.created_at < min(window, self.policy.max_age)

    def write(self) -> None:
        """Apply the updates to rows still SENDING under our lease (one executemany per kind), then the blocks."""
        t = SmsMessage.__table__
        base = {"lease_until": None, "changed_at": self.now, "phone": bindparam("b_phone")}
        values = {
            "done": {"state": bindparam("b_state"), "sent_at": self.now, "provider_message_id": bindparam("b_pid"),
                     "error": bindparam("b_error")},
            "skip": {"state": SmsState.SKIPPED.value, "skip_reason": bindparam("b_reason"),
                     "error": bindparam("b_error")},
            "error": {"state": SmsState.ERROR.value, "error": bindparam("b_error")},
            "retry": {"state": SmsState.ERROR_RETRY.value, "next_attempt_at": bindparam("b_next", type_=UTCDateTime),
                      "error": bindparam("b_error")},
            "release": {"state": SmsState.WAITING.value, "attempts": t.c.attempts - 1, "next_attempt_at": None},
        }
        fence = and_(t.c.id == bindparam("b_id"), t.c.lease_until == literal(self.lease, UTCDateTime),
                     t.c.state.in_([_SENDING]))
        for kind, params in self.updates.items():
            db.session.execute(update(t).where(fence).values(**base, **values[kind]), params)
        if self.blocks:
            db.session.execute(_upsert_blocks(), self.blocks)


def _upsert_blocks() -> Any:
    """INSERT … ON CONFLICT (subscriber_id) DO UPDATE: the latest refusal of a subscriber's number is kept."""
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(SmsBlock.__table__)
    changed = {name: statement.excluded[name] for name in ("phone", "reason", "detail", "campaign_id", "blocked_at")}
    return statement.on_conflict_do_update(index_elements=["subscriber_id"], set_=changed)
