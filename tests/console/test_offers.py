"""Offers and products: CRUD, validation, archive, the Push Offer rule, the pushes list, and roles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from tests.factories import make_app
from webadmin.extensions import db
from webadmin.models.audit import AuditEvent
from webadmin.models.campaign import Campaign
from webadmin.models.offer import Offer
from webadmin.models.types import utcnow
from webadmin.models.user import Role
from webadmin.services import simulator

FORM = {"kind": "offer", "name": "Half-price hot chocolate", "description": "All afternoon.",
        "image_url": "https://images.example.com/nibs/hot.jpg", "valid_from": "2030-03-01",
        "valid_until": "2030-03-31", "deep_link": ""}


def make_offer(app, name: str = "Free truffle", **fields) -> Offer:
    """An offer of an app."""
    offer = Offer(app_id=app.id, name=name, kind=fields.pop("kind", "offer"), **fields)
    db.session.add(offer)
    db.session.flush()
    offer.deep_link = offer.deep_link or f"nibs://{offer.kind}s/{offer.id}"
    db.session.commit()
    return offer


def _count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def _actions() -> list[str]:
    query = select(AuditEvent.action).where(AuditEvent.action.startswith("offer.")).order_by(AuditEvent.id)
    return list(db.session.scalars(query))


def test_create_offer_with_default_deep_link_and_utc_days(client, login_as):
    nibs = make_app("Nibs")
    login_as(Role.MARKETER)
    response = client.post("/offers/new", data={**FORM, "app_id": nibs.id})
    offer = db.session.scalar(select(Offer))
    assert response.status_code == 302 and response.headers["Location"] == f"/offers/{offer.id}"
    assert offer.deep_link == f"nibs://offers/{offer.id}"
    assert offer.valid_from == datetime(2030, 3, 1, tzinfo=UTC)
    assert offer.valid_until.date().isoformat() == "2030-03-31" and offer.valid_until.hour == 23
    assert _actions() == ["offer.create"]
    page = client.get(f"/offers/{offer.id}").get_data(as_text=True)
    assert "Half-price hot chocolate" in page and f"nibs://offers/{offer.id}" in page and "upcoming" in page


def test_a_product_links_to_products_and_a_typed_route_gets_the_scheme(client, login_as):
    nibs = make_app("Nibs")
    login_as(Role.MARKETER)
    client.post("/offers/new", data={**FORM, "kind": "product", "app_id": nibs.id})
    client.post("/offers/new", data={**FORM, "name": "Routed", "app_id": nibs.id, "deep_link": "/shop/bars"})
    product, routed = db.session.scalars(select(Offer).order_by(Offer.id)).all()
    assert product.deep_link == f"nibs://products/{product.id}"
    assert routed.deep_link == "nibs://shop/bars"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, "This field is required."),
        ({"deep_link": "javascript:alert(1)"}, "Only https:// or nibs:// links are allowed"),
        ({"deep_link": "otherapp://offers/1"}, "Only https:// or nibs:// links are allowed"),
        ({"image_url": "http://images.example.com/a.jpg"}, "The image must be an https:// URL."),
        ({"image_url": "data:image/png;base64,AAAA"}, "The image must be an https:// URL."),
        ({"valid_from": "2030-03-10", "valid_until": "2030-03-01"}, "cannot be before"),
        ({"kind": "coupon"}, "Not a valid choice"),
    ],
)
def test_validation_errors_change_nothing(client, login_as, changes, message):
    nibs = make_app("Nibs")
    login_as(Role.MARKETER)
    response = client.post("/offers/new", data={**FORM, "app_id": nibs.id, **changes})
    assert response.status_code == 200 and message in response.get_data(as_text=True)
    assert _count(Offer) == 0 and _actions() == []


def test_edit_changes_fields_and_a_default_link_follows_the_kind(client, login_as):
    nibs = make_app("Nibs")
    offer = make_offer(nibs, valid_until=utcnow() + timedelta(days=3))
    login_as(Role.MARKETER)
    form = client.get(f"/offers/{offer.id}/edit").get_data(as_text=True)
    assert 'value="Free truffle"' in form and f"nibs://offers/{offer.id}" in form
    response = client.post(f"/offers/{offer.id}/edit", data={
        **FORM, "app_id": nibs.id, "kind": "product", "name": "Truffle box", "deep_link": f"nibs://offers/{offer.id}"})
    assert response.status_code == 302
    db.session.expire_all()
    offer = db.session.get(Offer, offer.id)
    assert (offer.name, offer.kind, offer.deep_link) == ("Truffle box", "product", f"nibs://products/{offer.id}")
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "offer.update"))
    assert {"name", "kind", "deep_link"} <= set(event.detail["changed"])


def test_edit_refused_keeps_the_offer(client, login_as):
    nibs = make_app("Nibs")
    offer = make_offer(nibs)
    login_as(Role.MARKETER)
    data = {**FORM, "name": "Renamed", "app_id": nibs.id, "deep_link": "data:text/html,x"}
    response = client.post(f"/offers/{offer.id}/edit", data=data)
    assert response.status_code == 200 and "Only https:// or nibs:// links" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Offer, offer.id).name == "Free truffle" and _actions() == []


def test_archive_asks_first_then_the_offer_cannot_be_pushed(client, login_as):
    nibs = make_app("Nibs")
    offer = make_offer(nibs)
    login_as(Role.MARKETER)
    assert f'href="/compose/?offer_id={offer.id}"' in client.get(f"/offers/{offer.id}").get_data(as_text=True)
    confirm = client.get(f"/offers/{offer.id}/archive").get_data(as_text=True)
    assert "Archive “Free truffle”?" in confirm and 'id="offers-archive"' in confirm
    assert db.session.get(Offer, offer.id).archived is False
    assert client.post(f"/offers/{offer.id}/archive").status_code == 302
    db.session.expire_all()
    assert db.session.get(Offer, offer.id).archived is True and _actions() == ["offer.archive"]
    page = client.get(f"/offers/{offer.id}").get_data(as_text=True)
    assert "/compose/?offer_id=" not in page and "archived offers cannot be pushed" in page
    again = client.post(f"/offers/{offer.id}/archive", follow_redirects=True)
    assert "already archived" in again.get_data(as_text=True)


def test_expired_offer_shows_a_disabled_push_button_with_the_reason(client, login_as):
    nibs = make_app("Nibs")
    ended = utcnow() - timedelta(days=2)
    offer = make_offer(nibs, valid_until=ended)
    login_as(Role.MARKETER)
    page = client.get(f"/offers/{offer.id}").get_data(as_text=True)
    assert '<button type="button" class="btn btn-primary" id="offers-push" disabled' in page
    assert f"This offer expired on {ended:%Y-%m-%d}; expired offers cannot be pushed." in page
    assert "/compose/?offer_id=" not in page


def test_offer_page_lists_its_pushes_with_counts_from_the_campaigns(client, login_as):
    nibs = make_app("Nibs")
    offer, other = make_offer(nibs), make_offer(nibs, "Other")
    db.session.add_all([
        Campaign(app_id=nibs.id, text="t", title="Exclusive Offer: Free truffle", source="offer", status="sent",
                 related_type="offer", related_id=str(offer.id), targeted=210, sent=200, opened=50),
        Campaign(app_id=nibs.id, text="Still waiting", source="offer", status="scheduled", related_type="offer",
                 related_id=str(offer.id)),
        Campaign(app_id=nibs.id, text="Not this one", related_type="offer", related_id=str(other.id), sent=9),
    ])
    db.session.commit()
    login_as(Role.VIEWER)
    page = client.get(f"/offers/{offer.id}").get_data(as_text=True)
    assert "Exclusive Offer: Free truffle" in page and "25.0 %" in page and "Still waiting" in page
    assert "Not this one" not in page and "scheduled" in page
    never = make_offer(nibs, "Never pushed")
    assert "Not pushed yet" in client.get(f"/offers/{never.id}").get_data(as_text=True)


def test_list_filters_pages_and_empty_states(client, login_as):
    login_as(Role.VIEWER)
    assert "No offers or products yet" in client.get("/offers/").get_data(as_text=True)
    nibs = make_app("Nibs")
    now = utcnow()
    make_offer(nibs, "Running now")
    make_offer(nibs, "Long gone", valid_until=now - timedelta(days=1))
    make_offer(nibs, "Next week", valid_from=now + timedelta(days=7))
    make_offer(nibs, "Put away", archived=True)
    make_offer(nibs, "Dark bar", kind="product")

    def names(query: str, **headers) -> str:
        return client.get(f"/offers/{query}", headers=headers).get_data(as_text=True)

    current = names("?state=current")
    assert "Running now" in current and "Dark bar" in current and "Long gone" not in current
    assert "Put away" not in current and "Next week" not in current
    assert "Long gone" in names("?state=expired") and "Running now" not in names("?state=expired")
    assert "Next week" in names("?state=upcoming") and "Put away" in names("?state=archived")
    products = names("?kind=product")
    assert "Dark bar" in products and "Running now" not in products
    assert "Nothing matches these filters" in names("?kind=product&state=expired")
    fragment = names("?state=expired", **{"HX-Request": "true", "HX-Target": "offers-list"})
    assert fragment.lstrip().startswith('<div id="offers-list">') and "<html" not in fragment

    for number in range(30):
        make_offer(nibs, f"Bulk {number:02d}")
    first, second = names(""), names("?page=2")
    assert "Bulk 29" in first and "Next" in first and "Bulk 29" not in second and "Running now" in second


def test_viewer_sees_everything_but_cannot_change_or_push(client, login_as):
    nibs = make_app("Nibs")
    offer = make_offer(nibs)
    login_as(Role.VIEWER)
    page = client.get(f"/offers/{offer.id}").get_data(as_text=True)
    assert "Free truffle" in page and "Push Offer" not in page and "/edit" not in page
    assert "New offer or product" not in client.get("/offers/").get_data(as_text=True)
    assert client.post("/offers/new", data={**FORM, "app_id": nibs.id}).status_code == 403
    assert client.post(f"/offers/{offer.id}/edit", data={**FORM, "app_id": nibs.id}).status_code == 403
    assert client.post(f"/offers/{offer.id}/archive").status_code == 403
    assert client.get("/offers/new").status_code == 403
    db.session.expire_all()
    assert _count(Offer) == 1 and db.session.get(Offer, offer.id).archived is False and _actions() == []


def test_unknown_offer_is_404(client, login_as):
    login_as(Role.MARKETER)
    assert client.get("/offers/999").status_code == 404
    assert client.get(f"/offers/{2**40}").status_code == 404
    assert client.post("/offers/999/archive").status_code == 404


def test_new_offer_without_any_app_explains_what_to_do(client, login_as):
    login_as(Role.MARKETER)
    assert "Create one in" in client.get("/offers/new").get_data(as_text=True)


def test_simulator_opens_the_offer_page_for_offer_and_product_links(app):
    with app.test_request_context():
        assert simulator.deep_link_target("nibs://offers/7") == "/offers/7"
        assert simulator.deep_link_target("nibs://products/12?ref=push") == "/offers/12"
        assert simulator.deep_link_target("nibs://offers/latest") is None
        assert simulator.deep_link_target("nibs://cart") is None
