"""Forms of the settings section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from werkzeug.datastructures import FileStorage
from wtforms import (
    BooleanField,
    Field,
    IntegerField,
    PasswordField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from webadmin.models.app import PLATFORMS
from webadmin.providers import backend_choices, backend_class
from webadmin.providers.base import CredentialField, PushBackend
from webadmin.services import ServiceError
from webadmin.services.apps import normalize_scheme
from webadmin.services.channel_credentials import option_names, stored_hint
from webadmin.services.channels import ChannelInput
from webadmin.services.deep_links import normalize_web_link_base

PLATFORM_LABELS = {"android": "Android", "ios": "iOS", "web": "Web"}
DEVICE_SELECTION_CHOICES = [
    SelectChoice("all", "All devices of a subscriber (default)"),
    SelectChoice("newest", "Only the most recently registered device"),
]


class CheckboxesField(SelectMultipleField):
    """A multiple choice shown as checkboxes."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class AppForm(FlaskForm):
    """An app's name, platforms, deep-link scheme and the https address its app links also open at."""

    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    platforms = CheckboxesField(
        "Ships on",
        choices=[SelectChoice(p, PLATFORM_LABELS[p]) for p in PLATFORMS],
        validators=[DataRequired(message="Choose at least one platform.")],
    )
    deep_link_scheme = StringField(
        "Deep-link scheme",
        validators=[Optional(), Length(max=43)],
        render_kw={"placeholder": "nibs", "autocapitalize": "off", "spellcheck": "false"},
        description="Links in pushes open your app through it, e.g. nibs for nibs://offers/42. Leave empty if none.",
    )
    web_link_base = StringField(
        "Web address for app links",
        validators=[Optional(), Length(max=200)],
        render_kw={"placeholder": "https://nibs.example", "autocapitalize": "off", "spellcheck": "false"},
        description="Optional, https only: an SMS fallback links nibs://offers/42 as https://nibs.example/offers/42.",
    )
    submit = SubmitField("Save app")

    def validate_deep_link_scheme(self, field: StringField) -> None:
        """The same rule as the service, shown beside the field."""
        try:
            normalize_scheme(field.data)
        except ServiceError as exc:
            raise ValidationError(exc.message) from exc

    def validate_web_link_base(self, field: StringField) -> None:
        """The same rule as the service, shown beside the field."""
        try:
            normalize_web_link_base(field.data)
        except ServiceError as exc:
            raise ValidationError(exc.message) from exc


class ApiKeyForm(FlaskForm):
    """Name a new API key."""

    name = StringField(
        "Key name",
        validators=[DataRequired(), Length(max=120)],
        description="Where it will be used, e.g. “iOS app production”.",
    )
    submit = SubmitField("Create key")


class RevokeForm(FlaskForm):
    """Confirm revoking a key (the form only carries the CSRF token)."""

    submit = SubmitField("Revoke key")


class DeliveryForm(FlaskForm):
    """Which devices of a subscriber a push goes to."""

    device_selection = RadioField("Deliver a push to", choices=DEVICE_SELECTION_CHOICES)
    submit = SubmitField("Save delivery setting")


# ---- channels

MAX_CREDENTIAL_FILE = 64 * 1024  # a service-account JSON is ~2.3 KB, a .p8 key ~250 bytes


