"""Keeping the analytics rollups current: the engine and the events API add what they change in the same
transaction, one upsert per rollup row touched; `rebuild` recomputes everything from the raw message rows.

Which timestamp puts a message in an hour: accepted → `sent_at`; final failure → `changed_at` (when the engine
wrote the ERROR); opened → `opened_at`; received → `received_at`. The live writers use the same instants, so a
rebuild gives the same rows as the live counts.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, case, delete, func, insert, literal, select, text, union_all, update
from sqlalchemy.dialects import postgresql, sqlite

from webadmin.extensions import db
from webadmin.models.analytics import (
    FAILURE_CLASSES,
    HOURLY_COUNTS,
    CampaignHourlyRollup,
    CampaignRollup,
    HourlyRollup,
)
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message, MessageState
from webadmin.models.types import UTCDateTime

UNKNOWN_PLATFORM = "unknown"  # the message's device is gone (deleted) or was never known
CANCELLED_ERROR = "campaign cancelled"  # services.campaigns.cancel: not a failure, counted as cancelled
SENT_STATES = (MessageState.SENT.value, MessageState.DEBUG.value)

# Provider error codes (FCM v1, APNs reasons, OneSignal/Marketing Cloud and our own markers) by failure class.
_CODES: dict[str, frozenset[str]] = {
    "invalid_token": frozenset({
        "UNREGISTERED", "SENDER_ID_MISMATCH", "BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered",
        "ExpiredToken", "INVALID_SUBSCRIPTION", "NO_SUBSCRIPTION_ID", "NotRegistered", "InvalidRegistration",
    }),
    "quota": frozenset({
        "QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED", "TooManyRequests", "TooManyProviderTokenUpdates", "HTTP_429",
    }),
    "auth": frozenset({
        "THIRD_PARTY_AUTH_ERROR", "UNAUTHENTICATED", "PERMISSION_DENIED", "AUTH_REFUSED", "ExpiredProviderToken",
        "InvalidProviderToken", "MissingProviderToken", "BadCertificate", "BadCertificateEnvironment", "Forbidden",
        "HTTP_401", "HTTP_403",
    }),
    "payload": frozenset({
        "INVALID_ARGUMENT", "PayloadTooLarge", "PayloadEmpty", "BadCollapseId", "BadExpirationDate", "BadMessageId",
        "BadPriority", "InvalidPushType", "NOT_CREATED", "NO_SUBSCRIBER_KEY", "HTTP_400", "HTTP_413",
    }),
}


def failure_class(code: str | None, *, token_invalid: bool = False, payload_error: bool = False) -> str:
    """The funnel's reason for a final failure, from the provider's error code (and the backend's own verdict)."""
    if token_invalid:
        return "invalid_token"
    for name, codes in _CODES.items():
        if code in codes:
            return name
    return "payload" if payload_error else "other"


def code_of(error: str | None) -> str | None:
    """The error code at the start of a stored error text (`"QUOTA_EXCEEDED: …"` → `"QUOTA_EXCEEDED"`)."""
    head, colon, _ = (error or "").partition(":")
    return head if colon and head and " " not in head else None


def hour_of(at: datetime) -> datetime:
    """The UTC hour an instant falls in."""
    return at.replace(minute=0, second=0, microsecond=0)


def _counts(names: tuple[str, ...]) -> Counter[str]:
    """A zeroed counter with every column, so each upsert of a table has the same parameters."""
    return Counter(dict.fromkeys(names, 0))


CAMPAIGN_COUNTS = ("sent", *(f"failed_{name}" for name in FAILURE_CLASSES), "opened", "received")


@dataclass
class RollupBatch:
    """What one transaction adds to the rollups; `write` turns it into one upsert per table.

    Rows are written in key order, so two transactions touching the same rows lock them in the same order
    (no deadlock on PostgreSQL).
    """

    campaigns: dict[int, Counter[str]] = field(default_factory=dict)
    curve: dict[tuple[int, datetime], Counter[str]] = field(default_factory=dict)
    traffic: dict[tuple[datetime, str, str], Counter[str]] = field(default_factory=dict)

    def add(self, campaign_id: int, source: str, platform: str | None, at: datetime, count: str, n: int = 1,
            failure: str | None = None) -> None:
        """Count `n` of `count` (sent, failed, opened, received) at `at`; failures need their class."""
        if n <= 0:
            return
        hour = hour_of(at)
        per_campaign = self.campaigns.setdefault(campaign_id, _counts(CAMPAIGN_COUNTS))
        per_campaign[f"failed_{failure}" if count == "failed" else count] += n
        self.curve.setdefault((campaign_id, hour), _counts(HOURLY_COUNTS))[count] += n
        key = (hour, platform or UNKNOWN_PLATFORM, source)
        self.traffic.setdefault(key, _counts(HOURLY_COUNTS))[count] += n

    def write(self) -> None:
        """Apply the batch (inside the caller's transaction)."""
        _upsert(CampaignRollup.__table__, ("campaign_id",), CAMPAIGN_COUNTS,
                [{"campaign_id": cid, **counts} for cid, counts in sorted(self.campaigns.items())])
        _upsert(CampaignHourlyRollup.__table__, ("campaign_id", "hour"), HOURLY_COUNTS,
                [{"campaign_id": cid, "hour": hour, **counts} for (cid, hour), counts in sorted(self.curve.items())])
        _upsert(HourlyRollup.__table__, ("hour", "platform", "source"), HOURLY_COUNTS,
                [{"hour": h, "platform": p, "source": s, **counts}
                 for (h, p, s), counts in sorted(self.traffic.items())])


@functools.cache
def _upsert_statement(dialect_name: str, table: Any, keys: tuple[str, ...], counts: tuple[str, ...]) -> Any:
    """INSERT … ON CONFLICT (keys) DO UPDATE SET count = count + excluded.count, built once per dialect and table
    (building it costs more than running it: this is on every recorded batch and every event request)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(table)
    return statement.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={name: table.c[name] + statement.excluded[name] for name in counts},
    )


def _upsert(table: Any, keys: tuple[str, ...], counts: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Add the rows' counts to the table (SQLite and PostgreSQL)."""
    if rows:  # on the session's connection (Core): cheaper than the ORM's execute path, same transaction
        connection = db.session.connection()
        connection.execute(_upsert_statement(connection.dialect.name, table, keys, counts), rows)


# ------------------------------------------------------------------------------------------------- rebuild


def _hour_sql(column: Any) -> Any:
    """The UTC hour of a timestamp column, in the database, typed so it compares with stored hours."""
    if db.engine.dialect.name == "postgresql":
        return func.date_trunc("hour", column, "UTC", type_=UTCDateTime)
    # SQLite keeps UTCDateTime as naive 'YYYY-MM-DD HH:MM:SS.ffffff' text: cut to the hour in the same format.
    return func.strftime("%Y-%m-%d %H:00:00.000000", column, type_=UTCDateTime)


def _events(with_traffic_keys: bool) -> Any:
    """One row per (campaign, hour[, platform, source], count) with its number, from the raw messages."""
    m, d, c = Message.__table__, Device.__table__, Campaign.__table__
    platform = func.coalesce(d.c.platform, literal(UNKNOWN_PLATFORM))
    parts = []
    for count, instant, condition in (
        ("sent", m.c.sent_at, m.c.state.in_(SENT_STATES)),
        ("failed", m.c.changed_at, (m.c.state == MessageState.ERROR.value) & m.c.failure_class.is_not(None)),
        ("opened", m.c.opened_at, m.c.opened_at.is_not(None)),
        ("received", m.c.received_at, m.c.received_at.is_not(None)),
    ):
        hour = _hour_sql(instant).label("hour")
        keys = [m.c.campaign_id, hour] + ([platform.label("platform"), c.c.source] if with_traffic_keys else [])
        query = select(*keys, *[(func.count() if name == count else literal(0)).label(name) for name in HOURLY_COUNTS])
        query = query.select_from(m.join(c, c.c.id == m.c.campaign_id).outerjoin(d, d.c.id == m.c.device_id))
        parts.append(query.where(condition, instant.is_not(None)).group_by(*keys))
    return union_all(*parts).subquery()


def _rebuild_hourly(table: Table, keys: list[str], events: Any) -> None:
    """Replace a table's rows with the sums of the events grouped by its keys."""
    sums = [func.sum(events.c[name]) for name in HOURLY_COUNTS]
    db.session.execute(delete(table))
    grouped = select(*[events.c[k] for k in keys], *sums).group_by(*[events.c[k] for k in keys])
    db.session.execute(insert(table).from_select([*keys, *HOURLY_COUNTS], grouped))


def _rebuild_campaigns() -> None:
    """Replace the per-campaign funnels."""
    m = Message.__table__
    table: Table = CampaignRollup.__table__  # type: ignore[assignment]

    def counted(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    failed = [counted((m.c.state == MessageState.ERROR.value) & (m.c.failure_class == name))
              for name in FAILURE_CLASSES]
    counts = [counted(m.c.state.in_(SENT_STATES)), *failed, func.count(m.c.opened_at), func.count(m.c.received_at)]
    grouped = (
        select(m.c.campaign_id, *counts)
        .where(m.c.campaign_id.is_not(None))
        .group_by(m.c.campaign_id)
        .having(sum(counts[1:], counts[0]) > 0)  # as live: a campaign gets its row with its first counted change
    )
    db.session.execute(delete(table))
    db.session.execute(insert(table).from_select(["campaign_id", *CAMPAIGN_COUNTS], grouped))


def classify_unclassified() -> int:
    """Give rows failed before failure classes existed a class, from their error code; returns how many."""
    m = Message.__table__
    pending = (m.c.state == MessageState.ERROR.value) & m.c.failure_class.is_(None) & (
        m.c.error.is_(None) | (m.c.error != CANCELLED_ERROR))
    errors = list(db.session.scalars(select(m.c.error).where(pending).distinct()))
    by_class: dict[str, list[str | None]] = defaultdict(list)
    for error in errors:
        by_class[failure_class(code_of(error))].append(error)
    changed = 0
    for name, texts in by_class.items():
        known = [t for t in texts if t is not None]
        condition = m.c.error.in_(known) | (m.c.error.is_(None) if None in texts else literal(False))
        changed += db.session.execute(
            update(m).where(pending, condition).values(failure_class=name, changed_at=m.c.changed_at)
        ).rowcount
    return changed


def recompute() -> int:
    """Replace every rollup with sums over the raw message rows (in the caller's transaction); returns how many
    failed rows had to be classified first.

    PostgreSQL: the rollup tables are locked first, so a batch recorded meanwhile waits and then adds its counts on
    top of the rebuilt rows (the rebuild did not see its uncommitted messages): safe while campaigns are sending.
    """
    if db.engine.dialect.name == "postgresql":
        names = ", ".join(t.name for t in (CampaignRollup.__table__, CampaignHourlyRollup.__table__,
                                           HourlyRollup.__table__))
        db.session.execute(text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
    classified = classify_unclassified()
    _rebuild_campaigns()
    _rebuild_hourly(CampaignHourlyRollup.__table__, ["campaign_id", "hour"], _events(False))
    _rebuild_hourly(HourlyRollup.__table__, ["hour", "platform", "source"], _events(True))
    return classified


def rebuild() -> dict[str, int]:
    """Recompute every rollup from the raw message rows (one transaction); returns the rows written."""
    classified = recompute()
    db.session.commit()
    return {
        "classified": classified,
        **{table.name: db.session.scalar(select(func.count()).select_from(table)) or 0
           for table in (CampaignRollup.__table__, CampaignHourlyRollup.__table__, HourlyRollup.__table__)},
    }
