"""Subscriber CSV files: key lists for groups, the validated all-or-nothing import, and exports safe for Excel."""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from sqlalchemy import Engine, Select, bindparam, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from webadmin import strict_json
from webadmin.database import is_sqlite
from webadmin.extensions import db
from webadmin.models.audience import Device, Group, GroupMember, Subscriber
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.services import ServiceError, audit, groups
from webadmin.services.audience import (
    ATTRIBUTE_MAX_COUNT,
    ATTRIBUTE_NAME_PATTERN,
    ATTRIBUTE_VALUE_MAX_LENGTH,
    DISPLAY_NAME_MAX_LENGTH,
    KEY_CHUNK,
    LOCALE_MAX_LENGTH,
    LOCALE_PATTERN,
    PHONE_PATTERN,
    TEXT_PATTERN,
    check_time_zone,
    normalize_key,
    normalize_locale,
)

MAX_IMPORT_BYTES = 32 * 1024 * 1024  # 32 MB: about 200,000 rows with a few attributes each
MAX_IMPORT_ROWS = 200_000
MAX_KEY_LIST_BYTES = 16 * 1024 * 1024  # a member list: 16 MB, several hundred thousand keys
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as the start of a formula
COLUMN_ALIASES = {
    "key": "key",
    "subscriber_key": "key",
    "name": "name",
    "display_name": "name",
    "phone": "phone",
    "locale": "locale",
    "time_zone": "time_zone",
    "timezone": "time_zone",
    "attributes": "attributes",
    "groups": "groups",
    "opted_out": "opted_out",
}
ATTRIBUTE_PREFIX = "attr."
GROUP_SEPARATOR = ";"
GROUP_NAME_MAX_LENGTH = 120
_TRUE, _FALSE = {"true", "yes", "1", "y"}, {"false", "no", "0", "n"}
_RULES = {
    "phone": "Use the international format with a plus, e.g. +48600100200.",
    "locale": "Use a language tag such as en, pl or en-GB.",
}
_STORED = ("display_name", "phone", "locale", "time_zone", "opted_out", "attributes")


@dataclass
class Problem:
    """Why one line (0: the file itself) of an import cannot be taken."""

    line: int
    column: str | None
    message: str


@dataclass
class ImportRow:
    """One valid line: the key, the fields it sets (empty cells set nothing), attributes and group names."""

    line: int
    key: str
    values: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


@dataclass
class ImportCheck:
    """The outcome of validating a whole file: its rows, and the problems that reject it (if any)."""

    rows: list[ImportRow]
    problems: list[Problem]

    @property
    def accepted(self) -> bool:
        """Whether the file can be imported (it has rows and no problems)."""
        return bool(self.rows) and not self.problems


@dataclass
class ImportReport:
    """What an import changed."""

    created: int
    updated: int
    unchanged: int
    memberships_added: int
    groups_created: list[str]


# --- reading files --------------------------------------------------------------------------------------


def read_upload(stream: IO[bytes], limit: int) -> bytes:
    """The uploaded bytes, refused when larger than `limit`."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ServiceError(f"The file is larger than {limit // (1024 * 1024)} MB; split it.", field="file")
    return data


def _decode(data: bytes) -> str:
    """UTF-8 text (a byte-order mark, as Excel writes it, is dropped)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ServiceError("The file is not UTF-8 text; save it as “CSV UTF-8”.", field="file") from exc


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    """Comma-separated, unless the header line is separated by semicolons or tabs (Excel in many locales)."""
    header = text.split("\n", 1)[0]
    for delimiter in (";", "\t"):
        if "," not in header and delimiter in header:
            return type("Detected", (csv.excel,), {"delimiter": delimiter})
    return csv.excel


def _unescape(cell: str) -> str:
    """Undo the export's formula escaping (`'=…` back to `=…`), so exported files import again."""
    if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS):
        return cell[1:]
    return cell


def read_key_list(pasted: str | None, upload: IO[bytes] | None) -> list[str]:
    """Raw keys from pasted text (one per line, or comma separated) and/or a CSV (first or `subscriber_key` column)."""
    keys = re.split(r"[\r\n,;\t]+", pasted or "")
    if upload is not None:
        text = _decode(read_upload(upload, MAX_KEY_LIST_BYTES))
        try:
            rows = list(csv.reader(io.StringIO(text), _dialect(text)))
        except csv.Error as exc:
            raise ServiceError(f"The file is not a readable CSV file ({exc}).", field="file") from exc
        column = 0
        if rows:
            header = [cell.strip().lower() for cell in rows[0]]
            if "subscriber_key" in header:
                column, rows = header.index("subscriber_key"), rows[1:]
        keys.extend(_unescape(row[column]) for row in rows if len(row) > column)
    return keys


