"""strict_json.loads: JSON as json.loads reads it, minus what no database stores."""

from __future__ import annotations

import json

import pytest

from webadmin import strict_json


@pytest.mark.parametrize("text", ['{"a": [1, 2.5, "x", null, true]}', '"\\u00e9t\\u00e9"', "[]", '{"b": {"c": -3e2}}'])
def test_reads_what_json_reads_from_text_and_from_every_utf_encoding(text):
    expected = json.loads(text)
    assert strict_json.loads(text) == expected
    for encoding in ("utf-8", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"):
        assert strict_json.loads(text.encode(encoding)) == expected


def test_integral_fractions_are_ints_and_other_floats_stay():
    assert strict_json.loads("[2.0, 1e3, 0.5]") == [2, 1000, 0.5]
    assert [type(v) for v in strict_json.loads("[2.0, 0.5]")] == [int, float]


@pytest.mark.parametrize(("data", "says"), [
    ("[NaN]", "NaN is not allowed"),
    ('{"a": Infinity}', "Infinity is not allowed"),
    ("[1e999]", "out of range"),
    ('["\\ud800"]', "surrogate"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_what_no_database_stores_is_refused_with_its_reason(data, says):
    with pytest.raises(strict_json.RefusedJson, match=says):
        strict_json.loads(data)


@pytest.mark.parametrize("data", [
    '["\\ud800"]'.encode("utf-16-le"),  # an escaped half pair, in an encoding where the bytes hide the escape
    '["\\udc00"]'.encode("utf-32"),
    b'["\xed\xa0\x80"]',  # a raw half pair in UTF-8 bytes (json.loads lets it through)
    '["\ud800"]',  # and in a str
])
def test_half_surrogate_pairs_are_refused_however_they_come(data):
    with pytest.raises(strict_json.RefusedJson, match="surrogate"):
        strict_json.loads(data)


def test_a_bom_before_text_is_refused_as_json_loads_refuses_it():
    with pytest.raises(json.JSONDecodeError, match="BOM"):
        strict_json.loads("\ufeff{}")


@pytest.mark.parametrize("data", ["\ufeff{}", b"\xff\xfe\xfa", b'{"a": 1', "{'a': 1}", b""])
def test_malformed_text_is_a_value_error(data):
    with pytest.raises(ValueError):
        strict_json.loads(data)
