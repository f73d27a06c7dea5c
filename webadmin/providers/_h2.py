"""The project's own HTTP/2 client on asyncio: one TLS connection with many concurrent streams, and a small pool
of them. APNs and FCM send through it."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

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
    window: int  # bytes of request body the server still lets us send on this stream
    headers: dict[str, str] | None = None
    body: bytearray = field(default_factory=bytearray)
    unacked: int = 0  # answer bytes received and not yet given back by a stream WINDOW_UPDATE


class _PlainEncoder(hpack.Encoder):
    """HPACK without Huffman coding: per-push values are unique hex/UUIDs, where Huffman costs more CPU than
    the ~50 bytes per request it saves."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        """Encode the header block (always without Huffman)."""
        return super().encode(headers, huffman=False)


class _ProtocolError(Exception):
    """The server broke HTTP/2: the connection is ended with GOAWAY(code)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# RFC 9113 §6 frame types and flags, §7 error codes, §6.5.2 settings.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
ERROR_NAMES = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
               "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
               "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = (
    0, 1, 3, 6, 7, 8, 9)
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 4, 5
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535
DEFAULT_FRAME_SIZE = 16384  # ours is never raised, so no frame from the server may be larger
MAX_WINDOW = MAX_STREAM_ID = 2**31 - 1
ACK_AT = DEFAULT_WINDOW // 2  # received bytes after which a WINDOW_UPDATE gives them back


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    return (len(payload) << 8 | kind).to_bytes(4, "big") + bytes((flags,)) + stream_id.to_bytes(4, "big") + payload


def _window_update(stream_id: int, increment: int) -> bytes:
    return _frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))


def _unpad(flags: int, payload: bytes) -> bytes:
    """The payload without its padding (PADDED flag)."""
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise _ProtocolError(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1:len(payload) - payload[0]]


def _table_state(table: Any) -> tuple[int, int, int, bool]:
    """What identifies an HPACK dynamic table's content: an insertion, eviction or resize changes it."""
    entries = table.dynamic_entries
    return len(entries), id(entries[0]) if entries else 0, table.maxsize, table.resized


def cert_alert(exc: BaseException | None) -> bool:
    """True for a TLS alert from the peer about our certificate (not our own check of theirs)."""
    if not isinstance(exc, ssl.SSLError) or isinstance(exc, ssl.SSLCertVerificationError):
        return False
    text = str(exc).upper()
    return "ALERT" in text and ("CERTIFICATE" in text or "UNKNOWN_CA" in text)


