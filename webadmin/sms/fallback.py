"""The SMS fallback run: make one SMS row per subscriber who opened none of a campaign's pushes within the window,
then claim → send → record them at most once, like the push engine.

- **Make** (`materialize`): one INSERT … SELECT … ON CONFLICT DO NOTHING per due campaign. A subscriber (the push
  messages' `recipient`) is due when at least one of their messages was accepted (SENT/DEBUG), none is opened or
  still pending, and the last one went out at least the window ago. Subscribers without a phone number or opted
  out get a SKIPPED row, so they are counted. The unique (campaign_id, subscriber_id) makes repeated and concurrent
  runs harmless. A cancelled campaign gets no new rows and its waiting rows are stopped.
- **Claim** (`claim`): WAITING/ERROR_RETRY rows that are due become SENDING with a lease (PostgreSQL: FOR UPDATE
  SKIP LOCKED, so workers claim disjoint rows; SQLite: the single UPDATE is a short write transaction).
- **Send**: one batch through the SMS channel's backend; a subscriber who opened a push meanwhile is skipped.
- **Record**: every update is fenced on the lease and state SENDING, so a worker presumed dead changes nothing.
- **At most once**: a SENDING row whose lease expired (its worker died mid-send) may already be on a phone. It is
  retried only with a backend whose provider refuses duplicates (SMSAPI's idx + check_idx); otherwise it ends as
  ERROR "worker lost". Likewise a timeout is retried only with such a backend.
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
from sqlalchemy import String, and_, bindparam, case, cast, exists, func, literal, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite

from webadmin.crypto import decrypt_credentials
from webadmin.extensions import db
from webadmin.models.audience import Subscriber
from webadmin.models.campaign import Campaign, CampaignStatus
from webadmin.models.message import PENDING_STATES, Message, MessageState
from webadmin.models.sms import SMS_PENDING_STATES, SmsChannel, SmsMessage, SmsState
from webadmin.models.types import UTCDateTime, utcnow
from webadmin.providers.base import ChannelAuthError, ProviderError
from webadmin.sending.retry import RetryPolicy
from webadmin.sending.runtime import worker_runtime
from webadmin.sms import create_backend, idempotent_types, sms_options
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


# ---------------------------------------------------------------------------------------------------- the run


def tick(now: datetime | None = None) -> dict[str, int]:
    """One run: recover stranded rows, stop cancelled ones, make due rows, queue sending, time the next run.

    `now` defaults to the clock; tests pass a later time instead of waiting for a window to pass.
    """
    now = now or utcnow()
    report = {"recovered": recover_stranded(now), "cancelled": stop_cancelled(now), "created": materialize_due(now)}
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
    s, t = Subscriber.__table__, SmsMessage.__table__
    due = _due_recipients(campaign_id, cutoff)
    no_phone = (s.c.phone.is_(None)) | (s.c.phone == "")
    state = case((s.c.opted_out.is_(True), SmsState.SKIPPED.value), (no_phone, SmsState.SKIPPED.value),
                 else_=SmsState.WAITING.value)
    reason = case((s.c.opted_out.is_(True), "opted_out"), (no_phone, "no_phone"), else_=literal(None, String))
    rows = (
        select(_uuid_sql(), literal(campaign_id), s.c.id, s.c.phone, state, reason, literal(0),
               literal(now, UTCDateTime))
        .select_from(s.join(due, due.c.key == s.c.subscriber_key))
        .where(s.c.id.is_not(None))  # SQLite: INSERT … SELECT with an upsert needs a WHERE to parse
    )
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    columns = ["uuid", "campaign_id", "subscriber_id", "phone", "state", "skip_reason", "attempts", "created_at"]
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


def recover_stranded(now: datetime) -> int:
    """SENDING rows whose lease expired: retried with a deduplicating provider, otherwise ended (at most once)."""
    t, policy = SmsMessage.__table__, retry_policy()
    retry = and_(t.c.backend.in_(idempotent_types()), t.c.attempts < policy.max_attempts,
                 t.c.created_at > literal(now - policy.max_age, UTCDateTime))
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


def stop_cancelled(now: datetime) -> int:
    """Waiting rows of cancelled campaigns end as ERROR "campaign cancelled" (rows in flight finish)."""
    t, c = SmsMessage.__table__, Campaign.__table__
    cancelled = select(c.c.id).where(c.c.status == S.CANCELLED.value)
    stopped = db.session.execute(
        update(t).where(t.c.state.in_(_PENDING), t.c.campaign_id.in_(cancelled))
        .values(state=SmsState.ERROR.value, error="campaign cancelled", changed_at=now)
    ).rowcount or 0
    db.session.commit()
    return stopped


def _claimable(now: datetime) -> Any:
    """The WHERE clause of rows a worker may claim now."""
    t, c = SmsMessage.__table__, Campaign.__table__
    return and_(
        t.c.state.in_(_PENDING),
        (t.c.next_attempt_at.is_(None)) | (t.c.next_attempt_at <= literal(now, UTCDateTime)),
        t.c.attempts < retry_policy().max_attempts,
        t.c.campaign_id.in_(select(c.c.id).where(c.c.status.in_(SEND_STATUSES))),
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
    phone: str | None
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
        .returning(t.c.id, t.c.uuid, t.c.campaign_id, t.c.phone, t.c.attempts, t.c.created_at)
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
    opened, texts = _opened_meanwhile([r.id for r in rows]), _texts({r.campaign_id for r in rows})
    outgoing: list[OutgoingSms] = []
    for row in rows:
        if row.id in opened:
            recorder.skip(row, "opened", "opened a push of the campaign before the SMS went")
        elif not row.phone or not PHONE.match(row.phone):
            recorder.skip(row, "invalid_number", "not an E.164 phone number")
        else:
            outgoing.append(OutgoingSms(row.id, row.uuid, row.phone, texts[row.campaign_id]))
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


def _opened_meanwhile(ids: list[int]) -> set[int]:
    """Rows whose subscriber opened a push of the campaign after the row was made."""
    t, s, m = SmsMessage.__table__, Subscriber.__table__, Message.__table__
    opened = exists(select(m.c.id).where(m.c.campaign_id == t.c.campaign_id, m.c.recipient == s.c.subscriber_key,
                                         m.c.opened_at.is_not(None)))
    query = select(t.c.id).select_from(t.join(s, s.c.id == t.c.subscriber_id)).where(t.c.id.in_(ids), opened)
    return set(db.session.scalars(query))


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
    halt_reason: str | None = None
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0

    def _add(self, kind: str, row: ClaimedSms, **values: Any) -> None:
        if values.get("b_error"):  # what a provider answered may echo a credential
            values["b_error"] = self.backend.redact(values["b_error"])
        self.updates.setdefault(kind, []).append({"b_id": row.id, **values})

    def ok(self, row: ClaimedSms, result: SmsResult) -> None:
        """Accepted (DEBUG for the Debug backend)."""
        state = SmsState.DEBUG if self.backend.type_name == "debug" else SmsState.SENT
        self._add("done", row, b_state=state.value, b_pid=result.provider_message_id, b_error=result.error)
        self.sent += 1

    def skip(self, row: ClaimedSms, reason: str, error: str) -> None:
        """Not sent on purpose (counted in the funnel)."""
        self._add("skip", row, b_reason=reason, b_error=error[:2000])
        self.skipped += 1

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
            self.skip(row, "invalid_number" if result.invalid_number else "opted_out", text)
        elif result.channel_error:
            self.release(row, f"{self.backend.label}: {text}")
        elif result.payload_error:
            self.fail(row, text)
        elif result.unknown_outcome and not self.backend.idempotent:
            self.fail(row, f"{text}; not retried: it may have been delivered and {self.backend.label} cannot "
                           "refuse a duplicate")
        elif result.retryable:
            self.retry(row, text, result.retry_after)
        else:
            self.fail(row, text)

    def write(self) -> None:
        """Apply the updates to rows still SENDING under our lease (one executemany per kind)."""
        t = SmsMessage.__table__
        base = {"lease_until": None, "changed_at": self.now}
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
