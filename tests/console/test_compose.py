"""Compose → confirm → send; Push Offer prefill; the template picker; validation; double submission (sequential
and concurrent); Back + edit; live count; test sends to chosen devices; custom data rules."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select, update

from tests.conftest import AuthActions
from tests.factories import make_app, make_device, make_group, make_subscriber
from webadmin.extensions import db
from webadmin.models.audit import AuditEvent
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message, Template
from webadmin.models.offer import Offer
from webadmin.models.types import utcnow
from webadmin.models.user import Role
from webadmin.services import compose


def _audience():
    push_app = make_app("Nibs")
    alice, bob = make_subscriber("alice@example.com"), make_subscriber("bob@example.com")
    make_device(push_app, alice, "android")
    make_device(push_app, alice, "ios")
    make_device(push_app, bob, "android")
    return push_app, make_group("Key customers", [alice])


def _form(push_app, **overrides):
    data = {"submission_id": "f-1", "app_id": push_app.id, "text": "Half price today", "title": "Nibs",
            "open_direct": "nibs://offers/1", "target": "all", "when": "now", "time_zone": "UTC"}
    data.update(overrides)
    return data


def test_compose_confirm_send(app, client, login_as):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    page = client.get("/compose/").get_data(as_text=True)
    assert "3</strong> device(s) would receive" in page
    response = client.post("/compose/", data=_form(push_app))
    campaign = db.session.scalar(select(Campaign))
    assert response.headers["Location"] == f"/campaigns/{campaign.id}"
    confirm = client.get(f"/campaigns/{campaign.id}").get_data(as_text=True)
    assert "Send now to 3 devices" in confirm and campaign.status == "draft"
    assert db.session.scalar(select(func.count(Message.id))) == 0  # nothing sent before the confirmation
    client.post(f"/campaigns/{campaign.id}/send")
    again = client.post(f"/campaigns/{campaign.id}/send", follow_redirects=True)  # second click
    assert "Cannot send a campaign that is sent" in again.get_data(as_text=True)
    db.session.expire_all()
    campaign = db.session.get(Campaign, campaign.id)
    assert (campaign.status, campaign.targeted, campaign.sent) == ("sent", 3, 3)
    actions = set(db.session.scalars(select(AuditEvent.action)))
    assert {"campaign.draft", "campaign.send"} <= actions


def test_double_submitted_form_makes_one_draft(client, login_as):
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    first = client.post("/compose/", data=_form(push_app))
    second = client.post("/compose/", data=_form(push_app))
    assert first.headers["Location"] == second.headers["Location"]
    assert db.session.scalar(select(func.count(Campaign.id))) == 1


def test_dangerous_deep_links_are_refused(client, login_as):
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    for link in ("javascript:alert(1)", "data:text/html,x", "http://example.com"):
        page = client.post("/compose/", data=_form(push_app, open_direct=link, submission_id=link))
        assert page.status_code == 200 and "links are allowed" in page.get_data(as_text=True)
    assert db.session.scalar(select(func.count(Campaign.id))) == 0


def test_groups_with_platform_filter_and_live_count(client, login_as):
    push_app, group = _audience()
    login_as(Role.MARKETER)
    fragment = client.get("/compose/count", query_string={"app_id": push_app.id, "target": "groups",
                                                          "group_ids": group.id, "platforms": "ios"})
    assert "<strong>1</strong> device(s)" in fragment.get_data(as_text=True)
    keys = client.get("/compose/count", query_string={"app_id": push_app.id, "target": "keys",
                                                      "keys": "alice@example.com\nghost@example.com"})
    html = keys.get_data(as_text=True)
    assert "<strong>2</strong>" in html and "ghost@example.com" in html and "1 unknown key" in html


def test_live_count_says_when_all_users_go_out_as_one_messageapp_request(client, login_as):
    from webadmin.crypto import encrypt_credentials
    from webadmin.models.campaign import Channel

    push_app, _ = _audience()
    db.session.add(Channel(app_id=push_app.id, platform="android", backend="marketing_cloud", name="MC Android",
                           options={"all_users_app": True}, credentials_encrypted=encrypt_credentials(
                               {"client_id": "c", "client_secret": "s", "message_id": "m"})))
    db.session.commit()
    login_as(Role.MARKETER)
    everyone = client.get("/compose/count", query_string={"app_id": push_app.id, "target": "all"})
    html = everyone.get_data(as_text=True)
    assert 'id="compose-count-messageapp"' in html and "Through MC Android" in html and "can differ" in html
    filtered = client.get("/compose/count", query_string={"app_id": push_app.id, "target": "all",
                                                          "platforms": "android"})
    assert "compose-count-messageapp" not in filtered.get_data(as_text=True)  # stays on messageContact
    db.session.execute(update(Channel).values(options={}))
    db.session.commit()
    off = client.get("/compose/count", query_string={"app_id": push_app.id, "target": "all"})
    assert "compose-count-messageapp" not in off.get_data(as_text=True)


def test_push_offer_prefill_and_expired_offer(client, login_as):
    push_app, _ = _audience()
    current = Offer(app_id=push_app.id, name="Chocolate Week", deep_link="nibs://offers/1")
    expired = Offer(app_id=push_app.id, name="Old Deal", valid_until=utcnow() - timedelta(days=1))
    db.session.add_all([current, expired])
    db.session.commit()
    login_as(Role.MARKETER)
    page = client.get(f"/compose/?offer_id={current.id}").get_data(as_text=True)
    assert "Exclusive Offer: Chocolate Week" in page and "nibs://offers/1" in page
    refused = client.get(f"/compose/?offer_id={expired.id}").get_data(as_text=True)
    assert "cannot be pushed" in refused and "Exclusive Offer: Old Deal" not in refused
    client.post("/compose/", data=_form(push_app, offer_id=current.id, open_direct="", text="Exclusive Offer: Choc"))
    campaign = db.session.scalar(select(Campaign))
    assert (campaign.source, campaign.related_type, campaign.related_id) == ("offer", "offer", str(current.id))
    assert campaign.open_direct == "nibs://offers/1"


def test_scheduling_an_offer_push_after_the_offer_ends_is_refused_in_compose(client, login_as):
    push_app, _ = _audience()
    offer = Offer(app_id=push_app.id, name="Flash Sale", valid_until=utcnow() + timedelta(hours=1))
    db.session.add(offer)
    db.session.commit()
    login_as(Role.MARKETER)
    later = (utcnow() + timedelta(days=2)).date().isoformat()
    page = client.post("/compose/", data=_form(push_app, offer_id=offer.id, when="later", date=later, time="10:00"))
    assert page.status_code == 200 and "“Flash Sale” is no longer current at the chosen time" in page.get_data(
        as_text=True)
    assert db.session.scalar(select(func.count(Campaign.id))) == 0


def test_schedule_from_compose_in_a_time_zone(client, login_as):
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    tomorrow = (utcnow() + timedelta(days=1)).date()
    client.post("/compose/", data=_form(push_app, when="later", date=tomorrow.isoformat(), time="09:30",
                                        time_zone="Europe/Warsaw"))
    campaign = db.session.scalar(select(Campaign))
    client.post(f"/campaigns/{campaign.id}/schedule")
    db.session.expire_all()
    campaign = db.session.get(Campaign, campaign.id)
    assert campaign.status == "scheduled" and campaign.schedule_time_zone == "Europe/Warsaw"
    assert campaign.scheduled_at.hour in (7, 8)  # 09:30 in Warsaw is 08:30 UTC in winter, 07:30 in summer
    client.post(f"/campaigns/{campaign.id}/cancel")
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).status == "cancelled"


def test_send_test_goes_only_to_test_keys(app, client, login_as):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    client.post("/compose/test", data={**_form(push_app), "test_keys": "bob@example.com"})
    campaign = db.session.scalar(select(Campaign))
    assert (campaign.tag, campaign.targeted, campaign.status) == ("test", 1, "sent")


def test_viewer_cannot_compose_or_send(client, login_as):
    push_app, _ = _audience()
    login_as(Role.VIEWER)
    assert client.get("/compose/").status_code == 403
    assert client.post("/compose/", data=_form(push_app)).status_code == 403
    assert db.session.scalar(select(func.count(Campaign.id))) == 0


# --- template picker ---------------------------------------------------------------------------------------


def _templates():
    db.session.add_all([
        Template(slug="welcome", title="Hi {{ name }}", body="Welcome to Nibs, {{ name }}!", open_direct="nibs://home"),
        Template(slug="plain", body="Fresh truffles today."),
        Template(slug="retired", body="Old news", is_active=False),
    ])
    db.session.commit()


def test_picking_a_template_fills_the_fields_with_htmx(client, login_as):
    push_app, _ = _audience()
    _templates()
    login_as(Role.MARKETER)
    page = client.get("/compose/").get_data(as_text=True)
    assert '<option value="welcome">' in page and "retired" not in page  # only active templates are offered
    htmx = {"HX-Request": "true", "HX-Target": "compose-content"}
    filled = client.get("/compose/template", headers=htmx, query_string={
        "app_id": push_app.id, "template_slug": "welcome", "template_context": '{"name": "Ann"}', "text": "old"})
    html = filled.get_data(as_text=True)
    assert 'id="compose-content"' in html and "<html" not in html
    assert "Welcome to Nibs, Ann!</textarea>" in html and 'value="Hi Ann"' in html and 'value="nibs://home"' in html
    preview = html.split('id="compose-preview"')[1]
    assert 'hx-swap-oob="true"' in preview and "Welcome to Nibs, Ann!" in preview  # the preview follows
    missing = client.get("/compose/template", headers=htmx, query_string={
        "app_id": push_app.id, "template_slug": "welcome", "text": "kept"}).get_data(as_text=True)
    assert "&#39;name&#39; is undefined" in missing and "kept</textarea>" in missing  # nothing filled


def test_use_template_without_javascript_and_a_chosen_template_with_an_empty_text(client, login_as):
    push_app, _ = _audience()
    _templates()
    login_as(Role.MARKETER)
    shown = client.post("/compose/", data=_form(push_app, text="", title="", template_slug="plain", use_template="1"))
    assert shown.status_code == 200 and "Fresh truffles today.</textarea>" in shown.get_data(as_text=True)
    assert db.session.scalar(select(func.count(Campaign.id))) == 0  # filling is not saving
    preview = client.get("/compose/preview", query_string={"app_id": push_app.id, "template_slug": "plain"})
    assert "Fresh truffles today." in preview.get_data(as_text=True)
    saved = client.post("/compose/", data=_form(push_app, text="", title="", template_slug="welcome",
                                                template_context='{"name": "Bob"}'))
    assert saved.status_code == 302
    campaign = db.session.scalar(select(Campaign))
    assert (campaign.text, campaign.title, campaign.template_slug) == ("Welcome to Nibs, Bob!", "Hi Bob", "welcome")


def test_a_template_injection_in_the_picker_is_refused_without_filling(client, login_as):
    push_app, _ = _audience()
    db.session.add(Template(slug="evil", body="{{ cycler.__init__.__globals__ }}"))
    db.session.commit()
    login_as(Role.MARKETER)
    html = client.post("/compose/", data=_form(push_app, text="mine", template_slug="evil",
                                               use_template="1")).get_data(as_text=True)
    assert "Template “evil”:" in html and "mine</textarea>" in html
    assert "__globals__" not in html.split("</textarea>")[1]  # only the refusal, nothing rendered


# --- drafts: Back + edit, double clicks ----------------------------------------------------------------------


def test_editing_after_back_replaces_the_draft_and_the_same_content_keeps_it(client, login_as):
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    first = client.post("/compose/", data=_form(push_app)).headers["Location"]
    assert client.post("/compose/", data=_form(push_app)).headers["Location"] == first  # a second click
    edited = client.post("/compose/", data=_form(push_app, text="Half price today and tomorrow")).headers["Location"]
    assert edited != first
    # Only the latest content of the form is a draft: the list holds no stale one, and its page is gone.
    assert db.session.scalars(select(Campaign.text)).all() == ["Half price today and tomorrow"]
    assert client.get(first).status_code == 404
    assert db.session.scalar(select(func.count()).where(AuditEvent.action == "campaign.draft_replaced")) == 1
    # Another form (another submission id) never touches this one's draft.
    client.post("/compose/", data=_form(push_app, submission_id="f-2"))
    assert db.session.scalar(select(func.count(Campaign.id))) == 2


def test_a_draft_sent_meanwhile_is_not_replaced(client, login_as):
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    first = client.post("/compose/", data=_form(push_app)).headers["Location"]
    client.post(f"{first}/send")
    client.post("/compose/", data=_form(push_app, text="Half price today and tomorrow"))
    statuses = dict(db.session.execute(select(Campaign.text, Campaign.status)).all())
    assert statuses["Half price today"] != "draft" and statuses["Half price today and tomorrow"] == "draft"


def test_a_real_double_click_makes_one_draft(app, client, auth, login_as, monkeypatch):
    push_app, _ = _audience()
    user = login_as(Role.MARKETER)
    second = app.test_client()
    assert AuthActions(second).login(user.email).status_code == 302
    both_looked = threading.Barrier(2)
    lookup = compose._existing_draft

    def looked_up_together(key):
        found = lookup(key)
        if found is None:
            try:
                both_looked.wait(timeout=3)  # both requests passed the lookup before either inserted
            except threading.BrokenBarrierError:
                pass
        return found

    monkeypatch.setattr(compose, "_existing_draft", looked_up_together)
    form = _form(push_app)
    answers = _in_threads([lambda: client.post("/compose/", data=form), lambda: second.post("/compose/", data=form)])
    assert [a.status_code for a in answers] == [302, 302]
    assert answers[0].headers["Location"] == answers[1].headers["Location"]
    assert db.session.scalar(select(func.count(Campaign.id))) == 1


def _in_threads(calls):
    results = [None] * len(calls)

    def run(index, call):
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


# --- test sends --------------------------------------------------------------------------------------------


def test_send_test_to_a_chosen_simulated_device_only(app, client, login_as):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    push_app, _ = _audience()
    phone = make_device(push_app, None, "ios", token="sim-ios-test")
    other = make_device(push_app, None, "android", token="sim-android-other")
    login_as(Role.MARKETER)
    page = client.get("/compose/").get_data(as_text=True)
    assert f'value="{phone.id}" id="test-device-{phone.id}"' in page and "sim-android-other" in page
    answer = client.post("/compose/test", data={**_form(push_app), "test_device_ids": phone.id})
    assert "Test sent to 1 device(s)." in answer.get_data(as_text=True)
    campaign = db.session.scalar(select(Campaign))
    assert (campaign.tag, campaign.audience["type"], campaign.targeted) == ("test", "devices", 1)
    assert db.session.scalars(select(Message.device_id)).all() == [phone.id]
    assert other.id not in campaign.audience["device_ids"]


def test_send_test_reports_unknown_keys_and_refuses_when_nothing_would_be_sent(app, client, login_as):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    push_app, _ = _audience()
    make_subscriber("nodevice@example.com")
    login_as(Role.MARKETER)
    found = client.get("/compose/test-devices", query_string={"app_id": push_app.id,
                                                              "test_keys": "alice@example.com, ghost@example.com"})
    html = found.get_data(as_text=True)
    assert html.count('name="test_device_ids"') == 2 and "alice@example.com" in html  # her phone and tablet
    assert "Unknown key(s):\n    ghost@example.com" in html
    keys = "ghost@example.com\nnodevice@example.com"
    nothing = client.post("/compose/test", data={**_form(push_app), "test_keys": keys})
    text = nothing.get_data(as_text=True)
    assert "No test device would receive this push" in text and "Unknown key(s): ghost@example.com." in text
    assert "No active device in this app: nodevice@example.com." in text
    assert "Test sent" not in text and db.session.scalar(select(func.count(Campaign.id))) == 0
    partly = client.post("/compose/test", data={**_form(push_app), "test_keys": "bob@example.com\nghost@example.com"})
    assert "Test sent to 1 device(s). Unknown key(s): ghost@example.com." in partly.get_data(as_text=True)
    elsewhere = make_device(make_app("Other"), None, "android", token="sim-android-elsewhere")
    foreign = client.post("/compose/test", data={**_form(push_app), "test_device_ids": elsewhere.id})
    assert "No test device would receive this push" in foreign.get_data(as_text=True)  # not a device of this app


def test_find_devices_without_javascript(client, login_as):
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    page = client.post("/compose/test", data={**_form(push_app), "test_keys": "bob@example.com", "find": "1"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and html.count('name="test_device_ids"') == 1 and "bob@example.com" in html
    assert db.session.scalar(select(func.count(Campaign.id))) == 0


# --- custom data, offers and products ----------------------------------------------------------------------


def test_custom_data_that_fcm_refuses_is_refused_in_the_console(client, login_as):
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    refused = {"from=x": "is reserved", "google.c.a=1": "is reserved", "notification=y": "is reserved",
               "GCM_x=1": "is reserved", "openDirect=z": "is reserved", "9lives=1": "is not allowed",
               "k=" + "v" * 1025: "at most 1,024 characters",
               "\n".join(f"k{i}=" + "ł" * 700 for i in range(3)): "FCM accepts at most 4,096"}
    for number, (data, problem) in enumerate(refused.items()):
        page = client.post("/compose/", data=_form(push_app, data=data, submission_id=f"d-{number}"))
        assert page.status_code == 200 and problem in page.get_data(as_text=True), data
    assert db.session.scalar(select(func.count(Campaign.id))) == 0
    assert client.post("/compose/", data=_form(push_app, data="promo=x1\ncolor=red")).status_code == 302
    assert db.session.scalar(select(Campaign.data)) == {"promo": "x1", "color": "red"}


def test_a_product_push_is_recorded_as_an_offer_and_listed_on_its_page(client, login_as):
    push_app, _ = _audience()
    product = Offer(app_id=push_app.id, kind="product", name="Truffle Box", deep_link="nibs://products/1")
    db.session.add(product)
    db.session.commit()
    login_as(Role.MARKETER)
    client.post("/compose/", data=_form(push_app, offer_id=product.id, text="Exclusive Offer: Truffle Box"))
    campaign = db.session.scalar(select(Campaign))
    assert (campaign.source, campaign.related_type, campaign.related_id) == ("offer", "offer", str(product.id))
    assert f'href="/campaigns/{campaign.id}"' in client.get(f"/offers/{product.id}").get_data(as_text=True)
