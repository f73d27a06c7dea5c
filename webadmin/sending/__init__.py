"""The sending engine: audience → per-device messages → claim → provider → recorded results.

`send` and `send_template` are the pymess-style entry points for developers.
"""

from __future__ import annotations

from typing import Any


def send(recipient: str, content: str, related_objects: list[Any] | None = None, tag: str | None = None,
         **extra: Any) -> Any:
    """pymess `send`: see webadmin.sending.pymess.send."""
    from webadmin.sending.pymess import send as _send

    return _send(recipient, content, related_objects, tag, **extra)


def send_template(recipient: str, slug: str, context_data: dict[str, Any], related_objects: list[Any] | None = None,
                  tag: str | None = None, **extra: Any) -> Any:
    """pymess `send_template`: see webadmin.sending.pymess.send_template."""
    from webadmin.sending.pymess import send_template as _send_template

    return _send_template(recipient, slug, context_data, related_objects, tag, **extra)
