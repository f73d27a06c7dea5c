"""pymess parity: `send(recipient, content, …)` and `send_template(recipient, slug, context_data, …)`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.message import Message, MessageRelatedObject, Template
from webadmin.services import ServiceError
from webadmin.services.campaigns import CampaignDraft, create_campaign, hand_to_workers, start
from webadmin.services.template_render import render


def _related_pairs(related_objects: list[Any] | None) -> list[tuple[str, str]]:
    """(type, id) for each related object: a model instance, or an explicit (type, id) pair."""
    pairs = []
    for obj in related_objects or []:
        if isinstance(obj, tuple) and len(obj) == 2:
            pairs.append((str(obj[0]), str(obj[1])))
        else:
            pairs.append((type(obj).__name__.lower(), str(obj.id)))
    return pairs


def _default_app_id() -> int:
    """The only app, or an error asking which one."""
    ids = list(db.session.scalars(select(App.id).limit(2)))
    if len(ids) != 1:
        raise ServiceError("Pass app_id=…: there is not exactly one app.", field="app_id")
    return ids[0]


def send(recipient: str, content: str, related_objects: list[Any] | None = None, tag: str | None = None,
         **extra: Any) -> list[Message]:
    """Push `content` to every device of the subscriber `recipient`; returns the messages (one per device).

    `heading`, `url` (openDirect), `app_id` and `template_slug` are taken from `extra` when given; the rest
    of `extra` is stored in each message's `extra_data`.
    """
    heading, url = extra.pop("heading", None), extra.pop("url", None)
    app_id = extra.pop("app_id", None) or _default_app_id()
    slug = extra.pop("template_slug", None)
    draft = CampaignDraft(app_id=app_id, text=content, title=heading, open_direct=url, source="api", tag=tag,
                          template_slug=slug, audience={"type": "keys", "keys": [recipient]})
    campaign = create_campaign(draft, actor="pymess")
    pairs = _related_pairs(related_objects)
    if pairs:
        campaign.related_type, campaign.related_id = pairs[0]
    targeted = start(campaign, actor="pymess", enqueue=False)
    messages = list(db.session.scalars(select(Message).where(Message.campaign_id == campaign.id)))
    for message in messages:  # written before any worker can send them
        message.extra_data = extra or None
        message.template_slug = slug
        message.content, message.heading, message.url = content, heading, url
        db.session.add_all(MessageRelatedObject(message_id=message.id, content_type=t, object_id=i) for t, i in pairs)
    db.session.commit()
    hand_to_workers(campaign.id, targeted)
    for message in messages:
        db.session.refresh(message)
    return messages


def can_send(template: Template, recipient: str, context_data: dict[str, Any]) -> bool:
    """pymess `can_send`: by default whether the template is active."""
    return template.is_active


def send_template(recipient: str, slug: str, context_data: dict[str, Any], related_objects: list[Any] | None = None,
                  tag: str | None = None, **extra: Any) -> list[Message] | None:
    """Render the template `slug` in the sandbox and send it; None when the template may not be sent."""
    template = db.session.scalar(select(Template).where(Template.slug == slug))
    if template is None:
        raise ServiceError(f"No template {slug!r}.", field="slug", code="not_found")
    if not can_send(template, recipient, context_data):
        return None
    content = render(template.body, context_data)
    heading = render(template.title, context_data) if template.title else None
    return send(recipient, content, related_objects, tag, heading=heading, url=template.open_direct,
                template_slug=slug, **extra)
