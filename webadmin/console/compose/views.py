"""Compose: the form, its live audience count and preview, test sends, and the draft → confirmation step."""

from __future__ import annotations

import uuid

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from wtforms.fields.choices import SelectChoice

from webadmin.access import Role, allow
from webadmin.console.compose.forms import PLATFORM_LIMITS, ComposeForm, TestSendForm
from webadmin.console.request_info import id_arg
from webadmin.extensions import db, htmx
from webadmin.models.offer import Offer
from webadmin.services import ServiceError, compose
from webadmin.services.audience import normalize_keys
from webadmin.services.sms_fallback import MAX_PARTS

bp = Blueprint("compose", __name__, url_prefix="/compose")


def _form(**prefill) -> ComposeForm:
    """The form with its select options filled in."""
    form = ComposeForm(**prefill)
    options = compose.choices()
    form.app_id.choices = [SelectChoice(a.id, a.name) for a in options.apps]
    form.template_slug.choices = [SelectChoice("", "— none —")] + [
        SelectChoice(t.slug, t.slug) for t in options.templates]
    form.offer_id.choices = [SelectChoice("", "— none —")] + [
        SelectChoice(o.id, f"{o.name} ({o.kind})") for o in options.offers]
    form.group_ids.choices = [SelectChoice(g.id, g.name) for g in options.groups]
    if form.app_id.data is None and options.apps:
        form.app_id.data = options.apps[0].id  # most installs have one app
    return form


def _prefill() -> dict:
    """Prefill from ?offer_id= (Push Offer) or ?from= (duplicate as new)."""
    if offer_id := id_arg("offer_id"):
        return compose.offer_prefill(offer_id)
    if campaign_id := id_arg("from"):
        return compose.campaign_prefill(campaign_id)
    return {}


@bp.route("/", methods=["GET"])
@allow(Role.MARKETER)
def index():
    """The compose page."""
    try:
        prefill = _prefill()
    except ServiceError as exc:
        flash(exc.message, "danger")
        prefill = {}
    form = _form(**prefill, submission_id=str(uuid.uuid4()))
    return _render(form)


def _render(form: ComposeForm):
    """The page with its count and previews."""
    return render_template("compose/index.html", form=form, limits=PLATFORM_LIMITS, test_form=TestSendForm(),
                           preview=compose.preview_audience(form.app_id.data, form.audience()),
                           sms=_sms_preview(form), max_parts=MAX_PARTS)


def _sms_preview(form: ComposeForm):
    """The SMS fallback preview of the form's current values."""
    return compose.preview_fallback(form.app_id.data, form.audience(), form.sms_text.data, form.text.data,
                                    form.open_direct.data)


def _related(form: ComposeForm) -> tuple[str, str] | None:
    """The offer the push is about; its deep link when none was typed."""
    if not form.offer_id.data:
        return None
    offer = db.session.get(Offer, form.offer_id.data)
    if offer is not None and not form.open_direct.data:
        form.open_direct.data = offer.deep_link
    return ("offer", str(form.offer_id.data))


@bp.route("/", methods=["POST"])
@allow(Role.MARKETER)
def submit():
    """Save the draft and go to the confirmation, which states the audience size before anything is sent."""
    form = _form()
    if not form.validate_on_submit():
        return _render(form)
    try:
        campaign = compose.save_draft(form.draft(related=_related(form)), actor=current_user)
    except ServiceError as exc:
        db.session.rollback()
        if exc.field in form:
            form[exc.field].errors.append(exc.message)
        else:
            flash(exc.message, "danger")
        return _render(form)
    return redirect(url_for("campaigns.detail", campaign_id=campaign.id))


@bp.route("/count")
@allow(Role.MARKETER)
def count():
    """The live audience count (htmx), computed by the engine's own query."""
    form = _form(formdata=request.args, meta={"csrf": False})
    preview = compose.preview_audience(form.app_id.data, form.audience())
    return render_template("compose/_count.html", preview=preview)


@bp.route("/preview")
@allow(Role.MARKETER)
def preview():
    """How the push looks on Android and iOS (htmx)."""
    form = _form(formdata=request.args, meta={"csrf": False})
    return render_template("compose/_preview.html", form=form, limits=PLATFORM_LIMITS)


@bp.route("/sms-preview")
@allow(Role.MARKETER)
def sms_preview():
    """The SMS fallback preview (htmx): who an SMS could reach, no-phone count, text and SMS parts."""
    form = _form(formdata=request.args, meta={"csrf": False})
    return render_template("compose/_sms.html", sms=_sms_preview(form), max_parts=MAX_PARTS)


@bp.route("/test", methods=["POST"])
@allow(Role.MARKETER)
def send_test():
    """Send the form's push now to a few test subscribers."""
    form, test_form = _form(), TestSendForm()
    if form.validate_on_submit() and test_form.validate():
        try:
            keys = normalize_keys(test_form.test_keys.data.replace(",", "\n").splitlines())
            campaign = compose.send_test(form.draft(related=_related(form)), keys, actor=current_user)
        except ServiceError as exc:
            db.session.rollback()
            flash(exc.message, "danger")
        else:
            flash(f"Test sent to {campaign.targeted} device(s).", "success")
    else:
        flash("Fix the form before sending a test.", "danger")
    if htmx and htmx.target == "compose-test-result":
        return render_template("compose/_test_result.html")
    return _render(form)