class ChannelChoiceForm(FlaskForm):
    """Step one of adding a channel: the platform and the provider (a GET form: it changes nothing)."""

    class Meta:
        csrf = False

    platform = SelectField("Platform")
    backend = SelectField("Provider")

    def __init__(self, platforms: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.platform.choices = [SelectChoice(p, PLATFORM_LABELS.get(p, p)) for p in platforms]
        self.backend.choices = [SelectChoice("", "Choose a provider…")] + [
            SelectChoice(name, _backend_choice_label(name, label)) for name, label in backend_choices()]


def _backend_choice_label(type_name: str, label: str) -> str:
    """A provider's label with the platforms it serves, when not all of them."""
    served = backend_class(type_name).platforms
    if set(served) >= set(PLATFORMS):
        return label
    return f"{label} — {', '.join(PLATFORM_LABELS.get(p, p) for p in served)} only"


class ChannelActionForm(FlaskForm):
    """Enable, disable, delete or test a channel (the form only carries the CSRF token)."""


class TextFileField(FileField):
    """A file input whose data is the uploaded file's text ('' when no file was chosen)."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        """Read the upload as UTF-8 text, at most MAX_CREDENTIAL_FILE bytes."""
        self.data = ""
        storage = next((v for v in valuelist if isinstance(v, FileStorage) and v.filename), None)
        if storage is None:
            return
        raw = storage.read(MAX_CREDENTIAL_FILE + 1)
        if len(raw) > MAX_CREDENTIAL_FILE:
            raise ValueError("This file is too large for a credential (more than 64 KB).")
        try:
            self.data = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError("This is not a text file (JSON or PEM).") from None


class SecretTextAreaField(TextAreaField):
    """A textarea that never renders its value: a submitted PEM key is not sent back to the browser."""

    def _value(self) -> str:
        return ""


class ChannelForm(FlaskForm):
    """A channel of one backend: its name, the backend's credential fields, its options and its state.

    Subclassed per backend by `channel_form_class`: the backend's credential_fields drive the fields.
    """

    backend_cls: ClassVar[type[PushBackend]]

    name = StringField("Name", validators=[DataRequired(), Length(max=120)],
                       description="How the channel appears in Settings and campaign logs, e.g. “FCM production”.")
    enabled = BooleanField("Enabled: send this platform’s pushes through this channel")
    submit = SubmitField("Save channel")

    def credential_fields(self) -> list[tuple[CredentialField, Field, Field | None, Field | None]]:
        """(spec, input, upload input or None, clear checkbox or None) per credential field, in order."""
        return [(spec, self[f"cred_{spec.name}"], self._fields.get(f"upload_{spec.name}"),
                 self._fields.get(f"clear_{spec.name}")) for spec in self.backend_cls.credential_fields]

    def option_fields(self) -> list[Field]:
        """The option inputs the backend honours."""
        return [self[f"option_{name}"] for name in option_names(self.backend_cls.type_name)]

    def toggle_fields(self) -> list[Field]:
        """The on/off options, shown with their explanation outside "Advanced options"."""
        return [f for f in self.option_fields() if isinstance(f, BooleanField)]

    def advanced_fields(self) -> list[Field]:
        """The tuning options (endpoints, timeouts, sizes), folded away under "Advanced options"."""
        return [f for f in self.option_fields() if not isinstance(f, BooleanField)]

    def describe_stored(self, stored: Mapping[str, Any]) -> None:
        """Say beside each secret whether one is stored (never what it is); offer removal of optional ones."""
        for spec, field, _upload, clear in self.credential_fields():
            if not spec.secret:
                continue
            if stored.get(spec.name):
                hint = f"{stored_hint(spec, stored[spec.name])}. Leave blank to keep it."
                field.description = f"{hint} {spec.help}".strip()
            elif clear is not None:
                del self[clear.name]

    def channel_input(self) -> ChannelInput:
        """What was submitted, for the channels service (an upload wins over its textarea)."""
        credentials: dict[str, str | None] = {}
        clear = set()
        for spec, field, upload, clear_box in self.credential_fields():
            value = upload.data if upload is not None and upload.data else field.data
            credentials[spec.name] = None if value is None else str(value)
            if clear_box is not None and clear_box.data:
                clear.add(spec.name)
        options = {field.short_name.removeprefix("option_"): field.data for field in self.option_fields()}
        return ChannelInput(name=self.name.data or "", enabled=bool(self.enabled.data), credentials=credentials,
                            options=options, clear=frozenset(clear))


ALL_USERS_APP_HELP = (
    "Campaigns to all users (no platform filter) then go out as ONE messageApp request to Marketing Cloud's own "
    "audience of the app instead of one messageContact request per 5,000 subscriber keys. Marketing Cloud decides "
    "who gets it: the count can differ from the one webadmin showed, opted-out and invalid devices are Marketing "
    "Cloud's to handle, “newest device only” does not apply, and every message is recorded sent with that one "
    "request's id. Campaigns with a platform filter, to keys or to groups still use messageContact."
)

OPTION_FIELDS = {
    "all_users_app": lambda cls: BooleanField("All users → messageApp (one request per campaign)",
                                              description=ALL_USERS_APP_HELP),
    "endpoint": lambda cls: StringField(
        "API base URL", validators=[Optional()], render_kw={"placeholder": "the provider’s own"},
        description="Only for a proxy or a local test server; https://, or http:// to this machine."),
    "auth_endpoint": lambda cls: StringField(
        "Token URL", validators=[Optional()], render_kw={"placeholder": "the provider’s own"},
        description="Overrides where access tokens are requested (FCM: the OAuth2 token URL; Marketing Cloud: "
                    "the authentication base URI)."),
    "timeout": lambda cls: IntegerField(
        "Timeout (seconds)", validators=[Optional()], render_kw={"placeholder": "10"},
        description="How long to wait for one answer of the provider (1–120)."),
    "batch_size": lambda cls: IntegerField(
        "Batch size", validators=[Optional()], render_kw={"placeholder": str(getattr(cls, "default_batch_size", 500))},
        description="Messages handed to the provider at a time (1–20,000; providers cap it at their own limit)."),
    "concurrency": lambda cls: IntegerField(
        "Concurrency", validators=[Optional()], render_kw={"placeholder": "100"},
        description="Requests in flight at once per worker thread (1–1,000; HTTP/2 streams for FCM and APNs)."),
    "ca_file": lambda cls: StringField(
        "CA certificates file", validators=[Optional()], render_kw={"placeholder": "the system’s trusted CAs"},
        description="Only for a proxy or a test server with its own CA: the absolute path of a PEM file, present "
                    "on every worker machine."),
}


def _credential_input(spec: CredentialField) -> Field:
    """The input of one credential field, by kind; secrets never render their value."""
    description = spec.help
    validators = [Optional()]
    if spec.kind == "file":
        return TextFileField(spec.label, description=description, render_kw={"accept": ".json,.pem,.p8,.txt"})
    if spec.kind == "choice":
        # The service checks the choice (and defaults a missing one), beside the other credential rules.
        return SelectField(spec.label, choices=list(spec.choices), description=description, validate_choice=False)
    if spec.kind == "int":
        return IntegerField(spec.label, validators=validators, description=description)
    if spec.kind == "textarea":
        field_cls = SecretTextAreaField if spec.secret else TextAreaField
        return field_cls(spec.label, validators=validators, description=description,
                         render_kw={"rows": 4, "spellcheck": "false", "autocomplete": "off"})
    if spec.secret or spec.kind == "secret":
        return PasswordField(spec.label, validators=validators, description=description,
                             render_kw={"autocomplete": "new-password"})
    return StringField(spec.label, validators=validators, description=description,
                       render_kw={"autocomplete": "off", "spellcheck": "false"})


def channel_form_class(cls: type[PushBackend]) -> type[ChannelForm]:
    """The form class of a backend: ChannelForm plus one input per credential field and option."""
    attrs: dict[str, Any] = {"backend_cls": cls}
    for spec in cls.credential_fields:
        attrs[f"cred_{spec.name}"] = _credential_input(spec)
        if spec.kind == "textarea":
            attrs[f"upload_{spec.name}"] = TextFileField(f"…or upload the {spec.label} as a file",
                                                         render_kw={"accept": ".p8,.pem,.crt,.key,.txt"})
        if spec.secret and not spec.required:
            attrs[f"clear_{spec.name}"] = BooleanField(f"Remove the stored {spec.label.lower()}")
    for name in option_names(cls.type_name):
        attrs[f"option_{name}"] = OPTION_FIELDS[name](cls)
    return type(f"{cls.__name__}ChannelForm", (ChannelForm,), attrs)
