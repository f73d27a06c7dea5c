"""Forms of the SMS settings: the backend choice, and a form per backend built from its credential fields."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import Field, HiddenField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional

from webadmin.services.sms_channel import SmsChannelInput
from webadmin.sms import backend_choices
from webadmin.sms.base import CredentialField, SmsBackend


class BackendChoiceForm(FlaskForm):
    """Which provider the form below is for (a GET form: switching saves nothing)."""

    class Meta:
        csrf = False

    backend = SelectField("SMS provider", id="sms-provider",
                          choices=[SelectChoice(n, label) for n, label in backend_choices()])


class SmsChannelForm(FlaskForm):
    """Base of the per-backend forms: the backend, the sender, then one `cred_<name>` field per credential."""

    backend = HiddenField()
    sender = StringField("Sender", validators=[Optional(), Length(max=32)])

    def channel_input(self) -> SmsChannelInput:
        """What was submitted, for the service."""
        credentials = {name[len("cred_"):]: self[name].data for name in self._fields if name.startswith("cred_")}
        return SmsChannelInput(backend=self.backend.data, sender=self.sender.data, credentials=credentials)


def _field(spec: CredentialField, stored_secret: bool) -> Field:
    """The form field of one credential."""
    if spec.kind == "choice":
        return SelectField(spec.label, choices=[SelectChoice(c, c) for c in spec.choices], description=spec.help)
    if spec.secret:
        hint = " A value is stored: leave blank to keep it." if stored_secret else ""
        return PasswordField(spec.label, validators=[Optional(), Length(max=500)], description=spec.help + hint,
                             render_kw={"autocomplete": "new-password"})
    return StringField(spec.label, validators=[Optional(), Length(max=500)], description=spec.help,
                       render_kw={"autocomplete": "off", "spellcheck": "false"})


def channel_form_class(cls: type[SmsBackend], stored_secrets: list[str]) -> type[SmsChannelForm]:
    """A form class for one backend (the redash pattern: the configuration schema drives the form)."""
    fields: dict[str, Field] = {"sender": StringField("Sender", validators=[Optional(), Length(max=32)],
                                                      description=cls.sender_help)}
    fields.update({f"cred_{spec.name}": _field(spec, spec.name in stored_secrets) for spec in cls.credential_fields})
    return type(f"SmsChannelForm_{cls.type_name}", (SmsChannelForm,), fields)


class ActionForm(FlaskForm):
    """Test connection carries no data but the CSRF token."""
