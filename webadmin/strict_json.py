"""JSON as every database accepts it: the one parser for API bodies and the CSV import's `attributes` cells."""

from __future__ import annotations

import json
import math
from typing import Any


class RefusedJson(ValueError):
    """Syntactically JSON, but not storable (NaN, Infinity, too deep, a lone surrogate); the message says which."""


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python's json reads them; PostgreSQL refuses them)."""
    raise RefusedJson(f"{name} is not allowed in JSON")


def _finite_number(text: str) -> float | int:
    """A JSON number with a fraction or exponent: integral ones become ints, as JSON Schema counts 2.0 an integer.

    Numbers too large for a double would be stored as Infinity, which no database JSON accepts: refused.
    """
    value = float(text)
    if not math.isfinite(value):
        raise RefusedJson(f"the number {text[:20]} is out of range")
    return int(value) if value.is_integer() else value


# Made once: json.loads with hooks builds a decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_number)


def loads(data: bytes | str) -> Any:
    """Parse JSON text; raises ValueError (RefusedJson for the storable-JSON rules) instead of anything else."""
    try:
        if isinstance(data, str):
            if data.startswith("\ufeff"):
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", data, 0)  # as json.loads
            text = data
        else:
            text = data.decode(json.detect_encoding(data), "surrogatepass")  # what json.loads does
        value = _DECODER.decode(text)
        # Lone surrogates decode to strings no database driver (nor a UTF-8 page) can encode: raw ones (in a str, or
        # let through by surrogatepass from the bytes) and \u escapes of half a pair.
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError as exc:
                raise RefusedJson("the text holds half of a surrogate pair, not a character") from exc
        if "\\u" in text:
            json.dumps(value, ensure_ascii=False).encode()
    except RecursionError as exc:
        raise RefusedJson("nested too deeply") from exc
    except UnicodeEncodeError as exc:
        raise RefusedJson("a \\u escape is half of a surrogate pair, not a character") from exc
    return value
