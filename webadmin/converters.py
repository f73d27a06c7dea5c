"""URL converters for the whole app: `<int:…>` stops at the largest id a primary key column can hold."""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter, Map

# Every primary key a route names is an Integer column: INTEGER (32-bit) on PostgreSQL, which refuses a bigger parameter
# ("integer out of range"), while SQLite raises OverflowError past 64 bits. Both were a 500; a bigger id
# cannot name a row, so the route does not match and the answer is a 404. (A BigInteger key would need
# its own converter; messages.id, 64-bit on PostgreSQL, is in no route: the subscriber page's `before` cursor
# checks its own range in services.subscriber_messages.)
MAX_ID = 2**31 - 1


class BoundedIntegerConverter(IntegerConverter):
    """`<int:…>` limited to ids a row can have, so an out-of-range id is a 404 rather than a 500."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:  # noqa: A002 (werkzeug's name)
        kwargs.setdefault("max", MAX_ID)
        if kwargs.get("signed"):
            kwargs.setdefault("min", -MAX_ID - 1)
        super().__init__(map, *args, **kwargs)


def register_converters(app: Flask) -> None:
    """Use the bounded converter for every `<int:…>` (call before any blueprint adds its rules)."""
    app.url_map.converters["int"] = BoundedIntegerConverter
