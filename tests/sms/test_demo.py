"""The demo load sets up what the SMS fallback demo needs, once."""

from __future__ import annotations

from sqlalchemy import select

import webadmin.services.demo_loaders  # noqa: F401  (registers the loaders, as create_app does)
from webadmin.extensions import db
from webadmin.models.audience import Device, Subscriber
from webadmin.models.sms import SmsChannel
from webadmin.services import demo
from webadmin.services.demo_audience import generate_audience
from webadmin.services.demo_sms import TOKENS, load_sms_demo


def test_a_debug_channel_and_two_known_phones_of_subscribers_with_numbers(app):
    generate_audience(50, seed=3)
    report = load_sms_demo()
    assert report.startswith("a Debug SMS channel and SMS demo phones sim-android-smsdemo-1 (")
    [channel] = db.session.scalars(select(SmsChannel)).all()
    assert channel.backend == "debug" and not channel.halted
    phones = db.session.execute(select(Device.token, Subscriber.phone, Subscriber.opted_out, Subscriber.subscriber_key)
                                .join(Subscriber, Subscriber.id == Device.subscriber_id)
                                .where(Device.token.in_(TOKENS)).order_by(Device.token)).all()
    assert [p.token for p in phones] == list(TOKENS)
    assert all(p.phone and not p.opted_out and p.subscriber_key in report for p in phones)
    assert load_sms_demo() is None  # idempotent
    assert "nothing new" == demo.load(actor="test", only="sms")
