"""Settings → Apps → Channels: add, edit, enable, disable, delete and test an app's provider channels (admins)."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from webadmin.access import Role, allow
from webadmin.console.settings.forms import (
    PLATFORM_LABELS,
    ChannelActionForm,
    ChannelChoiceForm,
    ChannelForm,
    channel_form_class,
)
from webadmin.console.settings.views import app_or_404, bp
from webadmin.extensions import db, htmx
from webadmin.models.app import App
from webadmin.models.campaign import Channel
from webadmin.providers.base import PushBackend
from webadmin.services import ServiceError, channels
from webadmin.services.channel_credentials import ChannelInvalid
from webadmin.services.channels import ChannelChange


def _channel_or_404(app: App, channel_id: int) -> Channel:
    """One of the app's channels, or a 404."""
    return channels.get_channel(app, channel_id) or abort(404)


def _back(app: App):
    """Back to the app's page, at its Channels card."""
    return redirect(url_for("settings.show_app", app_id=app.id, _anchor="app-channels"))


def _show_problems(form: ChannelForm, exc: ServiceError) -> None:
    """Put each problem beside its field (credential `x` is input `cred_x`); flash the rest."""
    db.session.rollback()
    problems = exc.problems if isinstance(exc, ChannelInvalid) else {exc.field or "": exc.message}
    for name, message in problems.items():
        target = next((f for f in (name, f"cred_{name}") if f in form), None)
        if target is None:
            flash(message, "danger")
        else:
            form[target].errors = [*form[target].errors, message]


def _flash_saved(change: ChannelChange, verb: str) -> None:
    """Say what happened, including which channel enabling this one switched off."""
    channel = change.channel
    text = f"Channel {channel.name} {verb}."
    if change.disabled:
        names = ", ".join(c.name for c in change.disabled)
        label = PLATFORM_LABELS.get(channel.platform, channel.platform)
        text += f" It is now the {label} channel; {names} was disabled."
    elif not channel.enabled:
        text += " It is disabled: it sends nothing until you enable it."
    flash(text, "success")


def _render_form(app: App, form: ChannelForm, platform: str, channel: Channel | None = None):
    """The channel form page (new or edit)."""
    return render_template("settings/channel_form.html", app=app, form=form, channel=channel, platform=platform,
                           active=channels.active_channel(app, platform), platform_labels=PLATFORM_LABELS)


def _chosen_backend(app: App, choice: ChannelChoiceForm) -> type[PushBackend] | None:
    """The provider chosen in step one when the choice is made and valid (problems go on the choice form)."""
    if "backend" not in request.args:
        return None
    try:
        return channels.check_choice(app, choice.platform.data, choice.backend.data)
    except ServiceError as exc:
        choice[exc.field if exc.field in choice else "backend"].errors = [exc.message]
        return None


@bp.route("/apps/<int:app_id>/channels/new", methods=["GET", "POST"])
@allow(Role.ADMIN)
def new_channel(app_id: int):
    """Add a channel: choose platform and provider, then fill in that provider's own form."""
    app = app_or_404(app_id)
    chosen = "backend" in request.args
    choice = ChannelChoiceForm(app.platforms, formdata=request.args if chosen else None,
                               platform=request.args.get("platform"))
    cls = _chosen_backend(app, choice)
    if cls is None:
        return render_template("settings/channel_new.html", app=app, choice=choice)
    platform = choice.platform.data
    default_name = f"{cls.label.split(' (')[0]} {PLATFORM_LABELS.get(platform, platform)}"
    form = channel_form_class(cls)(name=default_name, enabled=channels.active_channel(app, platform) is None)
    form.describe_stored({})  # nothing stored yet: no "remove the stored …" boxes
    if form.validate_on_submit():
        try:
            change = channels.create_channel(app, platform, cls.type_name, form.channel_input(), actor=current_user)
        except ServiceError as exc:
            _show_problems(form, exc)
        else:
            _flash_saved(change, "added")
            return _back(app)
    return _render_form(app, form, platform)


