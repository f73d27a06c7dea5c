"""Claim → send → record. The database is the truth: workers lease rows, send only what is still
pending, and record results in batched updates fenced by their lease."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flask import current_app
from sqlalchemy import (
    JSON,
    BigInteger,
    Integer,
    String,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign, CampaignStatus, Channel
from webadmin.models.message import PENDING_STATES, Message, MessageState
from webadmin.models.types import utcnow
from webadmin.providers.base import ChannelAuthError, ProviderError, PushBackend, PushMessage, SendResult
from webadmin.sending import app_sends
from webadmin.sending.channels import ChannelRoute, redact_for, routes_for_app
from webadmin.sending.retry import RetryPolicy
from webadmin.sending.runtime import WorkerRuntime, worker_runtime
from webadmin.services.rollups import CANCELLED_ERROR, RollupBatch, failure_class

log = logging.getLogger(__name__)
T = TypeVar("T")
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
    cancelled: int = 0  # in flight when the campaign was cancelled: ended instead of retried or released
    lost_lease: int = 0  # rows another worker had claimed meanwhile (ours was presumed dead): not recorded by us
    possibly_resent: int = 0  # accepted rows an earlier claim left without an outcome (it may have sent them too)
    pause_reason: str | None = None


@dataclass
class DispatchReport:
    """What one dispatch run did."""

    batches: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    lost_lease: int = 0
    possibly_resent: int = 0
    stopped_because: str = ""
    totals: dict[str, int] = field(default_factory=dict)


# Backends whose one provider request carries a whole chunk of messages (OneSignal: up to 20,000 subscription ids,
# default 2,000; Marketing Cloud: 5,000 subscriber keys). Claims smaller than their batch size would cap every
# request at ENGINE_BATCH_SIZE. FCM and APNs send one request per message, so their batch size only chunks.
BULK_BACKENDS = frozenset({"onesignal", "marketing_cloud"})


def claim_size(routes: dict[str, ChannelRoute], batch_size: int) -> int:
    """Messages per claim: ENGINE_BATCH_SIZE, or the batch size of a bulk route when that is larger."""
    bulk = [route.batch_size for route in set(routes.values()) if route.type_name in BULK_BACKENDS]
    return max([batch_size, *bulk])


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


def _push_message(content: CampaignContent, row: Claimed, device: Any, bulk: bool = False) -> PushMessage:
    """The plain data a backend needs for one message.

    The data carries the message UUID the app reports events with. A bulk route sends one request for many
    recipients, which cannot carry per-message data (and a per-message key would make every message content of
    its own, one request each): its messages carry the campaign UUID instead.
    """
    marker = {"campaignId": content.uuid} if bulk else {"messageId": row.uuid}
    return PushMessage(
        message_id=row.id,
        uuid=row.uuid,
        token=device.token,
        platform=device.platform,
        body=row.content or content.text,
        title=row.heading or content.title,
        open_direct=row.url or content.open_direct,
        image_url=content.image_url,
        data={**content.data, **marker},  # a copy per message: backends may keep or change it
        ttl=content.ttl,
        recipient=row.recipient,
        campaign_uuid=content.uuid,
        token_registered_at=device.registered_at,
    )


@dataclass(slots=True)
class RouteAnswer:
    """What one channel route answered: the results of the chunks it sent, and the whole-batch error that stopped
    it, which concerns only the messages of the failed chunk and the chunks after it (`unsent`)."""

    route: ChannelRoute
    messages: list[PushMessage]
    results: list[SendResult]
    error: ProviderError | None = None
    unsent: list[PushMessage] = field(default_factory=list)
    app_result: SendResult | None = None  # a messageApp route: the one request's result (its claim is settled on it)


async def _send_route(route: ChannelRoute, messages: list[PushMessage], backend: PushBackend) -> RouteAnswer:
    """Send one route's messages in chunks of the backend's batch size; stop at the first whole-batch failure.

    Results of the chunks sent before a failure are kept: the provider accepted those, and throwing them away
    would send them again on the retry.
    """
    size = max(1, backend.options.batch_size)
    results: list[SendResult] = []
    for start in range(0, len(messages), size):
        try:
            results.extend(await backend.send_batch(messages[start:start + size]))
        except ProviderError as exc:
            return RouteAnswer(route, messages, results, exc, messages[start:])
    return RouteAnswer(route, messages, results)


async def _send_app(routes: list[ChannelRoute], groups: dict[ChannelRoute, list[PushMessage]],
                    backend: PushBackend) -> list[RouteAnswer]:
    """One messageApp request for all users, for every route of one claim (the Android and iOS channels of one
    MobilePush message); its result is every message's result.

    A refused payload pauses the campaign like a refused channel (the messages are released, not failed): one
    request is all there is, so there is no "many of a batch" to wait for.
    """
    try:
        result = await backend.send_to_app(groups[routes[0]][0])  # type: ignore[attr-defined]
    except ProviderError as exc:
        return [RouteAnswer(r, groups[r], [], exc, list(groups[r])) for r in routes]
    each = replace(result, channel_error=result.channel_error or result.payload_error, payload_error=False)
    return [RouteAnswer(r, groups[r], [replace(each, message_id=m.message_id) for m in groups[r]], app_result=result)
            for r in routes]


async def _send_groups(groups: dict[ChannelRoute, list[PushMessage]], backends: dict[ChannelRoute, PushBackend],
                       app_claims: dict[ChannelRoute, app_sends.AppClaim] | None = None) -> list[RouteAnswer]:
    """Send each channel's messages concurrently: in chunks of the backend's batch size, or, on the routes whose
    messageApp claim this batch holds, as that one request."""
    app_claims = app_claims or {}
    by_claim: dict[int, list[ChannelRoute]] = defaultdict(list)
    for route in groups:
        if route in app_claims:
            by_claim[app_claims[route].id].append(route)
    plain = [_send_route(r, groups[r], backends[r]) for r in groups if r not in app_claims]
    app = [_send_app(routes, groups, backends[routes[0]]) for routes in by_claim.values()]
    answers = await asyncio.gather(*plain, *app)
    return [a for answer in answers for a in (answer if isinstance(answer, list) else [answer])]


SENDER_DATA_LIMIT = 4000  # characters of a provider answer kept per message (messages.extra_sender_data)
_SENDER_DATA = JSON(none_as_null=True)  # no answer kept: SQL NULL, not JSON null


def sender_data(result: SendResult, route: ChannelRoute) -> dict[str, Any] | None:
    """What to keep of a provider's answer for one message (messages.extra_sender_data): None when there is
    nothing beyond the provider message id; the channel's secrets masked; at most SENDER_DATA_LIMIT characters."""
    raw = result.raw
    if not raw or all(value == result.provider_message_id for value in raw.values()):
        return None
    kept = _redacted(raw, route)
    text = json.dumps(kept, default=str)
    return kept if len(text) <= SENDER_DATA_LIMIT else {"truncated": text[:SENDER_DATA_LIMIT]}


