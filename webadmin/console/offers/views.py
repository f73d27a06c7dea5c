"""Offers and products: the catalog, its forms, archive, and each offer's page with Push Offer and its pushes."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from wtforms.fields.choices import SelectChoice

import webadmin.services.offers as offers  # registers the Simulator's deep-link resolvers
from webadmin.access import Role, allow
from webadmin.console.offers.forms import ArchiveForm, OfferFilterForm, OfferForm
from webadmin.console.request_info import page_arg
from webadmin.extensions import db, htmx
from webadmin.models.app import App
from webadmin.models.offer import Offer
from webadmin.services import ServiceError

bp = Blueprint("offers", __name__, url_prefix="/offers")


def _offer_or_404(offer_id: int) -> Offer:
    """The offer, or a 404."""
    return offers.get_offer(offer_id) or abort(404)


def _with_apps(form: OfferForm) -> OfferForm:
    """Fill the app choices."""
    form.app_id.choices = [SelectChoice(a.id, a.name) for a in db.session.scalars(select(App).order_by(App.id))]
    return form


def _data(form: OfferForm) -> offers.OfferData:
    """The service's input from the form."""
    return offers.OfferData(
        kind=form.kind.data, app_id=form.app_id.data, name=form.name.data, description=form.description.data,
        image_url=form.image_url.data, valid_from=form.valid_from.data, valid_until=form.valid_until.data,
        deep_link=form.deep_link.data,
    )


def _initial(offer: Offer) -> dict[str, Any]:
    """The edit form's values (dates as the UTC days they were stored for)."""
    return {
        "kind": offer.kind, "app_id": offer.app_id, "name": offer.name, "description": offer.description,
        "image_url": offer.image_url, "deep_link": offer.deep_link,
        "valid_from": offer.valid_from.date() if offer.valid_from else None,
        "valid_until": offer.valid_until.date() if offer.valid_until else None,
    }


def _save(form: OfferForm, offer: Offer | None):
    """Create or change the offer; None (errors beside their fields) when refused."""
    try:
        if offer is None:
            return offers.create_offer(_data(form), actor=current_user)
        return offers.update_offer(offer, _data(form), actor=current_user)
    except ServiceError as exc:
        db.session.rollback()
        if exc.field in form:
            form[exc.field].errors = [*form[exc.field].errors, exc.message]
        else:
            flash(exc.message, "danger")
        return None


@bp.route("/")
@allow(Role.VIEWER, write=Role.MARKETER)
def index():
    """The catalog, filtered by kind and state, newest first."""
    form = OfferFilterForm(request.args)
    form.validate()
    page = offers.list_offers(kind=form.kind.data or None, state=form.state.data or None,
                              page=page_arg())
    filtered = bool(form.kind.data or form.state.data)
    context = {"form": form, "page": page, "state_of": offers.state_of, "filtered": filtered}
    if htmx and htmx.target == "offers-list":
        return render_template("offers/_list.html", **context)
    return render_template("offers/index.html", **context)


@bp.route("/new", methods=["GET", "POST"])
@allow(Role.MARKETER)
def new():
    """Add an offer or product."""
    form = _with_apps(OfferForm())
    if form.validate_on_submit() and (offer := _save(form, None)) is not None:
        flash(f"{offer.kind.title()} “{offer.name}” created.", "success")
        return redirect(url_for("offers.detail", offer_id=offer.id))
    return render_template("offers/form.html", form=form, offer=None)


@bp.route("/<int:offer_id>")
@allow(Role.VIEWER, write=Role.MARKETER)
def detail(offer_id: int):
    """An offer: its details, the Push Offer action (or why it cannot be pushed) and its pushes."""
    offer = _offer_or_404(offer_id)
    return render_template(
        "offers/detail.html", offer=offer, app=db.session.get(App, offer.app_id), state=offers.state_of(offer),
        refusal=offers.push_refusal(offer), pushes=offers.pushes_of(offer),
    )


@bp.route("/<int:offer_id>/edit", methods=["GET", "POST"])
@allow(Role.MARKETER)
def edit(offer_id: int):
    """Change an offer or product."""
    offer = _offer_or_404(offer_id)
    form = _with_apps(OfferForm(data=_initial(offer)))
    if form.validate_on_submit() and _save(form, offer) is not None:
        flash(f"“{offer.name}” saved.", "success")
        return redirect(url_for("offers.detail", offer_id=offer.id))
    return render_template("offers/form.html", form=form, offer=offer)


@bp.route("/<int:offer_id>/archive", methods=["GET", "POST"])
@allow(Role.MARKETER)
def archive(offer_id: int):
    """Ask, then archive: it stays listed under "archived" and can no longer be pushed."""
    offer, form = _offer_or_404(offer_id), ArchiveForm()
    if form.validate_on_submit():
        try:
            offers.archive_offer(offer, actor=current_user)
        except ServiceError as exc:
            db.session.rollback()
            flash(exc.message, "danger")
        else:
            flash(f"“{offer.name}” archived.", "success")
        return redirect(url_for("offers.detail", offer_id=offer.id))
    return render_template("offers/archive.html", offer=offer, form=form)
