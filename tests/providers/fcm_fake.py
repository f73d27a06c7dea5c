"""A local fake of fcm.googleapis.com: TLS on 127.0.0.1 speaking HTTP/2 and HTTP/1.1 (chosen by ALPN, like the real
endpoint), recording every request and answering with the responders of fakes.py."""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from aiohttp import web
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

from .apns_fake import HOST, TlsFiles
from .fakes import Recorded, Responder


@dataclass(frozen=True, slots=True)
class Misbehave:
    """What an HTTP/2 responder may return instead of an answer: reset the stream, drop the connection, or send
    GOAWAY naming the previous stream as the last one processed (so this request is refused unprocessed)."""

    action: str  # reset_stream | drop_connection | goaway


def reset_stream() -> Responder:
    """Reset the request's stream (RST_STREAM INTERNAL_ERROR) instead of answering."""
    return lambda rec: Misbehave("reset_stream")  # type: ignore[return-value]


def drop_connection(after: float = 0.0) -> Responder:
    """Close the whole connection (every stream on it) after a pause, without answering."""

    async def responder(rec: Recorded) -> Any:
        await asyncio.sleep(after)
        return Misbehave("drop_connection")

    return responder  # type: ignore[return-value]


def goaway() -> Responder:
    """Send GOAWAY with last-stream-id below this request's stream: the client must resend it elsewhere."""
    return lambda rec: Misbehave("goaway")  # type: ignore[return-value]


def _recorded(method: str, target: str, headers: CIMultiDict[str], raw: bytes) -> Recorded:
    """A Recorded request (JSON and form bodies decoded)."""
    parts = urlsplit(target)
    text = raw.decode("utf-8", "replace")
    rec = Recorded(method, parts.path, dict(parse_qsl(parts.query)), headers, text)
    ctype = headers.get("Content-Type", "")
    if "json" in ctype and text:
        rec.json = json.loads(text)
    elif "x-www-form-urlencoded" in ctype:
        rec.form = dict(parse_qsl(text))
    return rec


class FakeFcm:
    """The fake server: per (method, path) responders as in fakes.FakeServer, on one TLS port for both protocols."""

    def __init__(self, tls: TlsFiles, *, h2: bool = True, max_streams: int = 1000) -> None:
        self.tls = tls
        self.offers_h2 = h2  # False: ALPN offers http/1.1 only (a server or proxy without HTTP/2)
        self.max_streams = max_streams
        self.requests: list[Recorded] = []
        self.protocols: list[str] = []  # ALPN result per connection, in order
        self.in_flight = 0
        self.max_in_flight: dict[int, int] = {}  # connection number → most concurrent requests seen on it
        self._routes: dict[tuple[str, str], list[Responder]] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._server: asyncio.Server | None = None
        self._h1: web.Server | None = None
        self._live: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL to put into ProviderOptions.endpoint."""
        return f"https://{HOST}:{self.port}"

    def route(self, method: str, path: str, *responders: Responder) -> None:
        """Answer method+path with these responders (call n uses responders[min(n, last)])."""
        self._routes[(method, path)] = list(responders)
        self._counts[(method, path)] = 0

    def calls(self, path: str, method: str = "POST") -> list[Recorded]:
        """Requests received for a path."""
        return [r for r in self.requests if r.path == path and r.method == method]

    async def answer(self, rec: Recorded) -> Any:
        """Record the request and run its responder (a web.Response, or a Misbehave)."""
        self.requests.append(rec)
        key = (rec.method, rec.path)
        responders = self._routes.get(key)
        if not responders:
            return web.json_response({"error": "no route in fake"}, status=599)
        n = self._counts[key]
        self._counts[key] = n + 1
        result = responders[min(n, len(responders) - 1)](rec)
        return await result if asyncio.iscoroutine(result) else result

    async def _h1_handler(self, request: BaseRequest) -> web.StreamResponse:
        raw = await request.read()
        rec = _recorded(request.method, request.path_qs, CIMultiDict(request.headers), raw)
        rec.request = request  # type: ignore[assignment]
        return await self.answer(rec)

    def spawn(self, coro: Any) -> None:
        """Run a responder as a task (cancelled when the fake closes)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def __aenter__(self) -> FakeFcm:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        ctx.set_alpn_protocols(["h2", "http/1.1"] if self.offers_h2 else ["http/1.1"])
        self._h1 = web.Server(self._h1_handler, handler_cancellation=True)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), HOST, 0, ssl=ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self._live):
                connection.drop()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._h1 is not None:
                await self._h1.shutdown(1.0)
            await self._server.wait_closed()
            self._server = None


