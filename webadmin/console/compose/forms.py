"""The compose form and its conversion to a campaign draft."""

from __future__ import annotations

import zoneinfo
from datetime import datetime

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    HiddenField,
    IntegerField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    TimeField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from webadmin.models.app import PLATFORMS
from webadmin.services.audience import normalize_keys
from webadmin.services.campaigns import MAX_TEXT, CampaignDraft
from webadmin.services.sms_fallback import MAX_TEXT_CHARS
from webadmin.services.templates import MAX_CONTEXT_TEXT

# Characters shown before a platform truncates the text (collapsed notification / lock screen); approximate,
# they depend on device and font: we warn, we do not cut.
PLATFORM_LIMITS = {"ios": 178, "android": 240, "web": 120}
TARGETS = [SelectChoice("all", "All users"), SelectChoice("keys", "Subscriber keys"),
           SelectChoice("groups", "Groups"), SelectChoice("platforms", "Platforms")]
TIME_ZONES = sorted(zoneinfo.available_timezones() - {"Factory", "localtime"})
WINDOW_UNITS = {"minutes": 60, "hours": 3600}


class ComposeForm(FlaskForm):
    """Everything a push says and to whom."""

    submission_id = HiddenField(validators=[Length(max=100)])  # one draft per form and content, however often sent
    app_id = SelectField("App", coerce=int, validators=[DataRequired()])
    template_slug = SelectField("Template", validators=[Optional()],
                                description="Picking one fills the title, message and deep link below.")
    template_context = TextAreaField("Template values (JSON)", validators=[Optional(), Length(max=MAX_CONTEXT_TEXT)],
                                     render_kw={"rows": 1, "spellcheck": "false", "placeholder": '{"name": "Ann"}'},
                                     description="Fill the template's placeholders; the push says the same to all.")
    text = TextAreaField("Message", validators=[DataRequired(), Length(max=MAX_TEXT)])
    title = StringField("Title", validators=[Optional(), Length(max=200)])
    offer_id = SelectField("Offer or product", coerce=lambda v: int(v) if v else None, validators=[Optional()])
    open_direct = StringField("Deep link (openDirect)", validators=[Optional(), Length(max=2048)])
    image_url = StringField("Image URL", validators=[Optional(), Length(max=2048)])
    data = TextAreaField("Custom data (key=value per line)", validators=[Optional(), Length(max=4000)])
    ttl_hours = IntegerField("Time to live (hours)", validators=[Optional(), NumberRange(min=0, max=672)])
    target = RadioField("Send to", choices=TARGETS, default="all")
    keys = TextAreaField("Subscriber keys (emails)", validators=[Optional(), Length(max=5_000_000)])
    group_ids = SelectMultipleField("Groups", coerce=int, validators=[Optional()])
    platforms = SelectMultipleField("Platforms", choices=[SelectChoice(p, p.title()) for p in PLATFORMS],
                                    validators=[Optional()])
    when = RadioField("When", choices=[SelectChoice("now", "Now"), SelectChoice("later", "Later")], default="now")
    date = DateField("Date", validators=[Optional()])
    time = TimeField("Time", validators=[Optional()])
    time_zone = SelectField("Time zone", choices=[SelectChoice(z, z) for z in TIME_ZONES], default="UTC")
    sms_fallback = BooleanField("If not opened in time, send an SMS")
    sms_after = IntegerField("Not opened within", validators=[Optional(), NumberRange(min=1, max=72 * 60)])
    sms_after_unit = SelectField("Unit", choices=[SelectChoice(u, u) for u in WINDOW_UNITS], default="minutes")
    sms_text = TextAreaField("SMS text", validators=[Optional(), Length(max=MAX_TEXT_CHARS)],
                             render_kw={"rows": 2, "placeholder": "Blank: the push text, plus its https link"})

    def validate_data(self, field: TextAreaField) -> None:
        """key=value lines."""
        for number, line in enumerate((field.data or "").splitlines(), 1):
            if line.strip() and "=" not in line:
                raise ValidationError(f"Line {number} is not key=value.")

    def validate_date(self, field: DateField) -> None:
        """A schedule needs a date and a time."""
        if self.when.data == "later" and (field.data is None or self.time.data is None):
            raise ValidationError("Pick the date and time to send.")

    def validate(self, extra_validators=None) -> bool:
        """The field rules, then: a fallback needs its window (Optional() stops a blank field's own validators)."""
        valid = super().validate(extra_validators)
        if self.sms_fallback.data and self.sms_after.data is None and not self.sms_after.errors:
            self.sms_after.errors = [*self.sms_after.errors, "Say how long to wait before the SMS."]
            valid = False
        return valid

    def sms_fallback_seconds(self) -> int | None:
        """The fallback window in seconds, or None without a fallback."""
        if not self.sms_fallback.data or self.sms_after.data is None:
            return None
        return self.sms_after.data * WINDOW_UNITS.get(self.sms_after_unit.data, 60)

    def custom_data(self) -> dict[str, str]:
        """The key=value lines as a dict."""
        pairs = (line.split("=", 1) for line in (self.data.data or "").splitlines() if "=" in line)
        return {k.strip(): v.strip() for k, v in pairs if k.strip()}

    def scheduled_at(self) -> datetime | None:
        """The chosen moment in the chosen time zone (aware), or None for now."""
        if self.when.data != "later" or self.date.data is None or self.time.data is None:
            return None
        return datetime.combine(self.date.data, self.time.data, tzinfo=zoneinfo.ZoneInfo(self.time_zone.data))

    def audience(self) -> dict:
        """The audience spec."""
        return {
            "type": self.target.data,
            "keys": normalize_keys((self.keys.data or "").replace(",", "\n").replace(";", "\n").splitlines()),
            "group_ids": self.group_ids.data or [],
            "platforms": self.platforms.data or [],
        }

    def draft(self, source: str = "adhoc", related: tuple[str, str] | None = None) -> CampaignDraft:
        """A campaign draft from the form."""
        return CampaignDraft(
            app_id=self.app_id.data,
            text=self.text.data,
            title=self.title.data or None,
            open_direct=self.open_direct.data or None,
            data=self.custom_data(),
            image_url=self.image_url.data or None,
            ttl=self.ttl_hours.data * 3600 if self.ttl_hours.data is not None else None,
            audience=self.audience(),
            source=source,
            related_type=related[0] if related else None,
            related_id=related[1] if related else None,
            template_slug=self.template_slug.data or None,
            scheduled_at=self.scheduled_at(),
            schedule_time_zone=self.time_zone.data if self.when.data == "later" else None,
            idempotency_key=f"compose:{self.submission_id.data}" if self.submission_id.data else None,
            sms_fallback_seconds=self.sms_fallback_seconds(),
            sms_fallback_text=self.sms_text.data or None,
        )


class TestSendForm(FlaskForm):
    """Send the current draft to chosen test devices and the devices of a few tester keys."""

    test_device_ids = SelectMultipleField("Test devices", coerce=int, validate_choice=False, validators=[Optional()])
    test_keys = TextAreaField("Tester subscriber keys (up to 20)", validators=[Optional(), Length(max=5000)],
                              render_kw={"rows": 2, "placeholder": "you@example.com"})

    def keys(self) -> list[str]:
        """The typed keys (one per line, or separated by commas)."""
        return normalize_keys((self.test_keys.data or "").replace(",", "\n").replace(";", "\n").splitlines())
