"""Claim → send → record. The database is the truth: workers lease rows, send only what is still
pending, and record results in batched updates fenced by their lease."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Integer, String, bindparam, case, cast, func, literal, literal_column, select, update
from sqlalchemy.dialects.postgresql import JSONB

from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign, CampaignStatus, Channel
from webadmin.models.message import PENDING_STATES, Message, MessageState
from webadmin.models.types import utcnow
from webadmin.providers.base import ChannelAuthError, ProviderError, PushBackend, PushMessage, SendResult
from webadmin.sending.channels import ChannelRoute, routes_for_app
from webadmin.sending.retry import RetryPolicy
from webadmin.sending.runtime import WorkerRuntime, worker_runtime
from webadmin.services.rollups import RollupBatch, failure_class

log = logging.getLogger(__name__)
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class Claimed:
    """A leased message with what is needed to send it."""

    id: int
    uuid: str
    device_id: int | None
    recipient: str | None
    attempts: int
    state: str
    content: str | None
    heading: str | None
    url: str | None
    created_at: datetime


@dataclass
class BatchOutcome:
    """Counts of one recorded batch, and a reason to pause the campaign if any."""

    sent: int = 0
    failed: int = 0
    retried: int = 0
    invalid: int = 0
    released: int = 0
    lost_lease: int = 0
    pause_reason: str | None = None


@dataclass
class DispatchReport:
    """What one dispatch run did."""

    batches: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    stopped_because: str = ""
    totals: dict[str, int] = field(default_factory=dict)


def _config(name: str, default: Any) -> Any:
    """An engine setting from the app config."""
    return current_app.config.get(name, default)


def retry_policy() -> RetryPolicy:
    """The configured retry policy."""
    return RetryPolicy(
        max_attempts=_config("ENGINE_MAX_ATTEMPTS", 5),
        max_age=timedelta(hours=_config("ENGINE_MAX_AGE_HOURS", 24)),
        base_delay=_config("ENGINE_RETRY_BASE_SECONDS", 30.0),
    )


# Literal values, so the condition matches the partial index ix_messages_pending's WHERE clause and the planners
# (SQLite always, PostgreSQL for generic plans) can use it; bound parameters cannot prove that a row is in it.
_PENDING_LITERALS = [literal_column(f"'{state}'") for state in PENDING_STATES]


def claim(campaign_id: int, limit: int, lease_seconds: float, *, after: int = 0) -> tuple[datetime, list[Claimed]]:
    """Lease up to `limit` sendable messages of a campaign (with ids above `after`); returns the lease (a fencing
    token) and rows.

    PostgreSQL: FOR UPDATE SKIP LOCKED lets several workers claim disjoint rows at once. SQLite: the single
    UPDATE … RETURNING is its own short write transaction, so claims are serialised. A row at the attempt ceiling is
    never claimed again (a worker lost with it leased); `give_up_stranded` ends it.
    """
    db.session.commit()  # start a fresh transaction whose first statement is the write
    now = utcnow()
    max_attempts = retry_policy().max_attempts
    lease = now + timedelta(seconds=lease_seconds)
    m = Message.__table__
    ready = (
        select(m.c.id)
        .where(
            m.c.campaign_id == campaign_id,
            m.c.id > after,
            m.c.state.in_(_PENDING_LITERALS),
            (m.c.next_attempt_at.is_(None)) | (m.c.next_attempt_at <= now),
            (m.c.lease_until.is_(None)) | (m.c.lease_until < now),
            m.c.number_of_send_attempts < max_attempts,
        )
        .order_by(m.c.id)
        .limit(limit)
    )
    if db.engine.dialect.name == "postgresql":
        # = ANY(ARRAY(…)) is planned as a primary-key lookup of the claimed ids; IN (…) could become a hash join
        # over a sequential scan of the whole table.
        ready = ready.with_for_update(skip_locked=True)
        claimed = m.c.id == func.any(func.array(ready.scalar_subquery()))
    else:
        claimed = m.c.id.in_(ready.scalar_subquery())
    stmt = (
        update(m)
        .where(claimed)
        .values(lease_until=lease, number_of_send_attempts=m.c.number_of_send_attempts + 1)
        .returning(m.c.id, m.c.uuid, m.c.device_id, m.c.recipient, m.c.number_of_send_attempts, m.c.state,
                   m.c.content, m.c.heading, m.c.url, m.c.created_at)
    )
    rows = [Claimed(*row) for row in db.session.execute(stmt)]
    db.session.commit()
    return lease, rows


def _devices(ids: list[int]) -> dict[int, Any]:
    """Token, platform, status and registration time of the claimed messages' devices."""
    d = Device.__table__
    query = select(d.c.id, d.c.token, d.c.platform, d.c.status, d.c.registered_at).where(d.c.id.in_(ids))
    return {row.id: row for row in db.session.execute(query)}


