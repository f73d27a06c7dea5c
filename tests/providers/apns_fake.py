"""A local fake of Apple's APNs provider API: HTTP/2 over TLS on 127.0.0.1, recording every request."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Paths of a throwaway CA, the fake's server certificate and a client certificate signed by the CA."""

    ca_file: str
    cert_file: str
    key_file: str
    client_cert: str
    client_key: str


@dataclass(slots=True)
class Reply:
    """How the fake answers one request (status/reason, or a misbehaviour such as a delay or a reset)."""

    status: int = 200
    reason: str | None = None
    timestamp: int | None = None  # ms since epoch (410 answers)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes | None = None  # raw body override (malformed answers)
    action: str | None = None  # reset_stream | abort_connection | goaway


@dataclass(slots=True)
class Seen:
    """One request the fake received."""

    path: str
    headers: dict[str, str]
    body: Any
    conn_id: int
    jwt: str | None = None
    jwt_header: dict[str, Any] | None = None
    jwt_claims: dict[str, Any] | None = None
    client_subject: str | None = None

    @property
    def token(self) -> str:
        """The device token of the request path."""
        return self.path.rsplit("/", 1)[-1]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer or (_name(subject), key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256()), key


def make_tls_files(directory: Path) -> TlsFiles:
    """Generate a throwaway CA, a server cert for 127.0.0.1 and a client cert into directory."""
    ca_cert, ca_key = _issue(
        "webadmin test CA",
        None,
        [(x509.BasicConstraints(ca=True, path_length=None), True),
         (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)],
    )
    ca = (ca_cert.subject, ca_key)
    server_cert, server_key = _issue(
        "localhost",
        ca,
        [(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                        x509.IPAddress(ipaddress.ip_address(HOST))]), False),
         (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)],
    )
    client_cert, client_key = _issue(
        "Apple Push Services: com.example.app", ca,
        [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)],
    )
    files = {
        "ca_file": ca_cert.public_bytes(serialization.Encoding.PEM),
        "cert_file": server_cert.public_bytes(serialization.Encoding.PEM),
        "key_file": _pem_key(server_key),
        "client_cert": client_cert.public_bytes(serialization.Encoding.PEM),
        "client_key": _pem_key(client_key),
    }
    for name, data in files.items():
        (directory / f"{name}.pem").write_bytes(data)
    return TlsFiles(**{name: str(directory / f"{name}.pem") for name in files})


def make_signing_key() -> tuple[str, ec.EllipticCurvePublicKey]:
    """A throwaway EC P-256 key: (PKCS#8 PEM text like an Apple .p8 file, public key for the fake)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return _pem_key(key).decode(), key.public_key()


def _server_context(tls: TlsFiles, require_client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    ctx.set_alpn_protocols(["h2"])
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(tls.ca_file)
    return ctx


class FakeApns:
    """The fake server: answers by per-token scripts (Reply lists) or a default, and records what it saw."""

    def __init__(
        self,
        tls: TlsFiles,
        *,
        public_key: ec.EllipticCurvePublicKey | None = None,
        require_client_cert: bool = False,
        record: bool = True,
        max_streams: int = 1000,
        window: int = 1 << 20,
    ) -> None:
        self.tls = tls
        self.public_key = public_key
        self.require_client_cert = require_client_cert
        self.record = record
        self.max_streams = max_streams
        self.window = window  # initial stream flow-control window offered to clients
        self.replies: dict[str, list[Reply]] = {}
        self.default: Callable[[Seen], Reply] | None = None
        self.requests: list[Seen] = []
        self.jwts: list[str] = []  # distinct JWTs in the order first seen
        self.expired_jwts: set[str] = set()
        self.connections = 0
        self.handled = 0
        self._verified: dict[str, tuple[dict[str, Any], dict[str, Any]] | None] = {}
        self._server: asyncio.Server | None = None
        self._protocols: set[_ServerProtocol] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL to put into ProviderOptions.endpoint."""
        return f"https://{HOST}:{self.port}"

    async def start(self, port: int = 0) -> FakeApns:
        """Listen on 127.0.0.1 (an ephemeral port unless given)."""
        loop = asyncio.get_running_loop()
        ctx = _server_context(self.tls, self.require_client_cert)
        self._server = await loop.create_server(lambda: _ServerProtocol(self), HOST, port, ssl=ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
            for proto in list(self._protocols):
                proto.drop()
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)

    async def __aenter__(self) -> FakeApns:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def script(self, token: str, *replies: Reply) -> None:
        """Answer the next requests for token with these replies, in order (then the default)."""
        self.replies.setdefault(token, []).extend(replies)

    def expire_jwts(self) -> None:
        """Make every JWT seen so far answer 403 ExpiredProviderToken from now on."""
        self.expired_jwts.update(self.jwts)

    def tokens_sent(self) -> list[str]:
        """Device tokens of all recorded requests, in arrival order."""
        return [seen.token for seen in self.requests]

    def check_jwt(self, seen: Seen) -> Reply | None:
        """Verify the bearer JWT (when a public key is set); return a 403 reply if it is refused."""
        if self.public_key is None:
            return None
        auth = seen.headers.get("authorization", "")
        if not auth.startswith("bearer "):
            return Reply(403, "MissingProviderToken")
        token = auth[len("bearer "):]
        seen.jwt = token
        if token not in self._verified:
            self._verified[token] = self._verify(token)
            if self._verified[token] is not None:
                self.jwts.append(token)
        verified = self._verified[token]
        if verified is None:
            return Reply(403, "InvalidProviderToken")
        seen.jwt_header, seen.jwt_claims = verified
        if token in self.expired_jwts:
            return Reply(403, "ExpiredProviderToken")
        return None

    def _verify(self, token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["ES256"], options={"verify_iat": False})
        except jwt.PyJWTError:
            return None
        return jwt.get_unverified_header(token), claims

    def answer(self, seen: Seen) -> Reply:
        """Choose the reply for one request: auth check, then the token's script, then the default."""
        refused = self.check_jwt(seen)
        if refused is not None:
            return refused
        queue = self.replies.get(seen.token)
        if queue:
            return queue.pop(0)
        if self.default is not None:
            return self.default(seen)
        return Reply()


