"""Device events (received, opened): idempotent, counted once per message; the campaign counter and the analytics
rollups move in the same transaction.

This is the events API's hot path (an app reports each open as it happens), so it runs fixed SQL on the DBAPI
connection of a `driver_sql.Transaction` (the session's, inside its transaction, when one is open; else the
request's own) instead of SQLAlchemy statements and the session: their machinery cost more than the
statements themselves (the session's connection and commit alone were a fifth of a report's CPU). On PostgreSQL
a batch is one statement (a CTE: look up, mark, count, bump, three rollup upserts) whose text does not depend on
the batch, so psycopg prepares it once per connection, committed asynchronously (below); on SQLite, which has no
data-modifying CTEs, it is one UPDATE … FROM … RETURNING per type that looks the messages up, marks them and
returns what the counters need, then one statement per counter table; only reports that marked nothing (repeats,
unknown messages) are looked up again to tell the two apart. A separate lookup before the write, then the
UPDATE, cost more in Python and in SQLite than the write lock it kept free (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
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


def record_events(events: list[DeviceEvent], *, app_id: int | None) -> EventReport:
    """Record events of this app's messages (any app's when app_id is None); an open (or a receipt) counts once per
    message however often it is reported, also across requests and concurrently."""
    report = EventReport()
    if events:
        tx = Transaction()
        raw = tx.driver
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

# Only for the reports that marked nothing (repeats and unknown messages): which of them name an existing message,
# and its campaign's app. The app is checked on the rows, not in the WHERE clause: given `campaigns.app_id = ?`,
# SQLite (without statistics) starts from the app's campaigns and walks all their messages instead of looking the
# UUIDs up.
_BY_UUID = """SELECT m.uuid, c.app_id FROM messages m LEFT JOIN campaigns c ON c.id = m.campaign_id
WHERE m.uuid IN (SELECT value FROM json_each(?))"""
# A pair resolves through the unique indexes: campaign uuid, the campaign app's device (app_id, token), the message
# (campaign_id, device_id). A token is unique per app only, so the device must be of the campaign's app.
_BY_PAIR = """SELECT p.campaign, p.token, c.app_id
FROM (SELECT json_extract(value, '$[0]') AS campaign, json_extract(value, '$[1]') AS token FROM json_each(?)) p
JOIN campaigns c ON c.uuid = p.campaign JOIN devices d ON d.app_id = c.app_id AND d.token = p.token
JOIN messages m ON m.campaign_id = c.id AND m.device_id = d.id"""

# One UPDATE per type and form looks the messages up, marks them and returns what the counters need. The IS NULL
# guard makes a report idempotent across requests too: of two racing reports, one changes the row. A device clock
# is trusted only between the send and now (timestamps are text in one format here, so min/max order them as
# times). An event is no change of the message's state, so changed_at stays (final failures are counted by it).
_SET = "{kind}_at = min(max(coalesce(e.at, :now), coalesce(messages.sent_at, messages.created_at)), :now)"
_RETURNING = ("messages.campaign_id, messages.{kind}_at, (SELECT platform FROM devices WHERE id = messages.device_id), "
              "(SELECT source FROM campaigns WHERE id = messages.campaign_id)")
_MARK_BY_UUID = {kind: f"""UPDATE messages SET {_SET.format(kind=kind)}
FROM (SELECT json_extract(value, '$[0]') AS uuid, json_extract(value, '$[1]') AS at FROM json_each(:events)) AS e
WHERE messages.uuid = e.uuid AND messages.{kind}_at IS NULL
  AND (:app IS NULL OR (SELECT app_id FROM campaigns WHERE id = messages.campaign_id) = :app)
RETURNING {_RETURNING.format(kind=kind)}, messages.uuid""" for kind in EVENT_TYPES}
_MARK_BY_PAIR = {kind: f"""UPDATE messages SET {_SET.format(kind=kind)}
FROM (SELECT json_extract(value, '$[0]') AS campaign, json_extract(value, '$[1]') AS token,
             json_extract(value, '$[2]') AS at FROM json_each(:events)) AS e
JOIN campaigns c ON c.uuid = e.campaign JOIN devices d ON d.app_id = c.app_id AND d.token = e.token
WHERE messages.campaign_id = c.id AND messages.device_id = d.id AND messages.{kind}_at IS NULL
  AND (:app IS NULL OR c.app_id = :app)
