"""Device events (received, opened): idempotent, counted once per message; the campaign counter and the analytics
rollups move in the same transaction.

This is the events API's hot path (an app reports each open as it happens), so it runs fixed SQL on the DBAPI
connection of a `driver_sql.Transaction` (the session's, inside its transaction, when one is open; else the
request's pooled connection) instead of SQLAlchemy statements and the session: their machinery cost more than the
statements themselves (the session's connection and commit alone were a fifth of a report's CPU). On PostgreSQL
a batch is one statement (a CTE: look up, mark, count, bump, three rollup upserts) whose text does not depend on
the batch, so psycopg prepares it once per connection, committed asynchronously (below); on SQLite, which has no
data-modifying CTEs, it is a few short statements, all reads before the first write, so the database's single
write lock is held as briefly as possible.
"""

from __future__ import annotations

import functools
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from webadmin.driver_sql import Transaction, stored_utc, time_value
from webadmin.models.analytics import HOURLY_COUNTS
from webadmin.models.types import utcnow
from webadmin.services.rollups import CAMPAIGN_COUNTS, UNKNOWN_PLATFORM, hour_of

EVENT_TYPES = ("received", "opened")


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One report from a device about one message: by the message's UUID, or (bulk routes, whose pushes carry
    only the campaign's UUID) by the campaign's UUID and the device's token."""

    message_uuid: str | None
    type: str
    at: datetime | None = None
    campaign_uuid: str | None = None
    device_token: str | None = None


@dataclass
class EventReport:
    """What a batch of events did."""

    counted: int = 0
    duplicates: int = 0
    unknown: list[str] = field(default_factory=list)
    unknown_devices: list[tuple[str, str]] = field(default_factory=list)  # (campaign UUID, device token)


@dataclass(frozen=True, slots=True)
class _Target:
    """A reported message: its ids, where it counts in the rollups, and the earliest time an event can have."""

    id: int
    campaign_id: int | None
    platform: str | None
    source: str
    earliest: datetime


def record_events(events: list[DeviceEvent], *, app_id: int | None) -> EventReport:
    """Record events of this app's messages (any app's when app_id is None); an open (or a receipt) counts once per
    message however often it is reported, also across requests and concurrently."""
    report = EventReport()
    if events:
        tx = Transaction()
        raw = tx.raw.driver_connection
        if tx.sqlite:
            _record_sqlite(raw, events, app_id, report)
        else:
            _record_postgresql(raw, events, app_id, report)
        tx.commit()
    return report


def _unknown(event: DeviceEvent, report: EventReport) -> None:
    """List an event whose message is not (this app's)."""
    if event.message_uuid is not None:
        report.unknown.append(event.message_uuid)
    else:
        report.unknown_devices.append((event.campaign_uuid or "", event.device_token or ""))


# ------------------------------------------------------------------------------------------------ PostgreSQL

_COUNTS = {kind: f"count(*) FILTER (WHERE kind = '{kind}')" for kind in EVENT_TYPES}
_ROLLUP_VALUES = {name: _COUNTS.get(name, "0") for name in CAMPAIGN_COUNTS + HOURLY_COUNTS}


def _rollup_upsert(table: str, keys: dict[str, str], counts: tuple[str, ...]) -> str:
    """INSERT … SELECT the counted events grouped by the table's keys, in key order (concurrent batches lock the
    rows in the same order), adding to existing rows."""
    names = ", ".join([*keys, *counts])
    selected = ", ".join([*keys.values(), *(_ROLLUP_VALUES[name] for name in counts)])
    positions = ", ".join(str(i + 1) for i in range(len(keys)))
    update = ", ".join(f"{kind} = {table}.{kind} + excluded.{kind}" for kind in EVENT_TYPES)
    return (f"INSERT INTO {table} ({names}) SELECT {selected} FROM counted WHERE campaign_id IS NOT NULL "
            f"GROUP BY {positions} ORDER BY {positions} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {update}")


