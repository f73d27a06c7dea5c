"""The project's own HTTP/2 client (h2 state machine on asyncio): one TLS connection with many concurrent
streams, and a small pool of them. APNs and FCM send through it."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack


class H2Failure(Exception):
    """One request got no HTTP answer (reset, connection lost, timeout)."""

    def __init__(self, message: str, *, unprocessed: bool = False, cert_refused: bool = False,
                 early: bool = False, timed_out: bool = False) -> None:
        super().__init__(message)
        self.unprocessed = unprocessed  # the server certainly did not act on it: safe to resend at once
        self.cert_refused = cert_refused  # the TLS peer sent a certificate alert
        self.early = early  # the connection ended before the server's HTTP/2 SETTINGS
        self.timed_out = timed_out  # no answer within the request timeout


class H2NotNegotiated(H2Failure):
    """The server did not choose HTTP/2 in the TLS handshake (ALPN): it speaks HTTP/1.1 only."""


@dataclass(slots=True)
class H2Response:
    """Status, headers and body of one answered stream."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class _Stream:
    future: asyncio.Future[H2Response]
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


class _PlainEncoder(hpack.Encoder):
    """HPACK without Huffman coding: per-push values are unique hex/UUIDs, where Huffman costs more CPU than
    the ~50 bytes per request it saves."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        """Encode the header block (always without Huffman)."""
        return super().encode(headers, huffman=False)


def cert_alert(exc: BaseException | None) -> bool:
    """True for a TLS alert from the peer about our certificate (not our own check of theirs)."""
    if not isinstance(exc, ssl.SSLError) or isinstance(exc, ssl.SSLCertVerificationError):
        return False
    text = str(exc).upper()
    return "ALERT" in text and ("CERTIFICATE" in text or "UNKNOWN_CA" in text)


class H2Client(asyncio.Protocol):
    """A minimal HTTP/2 client connection over asyncio (h2 state machine), many concurrent streams."""

    def __init__(self, loop: asyncio.AbstractEventLoop, authority: str, peer: str = "the server") -> None:
        self.loop = loop
        self.authority = authority
        self.peer = peer  # who is at the other end, for error texts ("APNs", "FCM")
        # Our own headers are built clean (build_headers), so h2's outbound normalisation and validation are
        # skipped; that also keeps the bearer JWT HPACK-indexed instead of re-sent (Huffman coded) per stream.
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                           validate_outbound_headers=False, normalize_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.encoder = _PlainEncoder()
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.pending: dict[int, memoryview] = {}  # request bodies waiting for flow-control window
        self.waiters: list[asyncio.Future[None]] = []
        self.going_away: str | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self.settings_ready: asyncio.Future[None] = loop.create_future()  # the server's first SETTINGS
        self._flush_scheduled = False

    @property
    def usable(self) -> bool:
        """True while new streams may be opened on this connection."""
        return self.transport is not None and self.going_away is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the HTTP/2 session on the new transport."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """The transport is gone: fail whatever is still waiting."""
        self.transport = None
        text = f"connection lost: {exc}" if exc else f"connection closed by {self.peer}"
        self._fail_streams(list(self.streams), H2Failure, text, cert_refused=cert_alert(exc))
        self._wake(all_waiters=True)
        if not self.settings_ready.done():
            self.settings_ready.set_exception(H2Failure(text, cert_refused=cert_alert(exc)))
            self.settings_ready.exception()  # retrieved: nobody may be waiting any more
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        """Feed bytes to h2 and handle the resulting events."""
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.going_away = f"HTTP/2 protocol error: {exc}"
            self._fail_streams(list(self.streams), H2Failure, self.going_away)
            self._flush()
            self.abort()
            return
        for event in events:
            self._on_event(event)
        self._flush()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self._on_headers(event.stream_id, event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.StreamEnded):
            self._on_end(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._send_pending()
            self._wake(all_waiters=True)
            if not self.settings_ready.done():
                self.settings_ready.set_result(None)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event)

    def _on_headers(self, stream_id: int | None, headers: Any) -> None:
        stream = self.streams.get(stream_id or 0)
        if stream is not None:
            stream.headers = dict(headers or [])

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.body.extend(event.data or b"")
        self.conn.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)

    def _on_end(self, stream_id: int | None) -> None:
        unsent = (stream_id or 0) in self.pending
        stream = self._forget(stream_id or 0)
        if unsent:  # answered before our body was all sent (e.g. an early 413): close our half too
            self._reset(stream_id or 0, h2.errors.ErrorCodes.NO_ERROR)
        if stream is None or stream.future.done():
            return
        try:
            status = int(stream.headers.get(":status", ""))
        except ValueError:
            status = -1
        stream.future.set_result(H2Response(status, stream.headers, bytes(stream.body)))

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        code = getattr(event.error_code, "name", event.error_code)
        text = f"stream reset by {self.peer} ({code})"
        self._fail_streams([event.stream_id or 0], H2Failure, text, unprocessed=refused)

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        reason = _goaway_reason(event.additional_data)
        self.going_away = f"{self.peer} closed the connection (GOAWAY {reason})"
        last = event.last_stream_id or 0
        self._fail_streams([sid for sid in self.streams if sid > last], H2Failure, self.going_away,
                           unprocessed=True)
        self._wake(all_waiters=True)
        if not self.streams:
            self.close()

    def _fail_streams(self, stream_ids: list[int], kind: type[H2Failure], text: str, **flags: bool) -> None:
        for stream_id in stream_ids:
            stream = self._forget(stream_id)
            if stream is not None and not stream.future.done():
                stream.future.set_exception(kind(text, **flags))

    def _forget(self, stream_id: int) -> _Stream | None:
        self.pending.pop(stream_id, None)
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._wake()
            if self.going_away is not None and not self.streams:
                self.close()
        return stream

    def _wake(self, all_waiters: bool = False) -> None:
        while self.waiters:
            waiter = self.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                if not all_waiters:
                    return

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _send_pending(self) -> None:
        for stream_id in list(self.pending):
            if self.conn.outbound_flow_control_window <= 0:
                break
            self._send_body(stream_id)
        self._schedule_flush()

    def _send_body(self, stream_id: int) -> bool:
        """Send as much of the stream's body as flow control allows; True when all of it went out."""
        data = self.pending[stream_id]
        while True:
            window = self.conn.local_flow_control_window(stream_id)
            size = min(window, self.conn.max_outbound_frame_size, len(data))
            if size <= 0 and data:
                self.pending[stream_id] = data
                return False
            self.conn.send_data(stream_id, data[:size].tobytes(), end_stream=size == len(data))
            data = data[size:]
            if not data:
                del self.pending[stream_id]
                return True

    async def _wait_slot(self) -> None:
        while self.usable and len(self.streams) >= self.conn.remote_settings.max_concurrent_streams:
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            await waiter

    async def request(self, headers: list[tuple[str, str]], body: bytes, timeout: float) -> H2Response:
        """Send one request on a new stream and wait for its whole answer (at most timeout seconds)."""
        await self._wait_slot()
        if not self.usable:
            raise H2Failure(self.going_away or "connection closed", unprocessed=True)
        try:
            stream_id = self.conn.get_next_available_stream_id()
            self.conn.send_headers(stream_id, headers)
        except h2.exceptions.H2Error as exc:  # e.g. stream ids exhausted on a very long-lived connection
            self.going_away = f"connection cannot open more streams ({type(exc).__name__})"
            raise H2Failure(self.going_away, unprocessed=True) from None
        stream = _Stream(self.loop.create_future())
        self.streams[stream_id] = stream
        self.pending[stream_id] = memoryview(body)
        self._send_body(stream_id)
        self._schedule_flush()
        try:
            async with asyncio.timeout(timeout):
                return await stream.future
        except TimeoutError:
            self._cancel(stream_id)
            raise H2Failure(f"no answer from {self.peer} within {timeout:g}s", timed_out=True) from None

    def _cancel(self, stream_id: int) -> None:
        if self._forget(stream_id) is not None:
            self._reset(stream_id, h2.errors.ErrorCodes.CANCEL)

    def _reset(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        if self.transport is None:
            return
        try:
            self.conn.reset_stream(stream_id, code)
        except h2.exceptions.H2Error:
            return
        self._schedule_flush()

    def close(self) -> None:
        """Say GOAWAY and close the transport gracefully."""
        if self.transport is None:
            return
        try:
            self.conn.close_connection()
        except h2.exceptions.H2Error:
            pass
        self._flush()
        self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once."""
        if self.transport is not None:
            self.transport.abort()

    async def aclose(self, grace: float = 2.0) -> None:
        """Close and wait until the transport is really gone."""
        self.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), grace)
        except TimeoutError:
            self.abort()
            await asyncio.shield(self.lost)


def _goaway_reason(data: bytes | None) -> str:
    try:
        return str(json.loads(data or b"").get("reason", "no reason"))
    except (ValueError, AttributeError):
        return "no reason"


async def open_h2(url: str, ctx: ssl.SSLContext, timeout: float, peer: str = "the server") -> H2Client:
    """Open a TLS connection with ALPN h2 to the URL's host and port."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        transport, client = await loop.create_connection(
            lambda: H2Client(loop, parts.netloc, peer), host, port, ssl=ctx, server_hostname=host
        )
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            await client.aclose()
            raise H2NotNegotiated(f"{peer} did not agree to HTTP/2 (ALPN)")
        try:
            await client.settings_ready  # its stream limit, before opening any stream
        except H2Failure as exc:
            await client.aclose()
            raise H2Failure(f"{exc} (right after the TLS handshake)", cert_refused=exc.cert_refused,
                            early=True) from None
        except BaseException:
            await client.aclose()
            raise
    return client


