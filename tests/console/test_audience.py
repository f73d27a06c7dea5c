"""Audience section: search and filters, subscriber page, devices, groups with previewed members, CSV in and out."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from tests.conftest import build_app
from tests.factories import make_user
from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.audience import Device, Group, GroupMember, PendingMemberList, Subscriber
from webadmin.models.audit import AuditEvent
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.models.user import Role, User
from webadmin.services import groups as group_service
from webadmin.services import subscriber_search
from webadmin.services.subscriber_search import DeviceFilters, SubscriberFilters

_tokens = itertools.count(1)
FRAGMENT = {"HX-Request": "true", "HX-Target": "audience-subscriber-results"}


def _app(name: str = "Nibs") -> App:
    app = App(name=name, platforms=["android", "ios", "web"])
    db.session.add(app)
    db.session.commit()
    return app


def _subscriber(key: str, name: str | None = None, devices: tuple = (), app: App | None = None, **fields) -> Subscriber:
    """A subscriber with devices given as platform or (platform, status, reason)."""
    subscriber = Subscriber(subscriber_key=key, display_name=name, attributes=fields.pop("attributes", {}), **fields)
    db.session.add(subscriber)
    db.session.flush()
    for spec in devices:
        platform, status, reason = (spec, "active", None) if isinstance(spec, str) else spec
        db.session.add(
            Device(
                app_id=app.id, platform=platform, token=f"tok-{next(_tokens)}", subscriber_id=subscriber.id,
                status=status, invalid_reason=reason,
                invalidated_at=datetime(2026, 3, 1, 12, 30, tzinfo=UTC) if status == "invalid" else None,
            )
        )  # fmt: skip
    db.session.commit()
    return subscriber


def _group(name: str, members: list[Subscriber] = ()) -> Group:
    group = Group(name=name)
    db.session.add(group)
    db.session.flush()
    db.session.add_all(GroupMember(group_id=group.id, subscriber_id=s.id) for s in members)
    db.session.commit()
    return group


def _member_keys(group: Group) -> list[str]:
    db.session.expire_all()
    query = (
        select(Subscriber.subscriber_key)
        .join(GroupMember, GroupMember.subscriber_id == Subscriber.id)
        .where(GroupMember.group_id == group.id)
        .order_by(Subscriber.subscriber_key)
    )
    return list(db.session.scalars(query))


def _keys(filters: SubscriberFilters) -> list[str]:
    return [s.subscriber_key for s in subscriber_search.search_subscribers(filters).rows]


def _upload(text: str, name: str = "file.csv") -> tuple[io.BytesIO, str]:
    return io.BytesIO(text.encode()), name


def _actions() -> list[str]:
    return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


@pytest.fixture
def audience():
    """An app, five subscribers with devices, and two groups."""
    app = _app()
    anna = _subscriber("anna.kowalska@example.com", "Anna Kowalska", ("ios", "android"), app)
    jan = _subscriber("jan@example.com", "Jan Nowak", (("android", "invalid", "Unregistered"),), app)
    zofia = _subscriber("z.wolska@example.com", "Zofia Anders", ("web",), app, opted_out=True)
    ola = _subscriber("ola@example.com", None, (("ios", "unsubscribed", None),), app)
    nobody = _subscriber("nodevice@example.com", "Ann Without")
    vip = _group("VIP", [anna, zofia])
    _group("Washer owners", [jan])
    return {"app": app, "anna": anna, "jan": jan, "zofia": zofia, "ola": ola, "nobody": nobody, "vip": vip}


# --- search and filters -----------------------------------------------------------------------------------


def test_search_by_key_or_name_prefix_ignores_case(app, audience):
    assert _keys(SubscriberFilters(q="ANN")) == ["anna.kowalska@example.com", "nodevice@example.com"]
    assert _keys(SubscriberFilters(q="jan n")) == ["jan@example.com"]  # the name "Jan Nowak"
    assert _keys(SubscriberFilters(q="zofia")) == ["z.wolska@example.com"]
    assert _keys(SubscriberFilters(q="z.w")) == ["z.wolska@example.com"]  # the key
    assert _keys(SubscriberFilters(q="nowak")) == []  # prefixes only, not substrings
    assert _keys(SubscriberFilters(q="%")) == [] and _keys(SubscriberFilters(q="_")) == []  # no wildcards


def test_filters_by_platform_group_and_device_status(app, audience):
    assert _keys(SubscriberFilters(platform="ios")) == ["anna.kowalska@example.com", "ola@example.com"]
    assert _keys(SubscriberFilters(status="invalid")) == ["jan@example.com"]
    assert _keys(SubscriberFilters(platform="ios", status="unsubscribed")) == ["ola@example.com"]
    assert _keys(SubscriberFilters(status="none")) == ["nodevice@example.com"]
    vip = audience["vip"].id
    assert _keys(SubscriberFilters(group_id=vip)) == ["anna.kowalska@example.com", "z.wolska@example.com"]
    assert _keys(SubscriberFilters(group_id=vip, platform="web", q="z")) == ["z.wolska@example.com"]


@pytest.mark.parametrize("probe_limit", [0, 10_000], ids=["filters-checked-per-row", "small-set-drives"])
def test_keyset_pages_walk_forward_and_back_like_one_query(app, monkeypatch, probe_limit):
    monkeypatch.setattr(subscriber_search, "PROBE_LIMIT", probe_limit)
    push_app = _app()
    everyone = [
        _subscriber(f"{prefix}{n:02d}@example.com", f"{name} {n}", ("ios",) if n % 3 else ("android",), push_app)
        for n in range(12)
        for prefix, name in (("a", "Bea"), ("b", "Ada"))
    ]
    _group("Half", everyone[::2])
    group_id = db.session.scalar(select(Group.id))
    for filters in (
        SubscriberFilters(),
        SubscriberFilters(q="a"),  # keys a…, and names Ada… (keys b…), merged in key order
        SubscriberFilters(q="a", platform="ios"),
        SubscriberFilters(q="a", group_id=group_id),  # PostgreSQL: text candidates first, the group as a check
        SubscriberFilters(group_id=group_id, platform="ios"),
    ):
        expected = [s.subscriber_key for s in db.session.scalars(subscriber_search.subscribers_query(filters))]
        pages, page = [], subscriber_search.search_subscribers(filters, size=5)
        pages.append(page)
        while page.after:
            page = subscriber_search.search_subscribers(filters, after=page.after, size=5)
            pages.append(page)
        assert [s.subscriber_key for p in pages for s in p.rows] == expected, filters
        assert pages[0].before is None and pages[-1].after is None
        if len(pages) > 2:
            back = subscriber_search.search_subscribers(filters, before=pages[2].before, size=5)
            assert [s.subscriber_key for s in back.rows] == [s.subscriber_key for s in pages[1].rows]


def test_subscriber_list_page_and_its_htmx_fragment(client, login_as, audience):
    login_as(Role.VIEWER)
    page = client.get("/audience/?q=ann").get_data(as_text=True)
    assert "<html" in page and 'id="audience-subscriber-results"' in page
    assert 'hx-trigger="input changed delay:250ms, search"' in page
    assert "anna.kowalska@example.com" in page and "jan@example.com" not in page
    fragment = client.get("/audience/?q=jan&platform=android", headers=FRAGMENT)
    html = fragment.get_data(as_text=True)
    assert html.lstrip().startswith('<div id="audience-subscriber-results"') and "<html" not in html
    assert "jan@example.com" in html and "1 invalid" in html
    assert "HX-Target" in fragment.headers["Vary"]
    nothing = client.get("/audience/?q=nobody-like-this", headers=FRAGMENT).get_data(as_text=True)
    assert "No subscribers match" in nothing


def test_pages_are_links_without_javascript(client, login_as, app):
    push_app = _app()
    for n in range(55):
        _subscriber(f"user{n:03d}@example.com", devices=("android",), app=push_app)
    login_as(Role.VIEWER)
    first = client.get("/audience/?platform=android").get_data(as_text=True)
    assert "user049@example.com" in first and "user050@example.com" not in first
    assert 'href="/audience/?after=user049@example.com&amp;platform=android"' in first
    second = client.get("/audience/?platform=android&after=user049@example.com").get_data(as_text=True)
    assert "user050@example.com" in second and "user054@example.com" in second and "user049@example.com" not in second


def test_audience_tabs_lead_to_simulated_devices(client, login_as, audience):
    login_as(Role.VIEWER)
    for path in ("/audience/", "/audience/groups"):  # one macro draws the tabs of every audience page
        tabs = client.get(path).get_data(as_text=True).split('id="audience-tabs"')[1].split("</ul>")[0]
        assert 'href="/simulator/">Simulated devices</a>' in tabs, path
    assert client.get("/simulator/").status_code == 200  # the tab's page answers for the roles that see the tab


def test_empty_install_explains_where_subscribers_come_from(client, login_as):
    login_as(Role.MARKETER)
    page = client.get("/audience/").get_data(as_text=True)
    assert "No subscribers yet — import a CSV or connect your app through the API" in page


# --- subscriber page and devices --------------------------------------------------------------------------


def test_subscriber_page_shows_profile_devices_reasons_and_groups(client, login_as, audience):
    login_as(Role.VIEWER)
    jan = audience["jan"]
    jan.phone, jan.locale, jan.time_zone, jan.attributes = "+48600100200", "pl-PL", "Europe/Warsaw", {"tier": "gold"}
    db.session.commit()
    page = client.get(f"/audience/subscribers/{jan.id}").get_data(as_text=True)
    for text in ("Jan Nowak", "+48600100200", "pl-PL", "Europe/Warsaw", "tier", "gold", "Washer owners",
                 "Unregistered", "2026-03-01 12:30", "invalid", "No push has reached this subscriber"):  # fmt: skip
        assert text in page, text
    assert client.get("/audience/subscribers/999999").status_code == 404
    assert client.get(f"/audience/subscribers/{2**40}").status_code == 404


def _campaign(app: App, title: str | None, text: str = "Hello") -> Campaign:
    campaign = Campaign(app_id=app.id, title=title, text=text, status="sent")
    db.session.add(campaign)
    db.session.commit()
    return campaign


def _message(campaign: Campaign | None, device: Device, recipient: str | None, **fields) -> Message:
    message = Message(uuid=str(uuid.uuid4()), campaign_id=campaign and campaign.id, device_id=device.id,
                      recipient=recipient, state=fields.pop("state", "SENT"), **fields)  # fmt: skip
    db.session.add(message)
    db.session.commit()
    return message


def test_subscriber_page_lists_the_pushes_their_devices_received(client, login_as, audience):
    login_as(Role.VIEWER)
    anna, jan = audience["anna"], audience["jan"]
    ios, android = sorted(db.session.get(Subscriber, anna.id).devices, key=lambda d: d.platform, reverse=True)
    before_the_move = _campaign(audience["app"], "Sent to the token's previous owner")
    _message(before_the_move, android, "previous.owner@example.com")  # the token moved to Anna later
    sale = _campaign(audience["app"], "Spring sale")
    news = _campaign(audience["app"], None, "Truffles are back in every shop this week")
    sent = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    _message(sale, ios, anna.subscriber_key, sent_at=sent, opened_at=datetime(2026, 3, 2, 9, 47, tzinfo=UTC))
    _message(news, android, anna.subscriber_key, state="ERROR", error="NotRegistered: the app was removed")
    _message(sale, jan.devices[0], jan.subscriber_key, state="ERROR", error="Jan's own error")
    page = client.get(f"/audience/subscribers/{anna.id}").get_data(as_text=True)
    section = page.split('id="audience-subscriber-messages"')[1].split("</section>")[0]
    assert section.count("<tr>") == 3  # the header and Anna's two messages, newest first
    newest, oldest = section.split("<tr>")[2:]
    assert f'href="/campaigns/{news.id}"' in newest and "Truffles are back in every shop this…" in newest
    assert "Android · Nibs" in newest and ">ERROR<" in newest and "NotRegistered: the app was removed" in newest
    assert f'href="/campaigns/{sale.id}"' in oldest and "Spring sale" in oldest and "iOS · Nibs" in oldest
    assert ">SENT<" in oldest and "2026-03-02 09:15" in oldest and "2026-03-02 09:47" in oldest
    assert "Jan&#39;s own error" not in section and "previous owner" not in section and "Older" not in section
    jan_page = client.get(f"/audience/subscribers/{jan.id}").get_data(as_text=True)
    assert "Jan&#39;s own error" in jan_page and "NotRegistered" not in jan_page


def test_subscriber_messages_page_by_keyset_with_and_without_htmx(client, login_as, audience, monkeypatch):
    login_as(Role.VIEWER)
    anna = audience["anna"]
    device = db.session.get(Subscriber, anna.id).devices[0]
    campaigns = [Campaign(app_id=audience["app"].id, title=f"Campaign {n:02d}", text="Hi") for n in range(23)]
    db.session.add_all(campaigns)
    db.session.flush()
    messages = [Message(uuid=str(uuid.uuid4()), campaign_id=c.id, device_id=device.id, recipient=anna.subscriber_key,
                        state="SENT") for c in campaigns]  # fmt: skip
    db.session.add_all(messages)
    db.session.commit()
    ids = [m.id for m in messages]
    first = client.get(f"/audience/subscribers/{anna.id}").get_data(as_text=True)
    assert "Campaign 22" in first and "Campaign 03" in first and "Campaign 02" not in first  # 20 newest
    older = f"/audience/subscribers/{anna.id}?before={ids[3]}"
    assert f'rel="next" href="{older}#audience-subscriber-messages"' in first and ">Newest<" not in first
    fragment = client.get(older, headers={"HX-Request": "true", "HX-Target": "audience-subscriber-messages"})
    html = fragment.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="audience-subscriber-messages"') and "<html" not in html
    assert [f"Campaign {n:02d}" in html for n in (2, 1, 0, 3)] == [True, True, True, False]
    assert ">Newest<" in html and 'rel="next"' not in html
    past_the_end = client.get(f"/audience/subscribers/{anna.id}?before={ids[0]}").get_data(as_text=True)
    assert "No older messages" in past_the_end
    for junk in ("-1", str(2**40), "9" * 400):  # ignored: the newest page
        assert "Campaign 22" in client.get(f"/audience/subscribers/{anna.id}?before={junk}").get_data(as_text=True)


def test_subscriber_messages_empty_states(client, login_as, audience):
    login_as(Role.MARKETER)
    no_pushes = client.get(f"/audience/subscribers/{audience['zofia'].id}").get_data(as_text=True)
    assert "No push has reached this subscriber's devices yet" in no_pushes and 'href="/compose/"' in no_pushes
    no_devices = client.get(f"/audience/subscribers/{audience['nobody'].id}").get_data(as_text=True)
    assert "pushes go to devices, and this subscriber has none yet" in no_devices


def test_devices_list_filters_by_app_platform_and_status(client, login_as, audience):
    other = _app("Other app")
    _subscriber("other@example.com", devices=("web",), app=other)
    login_as(Role.VIEWER)
    assert client.get("/audience/devices").get_data(as_text=True).count('title="tok-') == 6
    invalid = client.get("/audience/devices?status=invalid").get_data(as_text=True)
    assert "jan@example.com" in invalid and "Unregistered" in invalid and "anna.kowalska" not in invalid
    web = client.get(f"/audience/devices?app={other.id}&platform=web",
                     headers={"HX-Request": "true", "HX-Target": "audience-device-results"}).get_data(as_text=True)
    assert web.lstrip().startswith('<div id="audience-device-results"')
    assert "other@example.com" in web and "z.wolska" not in web
    rows = subscriber_search.search_devices(DeviceFilters(app_id=audience["app"].id, platform="ios")).rows
    assert sorted(key for _, key, _ in rows) == ["anna.kowalska@example.com", "ola@example.com"]


# --- groups ---------------------------------------------------------------------------------------------


def test_group_create_rename_describe_delete(client, login_as, audience):
    login_as(Role.MARKETER)
    created = client.post("/audience/groups", data={"name": "  Key   customers ", "description": "Top 100"})
    group = db.session.scalar(select(Group).where(Group.name == "Key customers"))
    assert created.status_code == 302 and created.headers["Location"] == f"/audience/groups/{group.id}"
    duplicate = client.post("/audience/groups", data={"name": "vip"})
    assert duplicate.status_code == 200 and "exists already" in duplicate.get_data(as_text=True)
    empty = client.post("/audience/groups", data={"name": ""})
    assert empty.status_code == 200 and db.session.scalar(select(func.count()).select_from(Group)) == 3

    renamed = client.post(f"/audience/groups/{group.id}", data={"name": "Key accounts", "description": "Top 50"})
    assert renamed.status_code == 302
    taken = client.post(f"/audience/groups/{group.id}", data={"name": "Washer owners"})
    assert taken.status_code == 200 and "exists already" in taken.get_data(as_text=True)
    db.session.expire_all()
    assert (group.name, group.description) == ("Key accounts", "Top 50")

    vip = audience["vip"]
    confirm = client.get(f"/audience/groups/{vip.id}/delete").get_data(as_text=True)
    assert "Delete “VIP”?" in confirm and "2 memberships" in confirm
    assert client.post(f"/audience/groups/{vip.id}/delete").status_code == 302
    assert db.session.scalar(select(func.count()).select_from(Group).where(Group.id == vip.id)) == 0
    assert db.session.scalar(select(func.count()).select_from(GroupMember).where(GroupMember.group_id == vip.id)) == 0
    assert db.session.get(Subscriber, audience["anna"].id) is not None  # subscribers stay
    assert ["group.create", "group.update", "group.delete"] == [a for a in _actions() if a.startswith("group.")]


def test_pasted_keys_are_previewed_and_written_only_on_confirm(client, login_as, audience):
    login_as(Role.MARKETER)
    group = _group("New group")
    pasted = " Anna.Kowalska@example.com\njan@example.com, ghost@example.com\n\nghost@example.com\nola@example.com"
    preview = client.post(f"/audience/groups/{group.id}/members/preview", data={"keys": pasted},
                          headers={"HX-Request": "true", "HX-Target": "audience-member-preview"})
    html = preview.get_data(as_text=True)
    assert preview.status_code == 200 and html.lstrip().startswith('<div id="audience-member-preview"')
    assert "nothing has been written yet" in html and "ghost@example.com" in html
    assert "<strong>4</strong> distinct keys" in html and "Add 3 members" in html
    assert _member_keys(group) == []  # nothing written by the preview
    token = html.split('name="token" value="')[1].split('"')[0]

    confirmed = client.post(f"/audience/groups/{group.id}/members/confirm", data={"token": token})
    assert confirmed.status_code == 302
    assert _member_keys(group) == ["anna.kowalska@example.com", "jan@example.com", "ola@example.com"]
    page = client.get(f"/audience/groups/{group.id}").get_data(as_text=True)
    assert "Added 3 members" in page and "1 keys are unknown" in page and "ola@example.com" in page
    again = client.post(f"/audience/groups/{group.id}/members/confirm", data={"token": token}, follow_redirects=True)
    assert "preview is gone" in again.get_data(as_text=True)


def test_a_preview_is_kept_in_the_database_for_any_web_server_and_expires(client, login_as, audience, app,
                                                                          tmp_path):
    user = login_as(Role.MARKETER)
    vip = audience["vip"]
    html = client.post(f"/audience/groups/{vip.id}/members/preview",
                       data={"keys": "jan@example.com"}).get_data(as_text=True)
    token = html.split('name="token" value="')[1].split('"')[0]
    stored = db.session.execute(select(PendingMemberList.token_hash, PendingMemberList.keys)).all()
    assert stored == [(hashlib.sha256(token.encode()).hexdigest(), ["jan@example.com"])]  # never the token itself
    # Another web server: its own instance folder, the same database.
    other = build_app(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path / "web2")
    with other.app_context():
        assert group_service.take_pending_members(token, group=db.session.get(Group, vip.id),
                                                  owner=db.session.get(User, user.id)) == ["jan@example.com"]
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    # Taken once: a second confirm, here or there, finds nothing.
    assert group_service.take_pending_members(token, group=vip, owner=user) is None
    db.session.commit()
    html = client.post(f"/audience/groups/{vip.id}/members/preview",
                       data={"keys": "ola@example.com"}).get_data(as_text=True)
    stale = html.split('name="token" value="')[1].split('"')[0]
    db.session.execute(update(PendingMemberList).values(created_at=utcnow() - timedelta(hours=2)))
    db.session.commit()
    assert group_service.take_pending_members(stale, group=vip, owner=user) is None


def test_uploaded_csv_preview_reads_the_subscriber_key_column_without_javascript(client, login_as, audience):
    login_as(Role.MARKETER)
    group = audience["vip"]
    upload = _upload("name,subscriber_key\nJan,jan@example.com\nAnna,anna.kowalska@example.com\nX,unknown@x.org\n")
    page = client.post(f"/audience/groups/{group.id}/members/preview", data={"file": upload},
                       content_type="multipart/form-data")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "<html" in html  # the whole group page, with the preview in it
    assert "(1 already in the group)" in html and "unknown@x.org" in html and "Add 1 member" in html
    first_column = _upload("jan@example.com\nola@example.com\n")
    html = client.post(f"/audience/groups/{group.id}/members/preview", data={"file": first_column},
                       content_type="multipart/form-data").get_data(as_text=True)
    assert "Add 2 members" in html
    nothing = client.post(f"/audience/groups/{group.id}/members/preview", data={"keys": " \n "})
    assert nothing.status_code == 200 and "Paste some keys or choose a file" in nothing.get_data(as_text=True)
    assert _member_keys(group) == ["anna.kowalska@example.com", "z.wolska@example.com"]


def test_a_preview_confirms_only_for_its_user_and_group(client, login_as, audience, app):
    login_as(Role.MARKETER)
    html = client.post(f"/audience/groups/{audience['vip'].id}/members/preview",
                       data={"keys": "jan@example.com"}).get_data(as_text=True)
    token = html.split('name="token" value="')[1].split('"')[0]
    other_group = _group("Other")
    client.post(f"/audience/groups/{other_group.id}/members/confirm", data={"token": token})
    assert _member_keys(other_group) == []
    colleague = app.test_client()
    colleague.post("/login", data={"email": make_user(Role.MARKETER).email, "password": "correct horse battery staple"})
    colleague.post(f"/audience/groups/{audience['vip'].id}/members/confirm", data={"token": token})
    assert "jan@example.com" not in _member_keys(audience["vip"])
    client.post(f"/audience/groups/{audience['vip'].id}/members/confirm", data={"token": "../../etc/passwd"})
    client.post(f"/audience/groups/{audience['vip'].id}/members/confirm", data={"token": token})
    assert "jan@example.com" in _member_keys(audience["vip"])


def test_remove_a_member(client, login_as, audience):
    login_as(Role.MARKETER)
    vip = audience["vip"]
    page = client.get(f"/audience/groups/{vip.id}").get_data(as_text=True)
    assert "anna.kowalska@example.com" in page and "Remove" in page
    client.post(f"/audience/groups/{vip.id}/members/remove", data={"key": "anna.kowalska@example.com"})
    assert _member_keys(vip) == ["z.wolska@example.com"]


# --- CSV import -----------------------------------------------------------------------------------------

GOOD_CSV = (
    "key,name,phone,locale,time_zone,attributes,attr.tier,groups\n"
    "New.One@Example.com,New One,+48 600 100 200,en_GB,Europe/London,"
    '"{""points"": 120, ""tier"": ""x""}",gold,VIP;Fresh\n'
    "jan@example.com,,,pl,,,silver,Washer owners\n"
    "plain@example.com,,,,,,,\n"
)


def _import(client, text: str, **headers):
    return client.post("/audience/import", data={"file": _upload(text)}, content_type="multipart/form-data",
                       headers=headers)


def test_import_with_one_bad_line_imports_nothing_and_names_the_line(client, login_as, audience):
    login_as(Role.MARKETER)
    before = db.session.scalar(select(func.count()).select_from(Subscriber))
    bad = GOOD_CSV + "bad@example.com,Bad,0048-not-a-phone,,,,,\n"
    response = _import(client, bad, **{"HX-Request": "true", "HX-Target": "audience-import"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and html.lstrip().startswith('<div id="audience-import"')
    assert "The file was not imported" in html and "<td>5</td><td>phone</td>" in html
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(Subscriber)) == before
    assert db.session.scalar(select(Group).where(Group.name == "Fresh")) is None


def test_import_reports_every_kind_of_problem(client, login_as):
    login_as(Role.MARKETER)
    html = _import(client, "key,colour\na@example.com,red\n").get_data(as_text=True)
    assert "Unknown column" in html and "colour" in html
    text = (
        "key,time_zone,attributes,locale\n"
        "a@example.com,Mars/Olympus,,\n"
        'b@example.com,,"[1, 2]",\n'
        "A@example.com,,,\n"
        ",,,\n"  # blank lines are skipped
        "c@example.com,,,english!\n"
        "d@example.com,,\n"
        # JSON the API refuses too: Python's json reads NaN (PostgreSQL refuses it), recurses into "[[[…" until
        # RecursionError, and decodes a lone surrogate that no page or CSV can then encode.
        'nan@example.com,,"{""a"": NaN}",\n'
        'inf@example.com,,"{""a"": 1e999}",\n'
        f"deep@example.com,,{'[' * 3000},\n"
        'half@example.com,,"{""a"": ""\\ud800""}",\n'
        'broken@example.com,,"{""a"": 1",\n'
    )
    html = _import(client, text).get_data(as_text=True)
    for expected in ("<td>2</td><td>time_zone</td>", "<td>3</td><td>attributes</td>", "The same key is on line 2",
                     "<td>6</td><td>locale</td>", "Expected 4 cells, found 3",
                     ):  # fmt: skip
        assert expected in html, expected
    bad_json = "<td>{}</td><td>attributes</td><td>Not valid JSON ({}"
    for line, reason in ((8, "NaN is not allowed in JSON)"), (9, "the number 1e999 is out of range)"),
                         (10, "nested too deeply)"), (11, "a \\u escape is half of a surrogate pair"),
                         (12, "Expecting &#39;,&#39; delimiter at character 8)")):  # fmt: skip
        assert bad_json.format(line, reason) in html, reason
    assert db.session.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_good_import_creates_updates_and_fills_groups(client, login_as, audience):
    login_as(Role.MARKETER)
    jan = audience["jan"]
    jan.phone = "+48111222333"
    db.session.commit()
    html = _import(client, GOOD_CSV).get_data(as_text=True)
    assert "Imported" in html and "<strong>2</strong> subscribers created" in html
    assert "<strong>1</strong> updated" in html and "New groups: Fresh" in html
    db.session.expire_all()
    new = db.session.scalar(select(Subscriber).where(Subscriber.subscriber_key == "new.one@example.com"))
    fields = (new.display_name, new.phone, new.locale, new.time_zone)
    assert fields == ("New One", "+48600100200", "en-GB", "Europe/London")
    assert new.attributes == {"points": 120, "tier": "gold"}  # attr.tier wins over the JSON
    jan = db.session.get(Subscriber, jan.id)
    assert jan.phone == "+48111222333" and jan.locale == "pl" and jan.attributes == {"tier": "silver"}  # empty keeps
    assert _member_keys(audience["vip"]) == ["anna.kowalska@example.com", "new.one@example.com", "z.wolska@example.com"]
    fresh = db.session.scalar(select(Group).where(Group.name == "Fresh"))
    assert _member_keys(fresh) == ["new.one@example.com"]
    assert "subscriber.import" in _actions()
    again = _import(client, GOOD_CSV).get_data(as_text=True)  # idempotent
    assert "<strong>0</strong> subscribers created" in again and "3 unchanged" in again


# --- CSV export -----------------------------------------------------------------------------------------


def _csv_rows(response) -> list[list[str]]:
    assert response.status_code == 200 and response.mimetype == "text/csv"
    return list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))


def test_export_escapes_formula_cells(client, login_as, audience):
    login_as(Role.VIEWER)
    _subscriber("formula@example.com", "=cmd|' /C calc'!A0", phone="+48600100200",
                attributes={"a": "-2", "b": "@SUM(A1)", "c": "\tx"}, locale="@en")
    rows = _csv_rows(client.get("/audience/subscribers.csv?q=formula"))
    assert rows[0][:5] == ["key", "name", "phone", "locale", "time_zone"]
    name, phone, locale = rows[1][1], rows[1][2], rows[1][3]
    assert name == "'=cmd|' /C calc'!A0" and phone == "'+48600100200" and locale == "'@en"
    devices = _csv_rows(client.get("/audience/devices.csv?status=invalid"))
    assert [row[6] for row in devices[1:]] == ["jan@example.com"] and devices[1][4] == "Unregistered"
    assert {"subscriber.export", "device.export"} <= set(_actions())


def test_groups_list_exports_as_csv_with_formula_cells_escaped(client, login_as, audience):
    login_as(Role.VIEWER)
    _group("=HYPERLINK(\"http://evil.example\")", [audience["jan"]])
    page = client.get("/audience/groups").get_data(as_text=True)
    assert 'href="/audience/groups.csv"' in page
    rows = _csv_rows(client.get("/audience/groups.csv"))
    assert rows[0] == ["id", "name", "description", "members", "created_at", "updated_at"]
    assert [(row[1], row[3]) for row in rows[1:]] == [
        ("'=HYPERLINK(\"http://evil.example\")", "1"), ("VIP", "2"), ("Washer owners", "1"),
    ]  # fmt: skip
    assert rows[2][0] == str(audience["vip"].id) and rows[2][4][:4] == str(audience["vip"].created_at.year)
    assert _actions().count("group.export") == 1


def test_group_members_export_keeps_the_member_search(client, login_as, audience):
    login_as(Role.VIEWER)
    vip = audience["vip"]
    searched = client.get(f"/audience/groups/{vip.id}?q=zofia").get_data(as_text=True)
    link = f'href="/audience/subscribers.csv?group={vip.id}&amp;q=zofia"'
    assert link in searched and "Export matching members" in searched
    rows = _csv_rows(client.get(f"/audience/subscribers.csv?group={vip.id}&q=zofia"))
    assert [row[0] for row in rows[1:]] == ["z.wolska@example.com"]
    everyone = client.get(f"/audience/groups/{vip.id}").get_data(as_text=True)
    assert f'href="/audience/subscribers.csv?group={vip.id}"' in everyone and ">Export members<" in everyone


def test_export_of_group_members_and_cells_escaped_by_the_writer():
    from webadmin.services.subscriber_csv import csv_stream, escape_cell

    assert [escape_cell(v) for v in ("=1+1", "+1", "-1", "@x", "\tx", "\rx", "a=b", None, True)] == [
        "'=1+1", "'+1", "'-1", "'@x", "'\tx", "'\rx", "a=b", "", "true",
    ]  # fmt: skip
    text = "".join(csv_stream(["a"], [["=x"], [-5]]))
    assert text == "\ufeffa\r\n'=x\r\n'-5\r\n"


def test_group_members_export_and_reimport_round_trip(client, login_as, audience):
    login_as(Role.MARKETER)
    audience["anna"].phone = "+48600100200"
    db.session.commit()
    response = client.get(f"/audience/subscribers.csv?group={audience['vip'].id}")
    rows = _csv_rows(response)
    assert [row[0] for row in rows[1:]] == ["anna.kowalska@example.com", "z.wolska@example.com"]
    assert rows[1][2] == "'+48600100200"
    exported = response.get_data(as_text=True)
    html = _import(client, exported.lstrip("\ufeff")).get_data(as_text=True)
    assert "Imported" in html and "2 unchanged" in html  # the escaped '+48… reads back as +48…


# --- access ---------------------------------------------------------------------------------------------


def test_viewer_cannot_change_audience_data(client, login_as, audience):
    login_as(Role.VIEWER)
    vip = audience["vip"].id
    for path, data in [
        ("/audience/groups", {"name": "Sneaky"}),
        (f"/audience/groups/{vip}", {"name": "Renamed"}),
        (f"/audience/groups/{vip}/delete", {}),
        (f"/audience/groups/{vip}/members/preview", {"keys": "jan@example.com"}),
        (f"/audience/groups/{vip}/members/confirm", {"token": "x" * 22}),
        (f"/audience/groups/{vip}/members/remove", {"key": "anna.kowalska@example.com"}),
        ("/audience/import", {"file": _upload(GOOD_CSV)}),
    ]:
        assert client.post(path, data=data).status_code == 403, path
    assert _member_keys(audience["vip"]) == ["anna.kowalska@example.com", "z.wolska@example.com"]
    page = client.get(f"/audience/groups/{vip}").get_data(as_text=True)
    assert "Add members" not in page and "Delete…" not in page and "Remove" not in page