_HOUR = "date_trunc('hour', at, 'UTC')"  # as rollups.rebuild cuts hours
# One statement per batch. `firsts` keeps one report per message and type (the first in the batch); `prior` locks
# the messages in id order and reads their state after any concurrent writer committed (the UPDATE's RETURNING
# shows new values only), so `marked` knows which of the two timestamps this statement set: those are counted.
_RECORD_PG = f"""
WITH ev AS (
    SELECT * FROM unnest(%(ord)s::int[], %(uuid)s::text[], %(campaign)s::text[], %(token)s::text[],
                         %(kind)s::text[], %(at)s::timestamptz[]) AS e(ord, uuid, campaign, token, kind, at)
), hit AS (
    SELECT e.ord, e.kind, e.at, m.id, m.campaign_id, coalesce(m.sent_at, m.created_at) AS earliest,
           d.platform, coalesce(c.source, 'adhoc') AS source
    FROM ev e JOIN messages m ON m.uuid = e.uuid
    LEFT JOIN campaigns c ON c.id = m.campaign_id LEFT JOIN devices d ON d.id = m.device_id
    WHERE e.uuid IS NOT NULL AND (%(app)s::int IS NULL OR c.app_id = %(app)s::int)
    UNION ALL
    SELECT e.ord, e.kind, e.at, m.id, m.campaign_id, coalesce(m.sent_at, m.created_at), d.platform,
           coalesce(c.source, 'adhoc')
    FROM ev e JOIN campaigns c ON c.uuid = e.campaign
    JOIN devices d ON d.app_id = c.app_id AND d.token = e.token
    JOIN messages m ON m.campaign_id = c.id AND m.device_id = d.id
    WHERE e.uuid IS NULL AND (%(app)s::int IS NULL OR c.app_id = %(app)s::int)
), firsts AS (
    SELECT DISTINCT ON (id, kind) id, kind, campaign_id, platform, source,
           least(greatest(coalesce(at, %(now)s::timestamptz), earliest), %(now)s::timestamptz) AS at
    FROM hit ORDER BY id, kind, ord
), wanted AS (
    SELECT id, campaign_id, platform, source, max(at) FILTER (WHERE kind = 'opened') AS opened,
           max(at) FILTER (WHERE kind = 'received') AS received
    FROM firsts GROUP BY id, campaign_id, platform, source
), prior AS (
    SELECT id, opened_at, received_at FROM messages WHERE id IN (SELECT id FROM wanted) ORDER BY id FOR UPDATE
), marked AS (
    UPDATE messages m SET opened_at = coalesce(m.opened_at, w.opened), received_at = coalesce(m.received_at, w.received)
    FROM wanted w JOIN prior o ON o.id = w.id
    WHERE m.id = w.id
      AND ((o.opened_at IS NULL AND w.opened IS NOT NULL) OR (o.received_at IS NULL AND w.received IS NOT NULL))
    RETURNING m.id, w.campaign_id, w.platform, w.source, CASE WHEN o.opened_at IS NULL THEN w.opened END AS opened,
              CASE WHEN o.received_at IS NULL THEN w.received END AS received
), counted AS (
    SELECT campaign_id, platform, source, 'opened' AS kind, opened AS at FROM marked WHERE opened IS NOT NULL
    UNION ALL
    SELECT campaign_id, platform, source, 'received', received FROM marked WHERE received IS NOT NULL
), locked AS (
    SELECT c.id, x.n FROM campaigns c
    JOIN (SELECT campaign_id, count(*) AS n FROM counted WHERE kind = 'opened' AND campaign_id IS NOT NULL
          GROUP BY campaign_id) x ON x.campaign_id = c.id
    ORDER BY c.id FOR UPDATE OF c
), bump AS (
    UPDATE campaigns c SET opened = c.opened + l.n FROM locked l WHERE c.id = l.id
), per_campaign AS (
    {_rollup_upsert("campaign_rollups", {"campaign_id": "campaign_id"}, CAMPAIGN_COUNTS)}
), curve AS (
    {_rollup_upsert("campaign_hourly_rollups", {"campaign_id": "campaign_id", "hour": _HOUR}, HOURLY_COUNTS)}
), traffic AS (
    {_rollup_upsert("hourly_rollups", {"hour": _HOUR, "platform": f"coalesce(platform, '{UNKNOWN_PLATFORM}')",
                                        "source": "source"}, HOURLY_COUNTS)}
)
SELECT (SELECT count(*) FROM counted), (SELECT count(*) FROM hit),
       ARRAY(SELECT ord FROM ev WHERE ord NOT IN (SELECT ord FROM hit) ORDER BY ord)
"""


