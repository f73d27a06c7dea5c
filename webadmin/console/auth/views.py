"""Sign-in, sign-out and the first-run page that creates the first admin."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from webadmin.access import Role, allow, public
from webadmin.console.auth.forms import LoginForm, LogoutForm, SetupForm
from webadmin.console.request_info import client_address, safe_next
from webadmin.extensions import db
from webadmin.models.user import User
from webadmin.services import ServiceError, accounts

bp = Blueprint("auth", __name__)


def _limits() -> accounts.LoginLimits:
    """Sign-in limits from the configuration."""
    cfg = current_app.config
    return accounts.LoginLimits(
        per_account=cfg["LOGIN_MAX_FAILURES_ACCOUNT"],
        per_address=cfg["LOGIN_MAX_FAILURES_ADDRESS"],
        window=timedelta(minutes=cfg["LOGIN_WINDOW_MINUTES"]),
    )


def _sign_in(user: User) -> None:
    """Open a server-side session and hand its id to Flask-Login."""
    accounts.start_session(
        user,
        hours=current_app.config["SESSION_HOURS"],
        address=client_address(),
        user_agent=request.headers.get("User-Agent"),
    )
    login_user(user)


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    """Sign in with email and password, then go back to where the user was heading."""
    if not accounts.has_users():
        return redirect(url_for("auth.setup"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        try:
            user = accounts.authenticate(form.email.data, form.password.data, client_address(), _limits())
        except ServiceError as exc:
            db.session.rollback()
            flash(exc.message, "danger")
        else:
            _sign_in(user)
            return redirect(safe_next(form.next.data, url_for("dashboard.index")))
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
@allow(Role.VIEWER, write=Role.VIEWER)  # signing yourself out changes nothing but your own session
def logout():
    """End the server-side session, so a copy of the cookie no longer works."""
    form = LogoutForm()
    if form.validate_on_submit():
        accounts.end_session(current_user.get_id(), actor=current_user, address=client_address())
        logout_user()
        flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/setup", methods=["GET", "POST"])
@public
def setup():
    """First run: create the first admin. Gone once any account exists."""
    if accounts.has_users():
        return redirect(url_for("auth.login"))
    form = SetupForm()
    if form.validate_on_submit():
        try:
            user = accounts.create_first_admin(form.email.data, form.password.data)
        except ServiceError as exc:
            db.session.rollback()
            flash(exc.message, "danger")
            return redirect(url_for("auth.login"))
        _sign_in(user)
        flash("Welcome! Your admin account is ready.", "success")
        return redirect(url_for("dashboard.index"))
    return render_template("auth/setup.html", form=form)
