"""H2Client's own framing against a TLS server that writes raw frames: the RFC 9113 paths the h2-library fakes of
the APNs and FCM tests never take (padding, PRIORITY flag, CONTINUATION, 1xx, PING, SETTINGS mid-connection)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hpack
import pytest

from webadmin.providers._h2 import H2Failure, H2Pool, open_h2

from .apns_fake import HOST, TlsFiles, make_tls_files

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One raw frame."""
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


def setting(key: int, value: int) -> bytes:
    """One SETTINGS entry."""
    return key.to_bytes(2, "big") + value.to_bytes(4, "big")


class RawServer(asyncio.Protocol):
    """Reads the client's frames; `script(server, kind, flags, stream, payload)` answers them with raw bytes."""

    def __init__(self, script: Callable[[RawServer, int, int, int, bytes], None], settings: bytes) -> None:
        self.script, self.settings = script, settings
        self.buffer = b""
        self.frames: list[tuple[int, int, int, bytes]] = []
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        """Our SETTINGS first, as the protocol requires."""
        self.transport = transport
        transport.write(frame(SETTINGS, 0, 0, self.settings))

    def send(self, *frames: bytes) -> None:
        """Write raw frames."""
        assert self.transport is not None
        self.transport.write(b"".join(frames))

    def data_received(self, data: bytes) -> None:
        """Split the client's bytes into frames and hand each to the script."""
        self.buffer += data
        if self.buffer.startswith(PREFACE):
            self.buffer = self.buffer[len(PREFACE):]
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                return
            head, payload = self.buffer[:9], self.buffer[9:9 + length]
            self.buffer = self.buffer[9 + length:]
            item = (head[3], head[4], int.from_bytes(head[5:9], "big"), payload)
            self.frames.append(item)
            self.script(self, *item)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and the server's certificate for 127.0.0.1."""
    return make_tls_files(Path(tmp_path_factory.mktemp("h2-tls")))


def exchange(tls: TlsFiles, script: Any, settings: bytes, body: bytes) -> tuple[Any, RawServer]:
    """One request through open_h2 against the raw server; returns (response or failure, server)."""

    async def main() -> tuple[Any, RawServer]:
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(tls.cert_file, tls.key_file)
        server_ctx.set_alpn_protocols(["h2"])
        servers: list[RawServer] = []

        def factory() -> RawServer:
            servers.append(RawServer(script, settings))
            return servers[-1]

        listener = await asyncio.get_running_loop().create_server(factory, HOST, 0, ssl=server_ctx)
        url = f"https://{HOST}:{listener.sockets[0].getsockname()[1]}"
        ctx = ssl.create_default_context(cafile=tls.ca_file)
        ctx.set_alpn_protocols(["h2"])
        client = await open_h2(url, ctx, 5.0, "raw")
        headers = [(":method", "POST"), (":scheme", "https"), (":authority", client.authority), (":path", "/x")]
        try:
            outcome: Any = await client.request(headers, body, 2.0)
        except H2Failure as exc:
            outcome = exc
        await client.aclose()
        await asyncio.sleep(0.05)  # let the server read what the client wrote last (GOAWAY)
        listener.close()
        await listener.wait_closed()
        return outcome, servers[0]

    return asyncio.run(main())


