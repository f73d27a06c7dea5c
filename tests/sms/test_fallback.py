"""The fallback run on SQLite and PostgreSQL: who gets an SMS, once; skips counted; cancel; the funnel rows."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from sqlalchemy import select, update

from tests.factories import make_device, make_subscriber
from tests.sms.conftest import LINK, fresh, journal_lines, later, open_push, send_campaign, sms_rows
from webadmin.extensions import db
from webadmin.models.audience import Subscriber
from webadmin.models.campaign import Campaign
from webadmin.models.sms import SmsMessage
from webadmin.models.types import utcnow
from webadmin.services import campaigns, sms_fallback
from webadmin.sms.fallback import claim, recover_stranded, send_pending, tick


def _audience(push_app):
    """Alice opens one of her two devices; Bob and Carol (two devices) open nothing; Dave has no phone; Erin opts
    out after the push; an anonymous device and Gus, whose only device is already invalid, get nothing."""
    people = {
        "alice": make_subscriber("alice@example.com", phone="+48500100001"),
        "bob": make_subscriber("bob@example.com", phone="+48500100002"),
        "carol": make_subscriber("carol@example.com", phone="+48500100003"),
        "dave": make_subscriber("dave@example.com"),
        "erin": make_subscriber("erin@example.com", phone="+48500100005"),
        "gus": make_subscriber("gus@example.com", phone="+48500100007"),
    }
    devices = {
        "alice-phone": make_device(push_app, people["alice"], "android"),
        "alice-tablet": make_device(push_app, people["alice"], "ios"),
        "bob": make_device(push_app, people["bob"], "android"),
        "carol-phone": make_device(push_app, people["carol"], "android"),
        "carol-web": make_device(push_app, people["carol"], "web"),
        "dave": make_device(push_app, people["dave"], "ios"),
        "erin": make_device(push_app, people["erin"], "android"),
        "anonymous": make_device(push_app, None, "android"),
        "gus": make_device(push_app, people["gus"], "android", status="invalid"),
    }
    return people, devices


def test_exactly_the_non_openers_with_phones_get_one_sms_each(push_app, sms_channel, journal):
    sms_channel()
    people, devices = _audience(push_app)
    campaign = send_campaign(push_app, window=600)
    assert campaign.status == "sent" and campaign.sent == 8  # Gus's invalid device is not in the audience
    open_push(devices["alice-tablet"])
    db.session.execute(update(Subscriber).where(Subscriber.id == people["erin"].id).values(opted_out=True))
    db.session.commit()

    assert tick(later(minutes=5))["created"] == 0  # the ten-minute window has not passed
    report = tick(later(minutes=11))
    assert report["created"] == 4 and report["send_tasks"] == 1

    rows = {r.subscriber_id: r for r in sms_rows(campaign.id)}
    by_name = {name: rows.get(s.id) for name, s in people.items()}
    assert by_name["alice"] is None and by_name["gus"] is None
    assert (by_name["bob"].state, by_name["carol"].state) == ("DEBUG", "DEBUG")
    assert (by_name["dave"].state, by_name["dave"].skip_reason) == ("SKIPPED", "no_phone")
    assert (by_name["erin"].state, by_name["erin"].skip_reason) == ("SKIPPED", "opted_out")
    assert by_name["bob"].provider_message_id == f"debug-{by_name['bob'].uuid}" and by_name["bob"].attempts == 1
    delivered = journal_lines(journal)
    assert sorted(to for _, _, to in delivered) == ["+48500100002", "+48500100003"]  # Carol once, not per device
    assert sorted(u for u, _, _ in delivered) == sorted([by_name["bob"].uuid, by_name["carol"].uuid])

    assert tick(later(minutes=30)) == {"recovered": 0, "expired": 0, "cancelled": 0, "created": 0, "send_tasks": 0,
                                       "scheduled": 0}
    assert len(journal_lines(journal)) == 2 and len(sms_rows(campaign.id)) == 4
    assert fresh(campaign).sms_fallback_done_at is not None
    assert sms_fallback.funnel_rows(campaign.id) == [
        ("SMS fallback sent", 2), ("SMS fallback failed", 0), ("No phone number", 1), ("Opted out", 1),
        ("Invalid number", 0)]


def test_the_sms_text_defaults_to_the_push_text_and_its_https_link(push_app, sms_channel, journal):
    sms_channel()
    make_device(push_app, make_subscriber(phone="+48500100002"))
    campaign = send_campaign(push_app)
    assert campaign.sms_fallback_text == f"Half price today {LINK}"
    assert sms_fallback.default_text("Hi", "nibs://offers/1", push_app) == "Hi"  # no web address: no link
    tick(later())
    assert [r.state for r in sms_rows(campaign.id)] == ["DEBUG"]


def test_an_app_link_becomes_a_web_link_under_the_apps_web_address(push_app, sms_channel):
    sms_channel()
    push_app.web_link_base = "https://nibs.example"
    db.session.commit()
    text = sms_fallback.default_text
    assert text("Hi", "nibs://offers/1", push_app) == "Hi https://nibs.example/offers/1"
    assert text("Hi", "offers/1?ref=sms#top", push_app) == "Hi https://nibs.example/offers/1?ref=sms#top"
    assert text("Hi", "https://shop.example/x", push_app) == "Hi https://shop.example/x"
    assert text("Hi", "other://offers/1", push_app) == "Hi"  # another app's scheme is no link of this app
    assert text("Hi", "javascript:alert(1)", push_app) == "Hi"
    assert text("Hi", "nibs://offers/1") == "Hi"  # without the app nothing maps it
    draft = campaigns.CampaignDraft(app_id=push_app.id, text="Half price", open_direct="nibs://offers/7",
                                    sms_fallback_seconds=600)
    sms_fallback.apply_to_draft(draft)
    assert draft.sms_fallback_text == "Half price https://nibs.example/offers/7"


def _half_sent(app, push_app, people: int = 4) -> Campaign:
    """A campaign with a fallback of which one batch of two went out; it is still sending."""
    from webadmin.sending.engine import dispatch

    app.config["ENGINE_BATCH_SIZE"] = 2
    for i in range(people):
        make_device(push_app, make_subscriber(phone=f"+4850010000{i}"))
    draft = campaigns.CampaignDraft(app_id=push_app.id, text="Half price", sms_fallback_seconds=60)
    sms_fallback.apply_to_draft(draft)
    campaign = campaigns.create_campaign(draft, actor="test")
    db.session.commit()
    campaigns.start(campaign, actor="test", enqueue=False)
    dispatch(campaign.id, max_batches=1)
    campaign = fresh(campaign)
    assert (campaign.status, campaign.sent) == ("sending", 2)
    return campaign


def test_a_campaign_cancelled_before_its_window_ends_sends_nothing(app, push_app, sms_channel, journal):
    sms_channel()
    campaign = _half_sent(app, push_app)
    campaigns.cancel(campaign, actor="test")
    report = tick(later())
    assert (report["created"], report["send_tasks"]) == (0, 0)
    assert sms_rows(campaign.id) == [] and journal_lines(journal) == []
    assert fresh(campaign).sms_fallback_done_at is not None


def test_a_sending_campaign_gets_sms_for_windows_passed_and_cancelling_stops_those_waiting(app, push_app,
                                                                                            sms_channel, journal):
    channel = sms_channel()
    campaign = _half_sent(app, push_app)
    db.session.execute(update(type(channel)).values(halted=True))  # nothing goes out yet
    db.session.commit()
    assert tick(later())["created"] == 2  # the two whose push went out; the others are still waiting for theirs
    assert [r.state for r in sms_rows(campaign.id)] == ["WAITING", "WAITING"]
    assert fresh(campaign).sms_fallback_done_at is None
    campaigns.cancel(fresh(campaign), actor="test")
    assert tick(later())["cancelled"] == 2
    assert {(r.state, r.error) for r in sms_rows(campaign.id)} == {("ERROR", "campaign cancelled")}
    assert journal_lines(journal) == []
    assert sms_fallback.funnel_rows(campaign.id)[1] == ("SMS fallback failed", 2)


def test_a_draft_or_scheduled_campaign_has_no_window_yet(push_app, sms_channel):
    sms_channel()
    make_device(push_app, make_subscriber(phone="+48500100002"))
    draft = campaigns.CampaignDraft(app_id=push_app.id, text="Later", sms_fallback_seconds=60,
                                    scheduled_at=utcnow() + timedelta(hours=1))
    sms_fallback.apply_to_draft(draft)
    scheduled = campaigns.create_campaign(draft, actor="test")
    db.session.commit()
    assert tick(later(minutes=600))["created"] == 0
    assert fresh(scheduled).sms_fallback_done_at is None


def test_a_subscriber_who_opens_before_the_sms_goes_is_skipped(push_app, sms_channel, journal):
    channel = sms_channel()
    device = make_device(push_app, make_subscriber(phone="+48500100002"))
    campaign = send_campaign(push_app)
    db.session.execute(update(type(channel)).values(halted=True))
    db.session.commit()
    tick(later())
    open_push(device)  # late, but before the SMS went out
    db.session.execute(update(type(channel)).values(halted=False))
    db.session.commit()
    assert send_pending().skipped == 1
    [row] = sms_rows(campaign.id)
    assert (row.state, row.skip_reason) == ("SKIPPED", "opened") and journal_lines(journal) == []


def test_a_paused_campaign_waits_and_gets_its_sms_once_resumed(app, push_app, sms_channel, journal):
    sms_channel()
    campaign = _half_sent(app, push_app)
    campaigns.pause(campaign, actor="test")
    assert tick(later())["created"] == 0
    campaigns.resume(fresh(campaign), actor="test")  # the immediate queue sends the rest
    assert fresh(campaign).status == "sent"
    assert tick(later())["created"] == 4 and len(journal_lines(journal)) == 4


def test_concurrent_runs_make_one_row_per_subscriber(push_app, sms_channel):
    sms_channel()
    for i in range(5):
        make_device(push_app, make_subscriber(phone=f"+4850010000{i}"))
    campaign = send_campaign(push_app)
    from webadmin.sms.fallback import materialize, open_fallbacks

    [pending] = open_fallbacks()
    assert materialize(pending, later()) == 5
    assert materialize(pending, later()) == 0  # ON CONFLICT DO NOTHING: a second run adds nothing
    assert len(sms_rows(campaign.id)) == 5


def test_a_worker_lost_mid_send_is_not_sent_again_by_a_backend_that_cannot_dedupe(app, push_app, sms_channel,
                                                                                    journal):
    sms_channel()
    make_device(push_app, make_subscriber(phone="+48500100002"))
    campaign = send_campaign(push_app)
    app.config["SMS_BATCH_SIZE"] = 10
    from webadmin.sms import fallback

    fallback.materialize_due(later())
    lease, rows = claim(10, 0.01, "debug")  # a worker claims, then dies before recording
    assert [r.id for r in rows] == [r.id for r in sms_rows(campaign.id)]
    assert recover_stranded(utcnow() + timedelta(seconds=1)) == 1
    [row] = sms_rows(campaign.id)
    assert (row.state, row.lease_until) == ("ERROR", None) and "not sent again" in row.error
    assert send_pending().sent == 0 and journal_lines(journal) == []


def test_a_late_worker_records_nothing(push_app, sms_channel):
    sms_channel()
    make_device(push_app, make_subscriber(phone="+48500100002"))
    campaign = send_campaign(push_app)
    from webadmin.sms import fallback

    fallback.materialize_due(later())
    lease, rows = claim(10, 0.01, "debug")
    recover_stranded(utcnow() + timedelta(seconds=1))  # presumed dead
    recorder = fallback.Recorder(lease, fallback.retry_policy(), utcnow(), fallback.create_backend("debug", {}))
    recorder.ok(rows[0], fallback.SmsResult(rows[0].id, ok=True, provider_message_id="late"))
    recorder.write()
    db.session.commit()
    [row] = sms_rows(campaign.id)
    assert row.state == "ERROR" and row.provider_message_id is None


def test_the_campaign_and_subscriber_pages_show_the_sms(client, login_as, push_app, sms_channel):
    from webadmin.models.user import Role

    sms_channel()
    bob = make_subscriber("bob@example.com", phone="+48500100002")
    make_device(push_app, bob)
    dave = make_subscriber("dave@example.com")
    make_device(push_app, dave)
    campaign = send_campaign(push_app, window=1800)
    login_as(Role.VIEWER)
    page = client.get(f"/campaigns/{campaign.id}").get_data(as_text=True)
    assert 'id="campaigns-sms"' in page and "30 minutes" in page and "hx-trigger=\"every 5s\"" in page
    tick(later(minutes=31))
    fragment = client.get(f"/campaigns/{campaign.id}/sms").get_data(as_text=True)
    assert fragment.lstrip().startswith('<section id="campaigns-sms"') and "every 5s" not in fragment  # done: stops
    assert "bob@example.com" in fragment and "+48500100002" in fragment and "DEBUG" in fragment
    assert "no phone" in fragment and "SMS fallback sent</th><td class=\"text-end\">1" in fragment
    subscriber_page = client.get(f"/audience/subscribers/{bob.id}").get_data(as_text=True)
    assert 'id="audience-subscriber-sms-rows"' in subscriber_page and f"#{campaign.id}" in subscriber_page
    assert Counter(r.state for r in sms_rows(campaign.id)) == {"DEBUG": 1, "SKIPPED": 1}


def test_funnel_rows_are_empty_without_a_fallback(push_app):
    campaign = campaigns.create_campaign(campaigns.CampaignDraft(app_id=push_app.id, text="No SMS"), actor="test")
    db.session.commit()
    assert sms_fallback.funnel_rows(campaign.id) == [] and sms_fallback.funnel_rows(999_999) == []
    assert db.session.scalar(select(SmsMessage.id)) is None


def test_the_campaign_funnel_csv_has_the_sms_stages(client, login_as, push_app, sms_channel):
    from webadmin.models.user import Role

    sms_channel()
    make_device(push_app, make_subscriber(phone="+48500100002"))
    make_device(push_app, make_subscriber())
    campaign = send_campaign(push_app)
    tick(later())
    login_as(Role.VIEWER)
    csv = client.get(f"/analytics/campaigns/{campaign.id}/funnel.csv").get_data(as_text=True)
    lines = {line.split(",")[0]: line for line in csv.splitlines()}
    assert lines["SMS fallback sent"].startswith("SMS fallback sent,1,")
    assert lines["No phone number"].startswith("No phone number,1,")
    assert lines["Invalid number"].startswith("Invalid number,0,")


def test_a_window_ending_before_the_next_minute_gets_a_run_of_its_own(push_app, sms_channel):
    from webadmin.queue import huey

    sms_channel()
    make_device(push_app, make_subscriber(phone="+48500100002"))
    campaign = send_campaign(push_app)  # a one-minute window
    huey.flush()
    assert tick(campaign.started_at + timedelta(seconds=1))["scheduled"] == 0  # the next periodic run is in time
    assert tick(campaign.started_at + timedelta(seconds=30))["scheduled"] == 1
    [task] = [t for t in huey.scheduled() if t.name.endswith("sms_fallback")]
    window_end = campaign.started_at.replace(tzinfo=None) + timedelta(seconds=60)  # Huey keeps naive UTC etas
    assert task.eta == window_end + timedelta(seconds=5)  # a few seconds later, for pushes sent after the start
    huey.flush()


def test_the_app_factory_registers_the_funnel_stages_once(tmp_path):
    from tests.conftest import build_app
    from webadmin.services import analytics

    saved = list(analytics.FUNNEL_EXTRAS)
    analytics.FUNNEL_EXTRAS.clear()  # as in a process where no console module was imported yet
    try:
        for name in ("a", "b"):
            build_app(f"sqlite:///{tmp_path / name}.sqlite3", tmp_path)
        assert analytics.FUNNEL_EXTRAS == [sms_fallback.funnel_extra]
    finally:
        analytics.FUNNEL_EXTRAS[:] = saved
