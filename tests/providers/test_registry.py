"""Registry of push backends: lookup, factory, defaults and form choices."""

from __future__ import annotations

import subprocess
import sys

import pytest

from webadmin.providers import BACKENDS, backend_choices, backend_class, create_backend, default_options
from webadmin.providers.apns import ApnsBackend
from webadmin.providers.base import ProviderOptions, PushBackend
from webadmin.providers.debug import DebugBackend
from webadmin.providers.fcm import FcmBackend
from webadmin.providers.marketing_cloud import MarketingCloudBackend
from webadmin.providers.onesignal import OneSignalBackend
from webadmin.providers.simulator import SimulatorBackend


def test_builtin_backends_are_registered() -> None:
    expected = {"debug": DebugBackend, "simulator": SimulatorBackend, "fcm": FcmBackend, "apns": ApnsBackend,
                "onesignal": OneSignalBackend, "marketing_cloud": MarketingCloudBackend}
    assert expected.items() <= BACKENDS.items()  # tests may add their own (tests/sending/scripted.py)
    for name, cls in expected.items():
        assert backend_class(name) is cls and cls.type_name == name and issubclass(cls, PushBackend)


def test_a_backend_module_that_fails_to_import_stops_the_import_of_the_registry() -> None:
    # Loud, not skipped: the registry imports its backend modules (a broken one is not silently "not installed").
    code = ("import sys; sys.modules['webadmin.providers.apns'] = None\n"
            "try:\n    import webadmin.providers\nexcept ImportError as exc:\n    print('refused:', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.startswith("refused:") and "webadmin.providers.apns" in out.stdout


def test_unknown_type_raises_a_clear_key_error() -> None:
    with pytest.raises(KeyError, match="unknown push backend type 'nope'.*known: .*debug"):
        backend_class("nope")
    with pytest.raises(KeyError):
        create_backend("nope", {})


def test_create_backend_uses_the_backend_default_batch_size() -> None:
    assert create_backend("onesignal", {"app_id": "a", "api_key": "k"}).options.batch_size == 2_000
    assert create_backend("marketing_cloud", {"client_id": "c"}).options.batch_size == 5_000
    assert create_backend("fcm", {}).options.batch_size == 500
    custom = ProviderOptions(batch_size=10, timeout=1.0)
    backend = create_backend("debug", {}, custom)
    assert isinstance(backend, DebugBackend) and backend.options is custom
    assert default_options("onesignal", timeout=3.0) == ProviderOptions(batch_size=2_000, timeout=3.0)


def test_backend_choices_for_a_form_select() -> None:
    choices = backend_choices()
    assert ("fcm", FcmBackend.label) in choices and ("debug", DebugBackend.label) in choices
    assert len(choices) == len(BACKENDS)
    assert [label.lower() for _, label in choices] == sorted(label.lower() for _, label in choices)


def test_repr_never_shows_credentials() -> None:
    backend = create_backend("onesignal", {"app_id": "a", "api_key": "very-secret"})
    assert "very-secret" not in repr(backend) and "onesignal" in repr(backend)