@dataclass(frozen=True, slots=True)
class CampaignContent:
    """What every message of a campaign shares, read from the ORM object once per batch, not once per message."""

    text: str
    title: str | None
    open_direct: str | None
    image_url: str | None
    data: dict[str, str]
    ttl: int | None
    uuid: str

    @classmethod
    def of(cls, campaign: Campaign) -> CampaignContent:
        """The campaign's shared content."""
        data = {str(k): str(v) for k, v in (campaign.data or {}).items()}
        return cls(campaign.text, campaign.title, campaign.open_direct, campaign.image_url, data, campaign.ttl,
                   campaign.uuid)


def _push_message(content: CampaignContent, row: Claimed, device: Any) -> PushMessage:
    """The plain data a backend needs for one message."""
    return PushMessage(
        message_id=row.id,
        uuid=row.uuid,
        token=device.token,
        platform=device.platform,
        body=row.content or content.text,
        title=row.heading or content.title,
        open_direct=row.url or content.open_direct,
        image_url=content.image_url,
        # A copy per message (backends may keep or change it), with the message UUID the app reports events with.
        data={**content.data, "messageId": row.uuid},
        ttl=content.ttl,
        recipient=row.recipient,
        campaign_uuid=content.uuid,
        token_registered_at=device.registered_at,
    )


async def _send_groups(groups: dict[ChannelRoute, list[PushMessage]], backends: dict[ChannelRoute, PushBackend]
                       ) -> list[tuple[ChannelRoute, list[PushMessage], list[SendResult] | ProviderError]]:
    """Send each channel's messages concurrently, in chunks of the backend's batch size."""

    async def one(route: ChannelRoute, messages: list[PushMessage]) -> list[SendResult] | ProviderError:
        backend = backends[route]
        size = max(1, backend.options.batch_size)
        results: list[SendResult] = []
        try:
            for start in range(0, len(messages), size):
                results.extend(await backend.send_batch(messages[start:start + size]))
        except ProviderError as exc:
            return exc
        return results

    routes = list(groups)
    answers = await asyncio.gather(*(one(r, groups[r]) for r in routes))
    return [(r, groups[r], a) for r, a in zip(routes, answers, strict=True)]