class H2Client(asyncio.Protocol):
    """A minimal HTTP/2 client connection over asyncio: many concurrent request streams.

    The framing (RFC 9113: flow control, SETTINGS, GOAWAY, resets, CONTINUATION, padding) is done here and HPACK
    by the hpack library: the general h2 state machine cost more CPU per request than the rest of a push. A
    header block that left the HPACK table unchanged is reused while the same headers are sent again (FCM: the
    same six headers on every stream) and a received block is decoded once per table state.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, authority: str, peer: str = "the server") -> None:
        self.loop = loop
        self.authority = authority
        self.peer = peer  # who is at the other end, for error texts ("APNs", "FCM")
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.pending: dict[int, memoryview] = {}  # request bodies waiting for flow-control window
        self.waiters: list[asyncio.Future[None]] = []
        self.going_away: str | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self.settings_ready: asyncio.Future[None] = loop.create_future()  # the server's first SETTINGS
        self.max_streams = 100  # SETTINGS_MAX_CONCURRENT_STREAMS (open_h2 waits for the server's)
        self.encoder = _PlainEncoder()
        self.decoder = hpack.Decoder()
        self._next_stream_id = 1
        self._out: list[bytes] = []
        self._received = bytearray()
        self._window = DEFAULT_WINDOW  # connection-level send window
        self._initial_window = DEFAULT_WINDOW  # the server's SETTINGS_INITIAL_WINDOW_SIZE
        self._max_frame = DEFAULT_FRAME_SIZE  # the server's SETTINGS_MAX_FRAME_SIZE
        self._unacked = 0  # connection-level received bytes not yet given back
        self._continued: tuple[int, bool, bytearray] | None = None  # (stream, end stream, block) until END_HEADERS
        self._settings_seen = False
        self._encoded: tuple[Any, bytes] | None = None  # (headers list, its header block) while reusable
        self._decoded: dict[bytes, dict[str, str]] = {}  # header blocks of the current decoder table state
        self._flush_scheduled = False
        self._handlers: dict[int, Callable[[int, int, bytes], None]] = {
            DATA: self._on_data, HEADERS: self._on_headers, RST_STREAM: self._on_reset, SETTINGS: self._on_settings,
            PUSH_PROMISE: self._on_push, PING: self._on_ping, GOAWAY: self._on_goaway,
            WINDOW_UPDATE: self._on_window_update, CONTINUATION: self._on_continuation,
        }

    @property
    def usable(self) -> bool:
        """True while new streams may be opened on this connection."""
        return self.transport is not None and self.going_away is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the connection preface and our SETTINGS (no server push)."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TLS transport is not an asyncio subclass
        settings = SETTINGS_ENABLE_PUSH.to_bytes(2, "big") + (0).to_bytes(4, "big")
        self._out += [PREFACE, _frame(SETTINGS, 0, 0, settings)]
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
        """Parse every whole frame received so far and act on it."""
        received = self._received
        received += data
        try:
            used = self._read_frames(received)
        except _ProtocolError as exc:
            self._protocol_error(exc)
            return
        del received[:used]
        if self._unacked >= ACK_AT:
            self._out.append(_window_update(0, self._unacked))
            self._unacked = 0
        self._flush()

    def _read_frames(self, received: bytearray) -> int:
        """Handle the complete frames at the start of the buffer; returns the bytes used."""
        offset, end = 0, len(received)
        while end - offset >= 9:
            head = received[offset:offset + 9]
            length = int.from_bytes(head[:3], "big")
            if length > DEFAULT_FRAME_SIZE:
                raise _ProtocolError(FRAME_SIZE_ERROR, f"a {length}-byte frame exceeds our frame size")
            if end - offset - 9 < length:
                break
            payload = bytes(received[offset + 9:offset + 9 + length])
            offset += 9 + length
            self._on_frame(head[3], head[4], int.from_bytes(head[5:9], "big") & MAX_STREAM_ID, payload)
        return offset

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continued is not None and kind != CONTINUATION:
            raise _ProtocolError(PROTOCOL_ERROR, "header block interrupted by another frame")
        if not self._settings_seen:
            if kind != SETTINGS or flags & ACK:
                raise _ProtocolError(PROTOCOL_ERROR, "the server did not start with SETTINGS")
            self._settings_seen = True
        handler = self._handlers.get(kind)
        if handler is not None:  # PRIORITY and unknown frame types are ignored (RFC 9113 §5.5)
            handler(flags, stream_id, payload)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise _ProtocolError(PROTOCOL_ERROR, "DATA on stream 0")
        self._unacked += len(payload)  # counts for the connection even on a stream we gave up
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.body += _unpad(flags, payload)
        if flags & END_STREAM:
            self._on_end(stream_id)
            return
        stream.unacked += len(payload)
        if stream.unacked >= ACK_AT:
            self._out.append(_window_update(stream_id, stream.unacked))
            stream.unacked = 0

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise _ProtocolError(PROTOCOL_ERROR, "HEADERS on stream 0")
        block = _unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            block = block[5:]
        if flags & END_HEADERS:
            self._on_header_block(stream_id, block, bool(flags & END_STREAM))
        else:
            self._continued = (stream_id, bool(flags & END_STREAM), bytearray(block))

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continued is None or self._continued[0] != stream_id:
            raise _ProtocolError(PROTOCOL_ERROR, "CONTINUATION without a header block to continue")
        self._continued[2].extend(payload)
        if flags & END_HEADERS:
            stream_id, end_stream, block = self._continued
            self._continued = None
            self._on_header_block(stream_id, bytes(block), end_stream)

    def _on_header_block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        headers = self._decode(block)  # always: the decoder's table must follow every block
        stream = self.streams.get(stream_id)
        if stream is not None and stream.headers is None:
            status = headers.get(":status", "")
            if status.startswith("1") and not end_stream:
                return  # an informational answer (100 Continue): the real one follows
            stream.headers = headers
        if end_stream:
            self._on_end(stream_id)

    def _decode(self, block: bytes) -> dict[str, str]:
        """Decode a header block (a block seen before in the same table state is not decoded again)."""
        known = self._decoded.get(block)
        if known is not None:
            return dict(known)
        table = self.decoder.header_table
        before = _table_state(table)
        try:
            headers = dict(self.decoder.decode(block))
        except hpack.HPACKError as exc:
            raise _ProtocolError(COMPRESSION_ERROR, f"undecodable header block ({type(exc).__name__})") from None
        if _table_state(table) == before:
            if len(self._decoded) >= 64:
                self._decoded.clear()
            self._decoded[block] = headers
        else:
            self._decoded.clear()
        return dict(headers)

    def _on_end(self, stream_id: int) -> None:
        unsent = stream_id in self.pending
        stream = self._forget(stream_id)
        if unsent:  # answered before our body was all sent (e.g. an early 413): close our half too
            self._reset(stream_id, NO_ERROR)
        if stream is None or stream.future.done():
            return
        try:
            status = int((stream.headers or {}).get(":status", ""))
        except ValueError:
            status = -1
        stream.future.set_result(H2Response(status, stream.headers or {}, bytes(stream.body)))

    def _on_reset(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ProtocolError(FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
        code = int.from_bytes(payload, "big")
        name = ERROR_NAMES[code] if code < len(ERROR_NAMES) else str(code)
        text = f"stream reset by {self.peer} ({name})"
        self._fail_streams([stream_id], H2Failure, text, unprocessed=code == REFUSED_STREAM)

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0 or len(payload) % 6:
            raise _ProtocolError(FRAME_SIZE_ERROR if stream_id == 0 else PROTOCOL_ERROR, "malformed SETTINGS")
        if flags & ACK:
            return
        for start in range(0, len(payload), 6):
            self._apply_setting(int.from_bytes(payload[start:start + 2], "big"),
                                int.from_bytes(payload[start + 2:start + 6], "big"))
        self._out.append(_frame(SETTINGS, ACK, 0))
        self._send_pending()
        self._wake(all_waiters=True)
        if not self.settings_ready.done():
            self.settings_ready.set_result(None)

    def _apply_setting(self, key: int, value: int) -> None:
        if key == SETTINGS_HEADER_TABLE_SIZE:
            self.encoder.header_table_size = value
            self._encoded = None
        elif key == SETTINGS_MAX_CONCURRENT_STREAMS:
            self.max_streams = value
        elif key == SETTINGS_INITIAL_WINDOW_SIZE:
            if value > MAX_WINDOW:
                raise _ProtocolError(FLOW_CONTROL_ERROR, "initial window beyond 2^31-1")
            for stream in self.streams.values():
                stream.window += value - self._initial_window
            self._initial_window = value
        elif key == SETTINGS_MAX_FRAME_SIZE:
            if not DEFAULT_FRAME_SIZE <= value <= 2**24 - 1:
                raise _ProtocolError(PROTOCOL_ERROR, "invalid SETTINGS_MAX_FRAME_SIZE")
            self._max_frame = value

    def _on_push(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise _ProtocolError(PROTOCOL_ERROR, "PUSH_PROMISE although server push is disabled")

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 8 or stream_id != 0:
            raise _ProtocolError(FRAME_SIZE_ERROR, "malformed PING")
        if not flags & ACK:
            self._out.append(_frame(PING, ACK, 0, payload))

    def _on_goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) < 8 or stream_id != 0:
            raise _ProtocolError(FRAME_SIZE_ERROR, "malformed GOAWAY")
        last = int.from_bytes(payload[:4], "big") & MAX_STREAM_ID
        code = int.from_bytes(payload[4:8], "big")
        self.going_away = f"{self.peer} closed the connection (GOAWAY {_goaway_reason(payload[8:], code)})"
        self._fail_streams([sid for sid in self.streams if sid > last], H2Failure, self.going_away,
                           unprocessed=True)
        self._wake(all_waiters=True)
        if not self.streams:
            self.close()

    def _on_window_update(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ProtocolError(FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = int.from_bytes(payload, "big") & MAX_WINDOW
        if stream_id == 0:
            self._window += increment
            if increment == 0 or self._window > MAX_WINDOW:
                raise _ProtocolError(FLOW_CONTROL_ERROR, "invalid connection window update")
        elif stream_id in self.streams:
            self.streams[stream_id].window += increment
        self._send_pending()

    def _protocol_error(self, exc: _ProtocolError) -> None:
        """End the connection: GOAWAY with the error, fail every stream."""
        self.going_away = f"HTTP/2 protocol error: {exc}"
        self._out.append(_frame(GOAWAY, 0, 0, (0).to_bytes(4, "big") + exc.code.to_bytes(4, "big")))
        self._flush()
        if self.transport is not None:
            self.transport.close()  # after the GOAWAY has been written (abort would drop it)
        self._fail_streams(list(self.streams), H2Failure, self.going_away)

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
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _send_pending(self) -> None:
        for stream_id in list(self.pending):
            if self._window <= 0:
                break
            self._send_body(stream_id)
        self._schedule_flush()

    def _send_body(self, stream_id: int) -> bool:
        """Send as much of the stream's body as flow control allows; True when all of it went out."""
        data, stream = self.pending[stream_id], self.streams[stream_id]
        while data:
            size = min(self._window, stream.window, self._max_frame, len(data))
            if size <= 0:
                self.pending[stream_id] = data
                return False
            last = END_STREAM if size == len(data) else 0
            self._out.append(_frame(DATA, last, stream_id, data[:size].tobytes()))
            self._window -= size
            stream.window -= size
            data = data[size:]
        del self.pending[stream_id]
        return True

    def _header_block(self, headers: list[tuple[str, str]]) -> bytes:
        """HPACK-encode headers; the same list sent again reuses its block while the table is unchanged."""
        if self._encoded is not None and self._encoded[0] is headers:
            return self._encoded[1]
        table = self.encoder.header_table
        before = _table_state(table)
        block = self.encoder.encode(headers)
        self._encoded = (headers, block) if _table_state(table) == before else None
        return block

    def _send_headers(self, stream_id: int, headers: list[tuple[str, str]], end_stream: bool) -> None:
        block, size = self._header_block(headers), self._max_frame
        flags = END_STREAM if end_stream else 0
        if len(block) <= size:
            self._out.append(_frame(HEADERS, flags | END_HEADERS, stream_id, block))
            return
        self._out.append(_frame(HEADERS, flags, stream_id, block[:size]))
        for start in range(size, len(block), size):
            last = END_HEADERS if start + size >= len(block) else 0
            self._out.append(_frame(CONTINUATION, last, stream_id, block[start:start + size]))

    async def _wait_slot(self) -> None:
        while self.usable and len(self.streams) >= self.max_streams:
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            await waiter

    async def request(self, headers: list[tuple[str, str]], body: bytes, timeout: float) -> H2Response:
        """Send one request on a new stream and wait for its whole answer (at most timeout seconds).

        A headers list may be passed again for later requests (its encoding is reused), so it must not be changed.
        """
        await self._wait_slot()
        if not self.usable:
            raise H2Failure(self.going_away or "connection closed", unprocessed=True)
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:  # a very long-lived connection: the next request goes to a new one
            self.going_away = "connection cannot open more streams (stream ids exhausted)"
            raise H2Failure(self.going_away, unprocessed=True)
        self._next_stream_id += 2
        stream = _Stream(self.loop.create_future(), self._initial_window)
        self.streams[stream_id] = stream
        self._send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.pending[stream_id] = memoryview(body)
            self._send_body(stream_id)
        self._schedule_flush()
        timer = self.loop.call_later(timeout, self._expire, stream_id, timeout)
        try:
            return await stream.future
        except asyncio.CancelledError:
            if self._forget(stream_id) is not None:  # the caller gave up: so does the server
                self._reset(stream_id, CANCEL)
            raise
        finally:
            timer.cancel()

    def _expire(self, stream_id: int, timeout: float) -> None:
        """The request's timeout: give up on the stream and tell the server (RST_STREAM CANCEL)."""
        stream = self._forget(stream_id)
        if stream is None:
            return
        self._reset(stream_id, CANCEL)
        if not stream.future.done():
            stream.future.set_exception(H2Failure(f"no answer from {self.peer} within {timeout:g}s", timed_out=True))

    def _reset(self, stream_id: int, code: int) -> None:
        if self.transport is None:
            return
        self._out.append(_frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big")))
        self._schedule_flush()

    def close(self) -> None:
        """Say GOAWAY and close the transport gracefully."""
        if self.transport is None or self.transport.is_closing():
            return
        self._out.append(_frame(GOAWAY, 0, 0, (0).to_bytes(4, "big") + NO_ERROR.to_bytes(4, "big")))
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


def _goaway_reason(data: bytes | None, code: int = NO_ERROR) -> str:
    """APNs puts {"reason": …} into GOAWAY; otherwise the error code's name tells why."""
    try:
        return str(json.loads(data or b"").get("reason", "no reason"))
    except (ValueError, AttributeError):
        return ERROR_NAMES[code] if 0 < code < len(ERROR_NAMES) else "no reason"


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
                free = client.max_streams - len(client.streams)
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
