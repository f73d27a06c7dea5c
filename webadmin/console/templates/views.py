"""Templates: list, create, edit (with a live preview), activate or deactivate, delete."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from webadmin.access import Role, allow
from webadmin.console.templates.forms import ActionForm, TemplateForm
from webadmin.extensions import db, htmx
from webadmin.models.message import Template
from webadmin.services import ServiceError, templates

bp = Blueprint("templates", __name__, url_prefix="/templates")

PREVIEW_TARGET = "templates-preview"


def _template_or_404(template_id: int) -> Template:
    """The template, or a 404."""
    return templates.get_template(template_id) or abort(404)


def _data(form: TemplateForm) -> templates.TemplateData:
    """The service's input from the form."""
    return templates.TemplateData(slug=form.slug.data, title=form.title.data, body=form.body.data,
                                  open_direct=form.open_direct.data, is_active=form.is_active.data)


def _preview(form: TemplateForm) -> tuple[templates.Preview | None, str | None]:
    """The rendered preview, or the reason it could not be rendered."""
    if not (form.body.data or "").strip():
        return None, None
    try:
        return templates.preview(form.title.data, form.body.data, form.context.data), None
    except ServiceError as exc:
        return None, exc.message


def _save(form: TemplateForm, template: Template | None) -> Template | None:
    """Create or change the template; None (errors beside their fields) when refused."""
    try:
        if template is None:
            return templates.create_template(_data(form), actor=current_user)
        return templates.update_template(template, _data(form), actor=current_user)
    except ServiceError as exc:
        db.session.rollback()
        if exc.field in form:
            form[exc.field].errors = [*(form[exc.field].errors or []), exc.message]
        else:
            flash(exc.message, "danger")
        return None


def _form_page(form: TemplateForm, template: Template | None):
    """The preview fragment when htmx asks; a preview or a save on submit; else the page."""
    if htmx and htmx.target == PREVIEW_TARGET:
        preview, error = _preview(form)
        return render_template("templates/_preview.html", preview=preview, error=error)
    if request.method == "POST" and "preview" not in request.form and form.validate_on_submit():
        if (saved := _save(form, template)) is not None:
            flash(f"Template “{saved.slug}” saved.", "success")
            return redirect(url_for("templates.index"))
    preview, error = _preview(form)
    return render_template("templates/form.html", form=form, template=template, preview=preview, error=error)


@bp.route("/")
@allow(Role.VIEWER, write=Role.MARKETER)
def index():
    """Every template, with whether it can be sent."""
    rows = [(t, templates.sendable(t)) for t in templates.list_templates()]
    return render_template("templates/index.html", rows=rows, action_form=ActionForm(),
                           can_send_rule=templates.CAN_SEND_RULE)


@bp.route("/new", methods=["GET", "POST"])
@allow(Role.MARKETER)
def new():
    """Add a template (the preview updates as you type)."""
    return _form_page(TemplateForm(), None)


@bp.route("/<int:template_id>/edit", methods=["GET", "POST"])
@allow(Role.MARKETER)
def edit(template_id: int):
    """Change a template."""
    template = _template_or_404(template_id)
    return _form_page(TemplateForm(obj=template), template)


@bp.route("/<int:template_id>/active", methods=["POST"])
@allow(Role.MARKETER)
def set_active(template_id: int):
    """Activate or deactivate."""
    template, form = _template_or_404(template_id), ActionForm()
    if not form.validate_on_submit():
        abort(400)
    active = request.form.get("active") == "1"
    templates.set_active(template, active, actor=current_user)
    flash(f"Template “{template.slug}” {'activated' if active else 'deactivated: it cannot be sent'}.", "success")
    return redirect(url_for("templates.index"))


@bp.route("/<int:template_id>/delete", methods=["GET", "POST"])
@allow(Role.MARKETER)
def delete(template_id: int):
    """Ask, then delete."""
    template, form = _template_or_404(template_id), ActionForm()
    if form.validate_on_submit():
        slug = template.slug
        templates.delete_template(template, actor=current_user)
        flash(f"Template “{slug}” deleted.", "success")
        return redirect(url_for("templates.index"))
    return render_template("templates/delete.html", template=template, form=form)
