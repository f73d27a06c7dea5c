"""Audience resolution: one query for counting and for materialising messages, so they never disagree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Select,
    String,
    and_,
    cast,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from webadmin.extensions import db
from webadmin.models.app import PLATFORMS
from webadmin.models.audience import Device, GroupMember, Subscriber
from webadmin.models.message import Message, MessageState
from webadmin.models.types import UTCDateTime, utcnow
from webadmin.services import ServiceError

AUDIENCE_TYPES = ("all", "keys", "groups", "platforms")
MAX_KEYS = 100_000


@dataclass(frozen=True)
class AudienceSpec:
    """Who a campaign targets; `platforms` also filters keys and groups."""

    type: str = "all"
    keys: tuple[str, ...] = ()
    group_ids: tuple[int, ...] = ()
    platforms: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AudienceSpec:
        """Validate a stored or submitted spec; ServiceError on anything odd."""
        kind = raw.get("type", "all")
        if kind not in AUDIENCE_TYPES:
            raise ServiceError(f"Unknown audience type {kind!r}.", field="audience")
        platforms = tuple(dict.fromkeys(raw.get("platforms") or ()))
        if any(p not in PLATFORMS for p in platforms):
            raise ServiceError("Platforms must be android, ios or web.", field="platforms")
        keys = tuple(dict.fromkeys(str(k).strip().lower() for k in raw.get("keys") or () if str(k).strip()))
        group_ids = tuple(dict.fromkeys(int(g) for g in raw.get("group_ids") or ()))
        spec = cls(kind, keys, group_ids, platforms)
        spec.check()
        return spec

    def check(self) -> None:
        """Each type needs its own targets."""
        if self.type == "keys" and not self.keys:
            raise ServiceError("Paste at least one subscriber key.", field="keys")
        if len(self.keys) > MAX_KEYS:
            raise ServiceError(f"At most {MAX_KEYS:,} subscriber keys per campaign.", field="keys")
        if self.type == "groups" and not self.group_ids:
            raise ServiceError("Choose at least one group.", field="groups")
        if self.type == "platforms" and not self.platforms:
            raise ServiceError("Choose at least one platform.", field="platforms")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form stored on the campaign."""
        return {
            "type": self.type,
            "keys": list(self.keys),
            "group_ids": list(self.group_ids),
            "platforms": list(self.platforms),
        }


def _json_values(values: list[Any]) -> Any:
    """A one-column table of the given values from a single bound JSON parameter (any list size)."""
    if db.engine.dialect.name == "postgresql":
        return func.jsonb_array_elements_text(literal(values, JSONB)).table_valued("value")
    return func.json_each(literal(json.dumps(values))).table_valued("value")


def _newest_device_only(d: Any, platforms: tuple[str, ...]) -> ColumnElement[bool]:
    """Loymax "only the most recently registered device": anonymous devices are kept as they are."""
    d2 = Device.__table__.alias("newest")
    newest = (
        select(d2.c.id)
        .where(d2.c.subscriber_id == d.c.subscriber_id, d2.c.app_id == d.c.app_id, d2.c.status == "active")
        .order_by(d2.c.registered_at.desc(), d2.c.id.desc())
        .limit(1)
    )
    if platforms:
        newest = newest.where(d2.c.platform.in_(platforms))
    return or_(d.c.subscriber_id.is_(None), d.c.id == newest.scalar_subquery())


def _target_filter(spec: AudienceSpec, d: Any, s: Any) -> ColumnElement[bool]:
    """The part of the WHERE clause that depends on the audience type."""
    if spec.type == "keys":
        keys = _json_values(list(spec.keys))
        return s.c.subscriber_key.in_(select(cast(keys.c.value, String)))
    if spec.type == "groups":
        gm = GroupMember.__table__
        return exists(
            select(gm.c.subscriber_id).where(
                gm.c.subscriber_id == d.c.subscriber_id, gm.c.group_id.in_(spec.group_ids)
            )
        )
    return true()