# --- validating an import -------------------------------------------------------------------------------


def _header(cells: list[str]) -> tuple[list[str], list[Problem]]:
    """Canonical column names (`key`, `name`, …, `attr.<name>`) and problems with the header line."""
    columns, problems = [], []
    for cell in cells:
        raw = cell.strip()
        name = re.sub(r"[\s-]+", "_", raw.lower())
        if raw.lower().startswith(ATTRIBUTE_PREFIX):
            attribute = raw[len(ATTRIBUTE_PREFIX) :]
            if not re.fullmatch(ATTRIBUTE_NAME_PATTERN, attribute):
                problems.append(Problem(1, raw, "Attribute names start with a letter: letters, digits, _ . -"))
            columns.append(ATTRIBUTE_PREFIX + attribute)
        elif name in COLUMN_ALIASES:
            columns.append(COLUMN_ALIASES[name])
        else:
            problems.append(Problem(1, raw, "Unknown column (see the list of columns on this page)."))
            columns.append(raw)
    if "key" not in columns:
        problems.append(Problem(1, None, "The header must have a `key` (or `subscriber_key`) column."))
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        problems.append(Problem(1, ", ".join(duplicated), "These columns appear more than once."))
    return columns, problems


def _text(value: str, column: str, max_length: int, pattern: str = TEXT_PATTERN) -> str:
    """A short text cell matching its rule."""
    if len(value) > max_length:
        raise ValueError(f"At most {max_length} characters.")
    if not re.fullmatch(pattern, value):
        raise ValueError(_RULES.get(column, "Not valid (no control characters)."))
    return value


@functools.lru_cache(maxsize=1024)
def _attribute_name_ok(name: str) -> bool:
    """Whether an attribute name follows the API's rule (names repeat on every line, so cached)."""
    return re.fullmatch(ATTRIBUTE_NAME_PATTERN, name) is not None


def _attribute_value(name: str, value: Any) -> Any:
    """An attribute value: a short string, a number, a boolean or null."""
    if not _attribute_name_ok(name):
        raise ValueError(f"Attribute name {name!r} is not valid (letters, digits, _ . -; a letter first).")
    if isinstance(value, str) and len(value) > ATTRIBUTE_VALUE_MAX_LENGTH:
        raise ValueError(f"Attribute {name!r}: at most {ATTRIBUTE_VALUE_MAX_LENGTH} characters.")
    if value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError(f"Attribute {name!r}: use a string, number, true/false or null.")
    return value


def _attributes_json(value: str) -> dict[str, Any]:
    """The `attributes` cell: a JSON object, read by the API's rules (no NaN, no lone surrogates, bounded depth)."""
    try:
        parsed = strict_json.loads(value)
    except ValueError as exc:
        reason = f"{exc.msg} at character {exc.pos + 1}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ValueError(f'Not valid JSON ({reason}); write an object such as {{"tier": "gold"}}.') from exc
    if not isinstance(parsed, dict):
        raise ValueError('Write a JSON object such as {"tier": "gold"}.')
    return {name: _attribute_value(name, item) for name, item in parsed.items()}


def _groups(value: str) -> list[str]:
    """`;`-separated group names."""
    names = [" ".join(part.split()) for part in value.split(GROUP_SEPARATOR)]
    names = [name for name in names if name]
    if any(len(name) > GROUP_NAME_MAX_LENGTH for name in names):
        raise ValueError(f"A group name has at most {GROUP_NAME_MAX_LENGTH} characters.")
    return list(dict.fromkeys(names))


def _boolean(value: str) -> bool:
    """true/false, yes/no, 1/0."""
    lowered = value.lower()
    if lowered not in _TRUE | _FALSE:
        raise ValueError("Use true or false.")
    return lowered in _TRUE


def _phone(value: str) -> str:
    """E.164 (+48600100200); spaces, dashes and brackets are dropped first."""
    return _text(re.sub(r"[\s()-]", "", value), "phone", 16, PHONE_PATTERN)


