"""Simulated devices: a list, a phone-like page that shows pushes as they arrive, and taps."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from webadmin.access import Role, allow
from webadmin.extensions import db, htmx
from webadmin.models.app import PLATFORMS, App
from webadmin.services import ServiceError, simulator

bp = Blueprint("simulator", __name__, url_prefix="/simulator")


class NewDeviceForm(FlaskForm):
    """A new simulated install."""

    app_id = SelectField("App", coerce=int, validators=[DataRequired()])
    platform = SelectField("Platform", choices=[SelectChoice(p, p.title()) for p in PLATFORMS])
    subscriber_key = StringField("Subscriber key (optional)", validators=[Optional(), Length(max=254)])


def _device_or_404(device_id: int):
    """The simulated device, or 404."""
    try:
        return simulator.simulated_device(device_id)
    except ServiceError:
        abort(404)


@bp.route("/", methods=["GET", "POST"])
@allow(Role.VIEWER, write=Role.MARKETER)
def index():
    """Simulated devices, and a form to add one."""
    form = NewDeviceForm()
    form.app_id.choices = [SelectChoice(a.id, a.name) for a in db.session.scalars(select(App).order_by(App.name))]
    if form.validate_on_submit():
        try:
            device_id = simulator.create_device(db.session.get(App, form.app_id.data), form.platform.data,
                                                form.subscriber_key.data)
        except ServiceError as exc:
            db.session.rollback()
            flash(exc.message, "danger")
        else:
            return redirect(url_for("simulator.phone", device_id=device_id))
    return render_template("simulator/index.html", form=form, devices=simulator.simulated_devices())


@bp.route("/<int:device_id>")
@allow(Role.VIEWER, write=Role.MARKETER)
def phone(device_id: int):
    """The phone: notifications as they arrive (the inbox fragment polls while the page is open)."""
    device = _device_or_404(device_id)
    notifications = simulator.inbox(device)
    if htmx and htmx.target == "simulator-inbox":
        return render_template("simulator/_inbox.html", device=device, notifications=notifications)
    return render_template("simulator/phone.html", device=device, notifications=notifications)


@bp.route("/<int:device_id>/open/<uuid>", methods=["POST"])
@allow(Role.VIEWER, write=Role.MARKETER)
def open_notification(device_id: int, uuid: str):
    """Tap: report the open and follow the push's deep link inside the simulated app."""
    device = _device_or_404(device_id)
    try:
        _, link = simulator.tap(device, uuid)
    except ServiceError as exc:
        flash(exc.message, "danger")
        return redirect(url_for("simulator.phone", device_id=device.id))
    return redirect(url_for("simulator.app_screen", device_id=device.id, route=link or ""))


@bp.route("/<int:device_id>/app")
@allow(Role.VIEWER)
def app_screen(device_id: int):
    """The simulated app, opened on the push's deep link (offers open their page)."""
    device = _device_or_404(device_id)
    route = request.args.get("route", "")
    return render_template("simulator/app.html", device=device, route=route, target=simulator.deep_link_target(route))
