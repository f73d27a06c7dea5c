"""The dashboard page and its demo-data offer."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from webadmin.access import Role, allow
from webadmin.services import demo

bp = Blueprint("dashboard", __name__)


@bp.route("/")
@allow(Role.VIEWER)
def index():
    """Home: KPIs once there is data; on an empty install, an offer to load demo data."""
    return render_template(
        "dashboard/index.html", summary=demo.summary(), demo_form=FlaskForm(), empty=demo.is_empty()
    )


@bp.route("/demo", methods=["POST"])
@allow(Role.ADMIN)
def load_demo():
    """Load the demo data set (admins only; the same as `flask demo load`)."""
    form = FlaskForm()
    if form.validate_on_submit():
        report = demo.load(actor=current_user)
        flash(f"Demo data loaded: {report}.", "success")
    return redirect(url_for("dashboard.index"))