class Recorder:
    """Collects the per-message updates of one batch and writes them in a few statements."""

    def __init__(self, campaign_id: int, policy: RetryPolicy, now: datetime, source: str = "adhoc") -> None:
        self.campaign_id = campaign_id
        self.source = source  # the campaign's, for the hourly rollups
        self.platforms: dict[int, str] = {}  # message id → its device's platform
        self.accepted: set[int] = set()  # accepted messages still ours when recorded
        self.policy = policy
        self.now = now
        self.done: dict[tuple[str, str], dict[int, str | None]] = defaultdict(dict)  # (state, backend) → id → pid
        self.retry: list[dict[str, Any]] = []
        self.error: list[dict[str, Any]] = []
        self.invalid_devices: list[dict[str, Any]] = []
        self.release: list[int] = []
        self.outcome = BatchOutcome()
        self.payload_errors = 0
        self.recorded_done = 0  # accepted messages written by write_done (still ours when recorded)

    def ok(self, row: Claimed, result: SendResult, route: ChannelRoute) -> None:
        """Accepted by the provider (DEBUG for the debug backend)."""
        state = MessageState.DEBUG if route.type_name == "debug" else MessageState.SENT
        self.done[state.value, route.type_name][row.id] = result.provider_message_id
        self.outcome.sent += 1

    def fail(self, row: Claimed, code: str | None, error: str, backend: str, *, retry_after: float | None = None,
             retryable: bool = False, token_invalid: bool = False, payload_error: bool = False) -> None:
        """A failure: retried later when allowed, otherwise final (with its class for the funnel)."""
        gave_up = self.policy.gives_up(row.attempts, row.created_at, self.now)
        text = f"{code}: {error}" if code else error
        if retryable and gave_up is None:
            when = self.now + timedelta(seconds=self.policy.delay(row.attempts, retry_after))
            self.retry.append({"b_id": row.id, "next": when, "error": text[:2000], "backend": backend})
            self.outcome.retried += 1
            return
        if retryable:
            text = f"{text} ({gave_up})"
        reason = failure_class(code, token_invalid=token_invalid, payload_error=payload_error)
        self.error.append({"b_id": row.id, "error": text[:2000], "backend": backend, "reason": reason})
        self.outcome.failed += 1

    def invalid(self, row: Claimed, device_id: int | None, result: SendResult, backend: str) -> None:
        """The provider says the token is dead: the message fails and the device is marked invalid."""
        self.fail(row, result.error_code, result.error or "token invalid", backend, token_invalid=True)
        self.outcome.invalid += 1
        if device_id is not None:
            reason = (result.error_code or "invalid token")[:200]
            self.invalid_devices.append({"b_id": device_id, "reason": reason, "at": self.now})

    def write_done(self, lease: datetime) -> set[int]:
        """Record the accepted messages still leased to us; returns their ids.

        The hot path: one UPDATE … FROM a JSON object {id: provider id} per (state, backend), fenced on the lease,
        instead of an UPDATE per message (and without a separate fencing UPDATE that rewrites every row once more).
        """
        m = Message.__table__
        owned: set[int] = set()
        for (state, backend), provider_ids in self.done.items():
            pairs = _id_pairs(provider_ids)
            statement = (
                update(m)
                .where(m.c.id == cast(pairs.c.key, Integer), m.c.lease_until == lease, m.c.state.in_(PENDING_STATES))
                .values(state=state, sent_at=self.now, backend=backend, provider_message_id=pairs.c.value, error=None,
                        lease_until=None, changed_at=self.now)
                .returning(m.c.id)
            )
            owned.update(db.session.scalars(statement))
        self.recorded_done = len(owned)
        self.accepted = set(owned)
        return owned

    def write(self, owned: set[int], rows: list[Claimed]) -> None:
        """Apply the failures to the rows this worker still owns, mark dead tokens, and bump the counters."""
        m = Message.__table__
        base = {"lease_until": None, "changed_at": self.now}
        self._many(m, self.retry, {**base, "state": MessageState.ERROR_RETRY.value, "error": bindparam("error"),
                                   "next_attempt_at": bindparam("next"), "backend": bindparam("backend")}, owned)
        self._many(m, self.error, {**base, "state": MessageState.ERROR.value, "error": bindparam("error"),
                                   "retry_sending": False, "backend": bindparam("backend"),
                                   "failure_class": bindparam("reason")}, owned)
        released = [i for i in self.release if i in owned]
        if released:  # not sent (the channel refused the batch): the claim was no attempt
            db.session.execute(update(m).where(m.c.id.in_(released))
                               .values(number_of_send_attempts=m.c.number_of_send_attempts - 1))
        if self.invalid_devices:
            d = Device.__table__
            db.session.execute(
                update(d).where(d.c.id == bindparam("b_id"), d.c.status == "active")
                .values(status="invalid", invalid_reason=bindparam("reason"), invalidated_at=bindparam("at")),
                self.invalid_devices,
            )
        self._counters(owned, rows)
        self._rollups(owned)

    def _many(self, table: Any, params: list[dict[str, Any]], values: dict[str, Any], owned: set[int]) -> None:
        """One executemany UPDATE for a category of results."""
        params = [p for p in params if p["b_id"] in owned]
        if params:
            db.session.execute(update(table).where(table.c.id == bindparam("b_id")).values(**values), params)

    def _counters(self, owned: set[int], rows: list[Claimed]) -> None:
        """Campaign counters move in the same transaction as the rows they count."""
        was_retrying = sum(1 for r in rows if r.id in owned and r.state == MessageState.ERROR_RETRY.value)
        sent = self.recorded_done
        failed = sum(1 for p in self.error if p["b_id"] in owned)
        retrying = sum(1 for p in self.retry if p["b_id"] in owned)
        invalid = len(self.invalid_devices)
        c = Campaign.__table__
        db.session.execute(
            update(c).where(c.c.id == self.campaign_id).values(
                sent=c.c.sent + sent, failed=c.c.failed + failed, invalid_tokens=c.c.invalid_tokens + invalid,
                retrying=c.c.retrying + retrying - was_retrying,
            )
        )

    def _rollups(self, owned: set[int]) -> None:
        """The analytics rollups move in the same transaction: one upsert per table for the whole batch."""
        batch = RollupBatch()
        for platform, n in Counter(self.platforms.get(i) for i in self.accepted).items():
            batch.add(self.campaign_id, self.source, platform, self.now, "sent", n)
        failures = Counter((self.platforms.get(p["b_id"]), p["reason"]) for p in self.error if p["b_id"] in owned)
        for (platform, reason), n in failures.items():
            batch.add(self.campaign_id, self.source, platform, self.now, "failed", n, failure=reason)
        batch.write()


