"""Forms of the users section."""

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length, Optional

from webadmin.models.user import Role
from webadmin.services.accounts import MIN_PASSWORD_LENGTH, PASSWORD_RULE

ROLE_CHOICES = [SelectChoice(role.value, role.value.title()) for role in Role]


class CreateUserForm(FlaskForm):
    """A new staff account."""

    email = EmailField(
        "Email", validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)]
    )
    role = SelectField("Role", choices=ROLE_CHOICES, default=Role.MARKETER.value)
    password = PasswordField(
        "Initial password",
        validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH, max=1024, message=PASSWORD_RULE)],
    )
    submit = SubmitField("Create account")


class RoleForm(FlaskForm):
    """Change a role."""

    role = SelectField("Role", choices=ROLE_CHOICES)
    submit = SubmitField("Change role")


class PasswordResetForm(FlaskForm):
    """Set a new password for someone."""

    password = PasswordField(
        "New password", validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH, max=1024, message=PASSWORD_RULE)]
    )
    submit = SubmitField("Reset password")


class ActiveForm(FlaskForm):
    """Deactivate or reactivate."""

    submit = SubmitField("Apply")


class AuditFilterForm(FlaskForm):
    """Filters of the audit page (GET, no CSRF needed)."""

    class Meta:
        csrf = False

    action = StringField("Action", validators=[Optional(), Length(max=64)])
    actor = StringField("Who", validators=[Optional(), Length(max=254)])