def test_padding_priority_continuation_informational_and_ping(tls: TlsFiles) -> None:
    def script(server: RawServer, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind == HEADERS:
            server.decoder.decode(payload)
        if kind != DATA or not flags & END_STREAM:
            return
        informational = server.encoder.encode([(":status", "100")])
        block = server.encoder.encode([(":status", "200"), ("x-test", "y" * 40), ("content-type", "text/plain")])
        padded_headers = bytes((3,)) + bytes(5) + block[:10] + bytes(3)  # pad length, priority fields, padding
        server.send(
            frame(PING, 0, 0, b"12345678"),
            frame(HEADERS, END_HEADERS, stream, informational),
            frame(HEADERS, PADDED | PRIORITY, stream, padded_headers),
            frame(CONTINUATION, 0, stream, block[10:20]),
            frame(CONTINUATION, END_HEADERS, stream, block[20:]),
            frame(DATA, PADDED, stream, bytes((2,)) + b"hello " + bytes(2)),
            frame(DATA, END_STREAM, stream, b"world"),
        )

    response, server = exchange(tls, script, setting(3, 10), b'{"a":1}')
    assert response.status == 200 and response.body == b"hello world"
    assert response.headers["x-test"] == "y" * 40 and response.headers["content-type"] == "text/plain"
    assert (PING, ACK, 0, b"12345678") in server.frames  # answered our PING
    assert any(kind == SETTINGS and flags & ACK for kind, flags, _, _ in server.frames)


def test_body_waits_for_flow_control_and_settings_change_mid_connection(tls: TlsFiles) -> None:
    body = bytes(range(256)) * 4  # 1 kB, more than the 100-byte stream window below
    received = bytearray()

    def script(server: RawServer, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind == HEADERS:
            server.decoder.decode(payload)
            # the header table shrinks and the window grows while the request is under way
            server.send(frame(SETTINGS, 0, 0, setting(1, 0) + setting(4, 300)))
        if kind == DATA:
            received.extend(payload)
            if len(received) < len(body):
                server.send(frame(WINDOW_UPDATE, 0, stream, len(payload).to_bytes(4, "big")),
                            frame(WINDOW_UPDATE, 0, 0, len(payload).to_bytes(4, "big")))
            if flags & END_STREAM:
                block = server.encoder.encode([(":status", "204")])
                server.send(frame(HEADERS, END_HEADERS | END_STREAM, stream, block))

    response, server = exchange(tls, script, setting(4, 100), body)
    assert response.status == 204 and bytes(received) == body
    data_sizes = [len(payload) for kind, _, _, payload in server.frames if kind == DATA]
    assert data_sizes[0] <= 100 and max(data_sizes) <= 300  # never beyond the window the server allowed


def test_refused_stream_is_unprocessed_and_protocol_errors_end_the_connection(tls: TlsFiles) -> None:
    def refuse(server: RawServer, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind == HEADERS:
            server.send(frame(RST_STREAM, 0, stream, (7).to_bytes(4, "big")))  # REFUSED_STREAM

    failure, _ = exchange(tls, refuse, b"", b"")
    assert isinstance(failure, H2Failure) and failure.unprocessed and "REFUSED_STREAM" in str(failure)

    def oversized(server: RawServer, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind == HEADERS:
            server.send(frame(DATA, 0, stream, bytes(20_000)))  # beyond the 16,384-byte frame size we allow

    failure, server = exchange(tls, oversized, b"", b"")
    assert isinstance(failure, H2Failure) and "protocol error" in str(failure) and not failure.unprocessed
    assert any(kind == GOAWAY and payload[4:8] == (6).to_bytes(4, "big")  # FRAME_SIZE_ERROR
               for kind, _, _, payload in server.frames)


def test_pool_opens_a_connection_only_when_the_open_ones_are_full(tls: TlsFiles) -> None:
    async def main() -> tuple[int, list[int]]:
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(tls.cert_file, tls.key_file)
        server_ctx.set_alpn_protocols(["h2"])
        open_streams: list[int] = []

        def script(server: RawServer, kind: int, flags: int, stream: int, payload: bytes) -> None:
            if kind == HEADERS:
                server.decoder.decode(payload)
                open_streams.append(stream)
                block = server.encoder.encode([(":status", "200")])
                loop = asyncio.get_running_loop()
                loop.call_later(0.05, server.send, frame(HEADERS, END_HEADERS | END_STREAM, stream, block))

        listener = await asyncio.get_running_loop().create_server(
            lambda: RawServer(script, setting(3, 2)), HOST, 0, ssl=server_ctx)  # 2 streams per connection
        ctx = ssl.create_default_context(cafile=tls.ca_file)
        ctx.set_alpn_protocols(["h2"])
        pool = H2Pool(f"https://{HOST}:{listener.sockets[0].getsockname()[1]}", ctx, size=10, timeout=5.0,
                      peer="raw")
        headers = [(":method", "GET"), (":scheme", "https"), (":authority", pool.authority), (":path", "/")]
        answers = await asyncio.gather(*(pool.request(headers, b"", 2.0) for _ in range(6)))
        await pool.aclose()
        listener.close()
        await listener.wait_closed()
        return pool.connections_opened, [a.status for a in answers]

    opened, statuses = asyncio.run(main())
    assert statuses == [200] * 6 and opened == 3  # 6 concurrent requests / 2 streams per connection
