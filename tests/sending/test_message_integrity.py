"""What deletes a device, campaign or app keeps messages consistent without a foreign key on messages.device_id."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import delete, func, select, text

from tests.factories import make_device, make_subscriber
from webadmin import sending
from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message, MessageRelatedObject
from webadmin.sending.audience import AudienceSpec, materialize
from webadmin.services import ServiceError, campaigns
from webadmin.services.campaigns import CampaignDraft


def _started(push_app) -> Campaign:
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Hi"), actor="test")
    db.session.commit()
    campaigns.start(campaign, actor="test")
    return campaign


def _device_ids(campaign_id: int) -> list[int | None]:
    db.session.expire_all()
    query = select(Message.device_id).where(Message.campaign_id == campaign_id).order_by(Message.id)
    return list(db.session.scalars(query))


def test_deleting_devices_leaves_their_messages_without_a_device(push_app, manual_dispatch):
    ada = make_subscriber()
    kept, gone, also_gone = (make_device(push_app, ada, p) for p in ("android", "ios", "web"))
    first, second = _started(push_app), _started(push_app)
    db.session.execute(delete(Device).where(Device.id.in_([gone.id, also_gone.id])))  # one statement, two rows
    db.session.commit()
    for campaign in (first, second):
        assert _device_ids(campaign.id) == [kept.id, None, None]
    db.session.execute(delete(Device).where(Device.id == kept.id))
    db.session.commit()
    assert _device_ids(first.id) == [None, None, None]


def test_deleting_a_campaign_or_its_app_takes_the_messages_and_related_objects_along(push_app):
    make_device(push_app, make_subscriber("ada@example.com"))
    make_device(push_app, make_subscriber("bob@example.com"))
    (ada_message,) = sending.send("ada@example.com", "Yours", related_objects=[("offer", 1)])
    sending.send("bob@example.com", "Yours too", related_objects=[("offer", 2)])
    db.session.execute(delete(Campaign).where(Campaign.id == ada_message.campaign_id))
    db.session.commit()
    assert db.session.scalars(select(Message.recipient)).all() == ["bob@example.com"]
    assert db.session.scalars(select(MessageRelatedObject.object_id)).all() == ["2"]
    db.session.execute(delete(App).where(App.id == push_app.id))  # cascades to its devices and campaigns
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0
    assert db.session.scalar(select(func.count()).select_from(MessageRelatedObject)) == 0


def _delete_device_elsewhere(device_id: int, done: list[float]) -> threading.Thread:
    """DELETE the device on a connection of its own in a thread; `done` gets the time it committed."""
    engine = db.engine

    def run() -> None:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM devices WHERE id = :id"), {"id": device_id})
        done.append(time.monotonic())

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# SQLite has one writer at a time: a deletion cannot interleave with materialising there.
postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@postgresql_only
def test_a_device_deleted_while_its_app_is_materialised_waits_then_nulls_the_new_messages(push_app):
    device = make_device(push_app, make_subscriber())
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Hi"), actor="test")
    db.session.commit()
    assert materialize(campaign.id, push_app.id, AudienceSpec(), "all", None) == 1  # not committed yet
    done: list[float] = []
    deleting = _delete_device_elsewhere(device.id, done)
    time.sleep(0.5)
    assert done == []  # waits for the materialising transaction
    committed = time.monotonic()
    db.session.commit()
    deleting.join(10)
    assert done and done[0] >= committed
    assert _device_ids(campaign.id) == [None]  # no message points at the deleted device


@postgresql_only
def test_materialising_waits_for_a_device_deletion_in_progress_and_skips_the_device(app, push_app):
    stays, gone = make_device(push_app, make_subscriber()), make_device(push_app, make_subscriber())
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Hi"), actor="test")
    db.session.commit()
    result: list[int] = []

    def materialise() -> None:
        with app.app_context():  # its own session and connection
            result.append(materialize(campaign.id, push_app.id, AudienceSpec(), "all", None))
            db.session.commit()

    with db.engine.connect() as other:
        other.execute(text("DELETE FROM devices WHERE id = :id"), {"id": gone.id})  # now holds the app's lock
        thread = threading.Thread(target=materialise)
        thread.start()
        time.sleep(0.5)
        assert result == []  # the deletion is not committed: materialising waits
        other.commit()
        thread.join(10)
    assert result == [1]
    assert _device_ids(campaign.id) == [stays.id]


def _delete_campaign_elsewhere(campaign_id: int, done: list[float]) -> threading.Thread:
    engine = db.engine

    def run() -> None:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM campaigns WHERE id = :id"), {"id": campaign_id})
        done.append(time.monotonic())

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@postgresql_only
def test_a_campaign_deleted_while_it_is_materialised_waits_then_takes_the_new_messages_along(push_app):
    make_device(push_app, make_subscriber())
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Hi"), actor="test")
    db.session.commit()
    assert materialize(campaign.id, push_app.id, AudienceSpec(), "all", None) == 1  # not committed yet
    done: list[float] = []
    deleting = _delete_campaign_elsewhere(campaign.id, done)
    time.sleep(0.5)
    assert done == []  # waits for the materialising transaction
    db.session.commit()
    deleting.join(10)
    assert done
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0


@postgresql_only
def test_materialising_a_campaign_being_deleted_waits_and_refuses(app, push_app):
    make_device(push_app, make_subscriber())
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Hi"), actor="test")
    db.session.commit()
    outcome: list[object] = []

    def materialise() -> None:
        with app.app_context():
            try:
                outcome.append(materialize(campaign.id, push_app.id, AudienceSpec(), "all", None))
            except ServiceError as refused:
                outcome.append(refused.message)
            db.session.rollback()

    with db.engine.connect() as other:
        other.execute(text("DELETE FROM campaigns WHERE id = :id"), {"id": campaign.id})
        thread = threading.Thread(target=materialise)
        thread.start()
        time.sleep(0.5)
        assert outcome == []
        other.commit()
        thread.join(10)
    assert outcome == ["The campaign no longer exists."]
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0
