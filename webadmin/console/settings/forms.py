"""Forms of the settings section."""

from flask_wtf import FlaskForm
from wtforms import RadioField, SelectMultipleField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from webadmin.models.app import PLATFORMS
from webadmin.services import ServiceError
from webadmin.services.apps import normalize_scheme

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
    """An app's name, platforms and deep-link scheme."""

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
    submit = SubmitField("Save app")

    def validate_deep_link_scheme(self, field: StringField) -> None:
        """The same rule as the service, shown beside the field."""
        try:
            normalize_scheme(field.data)
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
