"""Every route declares who may use it; a walk over all routes × roles checks allow/deny against it."""

from __future__ import annotations

import uuid

import pytest
from flask import Flask

from tests.factories import make_user
from webadmin.access import READ_METHODS, Access, access_of, allow
from webadmin.console.request_info import MAX_PAGE, page_arg
from webadmin.converters import MAX_ID
from webadmin.models.user import Role

ROLES: list[Role | None] = [None, Role.VIEWER, Role.MARKETER, Role.ADMIN]
SAMPLE_VALUES = {"int": 1, "string": "x", "path": "x", "uuid": str(uuid.uuid4()), "default": "x"}
HUGE = 2**64  # beyond any id: SQLite raised OverflowError (a 500) for it before the bounded converter

# Routes a viewer may use with a method other than GET, and why each changes nothing a viewer may not change.
# Everything else that writes must need at least a marketer ("a viewer can look but never send or change").
VIEWER_SAFE_WRITES = {
    "auth.logout": "ends the viewer's own session and nothing else",
}


def _is_int(converter) -> bool:
    """Whether a rule variable is an `<int:…>`."""
    return "Integer" in type(converter).__name__


def _build_path(app: Flask, rule, int_value: int = 1) -> str:
    """A concrete URL for a rule, with a sample value for each variable (`int_value` for the int ones)."""
    values = {}
    for name in rule.arguments:
        converter = rule._converters[name]
        if hasattr(converter, "items"):  # any(a, b, …): take its first allowed value
            values[name] = sorted(converter.items)[0]
            continue
        if _is_int(converter):
            values[name] = int_value
            continue
        kind = type(converter).__name__.replace("Converter", "").lower()
        values[name] = SAMPLE_VALUES.get(kind, "x")
    with app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **values)


def _routes(app: Flask):
    """(endpoint, path, method) for every registered route and method."""
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, _build_path(app, rule), method


def _expect_allowed(access: Access, role: Role | None, method: str) -> bool:
    """What the declaration says for this role and method."""
    if access.kind in ("public", "api"):
        return True
    needed = access.required_role(method)
    return role is not None and role.at_least(needed)


def _was_refused(response, role: Role | None) -> bool:
    """A refusal is a 403, or for anonymous visitors a redirect to sign-in."""
    if response.status_code == 403:
        return True
    return role is None and response.status_code == 302 and "/login?next=" in response.headers["Location"]


def test_every_route_declares_access(app):
    missing = [rule.endpoint for rule in app.url_map.iter_rules() if access_of(app, rule.endpoint) is None]
    assert missing == [], f"routes without an access declaration: {missing}"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value if r else "anonymous")
def test_routes_allow_and_deny_by_declaration(app, auth, role):
    make_user(Role.ADMIN, email="first-admin@example.com")  # past first run
    if role is not None:
        assert auth.login(make_user(role).email).status_code == 302
    problems = []
    for endpoint, path, method in _routes(app):
        if endpoint in ("auth.logout",):  # signing out would end the walk's own session
            continue
        access = access_of(app, endpoint)
        response = auth.client.open(path, method=method)
        refused = _was_refused(response, role)
        if refused == _expect_allowed(access, role, method):
            problems.append(f"{method} {path} ({endpoint}): got {response.status_code}")
    assert problems == []


def test_an_undeclared_route_is_refused_and_reported(app, auth):
    def sneaky():
        return "should never be served"

    app.add_url_rule("/sneaky", "sneaky", sneaky)
    make_user(Role.ADMIN, email="first-admin@example.com")
    auth.login(make_user(Role.ADMIN).email)
    response = auth.client.get("/sneaky")
    assert response.status_code == 403
    assert "should never be served" not in response.get_data(as_text=True)
    assert access_of(app, "sneaky") is None  # and test_every_route_declares_access would list it