def _classify(recorder: Recorder, row: Claimed, device: Any, result: SendResult | None, route: ChannelRoute) -> None:
    """Sort one result into the recorder."""
    backend = route.type_name
    if result is None:
        recorder.fail(row, "NO_RESULT", "the backend returned no result for this message", backend, retryable=True)
    elif result.ok:
        recorder.ok(row, result, route)
    elif result.token_invalid:
        recorder.invalid(row, device.id, result, backend)
    elif result.channel_error:
        recorder.release.append(row.id)
        recorder.outcome.pause_reason = f"Channel {route.label} refused: {result.error_code or result.error}"
    elif result.payload_error:
        recorder.fail(row, result.error_code, result.error or "payload refused", backend, payload_error=True)
        recorder.payload_errors += 1
    else:
        recorder.fail(row, result.error_code, result.error or "send failed", backend,
                      retry_after=result.retry_after, retryable=result.retryable)


def _apply_answers(recorder: Recorder, answers: list, by_id: dict[int, Claimed], devices: dict[int, Any]) -> None:
    """Turn every backend's answer (results or a whole-batch error) into recorder entries."""
    for route, messages, answer in answers:
        if isinstance(answer, ChannelAuthError):
            recorder.release.extend(m.message_id for m in messages)
            recorder.outcome.pause_reason = f"Channel {route.label}: credentials refused ({answer})"
            route.mark_error(str(answer))
            continue
        if isinstance(answer, ProviderError):
            for message in messages:
                row = by_id[message.message_id]
                recorder.fail(row, "UNAVAILABLE", str(answer), route.type_name, retry_after=answer.retry_after,
                              retryable=True)
            continue
        results = {r.message_id: r for r in answer}
        for message in messages:
            row = by_id[message.message_id]
            _classify(recorder, row, devices[row.device_id], results.get(message.message_id), route)


