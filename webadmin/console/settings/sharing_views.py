"""Settings → Sharing: the audience of /share pushes and their rate limits (admins change, staff read)."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from wtforms.fields.choices import SelectChoice

from webadmin.access import Role, allow
from webadmin.console.settings.sharing_forms import SharingForm
from webadmin.console.settings.views import bp
from webadmin.extensions import db
from webadmin.services import ServiceError, sharing


def _form() -> SharingForm:
    """The form with the stored values (on GET) and the group choices."""
    current = sharing.current_settings()
    form = SharingForm(data=current) if request.method == "GET" else SharingForm()
    form.audience.choices = [SelectChoice("all", "All users")] + [
        SelectChoice(f"group:{g.id}", f"Group: {g.name}") for g in sharing.group_choices()]
    return form


@bp.route("/sharing", methods=["GET", "POST"])
@allow(Role.VIEWER, write=Role.ADMIN)
def sharing_settings():
    """Show the Sharing settings; admins save them (validated and audited by the service)."""
    form = _form()
    if form.validate_on_submit():
        try:
            sharing.configure(form.audience.data, form.max_per_hour.data, form.max_per_app_per_hour.data,
                              actor=current_user)
        except ServiceError as exc:  # nothing was written; the reason goes beside its field
            db.session.rollback()
            target = form[exc.field] if exc.field in form else form.audience
            target.errors = [*target.errors, exc.message]
        else:
            flash("Sharing settings saved.", "success")
            return redirect(url_for("settings.sharing_settings"))
    return render_template("settings/sharing.html", form=form)
