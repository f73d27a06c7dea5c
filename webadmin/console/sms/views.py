"""Settings → SMS (the channel the fallback sends through) and the campaign page's live SMS fragment."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from webadmin.access import Role, allow
from webadmin.console.sms.forms import ActionForm, BackendChoiceForm, SmsChannelForm, channel_form_class
from webadmin.extensions import db, htmx
from webadmin.models.audience import Subscriber
from webadmin.models.campaign import Campaign
from webadmin.models.sms import SmsChannel
from webadmin.services import ServiceError, sms_channel, sms_fallback
from webadmin.sms import BACKENDS

bp = Blueprint("sms", __name__)
# The campaign and subscriber pages include fragments that read their SMS rows through these.
bp.add_app_template_global(sms_fallback.campaign_sms, "sms_for_campaign")
bp.add_app_template_global(sms_fallback.subscriber_sms, "sms_for_subscriber")
bp.add_app_template_global(sms_fallback.subscriber_block, "sms_block_for_subscriber")


def _form(backend: str, channel: SmsChannel | None, formdata: object = None) -> SmsChannelForm:
    """The credentials form of a backend, prefilled with the stored non-secret values of that backend."""
    cls = BACKENDS.get(backend) or BACKENDS["debug"]
    same = channel is not None and channel.backend == cls.type_name
    stored = sms_channel.stored_credentials(channel) if same else {}
    values = {f"cred_{f.name}": stored.get(f.name) for f in cls.credential_fields if not f.secret}
    form_class = channel_form_class(cls, sms_channel.stored_secrets(channel) if same else [])
    kwargs = {} if formdata is not None else {"formdata": None}
    return form_class(**kwargs, backend=cls.type_name, sender=channel.sender if same else None, **values)


def _context(channel: SmsChannel | None) -> dict:
    """What the status fragment and the form show about the channel (names of stored secrets, never values)."""
    return {"channel": channel, "labels": {name: cls.label for name, cls in BACKENDS.items()},
            "stored_secrets": sms_channel.stored_secrets(channel)}


def _page(form: SmsChannelForm, channel: SmsChannel | None):
    """The settings page (or only its form when htmx swaps the provider)."""
    if htmx and htmx.target == "sms-channel-form":
        return render_template("sms/_form.html", form=form, **_context(channel))
    choice = BackendChoiceForm(formdata=None, backend=form.backend.data)
    return render_template("sms/settings.html", form=form, choice=choice, **_context(channel))


@bp.route("/settings/sms")
@allow(Role.VIEWER, write=Role.ADMIN)
def settings():
    """The SMS channel: its provider, sender and state, and (for admins) the form to change it."""
    channel = sms_channel.current_channel()
    backend = request.args.get("backend") or (channel.backend if channel else "debug")
    return _page(_form(backend if backend in BACKENDS else "debug", channel), channel)


@bp.route("/settings/sms", methods=["POST"])
@allow(Role.ADMIN)
def save():
    """Save the SMS channel; problems are shown beside their fields."""
    channel = sms_channel.current_channel()
    form = _form(request.form.get("backend", ""), channel, formdata=request.form)
    if form.validate_on_submit():
        try:
            sms_channel.save_channel(form.channel_input(), actor=current_user)
        except ServiceError as exc:
            db.session.rollback()
            _show_problems(form, exc)
        else:
            flash(f"SMS channel saved: {BACKENDS[form.backend.data].label}.", "success")
            return redirect(url_for("sms.settings"))
    return _page(form, channel)


def _show_problems(form: SmsChannelForm, exc: ServiceError) -> None:
    """Each problem beside its field (credential `x` is input `cred_x`); the rest flashed."""
    problems = exc.problems if isinstance(exc, sms_channel.SmsChannelInvalid) else {exc.field or "": exc.message}
    for name, message in problems.items():
        shown = (f for f in (name, f"cred_{name}") if f and f in form and form[f].type != "HiddenField")
        target = next(shown, None)
        if target is None:
            flash(message, "danger")
        else:
            form[target].errors = [*form[target].errors, message]


@bp.route("/settings/sms/test", methods=["POST"])
@allow(Role.ADMIN)
def test():
    """Test connection: the result fragment for htmx, else a flash and a redirect."""
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        check = sms_channel.test_connection(actor=current_user)
    except ServiceError as exc:
        flash(exc.message, "warning")
        return redirect(url_for("sms.settings"))
    if htmx and htmx.target == "sms-status":
        return render_template("sms/_status.html", check=check, **_context(sms_channel.current_channel()))
    flash(f"{'Connection OK' if check.ok else 'Connection failed'}: {check.message}",
          "success" if check.ok else "danger")
    return redirect(url_for("sms.settings"))


@bp.route("/campaigns/<int:campaign_id>/sms")
@allow(Role.VIEWER)
def campaign_fragment(campaign_id: int):
    """The campaign page's SMS fallback section alone (it polls itself while SMS may still change)."""
    campaign = db.session.get(Campaign, campaign_id) or abort(404)
    return render_template("campaigns/_sms.html", campaign=campaign)


@bp.route("/campaigns/<int:campaign_id>/sms/stop", methods=["POST"])
@allow(Role.MARKETER)
def stop(campaign_id: int):
    """Stop the campaign's SMS fallback (a sent campaign cannot be cancelled, its fallback still can)."""
    campaign = db.session.get(Campaign, campaign_id) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        ended = sms_fallback.stop(campaign, actor=current_user)
    except ServiceError as exc:
        db.session.rollback()
        flash(exc.message, "warning")
    else:
        flash(f"SMS fallback stopped: no more SMS for this campaign ({ended:,} waiting SMS cancelled).", "success")
    return redirect(url_for("campaigns.detail", campaign_id=campaign_id))


@bp.route("/audience/subscribers/<int:subscriber_id>/sms-block/clear", methods=["POST"])
@allow(Role.MARKETER)
def clear_block(subscriber_id: int):
    """Allow SMS fallbacks to the subscriber's number again."""
    db.session.get(Subscriber, subscriber_id) or abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    if sms_fallback.clear_block(subscriber_id, actor=current_user):
        flash("SMS allowed again for this number.", "success")
    else:
        flash("This subscriber's number was not blocked.", "info")
    return redirect(url_for("audience.subscriber", subscriber_id=subscriber_id))