def _record_postgresql(raw: Any, events: list[DeviceEvent], app_id: int | None, report: EventReport) -> None:
    """The batch as one statement (see _RECORD_PG).

    Planning it costs more than running it (EXPLAIN ANALYZE: 5.8 ms planning, 1.5 ms execution) and a prepared
    statement may still get custom plans, planned per execution: a generic plan is forced for this transaction
    only (measured: 1.7–6.0 ms instead of 3.5–9.3 ms per batch + commit), sent in the same round trip (pipeline).

    The commit does not wait for the WAL to reach the disk (`synchronous_commit = off`, this transaction only).
    Every report of one campaign updates the same counter rows, which stay locked until commit: waiting for the
    flush there serialised the reports on the disk (events 336 → 543 req/s, docs/benchmarks.md). A crash of the
    database server can lose the last fraction of a second of reports that were answered 200; the message rows
    and the counters are lost together, so the counts stay equal to the rows (what SQLite's `synchronous=NORMAL`
    in WAL mode also allows on a power cut). Nothing else the product writes is committed this way.
    """
    with raw.pipeline():
        raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        raw.execute("SET LOCAL synchronous_commit = off")
        cursor = raw.execute(_RECORD_PG, {
            "ord": list(range(len(events))),
            "uuid": [e.message_uuid for e in events],
            "campaign": [e.campaign_uuid for e in events],
            "token": [e.device_token for e in events],
            "kind": [e.type for e in events],
            "at": [e.at for e in events],
            "app": app_id,
            "now": utcnow(),
        })
    counted, resolved, unknown = cursor.fetchone()
    report.counted, report.duplicates = counted, resolved - counted
    for index in unknown:
        _unknown(events[index], report)


# ---------------------------------------------------------------------------------------------------- SQLite

_TARGET_COLUMNS = "m.id, m.campaign_id, m.sent_at, m.created_at, d.platform, c.source, c.app_id"
# The app is checked on the rows, not in the WHERE clause: given `campaigns.app_id = ?`, SQLite (without
# statistics) starts from the app's campaigns and walks all their messages instead of looking the UUIDs up.
_BY_UUID = f"""SELECT m.uuid, {_TARGET_COLUMNS}
FROM messages m LEFT JOIN campaigns c ON c.id = m.campaign_id LEFT JOIN devices d ON d.id = m.device_id
WHERE m.uuid IN (SELECT value FROM json_each(?))"""
# A pair resolves through the unique indexes: campaign uuid, the campaign app's device (app_id, token), the message
# (campaign_id, device_id). A token is unique per app only, so the device must be of the campaign's app.
_BY_PAIR = f"""SELECT p.campaign, p.token, {_TARGET_COLUMNS}
FROM (SELECT json_extract(value, '$[0]') AS campaign, json_extract(value, '$[1]') AS token FROM json_each(?)) p
JOIN campaigns c ON c.uuid = p.campaign JOIN devices d ON d.app_id = c.app_id AND d.token = p.token
JOIN messages m ON m.campaign_id = c.id AND m.device_id = d.id"""
# The IS NULL guard makes a report idempotent across requests too: of two racing reports, one changes the row. An
# event is no change of the message's state, so changed_at stays (final failures are counted by it).
_MARK = {kind: f"UPDATE messages SET {kind}_at = ? WHERE id IN (SELECT value FROM json_each(?)) AND {kind}_at IS NULL "
               "RETURNING id" for kind in EVENT_TYPES}
_BUMP = "UPDATE campaigns SET opened = opened + ? WHERE id = ?"


def _upsert_sql(table: str, keys: tuple[str, ...], counts: tuple[str, ...]) -> str:
    """One row's upsert adding opens and receipts (the other counters 0)."""
    values = ", ".join(["?"] * len(keys) + ["?" if name in EVENT_TYPES else "0" for name in counts])
    update = ", ".join(f"{kind} = {kind} + excluded.{kind}" for kind in EVENT_TYPES)
    return (f"INSERT INTO {table} ({', '.join(keys + counts)}) VALUES ({values}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {update}")


