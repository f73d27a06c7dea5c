"""Forms of the auth section."""

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, SubmitField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from webadmin.services.accounts import MIN_PASSWORD_LENGTH, PASSWORD_RULE


class LoginForm(FlaskForm):
    """Email and password."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()
    submit = SubmitField("Sign in")


class SetupForm(FlaskForm):
    """The first admin account."""

    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])
    password = PasswordField(
        "Password", validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH, max=1024, message=PASSWORD_RULE)]
    )
    confirm = PasswordField("Repeat password", validators=[DataRequired(), EqualTo("password")])
    submit = SubmitField("Create admin account")


class LogoutForm(FlaskForm):
    """Sign-out is a POST so a link on another site cannot sign people out."""

    submit = SubmitField("Sign out")
