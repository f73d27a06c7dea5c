"""Templates: CRUD, the live preview, roles, and known template-injection payloads rendered harmlessly."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from tests.factories import make_app
from webadmin.extensions import db
from webadmin.models.audit import AuditEvent
from webadmin.models.message import Template
from webadmin.models.user import Role
from webadmin.sending.pymess import can_send
from webadmin.services import ServiceError
from webadmin.services.template_render import render

FORM = {"slug": "welcome", "title": "Welcome, {{ name }}!", "body": "Thanks for joining, {{ name|title }}.",
        "open_direct": "nibs://home", "is_active": "y"}
PREVIEW = {"HX-Request": "true", "HX-Target": "templates-preview"}
CANARY = "canary-environment-value-5f3a"

# Known server-side template-injection payloads (Jinja2 / Flask) and resource bombs.
PAYLOADS = [
    "{{ config }}",
    "{{ config.SECRET_KEY }}",
    "{{ config.items() }}",
    "{{ self }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ request.application.__globals__ }}",
    "{{ request.environ }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum.__globals__['os'].environ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ url_for.__globals__ }}",
    "{{ get_flashed_messages.__globals__ }}",
    "{{ name.__class__ }}",
    "{{ name.__class__.__base__.__subclasses__() }}",
    "{{ name['__class__'] }}",
    "{{ name|attr('__class__') }}",
    "{{ name.upper }}",
    "{{ name.format }}",
    "{{ '{0.__class__}'.format(name) }}",
    "{{ range }}",
    "{{ range|string }}",
    "{{ range ~ '' }}",
    "{{ [range]|join }}",
    "{{ {'r': range} }}",
    "{{ items|map('upper') }}",
    "{{ items|pprint }}",
    "{% for i in items %}{{ loop }}{{ loop.cycle }}{% endfor %}",
    "{% macro m() %}{% endmacro %}{{ m }}",
    "{% include 'base.html' %}",
    "{% extends 'base.html' %}",
    "{% import 'base.html' as b %}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{% for a in big %}{% for b in big %}{% for c in big %}{% endfor %}{% endfor %}{% endfor %}",
    "{% for a in big %}{% for b in big %}xxxxxxxx{% endfor %}{% endfor %}",
    "{% set s %}{% for a in big %}{% for b in big %}x{% endfor %}{% endfor %}{% endset %}",
    "{{ 'x' * 10**9 }}",
    "{{ [1] * 10**9 }}",
    "{{ 'x'|center(10**9) }}",
    "{{ name.center(10**9) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '%0999999999d'|format(1) }}",
    "{% set s = 'x' * 4000 %}{% set s = s ~ s %}{% set s = s ~ s %}{% set s = s ~ s %}{{ s }}",
    "{{ name|replace('', 'y' * 4000)|replace('', 'y' * 4000) }}",
    "{{ big|join('y' * 4000) }}",
    "{{ 9**9**9 }}",
    "{{ 9**(9**9) }}",
    "{{ ((9**64)**64)**64 }}",
    "{{ 2.0 ** 100000 }}",
    "{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}",
]


def _assert_harmless(text: str, app=None) -> None:
    secrets = [CANARY, "test-secret"]  # build_app's SECRET_KEY
    if app is not None:
        secrets += [app.config["SECRET_KEY"], str(app.config["SQLALCHEMY_DATABASE_URI"])]
    for secret in secrets:
        assert secret not in text
    for leak in ("<class", "<function", "<built-in", "<bound", "<module", "<generator", "<Macro", "<Template",
                 "<LoopContext", " object at 0x", "__globals__ ="):
        assert leak not in text, text


def _count() -> int:
    return db.session.scalar(select(func.count(Template.id)))


def _actions() -> list[str]:
    query = select(AuditEvent.action).where(AuditEvent.action.startswith("template.")).order_by(AuditEvent.id)
    return list(db.session.scalars(query))


def make_template(slug: str = "welcome", **fields) -> Template:
    """A template."""
    template = Template(slug=slug, body=fields.pop("body", "Hi {{ name }}"), **fields)
    db.session.add(template)
    db.session.commit()
    return template


@pytest.mark.parametrize("payload", PAYLOADS)
def test_injection_payloads_render_harmlessly_or_are_refused(monkeypatch, payload):
    monkeypatch.setenv("WEBADMIN_CANARY", CANARY)
    context = {"name": "Ann", "items": ["a", "b"], "big": list(range(1000))}
    started = time.monotonic()
    try:
        output = render(payload, context)
    except ServiceError as exc:
        assert exc.message.startswith(("The template was refused", "The template could not be rendered",
                                       "The template is nested too deeply"))
        _assert_harmless(exc.message)
    else:
        _assert_harmless(output)
        assert len(output) <= 4000
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("payload", PAYLOADS[:12] + PAYLOADS[-6:])
def test_injection_payloads_through_the_preview_route(client, login_as, app, monkeypatch, payload):
    monkeypatch.setenv("WEBADMIN_CANARY", CANARY)
    login_as(Role.MARKETER)
    data = {**FORM, "title": "", "body": payload, "context": '{"name": "Ann", "big": [1, 2, 3]}'}
    response = client.post("/templates/new", data=data, headers=PREVIEW)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and html.lstrip().startswith('<div id="templates-preview"')
    _assert_harmless(html, app)
    assert _count() == 0


def test_plain_templates_render_with_their_context():
    context = {"name": "ann", "items": ["Dark bar", "Pralines"], "user": {"city": "Brno"}}
    source = "Hi {{ name|title }} from {{ user.city }}: {{ items|join(', ') }} ({{ items|length }}){{ x|default('') }}"
    assert render(source, context) == "Hi Ann from Brno: Dark bar, Pralines (2)"
    loop = "{% for i in items %}{{ loop.index }}. {{ i|upper }} {% endfor %}"
    assert render(loop, context) == "1. DARK BAR 2. PRALINES "
    assert render("{% for k, v in user|items %}{{ k }}={{ v }}{% endfor %}", context) == "city=Brno"
    with pytest.raises(ServiceError, match="'missing' is undefined"):
        render("{{ missing }}", context)
    with pytest.raises(ServiceError, match="context data is larger"):
        render("x", {"huge": "y" * 200_000})
    nested: list = []
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(ServiceError, match="nested too deeply"):
        render("x", {"deep": nested})


def test_create_edit_deactivate_and_delete_are_audited(client, login_as):
    make_app("Nibs")
    login_as(Role.MARKETER)
    assert "No templates yet" in client.get("/templates/").get_data(as_text=True)
    assert client.post("/templates/new", data=FORM).status_code == 302
    template = db.session.scalar(select(Template))
    assert (template.slug, template.title, template.open_direct, template.is_active) == (
        "welcome", "Welcome, {{ name }}!", "nibs://home", True)
    listing = client.get("/templates/").get_data(as_text=True)
    assert "welcome" in listing and "yes · active" in listing and "while it is active" in listing

    form = client.get(f"/templates/{template.id}/edit").get_data(as_text=True)
    assert 'value="welcome"' in form and "Thanks for joining" in form
    edited = {**FORM, "slug": "welcome-back", "body": "Good to see you, {{ name }}", "open_direct": "offers/3"}
    assert client.post(f"/templates/{template.id}/edit", data=edited).status_code == 302
    db.session.expire_all()
    template = db.session.get(Template, template.id)
    assert (template.slug, template.open_direct) == ("welcome-back", "nibs://offers/3")

    assert client.post(f"/templates/{template.id}/active", data={"active": "0"}).status_code == 302
    db.session.expire_all()
    template = db.session.get(Template, template.id)
    assert template.is_active is False and can_send(template, "ann@example.com", {}) is False
    assert "no · inactive" in client.get("/templates/").get_data(as_text=True)

    confirm = client.get(f"/templates/{template.id}/delete").get_data(as_text=True)
    assert "Delete the template “welcome-back”?" in confirm and _count() == 1
    assert client.post(f"/templates/{template.id}/delete").status_code == 302
    assert _count() == 0
    assert _actions() == ["template.create", "template.update", "template.update", "template.delete"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"slug": "Welcome Home"}, "Use lowercase letters, digits"),
        ({"slug": "-welcome"}, "Use lowercase letters, digits"),
        ({"slug": "taken"}, "Another template already uses the slug"),
        ({"body": ""}, "This field is required."),
        ({"body": "Hi {{ name "}, "could not be rendered"),
        ({"body": "{{ name|center(9) }}"}, "the filter &#39;center&#39; is not available"),
        ({"title": "{% include 'x' %}"}, "is not available in push templates"),
        ({"open_direct": "javascript:alert(1)"}, "Only https:// or nibs:// links are allowed"),
    ],
)
def test_validation_errors_change_nothing(client, login_as, changes, message):
    make_app("Nibs")
    make_template("taken")
    login_as(Role.MARKETER)
    response = client.post("/templates/new", data={**FORM, **changes})
    assert response.status_code == 200 and message in response.get_data(as_text=True)
    assert _count() == 1 and _actions() == []


def test_preview_fragment_updates_as_you_type(client, login_as):
    login_as(Role.MARKETER)
    data = {**FORM, "context": '{"name": "ann"}'}
    html = client.post("/templates/new", data=data, headers=PREVIEW).get_data(as_text=True)
    assert html.lstrip().startswith('<div id="templates-preview"') and "<html" not in html
    assert "Welcome, ann!" in html and "Thanks for joining, Ann." in html
    missing = client.post("/templates/new", data={**FORM, "context": ""}, headers=PREVIEW).get_data(as_text=True)
    assert "&#39;name&#39; is undefined" in missing and 'id="templates-preview-error"' in missing
    bad_json = client.post("/templates/new", data={**FORM, "context": "{name: ann}"}, headers=PREVIEW)
    assert "not valid JSON" in bad_json.get_data(as_text=True)
    not_object = client.post("/templates/new", data={**FORM, "context": "[1, 2]"}, headers=PREVIEW)
    assert "must be a JSON object" in not_object.get_data(as_text=True)
    assert _count() == 0


def test_preview_button_works_without_javascript_and_saves_nothing(client, login_as):
    template = make_template("welcome", body="old")
    login_as(Role.MARKETER)
    data = {**FORM, "body": "Hello {{ name }}", "context": '{"name": "Bo"}', "preview": "1"}
    response = client.post(f"/templates/{template.id}/edit", data=data)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" in html and "Hello Bo" in html
    db.session.expire_all()
    assert db.session.get(Template, template.id).body == "old" and _actions() == []


def test_viewer_sees_templates_but_cannot_change_them(client, login_as):
    template = make_template()
    login_as(Role.VIEWER)
    listing = client.get("/templates/").get_data(as_text=True)
    assert "welcome" in listing and "New template" not in listing and "Deactivate" not in listing
    assert client.get("/templates/new").status_code == 403
    assert client.post("/templates/new", data={**FORM, "slug": "other"}).status_code == 403
    assert client.post("/templates/new", data=FORM, headers=PREVIEW).status_code == 403
    assert client.post(f"/templates/{template.id}/edit", data=FORM).status_code == 403
    assert client.post(f"/templates/{template.id}/active", data={"active": "0"}).status_code == 403
    assert client.post(f"/templates/{template.id}/delete").status_code == 403
    db.session.expire_all()
    assert _count() == 1 and db.session.get(Template, template.id).is_active is True and _actions() == []


def test_unknown_template_is_404(client, login_as):
    login_as(Role.MARKETER)
    assert client.get("/templates/999/edit").status_code == 404
    assert client.get(f"/templates/{2**40}/edit").status_code == 404
    assert client.post("/templates/999/delete").status_code == 404