def _edit_form(channel: Channel) -> ChannelForm:
    """The edit form: stored non-secret values and options filled in, secrets only described."""
    cls = channels.backend_for(channel.backend)
    stored = channels.stored_credentials(channel)
    shown = {f"cred_{f.name}": stored.get(f.name) for f in cls.credential_fields if not f.secret}
    options = {f"option_{k}": v for k, v in (channel.options or {}).items()}
    form = channel_form_class(cls)(name=channel.name, enabled=channel.enabled, **shown, **options)
    form.describe_stored(stored)
    return form


@bp.route("/apps/<int:app_id>/channels/<int:channel_id>/edit", methods=["GET", "POST"])
@allow(Role.ADMIN)
def edit_channel(app_id: int, channel_id: int):
    """Change a channel: secrets left blank keep their stored values."""
    app = app_or_404(app_id)
    channel = _channel_or_404(app, channel_id)
    try:
        form = _edit_form(channel)
    except ServiceError as exc:  # its backend is not installed, or no configured key opens its credentials
        flash(f"{channel.name} cannot be edited: {exc.message} It can only be deleted.", "danger")
        return _back(app)
    if form.validate_on_submit():
        try:
            change = channels.update_channel(channel, form.channel_input(), actor=current_user)
        except ServiceError as exc:
            _show_problems(form, exc)
        else:
            _flash_saved(change, "saved")
            return _back(app)
    return _render_form(app, form, channel.platform, channel)


def _csrf_checked() -> None:
    """Enable, disable, delete and test carry no data but the CSRF token; refuse a POST without it."""
    if not ChannelActionForm().validate_on_submit():
        abort(400)


@bp.route("/apps/<int:app_id>/channels/<int:channel_id>/enable", methods=["POST"])
@allow(Role.ADMIN)
def enable_channel(app_id: int, channel_id: int):
    """Enable a channel; the platform's previously enabled channel is disabled."""
    app = app_or_404(app_id)
    channel = _channel_or_404(app, channel_id)
    _csrf_checked()
    _flash_saved(channels.set_enabled(channel, True, actor=current_user), "enabled")
    return _back(app)


@bp.route("/apps/<int:app_id>/channels/<int:channel_id>/disable", methods=["POST"])
@allow(Role.ADMIN)
def disable_channel(app_id: int, channel_id: int):
    """Disable a channel: its platform goes to the Debug backend unless another channel is enabled."""
    app = app_or_404(app_id)
    channel = _channel_or_404(app, channel_id)
    _csrf_checked()
    channels.set_enabled(channel, False, actor=current_user)
    flash(f"Channel {channel.name} disabled. {_route_now(app, channel.platform)}", "success")
    return _back(app)


@bp.route("/apps/<int:app_id>/channels/<int:channel_id>/delete", methods=["POST"])
@allow(Role.ADMIN)
def delete_channel(app_id: int, channel_id: int):
    """Delete a channel and its stored credentials."""
    app = app_or_404(app_id)
    channel = _channel_or_404(app, channel_id)
    _csrf_checked()
    name, platform = channel.name, channel.platform
    channels.delete_channel(channel, actor=current_user)
    flash(f"Channel {name} deleted. {_route_now(app, platform)}", "success")
    return _back(app)


def _route_now(app: App, platform: str) -> str:
    """Where a platform's pushes go now, in a sentence."""
    label = PLATFORM_LABELS.get(platform, platform)
    active = channels.active_channel(app, platform)
    if active is None:
        return f"{label} pushes now go to the Debug backend: nothing is sent."
    return f"{label} pushes go through {active.name}."


@bp.route("/apps/<int:app_id>/channels/<int:channel_id>/test", methods=["POST"])
@allow(Role.ADMIN)
def test_channel(app_id: int, channel_id: int):
    """Test connection: the channel's fragment with the result for htmx, else a flash and a redirect."""
    app = app_or_404(app_id)
    channel = _channel_or_404(app, channel_id)
    _csrf_checked()
    check = channels.test_connection(channel.id, actor=current_user)
    db.session.refresh(channel)
    if htmx and htmx.target == f"settings-channel-{channel.id}":
        return render_template("settings/_channel.html", app=app, channel=channel, check=check)
    outcome = "Connection OK" if check.ok else "Connection failed"
    flash(f"{channel.name}: {outcome}. {check.message}", "success" if check.ok else "danger")
    return _back(app)
