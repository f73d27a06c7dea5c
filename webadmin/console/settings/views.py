"""Settings pages: everyone on staff may read them; only admins change anything."""

from __future__ import annotations

from flask import Blueprint, abort, flash, make_response, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from webadmin.access import Role, allow
from webadmin.console.settings.forms import PLATFORM_LABELS, ApiKeyForm, AppForm, DeliveryForm, RevokeForm
from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.services import ServiceError, apps, channels, settings

bp = Blueprint("settings", __name__, url_prefix="/settings")
bp.add_app_template_global(channels.backend_label, "backend_label")

DEVICE_SELECTION = "delivery.device_selection"


def app_or_404(app_id: int) -> App:
    """The app, or a 404."""
    return apps.get_app(app_id) or abort(404)


def _show_error(form: FlaskForm, exc: ServiceError) -> None:
    """Put a refused change beside its field, or flash it when it concerns no field."""
    db.session.rollback()
    if exc.field in form:
        form[exc.field].errors = [*form[exc.field].errors, exc.message]
    else:
        flash(exc.message, "danger")


def _app_page(app: App, key_form: ApiKeyForm | None = None):
    """Render an app's page (its keys, and the form for a new key)."""
    return render_template(
        "settings/app.html",
        app=app,
        keys=apps.api_keys_of(app),
        key_form=key_form or ApiKeyForm(formdata=None),
        revoke_form=RevokeForm(),
        platform_labels=PLATFORM_LABELS,
        channel_rows=channels.platform_channels(app),
    )


@bp.route("/")
@allow(Role.VIEWER, write=Role.ADMIN)
def index():
    """Apps, the delivery setting and the API documentation link."""
    form = DeliveryForm(formdata=None, device_selection=settings.get(DEVICE_SELECTION))
    return render_template(
        "settings/index.html", rows=apps.list_apps(), delivery_form=form, platform_labels=PLATFORM_LABELS
    )


@bp.route("/delivery", methods=["POST"])
@allow(Role.ADMIN)
def delivery():
    """Save which devices of a subscriber receive a push."""
    form = DeliveryForm()
    if not form.validate_on_submit():
        flash("Choose one of the delivery options.", "danger")
        return redirect(url_for("settings.index"))
    try:
        settings.put(DEVICE_SELECTION, form.device_selection.data, actor=current_user)
    except ServiceError as exc:
        db.session.rollback()
        flash(exc.message, "danger")
    else:
        flash("Delivery setting saved.", "success")
    return redirect(url_for("settings.index"))


@bp.route("/apps/new", methods=["GET", "POST"])
@allow(Role.ADMIN)
def new_app():
    """Add an app."""
    form = AppForm(platforms=["android", "ios", "web"])
    if form.validate_on_submit():
        try:
            app = apps.create_app(
                form.name.data, form.platforms.data, form.deep_link_scheme.data, actor=current_user,
                web_link_base=form.web_link_base.data,
            )
        except ServiceError as exc:
            _show_error(form, exc)
        else:
            flash(f"App {app.name} created. Create an API key so it can register devices.", "success")
            return redirect(url_for("settings.show_app", app_id=app.id))
    return render_template("settings/app_form.html", form=form, app=None)


@bp.route("/apps/<int:app_id>")
@allow(Role.VIEWER, write=Role.ADMIN)
def show_app(app_id: int):
    """An app: its details, API keys and channels."""
    return _app_page(app_or_404(app_id))


@bp.route("/apps/<int:app_id>/edit", methods=["GET", "POST"])
@allow(Role.ADMIN)
def edit_app(app_id: int):
    """Change an app's name, platforms or deep-link scheme."""
    app = app_or_404(app_id)
    form = AppForm(obj=app)
    if form.validate_on_submit():
        try:
            apps.update_app(app, form.name.data, form.platforms.data, form.deep_link_scheme.data, actor=current_user,
                            web_link_base=form.web_link_base.data)
        except ServiceError as exc:
            _show_error(form, exc)
        else:
            flash(f"App {app.name} saved.", "success")
            return redirect(url_for("settings.show_app", app_id=app.id))
    return render_template("settings/app_form.html", form=form, app=app)


@bp.route("/apps/<int:app_id>/keys", methods=["POST"])
@allow(Role.ADMIN)
def create_key(app_id: int):
    """Issue an API key and show its secret this once (answered directly, never redirected or cached)."""
    app, form = app_or_404(app_id), ApiKeyForm()
    if form.validate_on_submit():
        try:
            key, secret = apps.create_api_key(app, form.name.data, actor=current_user)
        except ServiceError as exc:
            _show_error(form, exc)
        else:
            response = make_response(render_template("settings/api_key_created.html", app=app, key=key, secret=secret))
            response.headers["Cache-Control"] = "no-store"
            return response
    return _app_page(app, key_form=form)


@bp.route("/apps/<int:app_id>/keys/<int:key_id>/revoke", methods=["POST"])
@allow(Role.ADMIN)
def revoke_key(app_id: int, key_id: int):
    """Revoke a key: devices registering with it are refused from now on."""
    app = app_or_404(app_id)
    key = apps.get_api_key(app, key_id) or abort(404)
    if not RevokeForm().validate_on_submit():
        abort(400)
    if apps.revoke_api_key(key, actor=current_user):
        flash(f"Key {key.prefix} ({key.name}) revoked.", "success")
    else:
        flash(f"Key {key.prefix} was already revoked.", "info")
    return redirect(url_for("settings.show_app", app_id=app.id))


# The Channels card of an app's page and the Sharing page have their own modules; importing them adds their routes
# to this blueprint.
from webadmin.console.settings import channel_views, sharing_views  # noqa: E402, F401
