"""A channel's TLS options (ca_file, verify_tls) hold on the worker runtime's shared aiohttp session too, against
an HTTPS fake whose certificate comes from a throwaway CA."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from webadmin.providers import _http, default_options
from webadmin.providers.base import ProviderOptions, PushMessage, SendResult
from webadmin.sending.runtime import WorkerRuntime

from .apns_fake import TlsFiles, make_tls_files
from .fakes import Recorded, reply
from .fcm_fake import FakeFcm


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    return make_tls_files(Path(tmp_path_factory.mktemp("http-tls")))


def push(i: int) -> PushMessage:
    """A message to subscription id / subscriber key number i."""
    return PushMessage(message_id=i, uuid=str(uuid.uuid4()), token=f"sub-{i}", platform="android", body="Hello",
                       recipient=f"key-{i}", campaign_uuid="camp-1")


def test_request_on_a_default_session_honours_the_options(tls: TlsFiles) -> None:
    async def get(**options: Any) -> int:
        async with FakeFcm(tls, h2=False) as srv, aiohttp.ClientSession() as session:
            srv.route("GET", "/ping", reply({"ok": True}))
            answer = await _http.request(session, "GET", srv.url + "/ping", ProviderOptions(**options))
            return answer.status

    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        asyncio.run(get())
    assert asyncio.run(get(ca_file=tls.ca_file)) == 200
    assert asyncio.run(get(verify_tls=False)) == 200


def _send_through_runtime(tls: TlsFiles, type_name: str, credentials: dict[str, Any],
                          routes: dict[str, Any], **options: Any) -> tuple[list[SendResult], int]:
    """Send two messages through a backend the worker runtime builds (so it gets the shared session)."""
    runtime = WorkerRuntime()
    srv = FakeFcm(tls, h2=False)
    try:
        runtime.run(srv.__aenter__())
        for path, responder in routes.items():
            srv.route("POST", path, responder(srv))
        opts = {key: value.replace("{url}", srv.url) for key, value in options.items()}
        backend = runtime.backend(("tls", type_name), type_name, credentials, opts)
        assert backend._session is runtime.session  # the shared session, with default TLS settings
        return runtime.run(backend.send_batch([push(1), push(2)])), len(srv.requests)
    finally:
        runtime.run(srv.__aexit__(None, None, None))
        runtime.close()


def test_onesignal_on_the_shared_session_trusts_the_channel_ca(tls: TlsFiles) -> None:
    routes = {"/notifications": lambda srv: reply({"id": "notif-1"})}
    results, seen = _send_through_runtime(tls, "onesignal", {"app_id": "app-1", "api_key": "key"}, routes,
                                          endpoint="{url}", ca_file=tls.ca_file)
    assert all(r.ok for r in results) and seen == 1


def test_marketing_cloud_on_the_shared_session_trusts_the_channel_ca(tls: TlsFiles) -> None:
    def token(srv: FakeFcm) -> Any:
        def responder(rec: Recorded) -> Any:
            return reply({"access_token": "mc-tok", "token_type": "Bearer", "expires_in": 1079,
                          "rest_instance_url": srv.url + "/"})(rec)
        return responder

    message_id = "MTIzOjExNDow"
    routes = {"/v2/token": token, f"/push/v1/messageContact/{message_id}/send":
              lambda srv: reply({"tokenId": "job-1"}, status=202)}
    credentials = {"client_id": f"cid-{uuid.uuid4().hex}", "client_secret": "s", "message_id": message_id,
                   "auth_mode": "v2"}
    results, seen = _send_through_runtime(tls, "marketing_cloud", credentials, routes, auth_endpoint="{url}",
                                          ca_file=tls.ca_file)
    assert all(r.ok for r in results) and seen == 2


def test_without_the_ca_the_shared_session_refuses_the_certificate(tls: TlsFiles) -> None:
    routes = {"/notifications": lambda srv: reply({"id": "notif-1"})}
    with pytest.raises(Exception, match="could not be reached"):
        _send_through_runtime(tls, "onesignal", {"app_id": "app-1", "api_key": "key"}, routes, endpoint="{url}")
    assert default_options("onesignal").ca_file is None
