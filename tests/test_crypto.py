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


def test_rotation_refuses_when_a_blob_has_no_key_and_changes_nothing(app, runner):
    old, new, lost = (Fernet.generate_key().decode() for _ in range(3))
    app.config["CREDENTIALS_KEYS"] = old
    push_app = make_app()
    readable = Channel(app_id=push_app.id, platform="android", backend="fcm", name="fcm-ok",
                       credentials_encrypted=encrypt_credentials({"k": "v"}))
    app.config["CREDENTIALS_KEYS"] = lost
    orphan = Channel(app_id=push_app.id, platform="ios", backend="apns", name="apns-orphan",
                     credentials_encrypted=encrypt_credentials({"k": "w"}))
    db.session.add_all([readable, orphan])
    db.session.commit()
    before = {c.id: c.credentials_encrypted for c in db.session.scalars(select(Channel))}

    app.config["CREDENTIALS_KEYS"] = f"{new},{old}"  # the key of the orphan was dropped too soon
    result = runner.invoke(args=["channels", "rotate-key"])

    assert result.exit_code != 0
    assert f"channel {orphan.id} (apns-orphan)" in result.output and "nothing was re-encrypted" in result.output
    assert "fcm-ok" not in result.output and "Traceback" not in result.output
    db.session.expire_all()
    assert {c.id: c.credentials_encrypted for c in db.session.scalars(select(Channel))} == before


def test_a_malformed_key_is_named_by_position_never_echoed(app, runner):
    app.config["CREDENTIALS_KEYS"] = Fernet.generate_key().decode()
    push_app = make_app()
    db.session.add(Channel(app_id=push_app.id, platform="android", backend="fcm", name="fcm",
                           credentials_encrypted=encrypt_credentials({"k": "v"})))
    db.session.commit()
    app.config["CREDENTIALS_KEYS"] = "not-a-fernet-key-s3cr3t," + app.config["CREDENTIALS_KEYS"]
    result = runner.invoke(args=["channels", "rotate-key"])
    assert result.exit_code != 0
    assert "credentials key #1 is not a Fernet key" in result.output and "nothing was re-encrypted" in result.output
    assert "s3cr3t" not in result.output
