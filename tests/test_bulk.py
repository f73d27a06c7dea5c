"""services/bulk.py: plain rows written outside SQLAlchemy's type processing read back exactly as the ORM wrote
them (UTC datetimes, JSON, booleans), on SQLite and PostgreSQL; a naive datetime is refused before anything is
written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from webadmin.extensions import db
from webadmin.models.audience import Subscriber
from webadmin.services import bulk


def test_plain_rows_read_back_like_orm_rows(app):
    when = datetime(2026, 12, 4, 17, 30, 5, 123456, tzinfo=UTC)
    warsaw = when.astimezone(timezone(timedelta(hours=1)))  # the same instant in another zone is stored as UTC
    columns = ["subscriber_key", "display_name", "attributes", "opted_out", "created_at", "updated_at", "phone"]
    written = bulk.insert_rows(Subscriber.__table__, columns, [
        ("a@example.com", "Ann", {"tier": "gold", "points": 10}, True, when, warsaw, None),
        ("b@example.com", "Ben", {}, False, when, when, "+48500100200"),
    ])
    db.session.commit()
    assert written == 2
    a, b = db.session.scalars(select(Subscriber).order_by(Subscriber.subscriber_key)).all()
    assert a.attributes == {"tier": "gold", "points": 10} and a.opted_out is True and a.phone is None
    assert a.created_at == when and a.updated_at == when and a.created_at.tzinfo is not None
    assert b.opted_out is False and b.attributes == {} and b.phone == "+48500100200"
    # Comparisons in SQL see the same instants as ORM-written rows would.
    assert db.session.scalar(select(func.count()).where(Subscriber.created_at >= when)) == 2
    assert db.session.scalar(select(func.count()).where(Subscriber.created_at > when)) == 0


def test_a_naive_datetime_is_refused_and_nothing_is_written(app):
    with pytest.raises(ValueError, match="naive"):
        bulk.insert_rows(Subscriber.__table__, ["subscriber_key", "created_at", "updated_at"], [
            ("a@example.com", datetime(2026, 12, 4, tzinfo=UTC), datetime(2026, 12, 4, tzinfo=UTC)),
            ("b@example.com", datetime(2026, 12, 4), datetime(2026, 12, 4)),
        ])
    db.session.rollback()
    assert db.session.scalar(select(func.count(Subscriber.id))) == 0