def _redacted(value: Any, route: ChannelRoute) -> Any:
    """A JSON-like value with the route's secrets masked in every string."""
    if isinstance(value, str):
        return route.redact(value)
    if isinstance(value, dict):
        return {str(k): _redacted(v, route) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v, route) for v in value]
    return value


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
        self.done_data: list[dict[str, Any]] = []  # accepted messages whose answer said more than their id
        self.invalid_devices: list[dict[str, Any]] = []
        self.release: list[int] = []
        self.deferred: dict[int, datetime] = {}  # released rows due again only then (a messageApp claim elsewhere)
        self.stopped: list[int] = []  # the campaign was cancelled meanwhile: ERROR "campaign cancelled"
        self.outcome = BatchOutcome()
        self.payload_errors = 0
        self.channel_errors: dict[ChannelRoute, str] = {}  # route → the first error it reported in this batch
        self.recorded_done = 0  # accepted messages written by write_done (still ours when recorded)

    def ok(self, row: Claimed, result: SendResult, route: ChannelRoute) -> None:
        """Accepted by the provider (DEBUG for the debug backend)."""
        state = MessageState.DEBUG if route.type_name == "debug" else MessageState.SENT
        self.done[state.value, route.type_name][row.id] = result.provider_message_id
        self.outcome.sent += 1
        if result.raw:  # rare: the providers' success answers are their message id
            data = sender_data(result, route)
            if data is not None:
                self.done_data.append({"b_id": row.id, "raw": data})

    def fail(self, row: Claimed, code: str | None, error: str, backend: str, *, retry_after: float | None = None,
             retryable: bool = False, token_invalid: bool = False, payload_error: bool = False,
             raw: dict[str, Any] | None = None) -> None:
        """A failure: retried later when allowed, otherwise final (with its class for the funnel). `raw` is what
        the provider answered, kept in extra_sender_data."""
        gave_up = self.policy.gives_up(row.attempts, row.created_at, self.now)
        text = f"{code}: {error}" if code else error
        if retryable and gave_up is None:
            when = self.now + timedelta(seconds=self.policy.delay(row.attempts, retry_after))
            self.retry.append({"b_id": row.id, "next": when, "error": text[:2000], "backend": backend, "raw": raw})
            self.outcome.retried += 1
            return
        if retryable:
            text = f"{text} ({gave_up})"
        reason = failure_class(code, token_invalid=token_invalid, payload_error=payload_error)
        self.error.append({"b_id": row.id, "error": text[:2000], "backend": backend, "reason": reason, "raw": raw})
        self.outcome.failed += 1

    def invalid(self, row: Claimed, device_id: int | None, result: SendResult, backend: str, error: str,
                raw: dict[str, Any] | None = None) -> None:
        """The provider says the token is dead: the message fails and the device is marked invalid."""
        self.fail(row, result.error_code, error, backend, token_invalid=True, raw=raw)
        self.outcome.invalid += 1
        if device_id is not None:
            reason = (result.error_code or "invalid token")[:200]
            self.invalid_devices.append({"b_id": device_id, "reason": reason, "at": self.now})

    def defer(self, row: Claimed, until: datetime) -> None:
        """Give a row back unsent until `until`: another worker holds the messageApp request that covers it."""
        self.release.append(row.id)
        self.deferred[row.id] = until
        self.outcome.released += 1

    def stop_unfinished(self) -> None:
        """The campaign was cancelled while the batch was in flight: what would be retried or released (sent
        later) ends as cancelled instead, so nothing of a cancelled campaign stays pending."""
        self.stopped = [p["b_id"] for p in self.retry] + list(self.release)
        self.outcome.retried -= len(self.retry)
        self.outcome.cancelled = len(self.stopped)
        self.retry = []

    def write_done(self, lease: datetime) -> set[int]:
        """Record the accepted messages still leased to us; returns their ids.

        The hot path: one UPDATE per (state, backend) with every provider id in one JSON parameter, fenced on the
        lease, instead of an UPDATE per message (and without a separate fencing UPDATE that rewrites every row once
        more).
        """
        m = Message.__table__
        owned: set[int] = set()
        for (state, backend), provider_ids in self.done.items():
            statement = _accepted_update(provider_ids, lease).values(
                state=state, sent_at=self.now, backend=backend, error=None, lease_until=None, changed_at=self.now)
            owned.update(db.session.scalars(statement.returning(m.c.id)))
        self.recorded_done = len(owned)
        self.accepted = set(owned)
        return owned

    def write(self, owned: set[int], rows: list[Claimed]) -> None:
        """Apply the failures to the rows this worker still owns, mark dead tokens, and bump the counters."""
        m = Message.__table__
        base = {"lease_until": None, "changed_at": self.now}
        failed = {**base, "error": bindparam("error"), "backend": bindparam("backend"),
                  "extra_sender_data": bindparam("raw", type_=_SENDER_DATA)}
        self._many(m, self.retry, {**failed, "state": MessageState.ERROR_RETRY.value,
                                   "next_attempt_at": bindparam("next")}, owned)
        self._many(m, self.error, {**failed, "state": MessageState.ERROR.value, "retry_sending": False,
                                   "failure_class": bindparam("reason")}, owned)
        self._many(m, self.done_data, {"extra_sender_data": bindparam("raw", type_=_SENDER_DATA)}, self.accepted)
        released = [i for i in self.release if i in owned]
        if released:  # not sent (the channel refused the batch): the claim was no attempt
            db.session.execute(update(m).where(m.c.id.in_(released))
                               .values(number_of_send_attempts=m.c.number_of_send_attempts - 1))
        deferred = defaultdict(list)
        for i in released:
            if i in self.deferred and i not in self.stopped:
                deferred[self.deferred[i]].append(i)
        for until, ids in deferred.items():
            db.session.execute(update(m).where(m.c.id.in_(ids)).values(next_attempt_at=until))
        stopped = [i for i in self.stopped if i in owned]
        if stopped:
            db.session.execute(update(m).where(m.c.id.in_(stopped)).values(
                **base, state=MessageState.ERROR.value, error=CANCELLED_ERROR, retry_sending=False))
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
        kept = set(self.release).difference(self.stopped)  # released rows keep their state (and their count)
        was_retrying = sum(1 for r in rows if r.id in owned and r.id not in kept
                           and r.state == MessageState.ERROR_RETRY.value)
        sent = self.recorded_done
        failed = sum(1 for p in self.error if p["b_id"] in owned)
        retrying = sum(1 for p in self.retry if p["b_id"] in owned)
        cancelled = sum(1 for i in self.stopped if i in owned)
        invalid = len(self.invalid_devices)
        c = Campaign.__table__
        db.session.execute(
            update(c).where(c.c.id == self.campaign_id).values(
                sent=c.c.sent + sent, failed=c.c.failed + failed, invalid_tokens=c.c.invalid_tokens + invalid,
                retrying=c.c.retrying + retrying - was_retrying, cancelled=c.c.cancelled + cancelled,
                possibly_resent=c.c.possibly_resent + self.outcome.possibly_resent,
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
    """Sort one result into the recorder (provider text redacted: it may quote the channel's credentials)."""
    backend = route.type_name
    if result is None:
        recorder.fail(row, "NO_RESULT", "the backend returned no result for this message", backend, retryable=True)
    elif result.ok:
        recorder.ok(row, result, route)
    elif result.token_invalid:
        recorder.invalid(row, device.id, result, backend, route.redact(result.error or "token invalid"),
                         sender_data(result, route))
    elif result.channel_error:
        recorder.release.append(row.id)
        text = f"{result.error_code}: {result.error}" if result.error_code else result.error or "channel refused"
        recorder.outcome.pause_reason = f"Channel {route.label} refused: {route.redact(result.error_code or text)}"
        recorder.channel_errors.setdefault(route, text)
    elif result.payload_error:
        recorder.fail(row, result.error_code, route.redact(result.error or "payload refused"), backend,
                      payload_error=True, raw=sender_data(result, route))
        recorder.payload_errors += 1
    else:
        recorder.fail(row, result.error_code, route.redact(result.error or "send failed"), backend,
                      retry_after=result.retry_after, retryable=result.retryable, raw=sender_data(result, route))


def _apply_answers(recorder: Recorder, answers: list[RouteAnswer], by_id: dict[int, Claimed],
                   devices: dict[int, Any]) -> None:
    """Turn every route's answer (results, and a whole-batch error for the messages it left unsent) into recorder
    entries."""
    for answer in answers:
        unsent = {m.message_id for m in answer.unsent}
        results = {r.message_id: r for r in answer.results}
        for message in answer.messages:
            if message.message_id not in unsent:
                row = by_id[message.message_id]
                _classify(recorder, row, devices[row.device_id], results.get(message.message_id), answer.route)
        if answer.error is not None:
            _apply_error(recorder, answer.route, answer.error, [by_id[m.message_id] for m in answer.unsent])
    for route, text in recorder.channel_errors.items():  # once per route, however many messages it refused
        route.mark_error(text)


def _apply_error(recorder: Recorder, route: ChannelRoute, error: ProviderError, rows: list[Claimed]) -> None:
    """A whole-batch failure of the rows it concerns: refused credentials release them and pause the campaign;
    anything else retries them."""
    text = route.redact(str(error))
    if isinstance(error, ChannelAuthError):
        recorder.release.extend(row.id for row in rows)
        recorder.outcome.pause_reason = f"Channel {route.label}: credentials refused ({text})"
        recorder.channel_errors[route] = text
        return
    for row in rows:
        recorder.fail(row, "UNAVAILABLE", text, route.type_name, retry_after=error.retry_after, retryable=True)


def _payload_pause(recorder: Recorder, batch_size: int) -> None:
    """Many payload errors in one batch mean the campaign itself is wrong: pause and say why."""
    errors = recorder.payload_errors
    threshold = max(10, batch_size // 2)
    if errors >= threshold and recorder.outcome.pause_reason is None:
        recorder.outcome.pause_reason = (
            f"{errors} of {batch_size} messages in one batch were refused for their content (payload errors); "
            "check the text, image and data, then resume."
        )


@dataclass(slots=True)
class Batch:
    """A claimed batch on its way: its rows and lease (their fencing token, renewed while the batch waits or is on
    the wire), the recorder of its outcome, its messages per route, and the send once started."""

    lease: datetime
    rows: list[Claimed]
    recorder: Recorder
    devices: dict[int, Any]
    groups: dict[ChannelRoute, list[PushMessage]]
    sending: Future[list[RouteAnswer]] | None = None
    app_routes: frozenset[ChannelRoute] = frozenset()  # routes whose messages go out as one messageApp request
    app_claims: dict[ChannelRoute, app_sends.AppClaim] = field(default_factory=dict)  # held by this batch


def prepare(campaign: Campaign, lease: datetime, rows: list[Claimed], routes: dict[str, ChannelRoute]) -> Batch:
    """Everything before the wire, on the worker thread: the devices, a failure for each one no longer active, and
    each message's plain data grouped by route."""
    recorder = Recorder(campaign.id, retry_policy(), utcnow(), campaign.source)
    devices = _devices([r.device_id for r in rows if r.device_id is not None])
    recorder.platforms = {r.id: devices[r.device_id].platform for r in rows if r.device_id in devices}
    groups: dict[ChannelRoute, list[PushMessage]] = defaultdict(list)
    content = CampaignContent.of(campaign)
    for row in rows:
        device = devices.get(row.device_id) if row.device_id is not None else None
        if device is None or device.status != "active":
            recorder.fail(row, None, "device no longer active (invalidated or unsubscribed before sending)", "-")
            continue
        route = routes[device.platform]
        groups[route].append(_push_message(content, row, device, route.type_name in BULK_BACKENDS))
    app_routes = frozenset(r for r in groups if app_sends.wants_app_send(campaign.audience, r))
    return Batch(lease, rows, recorder, devices, groups, app_routes=app_routes)


def _take_app_sends(batch: Batch) -> None:
    """Before the wire: claim the messageApp request of each app-send route, or record what its claim says (sent
    by an earlier request, in flight elsewhere, or failed) for the batch's messages on it, which then stay off
    the wire."""
    by_id = {r.id: r for r in batch.rows}
    recorder = batch.recorder
    taken: dict[str, app_sends.AppClaim] = {}  # target → the claim this batch took for it
    for route in sorted(batch.app_routes, key=lambda r: r.channel_id or 0):
        target = app_sends.target_of(route)
        if target in taken:  # another channel of the same MobilePush message: the same request covers it
            batch.app_claims[route] = taken[target]
            continue
        decision = app_sends.take(recorder.campaign_id, batch.groups[route][0].campaign_uuid or "", route,
                                  _config("ENGINE_LEASE_SECONDS", 60.0), recorder.policy)
        if decision.kind == "send" and decision.claim is not None:
            batch.app_claims[route] = taken[target] = decision.claim
            continue
        for message in batch.groups.pop(route):
            row = by_id[message.message_id]
            if decision.kind == "sent":
                recorder.ok(row, SendResult(row.id, ok=True, provider_message_id=decision.provider_message_id), route)
            elif decision.kind == "wait" and decision.until is not None:
                recorder.defer(row, decision.until)
            else:
                code = "OUTCOME_UNKNOWN" if decision.kind == "unknown" else "APP_SEND_FAILED"
                recorder.fail(row, code, route.redact(decision.error or "messageApp request not sent"),
                              route.type_name)


def start(batch: Batch, runtime: WorkerRuntime) -> Batch:
    """Put a prepared batch on the wire: its send runs on the runtime's loop while this thread goes on. Its
    messageApp routes are claimed first (committed before anything is sent)."""
    if batch.app_routes:
        _take_app_sends(batch)
    backends = {route: route.backend(runtime) for route in batch.groups}  # built here: they may connect
    if batch.groups:
        batch.sending = runtime.submit(_send_groups(batch.groups, backends, batch.app_claims))
    return batch


def collect(batch: Batch, held: list[Batch], lease_seconds: float) -> None:
    """Wait for a started batch's answers, renewing the leases of every batch held meanwhile (`held`), and sort
    them into its recorder; the outcome says whether to pause."""
    answers = _wait_renewing(batch.sending, held, lease_seconds) if batch.sending is not None else []
    batch.recorder.now = utcnow()  # when the answers came: sent_at, and the base of the retry delays
    settled: set[int] = set()
    for answer in answers:
        claim = batch.app_claims.get(answer.route)
        if claim is not None and claim.id not in settled:  # first: the claim says what happened, then the messages
            settled.add(claim.id)
            app_sends.settle(claim, answer.route, answer.app_result, answer.error, batch.recorder.policy,
                             batch.recorder.now)
    _apply_answers(batch.recorder, answers, {r.id: r for r in batch.rows}, batch.devices)
    _payload_pause(batch.recorder, len(batch.rows))


def record(batch: Batch) -> BatchOutcome:
    """Write a collected batch's outcome (fenced on its lease)."""
    _record(batch.recorder, batch.lease, batch.rows)
    return batch.recorder.outcome


def release(batch: Batch) -> None:
    """Give back a prepared batch that will not be sent (the campaign was paused or cancelled meanwhile): its rows
    are unleased as they were and the claim is not counted as an attempt — fenced on its lease, and ended as
    cancelled if the campaign was cancelled."""
    recorder = batch.recorder
    given_back = Recorder(recorder.campaign_id, recorder.policy, utcnow(), recorder.source)
    given_back.release = [r.id for r in batch.rows]
    _record(given_back, batch.lease, batch.rows)


def send_batch(campaign: Campaign, lease: datetime, rows: list[Claimed], runtime: WorkerRuntime,
               routes: dict[str, ChannelRoute], lease_seconds: float | None = None) -> BatchOutcome:
    """Send one claimed batch and record the outcome (renewing the lease while the batch is on the wire)."""
    seconds = lease_seconds if lease_seconds is not None else _config("ENGINE_LEASE_SECONDS", 60.0)
    batch = start(prepare(campaign, lease, rows, routes), runtime)
    collect(batch, [batch], seconds)
    return record(batch)


def _wait_renewing(future: Future[T], held: list[Batch], lease_seconds: float) -> T:
    """Wait for a batch on the wire, renewing the leases of the held batches every third of the lease time.

    A batch's worst case is longer than any fixed lease (FCM: 2 chunks of 500 at 100 in flight with 10 s timeouts
    is 100 s), and a lease that expires mid-send lets another worker claim and send the batch again; the batch
    claimed ahead waits as long.
    """
    while True:
        try:
            return future.result(timeout=max(0.05, lease_seconds / 3))
        except TimeoutError:
            for batch in held:
                batch.lease = renew_lease([r.id for r in batch.rows], batch.lease, lease_seconds)
                if batch.app_claims:
                    app_sends.renew(list({c.id: c for c in batch.app_claims.values()}.values()), lease_seconds)
                    db.session.commit()


def renew_lease(ids: list[int], lease: datetime, lease_seconds: float) -> datetime:
    """Extend the lease of the rows that still carry `lease`; returns the new lease (their new fencing token)."""
    m = Message.__table__
    renewed = utcnow() + timedelta(seconds=lease_seconds)
    db.session.commit()
    kept = db.session.execute(
        update(m).where(m.c.id.in_(ids), m.c.lease_until == lease, m.c.state.in_(PENDING_STATES))
        .values(lease_until=renewed)
    ).rowcount
    db.session.commit()
    if kept < len(ids):
        log.warning("%s of %s message(s) of a batch in flight had already lost their lease", len(ids) - kept, len(ids))
    return renewed


def _accepted_update(provider_ids: dict[int, str | None], lease: datetime) -> Any:
    """UPDATE of the accepted rows still leased to us, setting each one's provider id from one JSON parameter.

    PostgreSQL: the rows by primary key (`id = ANY(ids)`), each provider id looked up in a JSONB object. A join with
    `jsonb_each_text(…)` instead was planned, on estimates of one row for `lease_until = :lease` (right after the
    campaign's ANALYZE every lease is NULL), as a nested loop that re-read the whole object once per row: 5,000
    accepted messages took 40 s. SQLite: an UPDATE … FROM `json_each(…)`, which it joins on the primary key.
    """
    m = Message.__table__
    fence = (m.c.lease_until == lease, m.c.state.in_(PENDING_STATES))
    if db.engine.dialect.name == "postgresql":
        doc = literal({str(k): v for k, v in provider_ids.items()}, JSONB)
        ids = literal(list(provider_ids), ARRAY(BigInteger))
        return (update(m).where(m.c.id == func.any(ids), *fence)
                .values(provider_message_id=doc.op("->>")(cast(m.c.id, String))))
    pairs = func.json_each(literal(json.dumps(provider_ids))).table_valued("key", "value")
    return update(m).where(m.c.id == cast(pairs.c.key, Integer), *fence).values(provider_message_id=pairs.c.value)


def _record(recorder: Recorder, lease: datetime, rows: list[Claimed]) -> None:
    """Fence on the lease: only rows this worker still owns are written (a late worker changes nothing)."""
    m = Message.__table__
    db.session.commit()
    status = db.session.scalar(select(Campaign.status).where(Campaign.id == recorder.campaign_id))
    if status not in (CampaignStatus.SENDING.value, CampaignStatus.PAUSED.value):
        recorder.stop_unfinished()  # cancelled meanwhile (a race with cancel() is closed by `end_cancelled`)
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
    # Claimed before without any outcome recorded (a lost worker or lease): that claim may have delivered it too. A
    # retry (ERROR_RETRY) is not counted here: its earlier attempt was recorded as a failure.
    recorder.outcome.possibly_resent = sum(1 for r in rows if r.attempts > 1 and r.id in recorder.accepted
                                           and r.state == MessageState.WAITING.value)
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


def end_cancelled(campaign_id: int) -> int:
    """End the pending rows of a cancelled campaign that no worker holds (never claimed, or lease expired) as
    ERROR "campaign cancelled", counted as `cancelled` and out of `retrying`; the caller commits.

    Rows still leased are left to their worker, whose recorder ends them the same way; if that worker dies, the
    sweeper calls this again once the lease has expired.
    """
    m = Message.__table__
    now = utcnow()
    stopped: dict[str, int] = {}
    for state in PENDING_STATES:  # one UPDATE per former state: ERROR_RETRY rows leave the `retrying` counter
        stopped[state] = db.session.execute(
            update(m)
            .where(m.c.campaign_id == campaign_id, m.c.state.in_(_PENDING_LITERALS),
                   m.c.state == literal_column(f"'{state}'"),
                   (m.c.lease_until.is_(None)) | (m.c.lease_until < now))
            .values(state=MessageState.ERROR.value, error=CANCELLED_ERROR, retry_sending=False, lease_until=None,
                    changed_at=now)
        ).rowcount
    ended = sum(stopped.values())
    if ended:
        c = Campaign.__table__
        db.session.execute(update(c).where(c.c.id == campaign_id).values(
            cancelled=c.c.cancelled + ended, retrying=c.c.retrying - stopped[MessageState.ERROR_RETRY.value]))
    return ended


def possibly_resent(campaign_id: int) -> int:
    """Messages of a campaign that were sent (SENT/DEBUG) on a later attempt: an earlier attempt may have
    delivered them too (a lost worker, or a retry after an answer that never came). An upper bound."""
    m = Message.__table__
    return db.session.scalar(
        select(func.count()).where(m.c.campaign_id == campaign_id, m.c.number_of_send_attempts > 1,
                                   m.c.state.in_((MessageState.SENT.value, MessageState.DEBUG.value)))
    ) or 0


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
            later = possibly_resent(campaign_id)
            if later:
                log.info("campaign %s sent; %s message(s) went out on a later attempt (after a retry, or again after "
                         "a lost worker: possibly re-sent; their UUID collapses them on the device)",
                         campaign_id, later)
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
    """Send a campaign's pending messages batch by batch until done, paused or cancelled (or `max_batches` were
    sent); `on_batch` gets each batch's outcome once it is recorded."""
    report = DispatchReport()
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        report.stopped_because = "no such campaign"
        return report
    with worker_runtime(keep=_config("ENGINE_KEEP_CONNECTIONS", True)) as runtime:
        Dispatch(campaign, runtime, report, max_batches, on_batch).run()
    return report


class Dispatch:
    """One dispatch run with one batch of look-ahead: while batch k is on the wire, batch k+1 is claimed and
    prepared on this thread; k+1 goes on the wire once k's answers are sorted and a fresh status read says the
    campaign is still sending, and k is recorded while k+1 is on the wire. So at most one batch is ever on the
    wire (a backend's request limit holds), a pause or cancel stops the next batch before it is sent (it is
    released unsent), and every exit waits for the batch on the wire and records it.
    """

    def __init__(self, campaign: Campaign, runtime: WorkerRuntime, report: DispatchReport,
                 max_batches: int | None, on_batch: Callable[[BatchOutcome], None] | None) -> None:
        self.campaign, self.runtime, self.report = campaign, runtime, report
        self.max_batches, self.on_batch = max_batches, on_batch
        self.routes = routes_for_app(campaign.app_id)
        self.size = claim_size(self.routes, _config("ENGINE_BATCH_SIZE", 1000))
        self.lease_seconds = _config("ENGINE_LEASE_SECONDS", 60.0)
        self.after = 0  # claim onwards from the last batch (see _claim_next)
        self.claimed = 0
        self.current: Batch | None = None  # on the wire
        self.upcoming: Batch | None = None  # claimed and prepared, not started

    def run(self) -> None:
        """Send until there is nothing to claim, the campaign stops sending, or max_batches were sent."""
        try:
            self._loop()
        finally:
            self._drain()

    def _loop(self) -> None:
        """Claim → start → (claim and prepare the next | wait for the answers) → start the next → record."""
        while True:
            if self.current is None:
                if not self._may_claim() or not self._still_sending():
                    return
                self.current = self._claim_next()
                if self.current is None:
                    self.report.stopped_because = finish_if_done(self.campaign.id)
                    return
                start(self.current, self.runtime)
            self.upcoming = self._claim_next() if self._may_claim() else None
            self._collect(self.current)
            done, self.current = self.current, None
            reason = done.recorder.outcome.pause_reason
            if reason is None and self.upcoming is not None and self._still_sending():
                self.current, self.upcoming = start(self.upcoming, self.runtime), None
            self._record(done)
            if reason is not None:
                _pause_for(self.campaign, reason, self.routes.values())
                self.report.stopped_because = "paused: " + reason
                return
            if self.upcoming is not None:  # not started: the campaign was paused or cancelled meanwhile
                return

    def _may_claim(self) -> bool:
        """Whether another batch may be claimed under max_batches."""
        return self.max_batches is None or self.claimed < self.max_batches

    def _still_sending(self) -> bool:
        """A fresh read of the campaign's status; when it is no longer sending, the report says so."""
        status = _status(self.campaign.id)
        if status != CampaignStatus.SENDING.value:
            self.report.stopped_because = f"campaign {status}"
            return False
        return True

    def _claim_next(self) -> Batch | None:
        """Claim and prepare the next batch, or None when nothing is claimable.

        Claims go onwards from the last batch: with stale statistics PostgreSQL walks the primary key from the
        campaign's first row, re-reading every row already sent (quadratic over a large campaign). At the end they
        look once more from the start (retries due, leases expired).
        """
        lease, rows = claim(self.campaign.id, self.size, self.lease_seconds, after=self.after)
        if not rows and self.after:
            lease, rows = claim(self.campaign.id, self.size, self.lease_seconds)
        if not rows:
            self.after = 0
            return None
        self.after = max(row.id for row in rows)
        self.claimed += 1
        return prepare(self.campaign, lease, rows, self.routes)

    def _collect(self, batch: Batch) -> None:
        """Wait for a batch's answers, keeping the leases of this batch and the one claimed ahead."""
        collect(batch, [b for b in (batch, self.upcoming) if b is not None], self.lease_seconds)

    def _record(self, batch: Batch) -> None:
        """Record a collected batch and report it."""
        outcome = record(batch)
        _tally(self.report, outcome, self.campaign.id)
        if self.on_batch is not None:
            self.on_batch(outcome)

    def _drain(self) -> None:
        """On every exit: the batch on the wire is waited for and recorded, the one prepared ahead released. After
        an error, what cannot be written stays leased and is claimed again once the lease expires."""
        if self.current is None and self.upcoming is None:
            return
        db.session.rollback()  # after an error the transaction may be unusable; on a normal exit nothing is pending
        batch, self.current = self.current, None
        if batch is not None:
            try:
                self._collect(batch)
                self._record(batch)
            except Exception:
                db.session.rollback()
                log.exception("campaign %s: a batch on the wire could not be recorded", self.campaign.id)
        ahead, self.upcoming = self.upcoming, None
        if ahead is not None:
            try:
                release(ahead)
            except Exception:
                db.session.rollback()
                log.exception("campaign %s: a batch claimed ahead could not be released", self.campaign.id)


def _tally(report: DispatchReport, outcome: BatchOutcome, campaign_id: int) -> None:
    """Add a batch to the run's report; say so when a lease was lost (the batch may go out twice)."""
    report.batches += 1
    report.sent += outcome.sent
    report.failed += outcome.failed
    report.retried += outcome.retried
    report.lost_lease += outcome.lost_lease
    report.possibly_resent += outcome.possibly_resent
    if outcome.lost_lease:
        log.warning("campaign %s: %s message(s) of a batch lost their lease before they were recorded (another "
                    "worker claimed them again; they may be sent twice)", campaign_id, outcome.lost_lease)
    if outcome.possibly_resent:
        log.warning("campaign %s: %s message(s) sent again after an earlier claim of them was lost (possibly "
                    "re-sent; their UUID collapses them on the device)", campaign_id, outcome.possibly_resent)


def _pause_for(campaign: Campaign, reason: str, routes: Iterable[ChannelRoute]) -> None:
    """Pause a campaign because of what the provider said. The reason goes to the campaign, the audit log and the
    worker log, so the routes' secrets are masked in it first."""
    from webadmin.services.campaigns import pause

    reason = redact_for(reason, routes)
    db.session.refresh(campaign)
    if campaign.status == CampaignStatus.SENDING.value:
        pause(campaign, actor="engine", reason=reason[:500])
        log.warning("campaign %s paused: %s", campaign.id, reason)


def channel_rows(app_id: int) -> list[Channel]:
    """Enabled channels of an app."""
    return list(db.session.scalars(select(Channel).where(Channel.app_id == app_id, Channel.enabled.is_(True))))