def test_viewer_cannot_change_anything(app, auth):
    admin = make_user(Role.ADMIN)
    auth.login(make_user(Role.VIEWER).email)
    for path in ("/users/", f"/users/{admin.id}/role", f"/users/{admin.id}/active", "/demo"):
        assert auth.client.post(path, data={"role": "viewer", "active": "0"}).status_code == 403, path


def test_allow_makes_writes_need_a_marketer_unless_a_route_says_otherwise():
    def view():
        return ""

    default = allow(Role.VIEWER)(view).access
    assert default.required_role("GET") == Role.VIEWER
    assert default.required_role("POST") == Role.MARKETER and default.required_role("DELETE") == Role.MARKETER
    assert allow(Role.ADMIN)(view).access.required_role("POST") == Role.ADMIN  # never weaker than read
    assert allow(Role.VIEWER, write=Role.VIEWER)(view).access.required_role("POST") == Role.VIEWER


def test_no_staff_write_is_open_to_viewers(app):
    open_to_viewers = set()
    for rule in app.url_map.iter_rules():
        access = access_of(app, rule.endpoint)
        if access is None or access.kind != "staff":
            continue
        if any(not access.required_role(m).at_least(Role.MARKETER) for m in rule.methods - READ_METHODS):
            open_to_viewers.add(rule.endpoint)
    assert open_to_viewers - set(VIEWER_SAFE_WRITES) == set(), "viewers may change things here"
    # A stale exception would hide nothing today but invite the next one: each must still be a viewer write.
    assert open_to_viewers == set(VIEWER_SAFE_WRITES)


def test_out_of_range_ids_are_404_never_500(app, auth):
    make_user(Role.ADMIN, email="first-admin@example.com")
    assert auth.login(make_user(Role.ADMIN).email).status_code == 302
    rules = [r for r in app.url_map.iter_rules() if any(_is_int(c) for c in r._converters.values())]
    # Werkzeug answers 405 when the path also matches a rule for another method (POST and DELETE of
    # /api/v1/groups/<id>/members are two rules): still a refusal, never a 500.
    shared = {r.rule for r in rules if sum(other.rule == r.rule for other in rules) > 1}
    problems, checked = [], 0
    for rule in rules:
        if rule.endpoint == "auth.logout":
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            checked += 1
            huge = auth.client.open(_build_path(app, rule, HUGE), method=method)
            # The largest id still reaches the view (no such row); one more was a 500 on PostgreSQL's INTEGER keys.
            largest = auth.client.open(_build_path(app, rule, MAX_ID), method=method)
            above = auth.client.open(_build_path(app, rule, MAX_ID + 1), method=method)
            expected = {404, 405} if rule.rule in shared else {404}
            if rule.rule.startswith("/api/"):  # the API checks ids itself: a JSON refusal (401 here, no key)
                expected = set(range(400, 500))
            if huge.status_code not in expected or above.status_code not in expected or largest.status_code >= 500:
                problems.append(f"{method} {rule.rule}: {huge.status_code} {above.status_code} {largest.status_code}")
    assert checked > 20 and problems == []


def test_huge_numbers_in_the_query_string_never_give_500(app, auth):
    make_user(Role.ADMIN, email="first-admin@example.com")
    assert auth.login(make_user(Role.ADMIN).email).status_code == 302
    query = {name: str(HUGE) for name in ("page", "offer_id", "from", "days")}
    problems = []
    for endpoint, path, method in _routes(app):
        if method == "GET" and (response := auth.client.get(path, query_string=query)).status_code >= 500:
            problems.append(f"GET {path} ({endpoint}): {response.status_code}")
    assert problems == []


@pytest.mark.parametrize(("raw", "page"), [(None, 1), ("3", 3), ("0", 1), ("-5", 1), ("abc", 1), ("1e23", 1),
                                           (str(HUGE), MAX_PAGE), ("9" * 5000, 1)])
def test_page_numbers_are_clamped(raw, page):
    with Flask(__name__).test_request_context(query_string={} if raw is None else {"page": raw}):
        assert page_arg() == page
