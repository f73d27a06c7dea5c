"""Push Offer at phone width in a real browser: visible without sideways scrolling, and it opens Compose prefilled."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.factories import PASSWORD, make_app, make_user
from webadmin.extensions import db
from webadmin.models.offer import Offer
from webadmin.models.types import utcnow
from webadmin.models.user import Role

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}


def _offer(app, name: str, **fields) -> Offer:
    """An offer with its default deep link (no image: the browser test has no network)."""
    offer = Offer(app_id=app.id, kind="offer", name=name, description="Any size, all afternoon, with the Nibs app.",
                  **fields)
    db.session.add(offer)
    db.session.flush()
    offer.deep_link = f"nibs://offers/{offer.id}"
    db.session.commit()
    return offer


def _sign_in(page, role: Role) -> None:
    user = make_user(role)
    page.goto("/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def _overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def test_push_offer_at_phone_width(page, live_app, artifacts):
    nibs = make_app("Nibs")
    offer = _offer(nibs, "Half-price hot chocolate with a rather long name for a small screen")
    page.set_viewport_size(PHONE)
    _sign_in(page, Role.MARKETER)
    page.goto(f"/offers/{offer.id}")
    button = page.locator("#offers-push")
    assert button.is_visible() and button.is_enabled()
    box = button.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"]  # in the first screen, no scrolling
    assert _overflow(page) <= 0
    page.screenshot(path=str(artifacts / "offer-390px.png"), full_page=True)

    button.click()
    page.wait_for_url(f"**/compose/?offer_id={offer.id}")
    assert page.locator("textarea[name=text]").input_value() == f"Exclusive Offer: {offer.name}"
    assert page.locator("input[name=open_direct]").input_value() == f"nibs://offers/{offer.id}"
    assert page.console_errors == []


def test_expired_offer_button_is_disabled_with_the_reason_at_phone_width(page, live_app):
    nibs = make_app("Nibs")
    offer = _offer(nibs, "Valentine's 3-for-2", valid_until=utcnow() - timedelta(days=5))
    page.set_viewport_size(PHONE)
    _sign_in(page, Role.MARKETER)
    page.goto(f"/offers/{offer.id}")
    assert page.locator("#offers-push").is_disabled()
    assert "expired offers cannot be pushed" in page.locator("#offers-push-reason").inner_text()
    assert _overflow(page) <= 0
    page.goto("/offers/?state=expired")
    assert page.locator("#offers-table").inner_text().count("Valentine's 3-for-2") == 1
    assert _overflow(page) <= 0
    assert page.console_errors == []