def audience_select(app_id: int, spec: AudienceSpec, device_selection: str = "all") -> Select:
    """(device_id, recipient) of every device the campaign would reach, without duplicates.

    Skips invalid and unsubscribed devices and opted-out subscribers.
    """
    d, s = Device.__table__, Subscriber.__table__
    conditions = [
        d.c.app_id == app_id,
        d.c.status == "active",
        or_(d.c.subscriber_id.is_(None), s.c.opted_out.is_(False)),
        _target_filter(spec, d, s),
    ]
    if spec.type in ("keys", "groups"):
        conditions.append(d.c.subscriber_id.is_not(None))
    if spec.platforms:
        conditions.append(d.c.platform.in_(spec.platforms))
    if device_selection == "newest":
        conditions.append(_newest_device_only(d, spec.platforms))
    return (
        select(d.c.id.label("device_id"), s.c.subscriber_key.label("recipient"))
        .select_from(d.outerjoin(s, s.c.id == d.c.subscriber_id))
        .where(and_(*conditions))
    )


def count_audience(app_id: int, spec: AudienceSpec, device_selection: str = "all") -> int:
    """How many messages a campaign with this audience would create (the compose page's count)."""
    query = audience_select(app_id, spec, device_selection).subquery()
    return db.session.scalar(select(func.count()).select_from(query)) or 0


def _uuid_sql() -> Any:
    """A random version-4 UUID per row, generated by the database itself."""
    if db.engine.dialect.name == "postgresql":
        return cast(func.gen_random_uuid(), String)
    # One random() per field, each used once: an expression referenced twice is evaluated twice per row, and
    # five hex(randomblob(16)) per row were most of the cost of materialising (~5 µs of ~10 µs a message).
    fields = [func.random().op("&")(literal_column(str(mask))) for mask in (0xFFFFFFFF, 0xFFFF, 0xFFF, 3, 0xFFF)]
    fields[3] = fields[3] + 8  # the variant nibble: 8, 9, a or b
    return func.printf("%08x-%04x-4%03x-%x%03x-%012x", *fields, func.random().op("&")(literal_column(str(2**48 - 1))))


# SQLite page cache (KiB) while one statement writes a whole audience; the connection's own size comes back after.
BULK_CACHE_KIB = 64 * 1024


@contextmanager
def _bulk_write_cache() -> Iterator[None]:
    """SQLite: a larger page cache for one bulk statement.

    Every message adds an entry at a random place of the uuid and recipient indexes; with the default 2 MiB cache
    the same index pages are evicted and read back again and again (a third of the CPU of materialising 1M rows).
    """
    if db.engine.dialect.name != "sqlite":
        yield
        return
    previous = db.session.execute(text("PRAGMA cache_size")).scalar()
    db.session.execute(text(f"PRAGMA cache_size = -{BULK_CACHE_KIB}"))
    try:
        yield
    finally:
        db.session.execute(text(f"PRAGMA cache_size = {int(previous)}"))


def materialize(campaign_id: int, app_id: int, spec: AudienceSpec, device_selection: str, tag: str | None) -> int:
    """Create one WAITING message per target device with a single INSERT … SELECT; returns the count."""
    audience = audience_select(app_id, spec, device_selection).subquery()
    m = Message.__table__
    now = literal(utcnow(), UTCDateTime)
    rows = select(
        _uuid_sql(),
        literal(campaign_id),
        audience.c.device_id,
        audience.c.recipient,
        literal(MessageState.WAITING.value),
        literal(0),
        literal(True),
        now,
        literal(tag, String),
    )
    columns = ["uuid", "campaign_id", "device_id", "recipient", "state", "number_of_send_attempts",
               "retry_sending", "created_at", "tag"]
    # SQLAlchemy reports an INSERT's rowcount only when asked to preserve it.
    statement = insert(m).from_select(columns, rows).execution_options(preserve_rowcount=True)
    with _bulk_write_cache():
        created = db.session.execute(statement).rowcount
    if db.engine.dialect.name == "postgresql" and created:
        # Fresh statistics for the rows just added (ANALYZE counts our own uncommitted inserts): with the stale
        # ones (say, from when the table was small or all sent) the planner believes ix_messages_pending is nearly
        # empty and scans all of it for every batch the workers record, instead of looking the batch's ids up.
        db.session.execute(text(f"ANALYZE {m.name}"))
    return created
