"""What changed while an SMS row waited (a halted channel, a 429 backoff): the fallback run looks at the subscriber
again at send time and sends to the phone they have now, or skips them."""

from __future__ import annotations

from sqlalchemy import delete, update

from tests.factories import make_device, make_subscriber
from tests.sms.conftest import journal_lines, later, send_campaign, set_halted, sms_rows
from webadmin.extensions import db
from webadmin.models.audience import Subscriber
from webadmin.services import sms_fallback
from webadmin.services.audience import SubscriberData, upsert_subscriber
from webadmin.sms.fallback import send_pending, tick


def _held(push_app, sms_channel, phone: str = "+48500100002"):
    """A sent campaign whose one SMS row is WAITING behind a halted channel."""
    sms_channel()
    subscriber = make_subscriber("bob@example.com", phone=phone)
    make_device(push_app, subscriber)
    campaign = send_campaign(push_app)
    set_halted(True)
    assert tick(later())["created"] == 1
    [row] = sms_rows(campaign.id)
    assert (row.state, row.phone) == ("WAITING", phone)
    return campaign, subscriber


def test_halt_opt_out_unhalt_skips_and_sends_nothing(push_app, sms_channel, journal):
    campaign, bob = _held(push_app, sms_channel)
    upsert_subscriber(bob.subscriber_key, SubscriberData(opted_out=True))  # what the API and console call
    set_halted(False)
    assert send_pending().skipped == 1
    [row] = sms_rows(campaign.id)
    assert (row.state, row.skip_reason, row.sent_at) == ("SKIPPED", "opted_out", None)
    assert journal_lines(journal) == []
    assert dict(sms_fallback.funnel_rows(campaign.id))["Opted out"] == 1


def test_a_subscriber_deleted_while_their_row_waited_gets_nothing(push_app, sms_channel, journal):
    campaign, bob = _held(push_app, sms_channel)
    db.session.execute(delete(Subscriber).where(Subscriber.id == bob.id))
    db.session.commit()
    set_halted(False)
    assert send_pending().skipped == 1
    [row] = sms_rows(campaign.id)
    assert (row.state, row.skip_reason, row.subscriber_id, row.phone) == ("SKIPPED", "deleted", None, None)
    assert journal_lines(journal) == []


def test_a_removed_number_is_skipped_and_a_changed_one_is_the_one_texted(push_app, sms_channel, journal):
    campaign, bob = _held(push_app, sms_channel)
    upsert_subscriber(bob.subscriber_key, SubscriberData(phone="+48600100999"))
    set_halted(False)
    assert send_pending().sent == 1
    [row] = sms_rows(campaign.id)
    assert (row.state, row.phone) == ("DEBUG", "+48600100999")  # the row shows the number actually texted
    assert [to for _, _, to in journal_lines(journal)] == ["+48600100999"]

    other = make_subscriber("dora@example.com", phone="+48500100004")
    make_device(push_app, other)
    second = send_campaign(push_app)
    set_halted(True)
    tick(later())
    upsert_subscriber(other.subscriber_key, SubscriberData(phone=None))
    set_halted(False)
    send_pending()
    rows = {r.subscriber_id: r for r in sms_rows(second.id)}
    assert (rows[other.id].state, rows[other.id].skip_reason) == ("SKIPPED", "no_phone")
    assert len(journal_lines(journal)) == 2  # Bob's second SMS only


def test_a_number_that_is_not_e164_is_skipped_locally_and_never_reaches_the_provider(push_app, sms_channel,
                                                                                      journal):
    campaign, bob = _held(push_app, sms_channel)
    # Written around the services' validation (an old import, a bulk load): the run checks it itself.
    db.session.execute(update(Subscriber).where(Subscriber.id == bob.id).values(phone="0048 500 100"))
    db.session.commit()
    set_halted(False)
    assert send_pending().skipped == 1
    [row] = sms_rows(campaign.id)
    assert (row.state, row.skip_reason, row.error) == ("SKIPPED", "invalid_number", "not an E.164 phone number")
    assert journal_lines(journal) == []
    # A later campaign skips the number when it makes the row, and the funnel counts it.
    second = send_campaign(push_app)
    assert tick(later())["send_tasks"] == 0
    [row] = sms_rows(second.id)
    assert (row.state, row.skip_reason) == ("SKIPPED", "invalid_number")
    assert dict(sms_fallback.funnel_rows(second.id))["Invalid number"] == 1 and journal_lines(journal) == []