class H2Pool:
    """Up to `size` HTTP/2 connections to one origin. A stream goes to the open connection with the most free
    stream slots (the server's SETTINGS_MAX_CONCURRENT_STREAMS); another connection is opened only when every
    open one is full, so `concurrency` streams need ceil(concurrency / server limit) connections."""

    def __init__(self, url: str, ctx: ssl.SSLContext, *, size: int, timeout: float, peer: str) -> None:
        self.url = url
        self.ctx = ctx
        self.size = max(1, size)
        self.timeout = timeout
        self.peer = peer
        self.clients: list[H2Client] = []
        self.connections_opened = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._failed: tuple[float, Callable[[], H2Failure]] | None = None  # the last connect failure, when

    def _bind(self) -> asyncio.Lock:
        """The pool's lock on the running loop (connections of an earlier, closed loop are dropped)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            for client in self.clients:
                try:
                    client.abort()
                except RuntimeError:
                    pass  # its event loop is already closed
            self.clients, self._loop, self._lock, self._failed = [], loop, asyncio.Lock(), None
        return self._lock

    def _roomiest(self) -> H2Client | None:
        """The usable connection with the most free stream slots, if any has one."""
        best, room = None, 0
        for client in self.clients:
            if client.usable:
                free = client.conn.remote_settings.max_concurrent_streams - len(client.streams)
                if free > room:
                    best, room = client, free
        return best

    async def connection(self) -> H2Client:
        """A connection to open the next stream on (it waits for a slot itself when all are full)."""
        lock = self._bind()
        client = self._roomiest()
        if client is not None:
            return client
        asked = self._loop.time() if self._loop is not None else 0.0
        async with lock:
            client = self._roomiest()
            if client is not None:
                return client
            if self._failed is not None and self._failed[0] >= asked:
                raise self._failed[1]()  # the attempt that just failed was made for us too: no storm of retries
            self.clients = [c for c in self.clients if c.usable]
            if len(self.clients) >= self.size:
                return min(self.clients, key=lambda c: len(c.streams))
            try:
                client = await open_h2(self.url, self.ctx, self.timeout, self.peer)
            except (OSError, H2Failure) as exc:  # OSError covers ssl.SSLError and TimeoutError
                failure = self._connect_failure(exc)
                self._failed = (self._loop.time() if self._loop is not None else 0.0, failure)
                raise failure() from None
            self._failed = None
            self.connections_opened += 1
            self.clients.append(client)
            return client

    def _connect_failure(self, exc: BaseException) -> Callable[[], H2Failure]:
        """A maker of the error every request waiting for this connection attempt gets."""
        kind = H2NotNegotiated if isinstance(exc, H2NotNegotiated) else H2Failure
        text = f"cannot connect to {self.peer} at {self.url}: {exc or type(exc).__name__}"
        refused = cert_alert(exc) or getattr(exc, "cert_refused", False)
        return lambda: kind(text, cert_refused=refused)

    async def request(self, headers: list[tuple[str, str]], body: bytes, timeout: float) -> H2Response:
        """Send one request on the pool (see H2Client.request)."""
        client = await self.connection()
        return await client.request(headers, body, timeout)

    @property
    def authority(self) -> str:
        """The :authority of the pool's origin."""
        return urlsplit(self.url).netloc

    async def aclose(self) -> None:
        """Close every connection opened on the running loop."""
        clients, self.clients = self.clients, []
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(c.aclose() for c in clients if c.loop is loop))
