"""Audience: subscribers, devices and groups; viewers read everything, marketers change audience data."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from webadmin.access import Role, allow
from webadmin.console.audience.forms import (
    DeviceFilterForm,
    GroupForm,
    ImportForm,
    MemberKeyForm,
    MemberKeysForm,
    SubscriberFilterForm,
    TokenForm,
)
from webadmin.extensions import db, htmx
from webadmin.models.audience import Group
from webadmin.services import ServiceError, audience, subscriber_csv, subscriber_messages, subscriber_search
from webadmin.services import groups as group_service
from webadmin.services.subscriber_search import SubscriberFilters

bp = Blueprint("audience", __name__, url_prefix="/audience")
audience_access = allow(Role.VIEWER, write=Role.MARKETER)


def _render(template: str, fragment: str, **context) -> Response:
    """The whole page, or only the fragment `audience/_<fragment>.html` when htmx targets `#audience-<fragment>`."""
    if htmx.target == "audience-" + fragment.replace("_", "-"):
        template = f"audience/_{fragment}.html"
    response = Response(render_template(template, **context))
    response.vary.add("HX-Target")  # one URL, two bodies: caches must tell them apart
    return response


def _cursor(name: str) -> str | None:
    """A keyset cursor from the query string."""
    return (request.args.get(name) or "")[:254] or None


def _csv(stream, filename: str) -> Response:
    """A streamed CSV download (the stream reads the database itself; it needs no request context)."""
    headers = {"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"}
    return Response(stream, mimetype="text/csv", headers=headers)


def _field_error(form: FlaskForm, exc: ServiceError, fallback: str) -> None:
    """Show a refused change beside its field (or beside `fallback`)."""
    db.session.rollback()
    target = form[exc.field] if exc.field in form else form[fallback]
    target.errors = [*target.errors, exc.message]


def _group_or_404(group_id: int) -> Group:
    """The group, or a 404."""
    return group_service.get_group(group_id) or abort(404)


@bp.route("/")
@audience_access
def subscribers():
    """Subscribers: live search by key or name prefix, filters, keyset pages."""
    form = SubscriberFilterForm(request.args).with_groups(subscriber_search.group_choices())
    filters = form.filters()
    page = subscriber_search.search_subscribers(filters, after=_cursor("after"), before=_cursor("before"))
    devices = subscriber_search.device_summaries([s.id for s in page.rows])
    context = {"form": form, "filters": filters, "page": page, "devices": devices}
    return _render("audience/subscribers.html", "subscriber_results", **context)


@bp.route("/subscribers.csv")
@audience_access
def export_subscribers():
    """The subscribers matching the current filters (a group's members with ?group=) as CSV."""
    filters = SubscriberFilterForm(request.args).with_groups([]).filters()
    detail = {name: value for name, value in asdict(filters).items() if value}
    query = subscriber_search.subscribers_query(filters)
    return _csv(subscriber_csv.export_subscribers(query, actor=current_user, detail=detail), "subscribers.csv")


@bp.route("/subscribers/<int:subscriber_id>")
@audience_access
def subscriber(subscriber_id: int):
    """One subscriber: profile, attributes, devices with their status, groups, and the pushes they received."""
    detail = subscriber_search.subscriber_detail(subscriber_id) or abort(404)
    before = subscriber_messages.cursor(request.args.get("before"))
    messages = subscriber_messages.recent_messages(detail.subscriber, before=before)
    return _render("audience/subscriber.html", "subscriber_messages", detail=detail, messages=messages)


@bp.route("/devices")
@audience_access
def devices():
    """Devices, newest first, filtered by app, platform and status."""
    form = DeviceFilterForm(request.args).with_apps(subscriber_search.app_choices())
    filters = form.filters()
    page = subscriber_search.search_devices(filters, after=_cursor("after"), before=_cursor("before"))
    context = {"form": form, "filters": filters, "page": page}
    return _render("audience/devices.html", "device_results", **context)


@bp.route("/devices.csv")
@audience_access
def export_devices():
    """The devices matching the current filters as CSV."""
    filters = DeviceFilterForm(request.args).with_apps([]).filters()
    detail = {name: value for name, value in asdict(filters).items() if value}
    query = subscriber_search.devices_query(filters)
    return _csv(subscriber_csv.export_devices(query, actor=current_user, detail=detail), "devices.csv")


@bp.route("/groups", methods=["GET", "POST"], endpoint="groups")
@audience_access
def group_list():
    """The groups with their sizes, and the form to create one."""
    form = GroupForm()
    if form.validate_on_submit():
        try:
            group = group_service.create_group(form.name.data, form.description.data, actor=current_user)
            db.session.commit()
        except ServiceError as exc:
            _field_error(form, exc, "name")
        else:
            flash(f"Group {group.name} created. Add its members below.", "success")
            return redirect(url_for("audience.group", group_id=group.id))
    return render_template("audience/groups.html", form=form, rows=group_service.list_groups())


@bp.route("/groups.csv")
@audience_access
def export_groups():
    """Every group with its member count as CSV."""
    return _csv(subscriber_csv.export_groups(actor=current_user), "groups.csv")


def _group_page(group: Group, **forms):
    """A group's page: members (searchable, keyset pages), the edit form and the add-members panel."""
    q = (request.args.get("q") or "").strip()[:254] or None
    page = subscriber_search.search_subscribers(
        SubscriberFilters(q=q, group_id=group.id), after=_cursor("after"), before=_cursor("before")
    )
    forms.setdefault("edit_form", GroupForm(formdata=None, obj=group))
    forms.setdefault("keys_form", MemberKeysForm(formdata=None))
    return render_template(
        "audience/group.html", group=group, q=q, page=page, members=group_service.member_count(group), **forms
    )


@bp.route("/groups/<int:group_id>", methods=["GET", "POST"])
@audience_access
def group(group_id: int):
    """A group's page; POST renames or describes it."""
    group = _group_or_404(group_id)
    form = GroupForm(obj=group)
    if form.validate_on_submit():
        try:
            group_service.update_group(group, form.name.data, form.description.data, actor=current_user)
            db.session.commit()
        except ServiceError as exc:
            _field_error(form, exc, "name")
        else:
            flash("Group saved.", "success")
            return redirect(url_for("audience.group", group_id=group.id))
    return _group_page(group, edit_form=form)


@bp.route("/groups/<int:group_id>/delete", methods=["GET", "POST"])
@audience_access
def delete_group(group_id: int):
    """Ask for confirmation, then delete the group (its subscribers stay)."""
    group, form = _group_or_404(group_id), FlaskForm()
    if form.validate_on_submit():
        name = group.name
        members = group_service.delete_group(group, actor=current_user)
        db.session.commit()
        flash(f"Group {name} deleted ({members:,} memberships removed).", "success")
        return redirect(url_for("audience.groups"))
    members = group_service.member_count(group)
    return render_template("audience/group_delete.html", group=group, form=form, members=members)


@bp.route("/groups/<int:group_id>/members/preview", methods=["POST"])
@audience_access
def preview_members(group_id: int):
    """Read pasted or uploaded keys and show which match, writing nothing; the list waits for the confirm."""
    group, form, preview = _group_or_404(group_id), MemberKeysForm(), None
    if form.validate_on_submit():
        try:
            keys = subscriber_csv.read_key_list(form.keys.data, form.file.data.stream if form.file.data else None)
            preview = group_service.preview_members(group, keys, owner=current_user)
        except ServiceError as exc:
            _field_error(form, exc, "keys")
    if htmx.target == "audience-member-preview":
        return render_template("audience/_member_preview.html", group=group, keys_form=form, preview=preview)
    return _group_page(group, keys_form=form, preview=preview)


@bp.route("/groups/<int:group_id>/members/confirm", methods=["POST"])
@audience_access
def confirm_members(group_id: int):
    """Add the previewed list to the group."""
    group, form = _group_or_404(group_id), TokenForm()
    keys = None
    if form.validate_on_submit():
        keys = group_service.take_pending_members(form.token.data, group=group, owner=current_user)
    if keys is None:
        flash("That preview is gone (confirmed already, or over an hour old). Add the keys again.", "warning")
    else:
        report = audience.add_group_members(group, keys, actor=current_user)
        flash(
            f"Added {report.changed:,} members; {report.unchanged:,} were members already, "
            f"{len(report.unknown):,} keys are unknown.",
            "success",
        )
    return redirect(url_for("audience.group", group_id=group.id))


@bp.route("/groups/<int:group_id>/members/remove", methods=["POST"])
@audience_access
def remove_member(group_id: int):
    """Take one subscriber out of the group."""
    group, form = _group_or_404(group_id), MemberKeyForm()
    if not form.validate_on_submit():
        abort(400)
    report = audience.remove_group_members(group, [form.key.data], actor=current_user)
    if report.changed:
        flash(f"{form.key.data} removed from {group.name}.", "success")
    else:
        flash(f"{form.key.data} was not a member of {group.name}.", "info")
    return redirect(url_for("audience.group", group_id=group.id))


@bp.route("/import", methods=["GET", "POST"])
@audience_access
def import_subscribers():
    """Upload a subscriber CSV: checked as a whole, then imported in one transaction, or refused line by line."""
    form, check, report = ImportForm(), None, None
    if form.validate_on_submit():
        try:
            check, report = subscriber_csv.import_file(form.file.data.stream, actor=current_user)
            db.session.commit()
        except ServiceError as exc:
            _field_error(form, exc, "file")
    limits = {"max_mb": subscriber_csv.MAX_IMPORT_BYTES // (1024 * 1024), "max_rows": subscriber_csv.MAX_IMPORT_ROWS}
    context = {"form": form, "check": check, "report": report, **limits}
    return _render("audience/import.html", "import", **context)
