"""Forms of the templates section."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, Regexp

from webadmin.services.template_render import MAX_SOURCE
from webadmin.services.templates import MAX_CONTEXT_TEXT, MAX_TITLE, SLUG_PATTERN, SLUG_RULE


class TemplateForm(FlaskForm):
    """A template, and the sample context its preview is rendered with (not saved)."""

    slug = StringField("Slug", validators=[DataRequired(), Regexp(SLUG_PATTERN, message=SLUG_RULE)],
                       render_kw={"autocapitalize": "off", "spellcheck": "false", "placeholder": "offer-reminder"},
                       description="How code and the API name it: send_template(recipient, slug, context).")
    title = StringField("Title", validators=[Optional(), Length(max=MAX_TITLE)],
                        description="Optional; placeholders work here too.")
    body = TextAreaField("Body", validators=[DataRequired(), Length(max=MAX_SOURCE)], render_kw={"rows": 4},
                         description="Placeholders are filled from context data: Hi {{ name }}! Filters such as "
                                     "{{ name|title }} or {{ name|default('there') }} work.")
    open_direct = StringField("Deep link (openDirect)", validators=[Optional(), Length(max=2048)],
                              render_kw={"autocapitalize": "off", "spellcheck": "false"},
                              description="An app's scheme (nibs://…) or https://; a bare route gets the first app's "
                                          "scheme.")
    is_active = BooleanField("Active (can be sent)", default=True)
    context = TextAreaField("Sample context (JSON)", validators=[Optional(), Length(max=MAX_CONTEXT_TEXT)],
                            render_kw={"rows": 3, "spellcheck": "false"},
                            description='Only for the preview, e.g. {"name": "Ann"}.')
    submit = SubmitField("Save")


class ActionForm(FlaskForm):
    """A confirmation or a toggle (the form only carries the CSRF token)."""

    submit = SubmitField("Apply")