class _Connection(asyncio.Protocol):
    """One TLS connection: hands itself to HTTP/2 or to aiohttp's HTTP/1.1 handler by the ALPN outcome."""

    def __init__(self, fake: FakeFcm) -> None:
        self.fake = fake
        self.transport: asyncio.Transport | None = None
        self.inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Pick the protocol the handshake agreed on."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TLS transport is not an asyncio subclass
        self.fake._live.add(self)
        ssl_object = transport.get_extra_info("ssl_object")
        protocol = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        self.fake.protocols.append(protocol or "http/1.1")
        if protocol == "h2":
            self.inner = _H2Connection(self.fake, len(self.fake.protocols))
        else:
            assert self.fake._h1 is not None
            self.inner = self.fake._h1()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """Forward to the chosen protocol."""
        assert self.inner is not None
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        """Forward to the chosen protocol."""
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        """Forward to the chosen protocol."""
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        """Forward to the chosen protocol."""
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forward to the chosen protocol."""
        self.fake._live.discard(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def drop(self) -> None:
        """Close the connection at once."""
        if self.transport is not None:
            self.transport.abort()


class _H2Connection(asyncio.Protocol):
    """The HTTP/2 side of one connection (server role of the h2 state machine)."""

    def __init__(self, fake: FakeFcm, number: int) -> None:
        self.fake = fake
        self.number = number
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[CIMultiDict[str], bytearray]] = {}
        self.in_flight = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send our SETTINGS (the stream limit the client must respect)."""
        self.transport = cast(asyncio.Transport, transport)
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.fake.max_streams})
        self.conn.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """Nothing more can be sent."""
        self.transport = None

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
            if self.transport is not None:
                self.transport.abort()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.streams[event.stream_id] = (CIMultiDict(event.headers or []), bytearray())
            elif isinstance(event, h2.events.DataReceived):
                self.streams[event.stream_id][1].extend(event.data or b"")
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.fake.spawn(self.serve(event.stream_id))
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(event.stream_id, None)
        self.flush()

    async def serve(self, stream_id: int) -> None:
        """Record one whole request and answer it (or misbehave as the responder says)."""
        headers, body = self.streams.pop(stream_id)
        rec = _recorded(headers[":method"], headers[":path"], headers, bytes(body))
        self.in_flight += 1
        self.fake.max_in_flight[self.number] = max(self.fake.max_in_flight.get(self.number, 0), self.in_flight)
        try:
            result = await self.fake.answer(rec)
        finally:
            self.in_flight -= 1
        if self.transport is None:
            return
        try:
            self.respond(stream_id, result)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return  # the client gave up on this stream (timeout) meanwhile
        self.flush()

    def respond(self, stream_id: int, result: Any) -> None:
        """Send a web.Response as HEADERS + DATA, or misbehave."""
        if isinstance(result, Misbehave):
            self.misbehave(stream_id, result.action)
            return
        body = result.body if isinstance(result.body, bytes) else b""
        out = [(":status", str(result.status))]
        out += [(name.lower(), value) for name, value in result.headers.items() if name.lower() != "content-length"]
        out.append(("content-length", str(len(body))))
        self.conn.send_headers(stream_id, out, end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)

    def misbehave(self, stream_id: int, action: str) -> None:
        """Reset the stream, drop the connection, or say GOAWAY before this stream."""
        if action == "reset_stream":
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif action == "goaway":
            self.conn.close_connection(last_stream_id=max(0, stream_id - 2))
        elif self.transport is not None:
            self.transport.abort()
