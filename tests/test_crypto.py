"""Channel credentials are encrypted at rest and survive a key rotation."""

from __future__ import annotations

from cryptography.fernet import Fernet
from sqlalchemy import select

from tests.factories import make_app
from webadmin.crypto import decrypt_credentials, encrypt_credentials
from webadmin.extensions import db
from webadmin.models.campaign import Channel


def test_credentials_are_not_stored_in_clear(app):
    blob = encrypt_credentials({"api_key": "very-secret-value"})
    assert "very-secret-value" not in blob
    assert decrypt_credentials(blob) == {"api_key": "very-secret-value"}


def test_rotation_re_encrypts_under_the_new_key(app, runner):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app.config["CREDENTIALS_KEYS"] = old
    push_app = make_app()
    db.session.add(Channel(app_id=push_app.id, platform="android", backend="fcm", name="fcm",
                           credentials_encrypted=encrypt_credentials({"k": "v"})))
    db.session.commit()
    app.config["CREDENTIALS_KEYS"] = f"{new},{old}"
    result = runner.invoke(args=["channels", "rotate-key"])
    assert result.exit_code == 0 and "1 channel" in result.output
    app.config["CREDENTIALS_KEYS"] = new  # the old key is gone: still readable
    db.session.expire_all()
    assert decrypt_credentials(db.session.scalar(select(Channel)).credentials_encrypted) == {"k": "v"}
    app.config["CREDENTIALS_KEYS"] = old
    try:
        decrypt_credentials(db.session.scalar(select(Channel)).credentials_encrypted)
    except RuntimeError as exc:
        assert "cannot be decrypted" in str(exc)
    else:
        raise AssertionError("an old key must not open the rotated blob")