def _payload_pause(recorder: Recorder, batch_size: int) -> None:
    """Many payload errors in one batch mean the campaign itself is wrong: pause and say why."""
    errors = recorder.payload_errors
    threshold = max(10, batch_size // 2)
    if errors >= threshold and recorder.outcome.pause_reason is None:
        recorder.outcome.pause_reason = (
            f"{errors} of {batch_size} messages in one batch were refused for their content (payload errors); "
            "check the text, image and data, then resume."
        )


def send_batch(campaign: Campaign, lease: datetime, rows: list[Claimed], runtime: WorkerRuntime,
               routes: dict[str, ChannelRoute]) -> BatchOutcome:
    """Send one claimed batch and record the outcome."""
    now = utcnow()
    recorder = Recorder(campaign.id, retry_policy(), now, campaign.source)
    devices = _devices([r.device_id for r in rows if r.device_id is not None])
    recorder.platforms = {r.id: devices[r.device_id].platform for r in rows if r.device_id in devices}
    groups: dict[ChannelRoute, list[PushMessage]] = defaultdict(list)
    content = CampaignContent.of(campaign)
    for row in rows:
        device = devices.get(row.device_id) if row.device_id is not None else None
        if device is None or device.status != "active":
            recorder.fail(row, None, "device no longer active (invalidated or unsubscribed before sending)", "-")
            continue
        groups[routes[device.platform]].append(_push_message(content, row, device))
    backends = {route: route.backend(runtime) for route in groups}  # built outside the loop: they may connect
    answers = runtime.run(_send_groups(groups, backends)) if groups else []
    _apply_answers(recorder, answers, {r.id: r for r in rows}, devices)
    _payload_pause(recorder, len(rows))
    _record(recorder, lease, rows)
    return recorder.outcome


def _id_pairs(values: dict[int, str | None]) -> Any:
    """(key, value) rows from one bound JSON object: a whole batch's per-message values in one parameter."""
    if db.engine.dialect.name == "postgresql":
        return func.jsonb_each_text(literal(values, JSONB)).table_valued("key", "value")
    return func.json_each(literal(json.dumps(values))).table_valued("key", "value")


def _record(recorder: Recorder, lease: datetime, rows: list[Claimed]) -> None:
    """Fence on the lease: only rows this worker still owns are written (a late worker changes nothing)."""
    m = Message.__table__
    db.session.commit()
    owned = recorder.write_done(lease)
    accepted = {i for ids in recorder.done.values() for i in ids}
    others = [r.id for r in rows if r.id not in accepted]
    if others:
        owned.update(
            db.session.scalars(
                update(m)
                .where(m.c.id.in_(others), m.c.lease_until == lease, m.c.state.in_(PENDING_STATES))
                .values(lease_until=None)
                .returning(m.c.id)
            )
        )
    recorder.outcome.lost_lease = len(rows) - len(owned)
    recorder.write(owned, rows)
    db.session.commit()


def _status(campaign_id: int) -> str | None:
    """The campaign's current status, read fresh."""
    db.session.commit()
    return db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))


def give_up_stranded(campaign_id: int) -> int:
    """End pending rows at the attempt ceiling that no worker holds (`claim` skips them): ERROR "gave up after N
    attempts, worker lost" when a lease expired on them, with the counters and rollups, in one transaction."""
    m = Message.__table__
    now = utcnow()
    attempts = literal("gave up after ") + cast(m.c.number_of_send_attempts, String) + literal(" attempts")
    stranded = {}
    for state in PENDING_STATES:  # one UPDATE per former state: ERROR_RETRY rows leave the `retrying` counter
        stranded[state] = db.session.execute(
            update(m)
            .where(m.c.campaign_id == campaign_id, m.c.state.in_(_PENDING_LITERALS),
                   m.c.state == literal_column(f"'{state}'"),
                   m.c.number_of_send_attempts >= retry_policy().max_attempts,
                   (m.c.lease_until.is_(None)) | (m.c.lease_until < now))
            .values(state=MessageState.ERROR.value, failure_class="other", retry_sending=False, lease_until=None,
                    changed_at=now, error=case((m.c.lease_until.is_(None), attempts),
                                               else_=attempts + literal(", worker lost")))
            .returning(m.c.device_id)
        ).scalars().all()
    given_up = sum(len(ids) for ids in stranded.values())
    if given_up:
        _count_given_up(campaign_id, stranded, now)
    db.session.commit()
    return given_up


