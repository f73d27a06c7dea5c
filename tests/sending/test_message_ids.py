"""Message ids past 2**31: materialise, send, record provider ids, relate objects and page a subscriber's pushes."""

from __future__ import annotations

from sqlalchemy import select, text

from tests.factories import make_device, make_subscriber
from webadmin import sending
from webadmin.extensions import db
from webadmin.models.message import Message, MessageRelatedObject
from webadmin.sending.engine import dispatch
from webadmin.services import campaigns, subscriber_messages
from webadmin.services.campaigns import CampaignDraft

PAST_32_BITS = 2**31 + 1_000


def _next_message_id(value: int) -> None:
    """Make the next message id `value` (PostgreSQL: the sequence; SQLite: max(rowid) + 1)."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("SELECT setval(pg_get_serial_sequence('messages', 'id'), :v, false)"), {"v": value})
    else:
        db.session.execute(text("INSERT INTO messages (id, uuid, state, number_of_send_attempts, retry_sending, "
                                "created_at) VALUES (:id, 'placeholder', 'SENT', 1, 0, '2026-01-01')"),
                           {"id": value - 1})
    db.session.commit()


def test_messages_past_32_bit_ids_are_sent_and_recorded(push_app, scripted_channel, manual_dispatch):
    scripted_channel("android")
    ada = make_subscriber("ada@example.com")
    for n in range(3):
        make_device(push_app, ada, "android", token=f"ok-{n}")
    _next_message_id(PAST_32_BITS)
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Big ids"), actor="test")
    db.session.commit()
    assert campaigns.start(campaign, actor="test") == 3
    dispatch(campaign.id)
    db.session.expire_all()
    rows = db.session.scalars(select(Message).where(Message.campaign_id == campaign.id).order_by(Message.id)).all()
    assert [m.id for m in rows] == [PAST_32_BITS, PAST_32_BITS + 1, PAST_32_BITS + 2]
    # The provider ids are written by id from one parameter (PostgreSQL: an array of the ids).
    assert [(m.state, m.provider_message_id) for m in rows] == [("SENT", f"scripted-{m.uuid}") for m in rows]

    # The subscriber page's keyset cursor takes such an id.
    assert subscriber_messages.cursor(str(PAST_32_BITS + 2)) == PAST_32_BITS + 2
    page = subscriber_messages.recent_messages(ada, before=PAST_32_BITS + 2)
    assert [r.id for r in page.rows] == [PAST_32_BITS + 1, PAST_32_BITS]
    assert subscriber_messages.cursor(str(2**63)) is None  # past any id: no cursor rather than a database error


def test_related_objects_reference_messages_past_32_bit_ids(push_app):
    make_device(push_app, make_subscriber("bob@example.com"), "android")
    _next_message_id(PAST_32_BITS)
    (message,) = sending.send("bob@example.com", "Your offer", related_objects=[("offer", 7)])
    assert message.id == PAST_32_BITS
    related = db.session.execute(select(MessageRelatedObject.message_id, MessageRelatedObject.object_id)).all()
    assert related == [(PAST_32_BITS, "7")]
