"""Demo catalog: offers and products of the demo app (some current, some expired) and three push templates."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.message import Template
from webadmin.models.offer import Offer
from webadmin.models.types import utcnow
from webadmin.services import demo
from webadmin.services.offers import default_deep_link

IMAGES = "https://images.example.com/nibs"
# (kind, name, description, image, days from today it started, days from today it ends; None = open)
CATALOG = [
    ("offer", "Half-price hot chocolate", "Any size, all afternoon, with the Nibs app.", "hot-chocolate.jpg", -3, 11),
    ("offer", "Free truffle with any box", "One hand-made truffle of your choice with every gift box.", "truffle.jpg",
     -10, 20),
    ("offer", "Weekend double points", "Double loyalty points on every purchase, Saturday and Sunday.",
     "double-points.jpg", 2, 4),
    ("offer", "Valentine's 3-for-2", "Three heart boxes for the price of two.", "valentine.jpg", -60, -45),
    ("offer", "Summer sorbet launch", "20 % off the new sorbet range in its launch week.", "sorbet.jpg", -40, -33),
    ("product", "Dark 70 % Madagascar bar", "Single-origin dark chocolate with red-fruit notes, 100 g.",
     "dark-70.jpg", None, None),
    ("product", "Salted caramel pralines", "A box of 12 pralines with Guérande salted caramel.", "pralines.jpg",
     None, None),
    ("product", "Hazelnut gianduja spread", "Piedmont hazelnuts and milk chocolate, 250 g jar.", "gianduja.jpg",
     -120, -1),
]
TEMPLATES = [
    ("welcome", "Welcome, {{ name }}!", "Thanks for joining Nibs, {{ name }}. Your first hot chocolate is on us.",
     "home"),
    ("offer-reminder", "{{ offer }} ends soon",
     "Hi {{ name|default('there') }}, “{{ offer }}” ends on {{ ends }}. Don't miss it!", None),
    ("cart-abandoned", "Still thinking it over?",
     "{{ items|length }} treat{{ '' if items|length == 1 else 's' }} waiting in your basket: "
     "{{ items|join(', ') }}.", "cart"),
]


@demo.register_loader("catalog")
def load_catalog() -> str | None:
    """Offers, products and templates for the demo app, once (nothing is added when they exist)."""
    app = db.session.scalar(select(App).order_by(App.id).limit(1))
    if app is None:
        return None
    offers, templates = _load_offers(app), _load_templates(app)
    if not offers and not templates:
        return None
    return f"{offers} offers and products, {templates} templates"


def _load_offers(app: App) -> int:
    """The catalog for one app, unless it already has offers."""
    if db.session.scalar(select(func.count(Offer.id)).where(Offer.app_id == app.id)):
        return 0
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    for kind, name, description, image, start, end in CATALOG:
        offer = Offer(
            kind=kind, app_id=app.id, name=name, description=description, image_url=f"{IMAGES}/{image}",
            valid_from=today + timedelta(days=start) if start is not None else None,
            valid_until=today + timedelta(days=end + 1, microseconds=-1) if end is not None else None,
        )
        db.session.add(offer)
        db.session.flush()
        offer.deep_link = default_deep_link(kind, offer.id, app.deep_link_scheme)
    return len(CATALOG)


def _load_templates(app: App) -> int:
    """The templates whose slugs are still free."""
    taken = set(db.session.scalars(select(Template.slug)))
    scheme = app.deep_link_scheme
    added = 0
    for slug, title, body, route in TEMPLATES:
        if slug in taken:
            continue
        link = f"{scheme}://{route}" if scheme and route else None
        db.session.add(Template(slug=slug, title=title, body=body, open_direct=link, is_active=True))
        added += 1
    db.session.flush()
    return added


demo.register_counter("Offers and products", lambda: db.session.scalar(select(func.count(Offer.id))) or 0)