_UPSERTS = (
    _upsert_sql("campaign_rollups", ("campaign_id",), CAMPAIGN_COUNTS),
    _upsert_sql("campaign_hourly_rollups", ("campaign_id", "hour"), HOURLY_COUNTS),
    _upsert_sql("hourly_rollups", ("hour", "platform", "source"), HOURLY_COUNTS),
)


def _record_sqlite(raw: Any, events: list[DeviceEvent], app_id: int | None, report: EventReport) -> None:
    """Look up, then (one UPDATE per type and time, the counter, the rollups) with nothing in between."""
    bind, result = functools.partial(stored_utc, sqlite=True), time_value
    uuids = sorted({e.message_uuid for e in events if e.message_uuid is not None})
    pairs = sorted({(e.campaign_uuid, e.device_token) for e in events if e.message_uuid is None})

    def targets(sql: str, keys: list[Any], width: int) -> dict[Any, _Target]:
        found = {}
        for row in raw.execute(sql, (json.dumps(keys),)) if keys else ():
            if app_id is None or row[-1] == app_id:
                key = row[0] if width == 1 else tuple(row[:width])
                found[key] = _Target(row[width], row[width + 1], row[width + 4], row[width + 5] or "adhoc",
                                     result(row[width + 2] or row[width + 3]))
        return found

    by_uuid, by_pair = targets(_BY_UUID, uuids, 1), targets(_BY_PAIR, [list(p) for p in pairs], 2)
    resolved = []
    for event in events:
        target = (by_uuid.get(event.message_uuid) if event.message_uuid is not None
                  else by_pair.get((event.campaign_uuid, event.device_token)))
        if target is None:
            _unknown(event, report)
        else:
            resolved.append((event, target))
    groups = sorted(_first_reports(resolved, report, utcnow()).items())
    counted: list[tuple[str, datetime, _Target]] = []
    for (kind, at), group in groups:  # the first write takes the write lock: everything is prepared by now
        by_id = {t.id: t for t in group}
        changed = [row[0] for row in raw.execute(_MARK[kind], (bind(at), json.dumps(sorted(by_id))))]
        report.counted += len(changed)
        report.duplicates += len(group) - len(changed)
        counted.extend((kind, at, by_id[i]) for i in changed)
    _write_counts(raw, bind, counted)


def _write_counts(raw: Any, bind: Any, counted: list[tuple[str, datetime, _Target]]) -> None:
    """The campaigns' open counters and the three rollups, one executemany each, rows in key order."""
    per_campaign: dict[tuple[Any, ...], Counter[str]] = defaultdict(Counter)
    curve: dict[tuple[Any, ...], Counter[str]] = defaultdict(Counter)
    traffic: dict[tuple[Any, ...], Counter[str]] = defaultdict(Counter)
    for kind, at, target in counted:
        if target.campaign_id is None:
            continue
        hour = bind(hour_of(at))
        per_campaign[(target.campaign_id,)][kind] += 1
        curve[(target.campaign_id, hour)][kind] += 1
        traffic[(hour, target.platform or UNKNOWN_PLATFORM, target.source)][kind] += 1
    opened = [(counts["opened"], key[0]) for key, counts in sorted(per_campaign.items()) if counts["opened"]]
    if opened:
        raw.executemany(_BUMP, opened)
    for sql, rows in zip(_UPSERTS, (per_campaign, curve, traffic), strict=True):
        if rows:
            raw.executemany(sql, [(*key, counts["opened"], counts["received"]) for key, counts in sorted(rows.items())])


def _first_reports(resolved: list[tuple[DeviceEvent, _Target]], report: EventReport,
                   now: datetime) -> dict[tuple[str, datetime], list[_Target]]:
    """(type, when) → messages, one report per message and type; a device clock is trusted only between the
    send and now. Later reports of the same message in the batch (by either form) are duplicates."""
    seen: set[tuple[str, int]] = set()
    groups: dict[tuple[str, datetime], list[_Target]] = defaultdict(list)
    for event, target in resolved:
        if (event.type, target.id) in seen:
            report.duplicates += 1
            continue
        seen.add((event.type, target.id))
        at = min(max(event.at or now, target.earliest), now)
        groups[event.type, at].append(target)
    return groups