def _count_given_up(campaign_id: int, stranded: dict[str, list[int | None]], now: datetime) -> None:
    """Counters and rollups for rows `give_up_stranded` ended."""
    c = Campaign.__table__
    device_ids = [i for ids in stranded.values() for i in ids]
    retried = len(stranded[MessageState.ERROR_RETRY.value])
    db.session.execute(update(c).where(c.c.id == campaign_id).values(
        failed=c.c.failed + len(device_ids), retrying=c.c.retrying - retried))
    source = db.session.scalar(select(c.c.source).where(c.c.id == campaign_id)) or "adhoc"
    platforms = {d.id: d.platform for d in _devices([i for i in device_ids if i is not None]).values()}
    batch = RollupBatch()
    for platform, n in Counter(platforms.get(i) if i is not None else None for i in device_ids).items():
        batch.add(campaign_id, source, platform, now, "failed", n, failure="other")
    batch.write()
    log.warning("campaign %s: gave up on %s message(s) at the attempt ceiling", campaign_id, len(device_ids))


def finish_if_done(campaign_id: int) -> str:
    """Mark a sending campaign sent when nothing is pending; otherwise say what is left."""
    from webadmin.services.campaigns import transition

    give_up_stranded(campaign_id)
    m = Message.__table__
    now = utcnow()
    pending = db.session.execute(
        select(func.count(), func.min(m.c.next_attempt_at), func.max(m.c.lease_until))
        .where(m.c.campaign_id == campaign_id, m.c.state.in_(PENDING_STATES))
    ).one()
    if pending[0] == 0:
        campaign = db.session.get(Campaign, campaign_id)
        if campaign is not None and transition(campaign, CampaignStatus.SENT, finished_at=now):
            db.session.commit()
            return "finished"
        return "not sending"
    if pending[2] is not None and pending[2] > now:
        return "in flight elsewhere"
    if pending[1] is not None and pending[1] > now:
        from webadmin.tasks import dispatch_campaign

        dispatch_campaign.schedule((campaign_id,), eta=pending[1])
        return "retry scheduled"
    return "work left"


def dispatch(campaign_id: int, *, max_batches: int | None = None,
             on_batch: Callable[[BatchOutcome], None] | None = None) -> DispatchReport:
    """Send a campaign's pending messages batch by batch until done, paused or cancelled."""
    report = DispatchReport()
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        report.stopped_because = "no such campaign"
        return report
    batch_size = _config("ENGINE_BATCH_SIZE", 1000)
    lease_seconds = _config("ENGINE_LEASE_SECONDS", 60.0)
    with worker_runtime(keep=_config("ENGINE_KEEP_CONNECTIONS", True)) as runtime:
        routes = routes_for_app(campaign.app_id)
        after = 0
        while max_batches is None or report.batches < max_batches:
            status = _status(campaign_id)
            if status != CampaignStatus.SENDING.value:
                report.stopped_because = f"campaign {status}"
                break
            lease, rows = claim(campaign_id, batch_size, lease_seconds, after=after)
            if not rows and after:
                after = 0  # the sweep reached the end: look once more from the start (retries due, leases expired)
                continue
            if not rows:
                report.stopped_because = finish_if_done(campaign_id)
                break
            # Claim onwards from the last batch: with stale statistics PostgreSQL walks the primary key from the
            # campaign's first row, re-reading every row already sent (quadratic over a large campaign).
            after = max(row.id for row in rows)
            outcome = send_batch(campaign, lease, rows, runtime, routes)
            _tally(report, outcome)
            if on_batch is not None:
                on_batch(outcome)
            if outcome.pause_reason:
                _pause_for(campaign, outcome.pause_reason)
                report.stopped_because = "paused: " + outcome.pause_reason
                break
    return report


def _tally(report: DispatchReport, outcome: BatchOutcome) -> None:
    """Add a batch to the run's report."""
    report.batches += 1
    report.sent += outcome.sent
    report.failed += outcome.failed
    report.retried += outcome.retried


def _pause_for(campaign: Campaign, reason: str) -> None:
    """Pause a campaign because of what the provider said."""
    from webadmin.services.campaigns import pause

    db.session.refresh(campaign)
    if campaign.status == CampaignStatus.SENDING.value:
        pause(campaign, actor="engine", reason=reason[:500])
        log.warning("campaign %s paused: %s", campaign.id, reason)


def channel_rows(app_id: int) -> list[Channel]:
    """Enabled channels of an app."""
    return list(db.session.scalars(select(Channel).where(Channel.app_id == app_id, Channel.enabled.is_(True))))
