"""Forms of the offers section."""

from flask_wtf import FlaskForm
from wtforms import DateField, RadioField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from webadmin.services.offers import MAX_DESCRIPTION, MAX_NAME, STATES

KIND_CHOICES = [SelectChoice("offer", "Offer"), SelectChoice("product", "Product")]


class OfferForm(FlaskForm):
    """An offer or product."""

    kind = RadioField("Kind", choices=KIND_CHOICES, default="offer")
    app_id = SelectField("App", coerce=int, validators=[DataRequired(message="Choose an app.")])
    name = StringField("Name", validators=[DataRequired(), Length(max=MAX_NAME)])
    description = TextAreaField("Description", validators=[Optional(), Length(max=MAX_DESCRIPTION)],
                                render_kw={"rows": 3})
    image_url = StringField("Image URL", validators=[Optional(), Length(max=2048)],
                            render_kw={"placeholder": "https://…", "inputmode": "url", "autocapitalize": "off"},
                            description="https:// only: devices load it themselves.")
    valid_from = DateField("Valid from", validators=[Optional()], description="Leave empty: valid from now.")
    valid_until = DateField("Valid until", validators=[Optional()],
                            description="The last day it can be pushed (UTC). Leave empty: no end.")
    deep_link = StringField("Deep link (openDirect)", validators=[Optional(), Length(max=2048)],
                            render_kw={"autocapitalize": "off", "spellcheck": "false"},
                            description="The app's own scheme or https://. Leave empty for scheme://offers/<id>.")
    submit = SubmitField("Save")

    def validate_valid_until(self, field: DateField) -> None:
        """Not before the start."""
        if field.data and self.valid_from.data and field.data < self.valid_from.data:
            raise ValidationError("“Valid until” cannot be before “valid from”.")


class OfferFilterForm(FlaskForm):
    """Filters of the list (GET, no CSRF needed)."""

    class Meta:
        csrf = False

    kind = SelectField("Kind", choices=[SelectChoice("", "Offers and products"), *KIND_CHOICES],
                       validators=[Optional()])
    state = SelectField("State", choices=[SelectChoice("", "Any state")] + [SelectChoice(s, s.title()) for s in STATES],
                        validators=[Optional()])


class ArchiveForm(FlaskForm):
    """Confirm archiving (the form only carries the CSRF token)."""

    submit = SubmitField("Archive")
