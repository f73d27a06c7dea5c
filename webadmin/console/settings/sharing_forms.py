"""The Sharing form of Settings: who gets /share pushes and how often."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectField
from wtforms.validators import DataRequired, InputRequired, NumberRange

from webadmin.services.settings import MAX_SHARES_PER_HOUR


class SharingForm(FlaskForm):
    """The share audience (all users or a group) and the two hourly limits."""

    audience = SelectField("Share pushes go to", validators=[DataRequired()])
    max_per_hour = IntegerField("Shares per sharer per hour",
                                validators=[InputRequired(), NumberRange(min=1, max=MAX_SHARES_PER_HOUR)])
    max_per_app_per_hour = IntegerField("Shares per app per hour (all sharers together)",
                                        validators=[InputRequired(), NumberRange(min=1, max=MAX_SHARES_PER_HOUR)])
