"""Compose: the form, its template picker, live audience count and preview, test sends, and the draft → confirmation
step."""

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


def _query_form() -> ComposeForm:
    """The form from an htmx GET's query string (no CSRF on reads)."""
    return _form(formdata=request.args, meta={"csrf": False})


def _prefill() -> compose.Prefill:
    """Prefill from ?offer_id= (Push Offer) or ?from= (duplicate as new)."""
    if offer_id := id_arg("offer_id"):
        return compose.offer_prefill(offer_id)
    if campaign_id := id_arg("from"):
        return compose.campaign_prefill(campaign_id)
    return compose.Prefill({})


@bp.route("/", methods=["GET"])
@allow(Role.MARKETER)
def index():
    """The compose page."""
    try:
        prefill = _prefill()
    except ServiceError as exc:
        flash(exc.message, "danger")
        prefill = compose.Prefill({})
    if prefill.notice:
        flash(prefill.notice, "warning")
    # As `data=`: the prefill has a field named "data", which as a keyword would be WTForms' own argument.
    form = _form(data={**prefill.values, "submission_id": str(uuid.uuid4())})
    return _render(form)


def _render(form: ComposeForm, test_form: TestSendForm | None = None):
    """The page with its count, previews and test devices."""
    test_form = test_form or TestSendForm(formdata=None)
    return render_template("compose/index.html", form=form, limits=PLATFORM_LIMITS, test_form=test_form,
                           preview=compose.preview_audience(form.app_id.data, form.audience()),
                           sms=_sms_preview(form), max_parts=MAX_PARTS,
                           test_devices=compose.test_devices(form.app_id.data, test_form.keys()))


def _sms_preview(form: ComposeForm):
    """The SMS fallback preview of the form's current values."""
    return compose.preview_fallback(form.app_id.data, form.audience(), form.sms_text.data, form.text.data,
                                    form.open_direct.data)


def _use_template(form: ComposeForm, *, overwrite: bool) -> bool:
    """Fill title, text and deep link from the chosen template (only an empty text unless `overwrite`).

    Returns whether the fields were filled; a template that cannot be rendered leaves them as they were and says
    why beside the picker.
    """
    if not form.template_slug.data or (form.text.data and not overwrite):
        return False
    try:
        fill = compose.template_fill(form.template_slug.data, form.template_context.data)
    except ServiceError as exc:
        form[exc.field or "template_slug"].errors = [*form[exc.field or "template_slug"].errors, exc.message]
        return False
    form.title.data, form.text.data = fill.title, fill.text
    form.open_direct.data = fill.open_direct or form.open_direct.data
    return True


def _related(form: ComposeForm) -> tuple[str, str] | None:
    """The offer the push is about; its deep link when none was typed."""
    if not form.offer_id.data:
        return None
    offer = db.session.get(Offer, form.offer_id.data)
    if offer is not None and not form.open_direct.data:
        form.open_direct.data = offer.deep_link
    return (compose.OFFER_RELATED_TYPE, str(form.offer_id.data))


@bp.route("/", methods=["POST"])
@allow(Role.MARKETER)
def submit():
    """Save the draft and go to the confirmation, which states the audience size before anything is sent.

    "Use template" (the picker's button without JavaScript) fills the fields from the template and shows the form
    again; a template chosen with the message left empty fills it before the draft is saved.
    """
    form = _form()
    if "use_template" in request.form:
        _use_template(form, overwrite=True)
        return _render(form)
    _use_template(form, overwrite=False)
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


@bp.route("/template")
@allow(Role.MARKETER)
def use_template():
    """The picker (htmx): the content fields filled from the chosen template, and the preview beside them."""
    form = _query_form()
    _use_template(form, overwrite=True)
    return render_template("compose/_content.html", form=form, limits=PLATFORM_LIMITS, oob_preview=True)


@bp.route("/count")
@allow(Role.MARKETER)
def count():
    """The live audience count (htmx), computed by the engine's own query."""
    form = _query_form()
    preview = compose.preview_audience(form.app_id.data, form.audience())
    return render_template("compose/_count.html", preview=preview)


@bp.route("/preview")
@allow(Role.MARKETER)
def preview():
    """How the push looks on Android and iOS (htmx); a chosen template shows while the message is empty."""
    form = _query_form()
    _use_template(form, overwrite=False)
    return render_template("compose/_preview.html", form=form, limits=PLATFORM_LIMITS)


@bp.route("/sms-preview")
@allow(Role.MARKETER)
def sms_preview():
    """The SMS fallback preview (htmx): who an SMS could reach, no-phone count, text and SMS parts."""
    form = _query_form()
    return render_template("compose/_sms.html", sms=_sms_preview(form), max_parts=MAX_PARTS)


@bp.route("/test-devices")
@allow(Role.MARKETER)
def test_devices():
    """The test device picker (htmx): the app's simulated devices and the devices of the typed tester keys."""
    form, test_form = _query_form(), TestSendForm(formdata=request.args, meta={"csrf": False})
    return render_template("compose/_test_devices.html", test_form=test_form,
                           test_devices=compose.test_devices(form.app_id.data, test_form.keys()))


def _send_test(form: ComposeForm, test_form: TestSendForm) -> None:
    """Send the test and say what happened (flashes)."""
    try:
        sent = compose.send_test(form.draft(related=_related(form)), test_form.test_device_ids.data or [],
                                 test_form.keys(), actor=current_user)
    except ServiceError as exc:
        db.session.rollback()
        flash(exc.message, "danger")
        return
    missing = compose.describe_missing(sent)
    flash(f"Test sent to {sent.campaign.targeted} device(s).{' ' + missing if missing else ''}",
          "warning" if missing else "success")


@bp.route("/test", methods=["POST"])
@allow(Role.MARKETER)
def send_test():
    """Send the form's push now to the chosen test devices ("Find devices" without JavaScript lists them first)."""
    form, test_form = _form(), TestSendForm()
    if "find" in request.form:
        return _render(form, test_form)
    if form.validate_on_submit() and test_form.validate():
        _send_test(form, test_form)
    else:
        flash("Fix the form before sending a test.", "danger")
    if htmx and htmx.target == "compose-test-result":
        return render_template("compose/_test_result.html")
    return _render(form, test_form)
