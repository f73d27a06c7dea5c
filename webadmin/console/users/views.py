"""Admins manage staff accounts and read the audit log."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from webadmin.access import Role, allow
from webadmin.console.request_info import page_arg
from webadmin.console.users.forms import (
    ActiveForm,
    AuditFilterForm,
    CreateUserForm,
    PasswordResetForm,
    RoleForm,
)
from webadmin.extensions import db
from webadmin.models.user import User
from webadmin.services import ServiceError, accounts
from webadmin.services.audit_log import audit_page

bp = Blueprint("users", __name__, url_prefix="/users")


def _user_or_404(user_id: int) -> User:
    """The user, or a 404."""
    return db.session.get(User, user_id) or abort(404)


def _apply(action, success: str):
    """Run a service call; flash its result; always come back to the list."""
    try:
        action()
    except ServiceError as exc:
        db.session.rollback()
        flash(exc.message, "danger")
    else:
        flash(success, "success")
    return redirect(url_for("users.index"))


@bp.route("/", methods=["GET", "POST"])
@allow(Role.ADMIN)
def index():
    """The list of accounts, with the form to create one."""
    form = CreateUserForm()
    if form.validate_on_submit():
        try:
            accounts.create_user(form.email.data, form.password.data, Role(form.role.data), actor=current_user)
            db.session.commit()
        except ServiceError as exc:
            db.session.rollback()
            if exc.field in form:
                form[exc.field].errors.append(exc.message)
            else:
                flash(exc.message, "danger")
        else:
            flash(f"Account {form.email.data} created.", "success")
            return redirect(url_for("users.index"))
    users = db.session.scalars(select(User).order_by(User.email)).all()
    return render_template(
        "users/index.html",
        form=form,
        users=users,
        role_form=RoleForm,
        reset_form=PasswordResetForm(),
        active_form=ActiveForm(),
    )


@bp.route("/<int:user_id>/role", methods=["POST"])
@allow(Role.ADMIN)
def change_role(user_id: int):
    """Give someone another role."""
    user, form = _user_or_404(user_id), RoleForm()
    if not form.validate_on_submit():
        abort(400)
    return _apply(
        lambda: accounts.change_role(user, Role(form.role.data), actor=current_user),
        f"{user.email} is now {form.role.data}.",
    )


@bp.route("/<int:user_id>/active", methods=["POST"])
@allow(Role.ADMIN)
def set_active(user_id: int):
    """Deactivate (signing them out everywhere) or reactivate an account."""
    user, form = _user_or_404(user_id), ActiveForm()
    if not form.validate_on_submit():
        abort(400)
    active = request.form.get("active") == "1"
    state = "reactivated" if active else "deactivated and signed out"
    return _apply(lambda: accounts.set_active(user, active, actor=current_user), f"{user.email} {state}.")


@bp.route("/<int:user_id>/password", methods=["POST"])
@allow(Role.ADMIN)
def reset_password(user_id: int):
    """Set a new password for someone (they are signed out everywhere)."""
    user, form = _user_or_404(user_id), PasswordResetForm()
    if not form.validate_on_submit():
        flash("; ".join(form.password.errors) or "Invalid request.", "danger")
        return redirect(url_for("users.index"))
    return _apply(
        lambda: accounts.reset_password(user, form.password.data, actor=current_user),
        f"New password set for {user.email}; their sessions were ended.",
    )


@bp.route("/audit")
@allow(Role.ADMIN)
def audit():
    """The audit log, newest first, filterable by action and actor."""
    form = AuditFilterForm(request.args)
    form.validate()
    page = audit_page(
        action=form.action.data or None, actor=form.actor.data or None, page=page_arg()
    )
    return render_template("users/audit.html", form=form, page=page)
