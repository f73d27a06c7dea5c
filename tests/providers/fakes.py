"""Local fake provider servers (aiohttp.web on 127.0.0.1, ephemeral port) that record every request."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict

Responder = Callable[["Recorded"], Awaitable[web.StreamResponse] | web.StreamResponse]


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    text: str
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    request: web.Request | None = field(default=None, repr=False, compare=False)


async def _record(request: web.Request) -> Recorded:
    """Read a request into a Recorded (JSON and form bodies decoded)."""
    text = (await request.read()).decode("utf-8", "replace")
    rec = Recorded(request.method, request.path, dict(request.query), CIMultiDict(request.headers), text,
                   request=request)
    ctype = request.headers.get("Content-Type", "")
    if "json" in ctype and text:
        rec.json = json.loads(text)
    elif "x-www-form-urlencoded" in ctype:
        rec.form = dict(parse_qsl(text))
    return rec


class FakeServer:
    """A scriptable HTTP server: per (method, path) a list of responders, used in order, the last repeated."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._routes: dict[tuple[str, str], list[Responder]] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    def route(self, method: str, path: str, *responders: Responder) -> None:
        """Answer method+path with these responders (call n uses responders[min(n, last)])."""
        self._routes[(method, path)] = list(responders)
        self._counts[(method, path)] = 0

    def calls(self, path: str, method: str = "POST") -> list[Recorded]:
        """Requests received for a path."""
        return [r for r in self.requests if r.path == path and r.method == method]

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rec = await _record(request)
        self.requests.append(rec)
        key = (request.method, request.path)
        responders = self._routes.get(key)
        if not responders:
            return web.json_response({"error": "no route in fake"}, status=599)
        n = self._counts[key]
        self._counts[key] = n + 1
        answer = responders[min(n, len(responders) - 1)](rec)
        return await answer if asyncio.iscoroutine(answer) else answer

    async def __aenter__(self) -> FakeServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class ThreadedFake:
    """A FakeServer on its own thread and event loop, for code that runs its loop itself (console, live server)."""

    def __init__(self, server: FakeServer | None = None) -> None:
        self.server = server or FakeServer()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-provider", daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self.loop).result(timeout=10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(None, None, None), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def free_port_url() -> str:
    """URL of a 127.0.0.1 port that nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---- responders ---------------------------------------------------------------------------------


def reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Responder:
    """A JSON answer."""
    return lambda rec: web.json_response(data, status=status, headers=headers)


def raw(body: str, status: int = 200, content_type: str = "text/html",
        headers: dict[str, str] | None = None) -> Responder:
    """A raw (e.g. HTML or truncated JSON) answer."""
    return lambda rec: web.Response(text=body, status=status, content_type=content_type, headers=headers)


def html_page(status: int = 200) -> Responder:
    """An HTML error page such as a proxy would send."""
    return raw("<html><body><h1>Bad gateway</h1></body></html>", status=status)


def truncated_json(status: int = 200) -> Responder:
    """A JSON answer cut in the middle."""
    return raw('{"name": "projects/x/mess', status=status, content_type="application/json")


def sleep(seconds: float, then: Responder | None = None) -> Responder:
    """Wait longer than the client's timeout, then answer (if still connected)."""

    async def responder(rec: Recorded) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return (then or reply({}))(rec)

    return responder


def reset() -> Responder:
    """Close the connection without answering."""

    async def responder(rec: Recorded) -> web.StreamResponse:
        assert rec.request is not None and rec.request.transport is not None
        rec.request.transport.close()
        await asyncio.sleep(10)  # cancelled by handler_cancellation when the connection goes
        return web.Response()

    return responder


def dispatch(select: Callable[[Recorded], str], table: dict[str, Responder], default: Responder) -> Responder:
    """Choose the responder by a value of the request (e.g. the FCM token)."""

    def responder(rec: Recorded) -> Any:
        return table.get(select(rec), default)(rec)

    return responder


def counting(responder: Responder, state: dict[str, int]) -> Responder:
    """Wrap a responder to track the maximum number of requests in flight (state['max'])."""

    async def wrapped(rec: Recorded) -> web.StreamResponse:
        state["now"] = state.get("now", 0) + 1
        state["max"] = max(state.get("max", 0), state["now"])
        try:
            answer = responder(rec)
            return await answer if asyncio.iscoroutine(answer) else answer
        finally:
            state["now"] -= 1

    return wrapped