def _time_zone(value: str) -> str:
    """An IANA time zone name known to this server."""
    try:
        check_time_zone(value)
    except ServiceError as exc:
        raise ValueError(exc.message) from exc
    return value


# Column -> (subscriber field, parser that returns the value or raises ValueError with a readable message).
_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "name": ("display_name", lambda value: _text(value, "name", DISPLAY_NAME_MAX_LENGTH)),
    "phone": ("phone", _phone),
    "locale": ("locale", lambda value: normalize_locale(_text(value, "locale", LOCALE_MAX_LENGTH, LOCALE_PATTERN))),
    "time_zone": ("time_zone", _time_zone),
    "opted_out": ("opted_out", _boolean),
}


def _set_cell(row: ImportRow, column: str, value: str) -> None:
    """Validate one non-empty cell and store it on the row; raises ValueError with a readable message."""
    if column == "attributes":
        row.attributes = {**_attributes_json(value), **row.attributes}  # attr.<name> columns win, in any order
    elif column == "groups":
        row.groups = _groups(value)
    elif column.startswith(ATTRIBUTE_PREFIX):
        name = column[len(ATTRIBUTE_PREFIX) :]
        row.attributes[name] = _attribute_value(name, value)
    else:
        name, parse = _FIELDS[column]
        row.values[name] = parse(value)


def _parse_line(line: int, columns: list[str], cells: list[str], problems: list[Problem]) -> ImportRow | None:
    """One data line as a row (None when its cells do not fit the header); its problems are added."""
    if len(cells) != len(columns):
        problems.append(Problem(line, None, f"Expected {len(columns)} cells, found {len(cells)}."))
        return None
    values = {column: _unescape(cell.strip()) for column, cell in zip(columns, cells, strict=True)}
    try:
        row = ImportRow(line, normalize_key(values.pop("key")))
    except ServiceError as exc:
        problems.append(Problem(line, "key", exc.message))
        row = ImportRow(line, "")
    for column, value in values.items():
        if value:
            try:
                _set_cell(row, column, value)
            except ValueError as exc:
                problems.append(Problem(line, column, str(exc)))
    if len(row.attributes) > ATTRIBUTE_MAX_COUNT:
        problems.append(Problem(line, "attributes", f"At most {ATTRIBUTE_MAX_COUNT} attributes."))
    return row


def _check_lines(reader: Any, columns: list[str], problems: list[Problem]) -> list[ImportRow]:
    """Every data line checked: the rows are returned, the problems (bad cells, repeated keys) added."""
    rows: list[ImportRow] = []
    first_line: dict[str, int] = {}
    lines = 0
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue  # blank lines
        lines += 1
        if lines > MAX_IMPORT_ROWS:
            problems.append(Problem(reader.line_num, None, f"More than {MAX_IMPORT_ROWS:,} rows; split the file."))
            break
        row = _parse_line(reader.line_num, columns, cells, problems)
        if row is None or not row.key:
            continue
        if row.key in first_line:
            problems.append(Problem(row.line, "key", f"The same key is on line {first_line[row.key]}."))
        else:
            first_line[row.key] = row.line
            rows.append(row)
    return rows


def check_import(data: bytes) -> ImportCheck:
    """Validate a whole subscriber CSV; every problem is reported with its line, and any problem rejects it."""
    try:
        text = _decode(data)
    except ServiceError as exc:
        return ImportCheck([], [Problem(0, None, exc.message)])
    reader = csv.reader(io.StringIO(text), _dialect(text))
    rows: list[ImportRow] = []
    try:
        columns, problems = _header(next(reader, []))
        if not problems:  # lines cannot be read without a sound header
            rows = _check_lines(reader, columns, problems)
    except csv.Error as exc:
        problems = [Problem(reader.line_num, None, f"The file is not a readable CSV file ({exc}).")]
    if not rows and not problems:
        problems.append(Problem(0, None, "The file has no subscribers (only a header, or nothing)."))
    return ImportCheck(rows, problems)


# --- importing ------------------------------------------------------------------------------------------


