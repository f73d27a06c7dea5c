"""pymess parity: `send(recipient, content, …)` and `send_template(recipient, slug, context_data, …)`."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.factories import make_device, make_subscriber
from webadmin import sending
from webadmin.extensions import db
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message, MessageRelatedObject, Template
from webadmin.services import ServiceError


@pytest.fixture
def ada(push_app):
    """A subscriber with two devices, next to someone else's device that must not be reached."""
    subscriber = make_subscriber("ada@example.com")
    make_device(push_app, subscriber, "android")
    make_device(push_app, subscriber, "ios")
    make_device(push_app, make_subscriber("bob@example.com"), "android")
    return subscriber


def _device_ids(subscriber) -> set[int]:
    return {d.id for d in subscriber.devices}


def _template(slug: str = "welcome", **fields) -> Template:
    values = {"title": "Hello {{ name }}", "body": "Hi {{ name }}, you have {{ points }} points",
              "open_direct": "nibs://offers/1", **fields}
    template = Template(slug=slug, **values)
    db.session.add(template)
    db.session.commit()
    return template


def test_send_reaches_every_device_of_the_recipient_with_extra_data_tag_and_related_object(push_app, ada) -> None:
    messages = sending.send("ada@example.com", "Your offer is ready", related_objects=[("offer", 7)], tag="t",
                            foo="bar")

    assert {m.device_id for m in messages} == _device_ids(ada)
    db.session.expire_all()
    rows = db.session.scalars(select(Message).where(Message.id.in_([m.id for m in messages]))).all()
    assert all(m.extra_data == {"foo": "bar"} and m.tag == "t" and m.recipient == "ada@example.com" for m in rows)
    assert {m.state for m in rows} == {"DEBUG"}  # no channel configured: the Debug backend
    related = db.session.execute(
        select(MessageRelatedObject.message_id, MessageRelatedObject.content_type, MessageRelatedObject.object_id)
    ).all()
    assert sorted(related) == sorted((m.id, "offer", "7") for m in rows)
    campaign = db.session.get(Campaign, rows[0].campaign_id)
    assert (campaign.text, campaign.source, campaign.tag) == ("Your offer is ready", "api", "t")
    assert (campaign.related_type, campaign.related_id) == ("offer", "7")
    assert (campaign.targeted, campaign.sent) == (2, 2)


def test_send_template_renders_the_template_with_the_context_data(push_app, ada) -> None:
    _template()

    messages = sending.send_template("ada@example.com", "welcome", {"name": "Ada", "points": 12}, tag="w")

    assert messages is not None and {m.device_id for m in messages} == _device_ids(ada)
    db.session.expire_all()
    campaign = db.session.get(Campaign, messages[0].campaign_id)
    assert campaign.text == "Hi Ada, you have 12 points" and campaign.title == "Hello Ada"
    assert campaign.open_direct == "nibs://offers/1" and campaign.tag == "w"
    assert {db.session.get(Message, m.id).template_slug for m in messages} == {"welcome"}


def test_send_template_refuses_an_inactive_template(push_app, ada) -> None:
    _template(is_active=False)

    assert sending.send_template("ada@example.com", "welcome", {"name": "Ada", "points": 1}) is None
    assert db.session.scalar(select(func.count(Message.id))) == 0
    assert db.session.scalar(select(func.count(Campaign.id))) == 0


def test_send_template_renders_in_the_sandbox(push_app, ada) -> None:
    _template("escape", body="{{ name.__class__.__mro__[1].__subclasses__() }}")

    with pytest.raises(ServiceError, match="refused"):
        sending.send_template("ada@example.com", "escape", {"name": "Ada"})
    assert db.session.scalar(select(func.count(Message.id))) == 0


def test_send_template_with_an_unknown_slug(push_app, ada) -> None:
    with pytest.raises(ServiceError, match="No template 'nope'"):
        sending.send_template("ada@example.com", "nope", {})


def test_send_returns_a_list_of_messages_empty_for_a_subscriber_without_devices(push_app, ada) -> None:
    """Unlike pymess (one message), send returns one message per device: none for an unknown recipient."""
    assert sending.send("nobody@example.com", "Hello?") == []
    messages = sending.send("ada@example.com", "Hello")
    assert isinstance(messages, list) and {m.device_id for m in messages} == _device_ids(ada)
