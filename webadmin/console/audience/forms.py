"""Forms of the audience section."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import HiddenField, SearchField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from webadmin.models.app import PLATFORMS
from webadmin.models.audience import DEVICE_STATUSES
from webadmin.services.groups import DESCRIPTION_MAX_LENGTH, NAME_MAX_LENGTH
from webadmin.services.subscriber_search import NO_DEVICES, DeviceFilters, SubscriberFilters

PLATFORM_LABELS = {"android": "Android", "ios": "iOS", "web": "Web"}
PLATFORM_CHOICES = [SelectChoice("", "Any platform")] + [SelectChoice(p, PLATFORM_LABELS.get(p, p)) for p in PLATFORMS]
STATUS_CHOICES = [SelectChoice("", "Any device status")] + [SelectChoice(s, s.title()) for s in DEVICE_STATUSES]


def _int_or_none(value: str | None) -> int | None:
    """A menu's id value, or None when empty, not a number, or beyond any stored id."""
    try:
        number = int(value) if value else None
    except ValueError:
        return None
    return number if number is not None and 0 < number <= 2**31 - 1 else None


class SubscriberFilterForm(FlaskForm):
    """Search and filters of the subscriber list (GET, so no CSRF token)."""

    class Meta:
        csrf = False

    q = SearchField("Key or name starts with", validators=[Optional(), Length(max=254)])
    platform = SelectField("Platform", choices=PLATFORM_CHOICES, validate_choice=False)
    group = SelectField("Group", choices=[], validate_choice=False)
    status = SelectField(
        "Device status", choices=[*STATUS_CHOICES, SelectChoice(NO_DEVICES, "No devices")], validate_choice=False
    )

    def with_groups(self, groups: list[tuple[int, str]]) -> SubscriberFilterForm:
        """Fill the group menu."""
        self.group.choices = [SelectChoice("", "Any group")] + [SelectChoice(str(gid), name) for gid, name in groups]
        return self

    def filters(self) -> SubscriberFilters:
        """The filters; values that are not on the menus count as "any"."""
        statuses = (*DEVICE_STATUSES, NO_DEVICES)
        return SubscriberFilters(
            q=(self.q.data or "").strip()[:254] or None,
            platform=self.platform.data if self.platform.data in PLATFORMS else None,
            group_id=_int_or_none(self.group.data),
            status=self.status.data if self.status.data in statuses else None,
        )


class DeviceFilterForm(FlaskForm):
    """Filters of the device list (GET, so no CSRF token)."""

    class Meta:
        csrf = False

    app = SelectField("App", choices=[], validate_choice=False)
    platform = SelectField("Platform", choices=PLATFORM_CHOICES, validate_choice=False)
    status = SelectField("Status", choices=STATUS_CHOICES, validate_choice=False)

    def with_apps(self, apps: list[tuple[int, str]]) -> DeviceFilterForm:
        """Fill the app menu."""
        self.app.choices = [SelectChoice("", "Any app")] + [SelectChoice(str(aid), name) for aid, name in apps]
        return self

    def filters(self) -> DeviceFilters:
        """The filters; values that are not on the menus count as "any"."""
        return DeviceFilters(
            app_id=_int_or_none(self.app.data),
            platform=self.platform.data if self.platform.data in PLATFORMS else None,
            status=self.status.data if self.status.data in DEVICE_STATUSES else None,
        )


class GroupForm(FlaskForm):
    """A group's name and description."""

    name = StringField("Name", validators=[DataRequired(), Length(max=NAME_MAX_LENGTH)])
    description = TextAreaField(
        "Description", validators=[Optional(), Length(max=DESCRIPTION_MAX_LENGTH)], render_kw={"rows": 2}
    )


class MemberKeysForm(FlaskForm):
    """Subscriber keys to add to a group: pasted, uploaded as CSV, or both."""

    keys = TextAreaField(
        "Paste subscriber keys",
        render_kw={"rows": 6, "placeholder": "anna@example.com\njan@example.com", "spellcheck": "false"},
        description="One per line, or separated by commas. Up to about 20,000 keys; for more, upload a file.",
    )
    file = FileField(
        "…or upload a CSV file",
        render_kw={"accept": ".csv,.txt,text/csv,text/plain"},
        description="Keys in the first column, or in a column headed subscriber_key. Up to 16 MB.",
    )

    def validate_keys(self, field: TextAreaField) -> None:
        """One of the two is needed."""
        if not (field.data or "").strip() and not self.file.data:
            raise ValidationError("Paste some keys or choose a file.")


class TokenForm(FlaskForm):
    """Confirms a previewed member list, named by its token."""

    token = HiddenField(validators=[DataRequired(), Length(max=64)])


class MemberKeyForm(FlaskForm):
    """Removes one member."""

    key = HiddenField(validators=[DataRequired(), Length(max=254)])


class ImportForm(FlaskForm):
    """A subscriber CSV to import."""

    file = FileField(
        "CSV file",
        validators=[FileRequired("Choose a CSV file.")],
        render_kw={"accept": ".csv,text/csv"},
    )