RETURNING {_RETURNING.format(kind=kind)}, (SELECT uuid FROM campaigns WHERE id = messages.campaign_id),
          (SELECT token FROM devices WHERE id = messages.device_id)""" for kind in EVENT_TYPES}
_BUMP = "UPDATE campaigns SET opened = opened + ? WHERE id = ?"
_FLOOR = datetime(1970, 1, 1, tzinfo=UTC)  # before any message


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


def _key(event: DeviceEvent) -> tuple[str, Any]:
    """What an event reports: (its type, its message UUID, or its (campaign UUID, device token))."""
    if event.message_uuid is not None:
        return event.type, event.message_uuid
    return event.type, (event.campaign_uuid, event.device_token)


def _record_sqlite(raw: Any, events: list[DeviceEvent], app_id: int | None, report: EventReport) -> None:
    """Mark (one UPDATE per type and form), then the counter and the rollups, then sort out what marked nothing.

    The first report of a message and type in the batch gives the time; later ones are duplicates. The message
    form is marked before the campaign + device form, so a message named both ways in one batch takes the time
    of its `message` report (PostgreSQL: of the first report in the batch; the counts are the same)."""
    bind = functools.partial(stored_utc, sqlite=True)
    moment = utcnow()
    now = bind(moment)

    def device_time(at: datetime | None) -> str | None:
        """The device's time as stored text, cut to [1970, now] first (SQL then cuts it to the send): a time at
        either end of the calendar has no UTC text (0001-01-01T00:00+01:00 is in year 0 in UTC)."""
        return None if at is None else bind(min(max(at, _FLOOR), moment))

    firsts: dict[tuple[str, Any], DeviceEvent] = {}
    for event in events:
        firsts.setdefault(_key(event), event)
    marked: set[tuple[str, Any]] = set()
    counted: list[tuple[str, Any, str, str | None, str]] = []  # (kind, campaign id, time text, platform, source)
    for kind in EVENT_TYPES:
        by_uuid = [[e.message_uuid, device_time(e.at)] for (k, _), e in firsts.items()
                   if k == kind and e.message_uuid is not None]
        by_pair = [[e.campaign_uuid, e.device_token, device_time(e.at)] for (k, _), e in firsts.items()
                   if k == kind and e.message_uuid is None]
        for sql, rows in ((_MARK_BY_UUID[kind], by_uuid), (_MARK_BY_PAIR[kind], by_pair)):
            if rows:
                for campaign_id, at, platform, source, *named in raw.execute(
                        sql, {"events": json.dumps(rows), "now": now, "app": app_id}):
                    marked.add((kind, named[0] if len(named) == 1 else tuple(named)))
                    if campaign_id is not None:
                        counted.append((kind, campaign_id, at, platform, source or "adhoc"))
    report.counted = len(marked)
    _write_counts(raw, bind, counted)
    if len(marked) < len(events):  # some reports marked nothing: repeats, or unknown messages
        _sort_out(raw, events, app_id, marked, report)


def _sort_out(raw: Any, events: list[DeviceEvent], app_id: int | None, marked: set[tuple[str, Any]],
              report: EventReport) -> None:
    """Each report that marked nothing is a duplicate if it names an existing message (of this app), else unknown."""
    named = {key[1] for key in map(_key, events) if key not in marked}
    uuids = sorted(name for name in named if isinstance(name, str))
    pairs = sorted(list(name) for name in named if not isinstance(name, str))
    known: set[Any] = set()
    for row in raw.execute(_BY_UUID, (json.dumps(uuids),)) if uuids else ():
        if app_id is None or row[1] == app_id:
            known.add(row[0])
    for row in raw.execute(_BY_PAIR, (json.dumps(pairs),)) if pairs else ():
        if app_id is None or row[2] == app_id:
            known.add((row[0], row[1]))
    first = set(marked)
    for event in events:
        key = _key(event)
        if key in first:
            first.discard(key)  # the report that counted
        elif key in marked or key[1] in known:
            report.duplicates += 1
        else:
            _unknown(event, report)


def _write_counts(raw: Any, bind: Any, counted: list[tuple[str, Any, str, str | None, str]]) -> None:
    """The campaigns' open counters and the three rollups, one executemany each, rows in key order."""
    per_campaign: dict[tuple[Any, ...], list[int]] = {}
    curve: dict[tuple[Any, ...], list[int]] = {}
    traffic: dict[tuple[Any, ...], list[int]] = {}
    for kind, campaign_id, at, platform, source in counted:
        hour = bind(hour_of(time_value(at)))
        column = 0 if kind == "opened" else 1
        for rows, key in ((per_campaign, (campaign_id,)), (curve, (campaign_id, hour)),
                          (traffic, (hour, platform or UNKNOWN_PLATFORM, source))):
            rows.setdefault(key, [0, 0])[column] += 1
    opened = [(counts[0], key[0]) for key, counts in sorted(per_campaign.items()) if counts[0]]
    if opened:
        raw.executemany(_BUMP, opened)
    for sql, rows in zip(_UPSERTS, (per_campaign, curve, traffic), strict=True):
        if rows:
            raw.executemany(sql, [(*key, *counts) for key, counts in sorted(rows.items())])