def _parse_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _reply_body(reply: Reply) -> bytes:
    if reply.body is not None:
        return reply.body
    if reply.status == 200:
        return b""
    doc: dict[str, Any] = {"reason": reply.reason or "Unknown"}
    if reply.timestamp is not None:
        doc["timestamp"] = reply.timestamp
    return json.dumps(doc).encode()


class _ServerProtocol(asyncio.Protocol):
    """One client connection of the fake."""

    def __init__(self, fake: FakeApns) -> None:
        self.fake = fake
        strict = fake.record  # benchmarks (record=False) skip h2's header checks to raise the fake's capacity
        config = h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8",
            validate_inbound_headers=strict, normalize_inbound_headers=strict,
            validate_outbound_headers=strict, normalize_outbound_headers=strict,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.conn_id = 0
        self.subject: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the HTTP/2 session on the new transport."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.fake.connections += 1
        self.conn_id = self.fake.connections
        self.fake._protocols.add(self)
        peer = transport.get_extra_info("peercert")
        if peer:
            self.subject = dict(item[0] for item in peer["subject"]).get("commonName")
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.fake.max_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.fake.window,
        })
        self.conn.initiate_connection()
        if self.fake.window > 65535:
            self.conn.increment_flow_control_window(1 << 24)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """The transport is gone: fail whatever is still waiting."""
        self.fake._protocols.discard(self)
        self.transport = None

    def drop(self) -> None:
        """Close the connection at once."""
        if self.transport is not None:
            self.transport.abort()

    def flush(self) -> None:
        """Write whatever h2 has queued."""
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        """Feed bytes to h2 and handle the resulting events."""
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.drop()
            return
        for event in events:
            self.on_event(event)
        self.flush()

    def on_event(self, event: h2.events.Event) -> None:
        """Dispatch one h2 event."""
        if isinstance(event, h2.events.RequestReceived):
            self.streams[event.stream_id] = (dict(event.headers or []), bytearray())
        elif isinstance(event, h2.events.DataReceived):
            self.streams[event.stream_id][1].extend(event.data or b"")
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.on_request(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.streams.pop(event.stream_id, None)

    def on_request(self, stream_id: int) -> None:
        """A whole request arrived: record it and answer (now or after the reply's delay)."""
        headers, body = self.streams.pop(stream_id)
        fake = self.fake
        fake.handled += 1
        seen = Seen(headers.get(":path", ""), headers, _parse_body(bytes(body)) if fake.record else None,
                    self.conn_id, client_subject=self.subject)
        reply = fake.answer(seen)
        if fake.record:
            fake.requests.append(seen)
        if reply.delay:
            asyncio.get_running_loop().call_later(reply.delay, self.respond, stream_id, reply, headers)
        else:
            self.respond(stream_id, reply, headers)

    def respond(self, stream_id: int, reply: Reply, headers: dict[str, str]) -> None:
        """Send the reply (or misbehave as it says)."""
        if self.transport is None:
            return
        if reply.action == "abort_connection":
            self.drop()
            return
        try:
            self._send(stream_id, reply, headers)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return  # the client gave up on this stream (timeout) meanwhile
        self.flush()

    def _send(self, stream_id: int, reply: Reply, headers: dict[str, str]) -> None:
        if reply.action == "reset_stream":
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        if reply.action == "goaway":
            self.conn.close_connection(last_stream_id=stream_id - 2, additional_data=_reply_body(reply))
            return
        body = _reply_body(reply)
        out = [(":status", str(reply.status)), ("apns-id", headers.get("apns-id", "generated-id"))]
        out.extend(reply.headers.items())
        if body:
            out.append(("content-length", str(len(body))))
        self.conn.send_headers(stream_id, out, end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)


def serve_in_process(tls: TlsFiles, pipe: Any, public_key_pem: bytes | None) -> None:
    """Child-process entry for benchmarks: serve, send the port, answer 'stats' with (handled, connections, cpu s)
    and 'jwts' with the number of distinct JWTs seen."""
    public_key = serialization.load_pem_public_key(public_key_pem) if public_key_pem else None
    asyncio.run(_serve_commands(tls, pipe, public_key))


async def _serve_commands(tls: TlsFiles, pipe: Any, public_key: Any) -> None:
    fake = await FakeApns(tls, public_key=public_key, record=False).start()
    pipe.send(fake.port)
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command == "stats":
            pipe.send((fake.handled, fake.connections, time.process_time()))
        elif command == "jwts":  # distinct provider tokens verified so far (bench/provider_calls.py)
            pipe.send(len(fake.jwts))
        else:
            break
    await fake.close()