def _chunks(items: list[Any], size: int = KEY_CHUNK) -> Iterator[list[Any]]:
    """Slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _existing(keys: list[str]) -> dict[str, dict[str, Any]]:
    """Stored fields of the subscribers with these keys, by key (looked up in chunks)."""
    columns = [Subscriber.id, Subscriber.subscriber_key, *(getattr(Subscriber, name) for name in _STORED)]
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(keys):
        for row in db.session.execute(select(*columns).where(Subscriber.subscriber_key.in_(chunk))):
            found[row.subscriber_key] = {name: getattr(row, name) for name in ("id", *_STORED)}
    return found


def _new_values(row: ImportRow, now: datetime) -> dict[str, Any]:
    """All columns of a new subscriber (the same keys for every row, so one executemany inserts them)."""
    values = {name: row.values.get(name) for name in _STORED if name != "attributes"}
    values["opted_out"] = bool(values["opted_out"])
    return {**values, "subscriber_key": row.key, "attributes": row.attributes, "created_at": now, "updated_at": now}


def _merged(current: dict[str, Any], row: ImportRow) -> dict[str, Any]:
    """The stored fields with the row's non-empty cells applied (attributes merge name by name)."""
    merged = {name: current[name] for name in _STORED}
    merged.update(row.values)
    merged["attributes"] = {**(current["attributes"] or {}), **row.attributes}
    return merged


def _write_subscribers(rows: list[ImportRow], now: datetime) -> tuple[int, int, int]:
    """Insert new subscribers and update changed ones, each in one executemany; (created, updated, unchanged)."""
    existing = _existing([row.key for row in rows])
    inserts, updates = [], []
    for row in rows:
        current = existing.get(row.key)
        if current is None:
            inserts.append(_new_values(row, now))
            continue
        merged = _merged(current, row)
        if any(merged[name] != current[name] for name in _STORED):
            updates.append({**merged, "row_id": current["id"], "updated_at": now})
    table = Subscriber.__table__
    if inserts:
        db.session.execute(insert(table), inserts)
        _refresh_statistics(len(inserts), len(existing))
    if updates:
        db.session.execute(update(table).where(table.c.id == bindparam("row_id")), updates)
    return len(inserts), len(updates), len(rows) - len(inserts) - len(updates)


def _refresh_statistics(inserted: int, existing: int) -> None:
    """After a bulk insert that grows the table a lot, let PostgreSQL's planner see the new size.

    Without it, a lookup by key planned while the table was small keeps a sequential-scan plan (psycopg
    prepares repeated statements), and re-importing 20k lines took 12 s instead of about one.
    """
    if not is_sqlite() and inserted >= 1000 and inserted > existing:
        db.session.execute(text("ANALYZE subscribers"))
        db.session.execute(text("ANALYZE group_members"))


def _subscriber_ids(keys: list[str]) -> dict[str, int]:
    """Ids by key, looked up in chunks."""
    ids: dict[str, int] = {}
    for chunk in _chunks(keys):
        query = select(Subscriber.subscriber_key, Subscriber.id).where(Subscriber.subscriber_key.in_(chunk))
        ids.update((key, subscriber_id) for key, subscriber_id in db.session.execute(query))
    return ids


def _write_memberships(rows: list[ImportRow], now: datetime, actor: User | str | None) -> tuple[int, list[str]]:
    """Add the rows' group memberships (creating missing groups); (memberships added, groups created)."""
    names = [name for row in rows for name in row.groups]
    if not names:
        return 0, []
    group_ids, created = groups.group_ids_by_name(names, actor=actor)
    with_groups = [row for row in rows if row.groups]
    subscriber_ids = _subscriber_ids([row.key for row in with_groups])
    pairs = {(group_ids[name.lower()], subscriber_ids[row.key]) for row in with_groups for name in row.groups}
    members = select(func.count()).where(GroupMember.group_id.in_(set(group_ids.values())))
    before = db.session.scalar(members) or 0
    dialect_insert = sqlite.insert if is_sqlite() else postgresql.insert
    values = [{"group_id": gid, "subscriber_id": sid, "added_at": now} for gid, sid in pairs]
    db.session.execute(dialect_insert(GroupMember.__table__).on_conflict_do_nothing(), values)
    return (db.session.scalar(members) or 0) - before, created


def import_subscribers(rows: list[ImportRow], *, actor: User | str | None) -> ImportReport:
    """Write checked rows with bulk statements in the caller's transaction (the caller commits or rolls back)."""
    now = utcnow()
    created, updated, unchanged = _write_subscribers(rows, now)
    added, groups_created = _write_memberships(rows, now, actor)
    report = ImportReport(created, updated, unchanged, added, groups_created)
    audit.record(
        "subscriber.import",
        actor=actor,
        created=created,
        updated=updated,
        unchanged=unchanged,
        memberships_added=added,
        groups_created=groups_created,
    )
    return report


