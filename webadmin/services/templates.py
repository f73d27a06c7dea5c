"""Push templates (the pymess template model): create, change, activate, delete, and preview in the sandbox."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jinja2 import UndefinedError
from sqlalchemy import select

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.message import Template
from webadmin.models.user import User
from webadmin.sending.pymess import can_send
from webadmin.services import ServiceError, audit
from webadmin.services.deep_links import validate_deep_link
from webadmin.services.template_render import MAX_SOURCE, render

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
SLUG_RULE = "Use lowercase letters, digits, - and _ (starting with a letter or digit), at most 100 characters."
MAX_TITLE = 200
MAX_CONTEXT_TEXT = 20_000
MAX_ID = 2**31 - 1  # PostgreSQL integer
CAN_SEND_RULE = "A template can be sent while it is active (pymess can_send); inactive templates are refused."


@dataclass(frozen=True)
class TemplateData:
    """What a marketer types for a template."""

    slug: str
    body: str
    title: str | None = None
    open_direct: str | None = None
    is_active: bool = True


@dataclass(frozen=True)
class Preview:
    """A rendered title and body."""

    title: str | None
    body: str


def list_templates() -> list[Template]:
    """Every template, by slug."""
    return list(db.session.scalars(select(Template).order_by(Template.slug)))


def get_template(template_id: int) -> Template | None:
    """A template by id (None for ids no integer column can hold)."""
    return db.session.get(Template, template_id) if 0 < template_id <= MAX_ID else None


def sendable(template: Template) -> bool:
    """Whether pymess `send_template` would send it (its `can_send` rule)."""
    return can_send(template, "", {})


def _validate_source(source: str, field: str) -> None:
    """Refuse a title or body that cannot be compiled or uses what the sandbox refuses."""
    try:
        render(source, {})
    except ServiceError as exc:
        if isinstance(exc.__cause__, UndefinedError):
            return  # placeholders are filled from context data at send time
        raise ServiceError(exc.message, field=field, code=exc.code) from exc


def validate_open_direct(value: str | None) -> str | None:
    """A deep link for any app's scheme (the first app's for a bare route) or https."""
    schemes = [s for s in db.session.scalars(select(App.deep_link_scheme).order_by(App.id)) if s]
    typed = urlsplit((value or "").strip()).scheme.lower()
    scheme = typed if typed in schemes else (schemes[0] if schemes else None)
    return validate_deep_link(value, scheme, field="open_direct")


def _clean(data: TemplateData, current: Template | None = None) -> dict[str, Any]:
    """Validate what was typed; the column values."""
    slug = (data.slug or "").strip()
    if not SLUG_PATTERN.fullmatch(slug):
        raise ServiceError(SLUG_RULE, field="slug")
    clash = db.session.scalar(select(Template.id).where(Template.slug == slug))
    if clash is not None and (current is None or clash != current.id):
        raise ServiceError(f"Another template already uses the slug “{slug}”.", field="slug")
    title = (data.title or "").strip() or None
    if title is not None:
        if len(title) > MAX_TITLE:
            raise ServiceError(f"The title is longer than {MAX_TITLE} characters.", field="title")
        _validate_source(title, "title")
    body = (data.body or "").strip()
    if not body or len(body) > MAX_SOURCE:
        raise ServiceError(f"A body of 1 to {MAX_SOURCE:,} characters is required.", field="body")
    _validate_source(body, "body")
    return {"slug": slug, "title": title, "body": body, "open_direct": validate_open_direct(data.open_direct),
            "is_active": bool(data.is_active)}


def create_template(data: TemplateData, *, actor: User | str | None) -> Template:
    """Add a template."""
    template = Template(**_clean(data))
    db.session.add(template)
    db.session.flush()
    audit.record("template.create", actor=actor, obj=("template", template.id), slug=template.slug)
    db.session.commit()
    return template


def update_template(template: Template, data: TemplateData, *, actor: User | str | None) -> Template:
    """Change a template."""
    values = _clean(data, template)
    changed = sorted(k for k, v in values.items() if getattr(template, k) != v)
    for key, value in values.items():
        setattr(template, key, value)
    audit.record("template.update", actor=actor, obj=("template", template.id), slug=template.slug, changed=changed)
    db.session.commit()
    return template


def set_active(template: Template, active: bool, *, actor: User | str | None) -> None:
    """Activate or deactivate (an inactive template cannot be sent)."""
    template.is_active = active
    audit.record("template.update", actor=actor, obj=("template", template.id), slug=template.slug,
                 changed=["is_active"], is_active=active)
    db.session.commit()


def delete_template(template: Template, *, actor: User | str | None) -> None:
    """Delete a template (messages already sent keep its slug)."""
    audit.record("template.delete", actor=actor, obj=("template", template.id), slug=template.slug)
    db.session.delete(template)
    db.session.commit()


def parse_context(text: str | None) -> dict[str, Any]:
    """Sample context typed as a JSON object ({} when empty)."""
    if not text or not text.strip():
        return {}
    if len(text) > MAX_CONTEXT_TEXT:
        raise ServiceError(f"The sample context is longer than {MAX_CONTEXT_TEXT:,} characters.", field="context")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ServiceError(f"The sample context is not valid JSON: {exc}.", field="context") from exc
    if not isinstance(value, dict):
        raise ServiceError('The sample context must be a JSON object, e.g. {"name": "Ann"}.', field="context")
    return value


def preview(title: str | None, body: str, context_text: str | None) -> Preview:
    """Render title and body with the sample context, as `send_template` would."""
    context = parse_context(context_text)
    rendered_title = None
    if title and title.strip():
        try:
            rendered_title = render(title, context)
        except ServiceError as exc:
            raise ServiceError(f"Title: {exc.message}", field="title", code=exc.code) from exc
    return Preview(title=rendered_title, body=render(body or "", context))