def import_file(stream: IO[bytes], *, actor: User | str | None) -> tuple[ImportCheck, ImportReport | None]:
    """Check an uploaded file and import it when it is sound (the caller commits); the report is None otherwise."""
    check = check_import(read_upload(stream, MAX_IMPORT_BYTES))
    return check, (import_subscribers(check.rows, actor=actor) if check.accepted else None)


# --- exporting ------------------------------------------------------------------------------------------

# The import's own columns, so that an exported file imports again as it is.
SUBSCRIBER_COLUMNS = ["key", "name", "phone", "locale", "time_zone", "opted_out", "attributes"]
_EXPORTED = ["subscriber_key", "display_name", "phone", "locale", "time_zone", "opted_out", "attributes"]
DEVICE_COLUMNS = [
    "app",
    "platform",
    "token",
    "status",
    "invalid_reason",
    "invalidated_at",
    "subscriber_key",
    "registered_at",
    "app_version",
    "locale",
    "time_zone",
]
GROUP_COLUMNS = ["id", "name", "description", "members", "created_at", "updated_at"]
EXPORT_BATCH = 1000


def escape_cell(value: Any) -> str:
    """A cell as text; one that a spreadsheet would run as a formula gets a leading `'` (OWASP CSV injection)."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime):
        text = value.isoformat(timespec="seconds")
    elif isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    else:
        text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_stream(header: list[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """CSV text in pieces of EXPORT_BATCH rows, starting with a byte-order mark so Excel reads UTF-8."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")
    writer.writerow(header)
    for count, row in enumerate(rows, 1):
        writer.writerow([escape_cell(value) for value in row])
        if count % EXPORT_BATCH == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def export_subscribers(query: Select[tuple[Subscriber]], *, actor: User | str | None, detail: Any) -> Iterator[str]:
    """Record the export in the audit log, then stream the subscribers of the query as CSV."""
    audit.record("subscriber.export", actor=actor, filters=detail)
    db.session.commit()
    return csv_stream(SUBSCRIBER_COLUMNS, _rows(db.engine, query, _subscriber_cells))


def export_devices(query: Select[Any], *, actor: User | str | None, detail: Any) -> Iterator[str]:
    """Record the export in the audit log, then stream (device, subscriber key, app name) rows as CSV."""
    audit.record("device.export", actor=actor, filters=detail)
    db.session.commit()
    return csv_stream(DEVICE_COLUMNS, _rows(db.engine, query, lambda row: _device_cells(*row)))


def export_groups(*, actor: User | str | None) -> Iterator[str]:
    """Record the export in the audit log, then stream every group (by name) with its member count as CSV."""
    audit.record("group.export", actor=actor)
    db.session.commit()
    sizes = select(GroupMember.group_id, func.count().label("members")).group_by(GroupMember.group_id).subquery()
    query = (
        select(Group.id, Group.name, Group.description, func.coalesce(sizes.c.members, 0), Group.created_at,
               Group.updated_at)
        .outerjoin(sizes, sizes.c.group_id == Group.id)
        .order_by(Group.name)
    )  # fmt: skip
    return csv_stream(GROUP_COLUMNS, _rows(db.engine, query, list))


def _rows(engine: Engine, query: Select[Any], cells: Callable[[Any], list[Any]]) -> Iterator[list[Any]]:
    """Export cells of the query's rows, read in batches once the download starts.

    The response body is written after the request has ended, so it reads through a session of its own
    (not the request's, which is closed by then) and needs no Flask context.
    """
    with Session(engine) as session:
        result = session.execute(query.execution_options(yield_per=EXPORT_BATCH))
        single = len(result.keys()) == 1
        for row in result:
            yield cells(row[0] if single else row)


def _subscriber_cells(subscriber: Subscriber) -> list[Any]:
    """One subscriber as export cells, in SUBSCRIBER_COLUMNS order."""
    return [getattr(subscriber, name) for name in _EXPORTED]


def _device_cells(device: Device, subscriber_key: str | None, app: str) -> list[Any]:
    """One device as export cells, in DEVICE_COLUMNS order."""
    return [
        app,
        device.platform,
        device.token,
        device.status,
        device.invalid_reason,
        device.invalidated_at,
        subscriber_key,
        device.registered_at,
        device.app_version,
        device.locale,
        device.time_zone,
    ]
