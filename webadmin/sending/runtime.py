"""Per-worker-thread async runtime: one event loop, one kept-alive aiohttp session, cached backends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import aiohttp

from webadmin.providers import create_backend, default_options
from webadmin.providers.base import PushBackend

T = TypeVar("T")


def new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is installed (FCM over HTTP/2: about 10% less CPU per message, TLS
    included), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class WorkerRuntime:
    """What one worker thread keeps between tasks so connections are reused, not reopened per batch."""

    def __init__(self, pool_size: int = 100) -> None:
        self.loop = new_loop()
        self.pool_size = pool_size
        self.session: aiohttp.ClientSession | None = None
        self.backends: dict[tuple[Any, ...], PushBackend] = {}
        self._session_connections = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this runtime's loop.

        When the calling thread already runs an event loop (an embedding app, or Playwright's sync API in tests),
        the loop is driven from a short-lived helper thread instead, since one thread cannot run two loops.
        """
        if asyncio._get_running_loop() is None:
            return self.loop.run_until_complete(coro)
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(self.loop.run_until_complete, coro).result()

    async def _session(self) -> aiohttp.ClientSession:
        """The shared session (created inside the loop, as aiohttp requires)."""
        if self.session is None or self.session.closed:
            connector = aiohttp.TCPConnector(limit=self.pool_size, keepalive_timeout=60)
            trace = aiohttp.TraceConfig()
            trace.on_connection_create_end.append(self._count_connection)
            self.session = aiohttp.ClientSession(connector=connector, trace_configs=[trace])
        return self.session

    async def _count_connection(self, *_: Any) -> None:
        """Count new TCP connections of the shared session."""
        self._session_connections += 1

    @property
    def connections_opened(self) -> int:
        """Connections opened so far: the shared session's and the backends' own HTTP/2 ones (benchmarks check
        there is no reconnect per batch)."""
        own = sum(getattr(backend, "connections_opened", 0) for backend in self.backends.values())
        return self._session_connections + own

    def backend(self, key: tuple[Any, ...], type_name: str, credentials: dict[str, Any],
                options: dict[str, Any]) -> PushBackend:
        """A cached backend instance for a channel version."""
        if key not in self.backends:
            session = self.run(self._session())
            self.backends[key] = create_backend(type_name, credentials, default_options(type_name, **options), session)
        return self.backends[key]

    def close(self) -> None:
        """Close backends, the session and the loop."""
        for backend in self.backends.values():
            self.run(backend.close())
        self.backends.clear()
        if self.session is not None:
            self.run(self.session.close())
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


_local = threading.local()


@contextmanager
def worker_runtime(keep: bool = True) -> Iterator[WorkerRuntime]:
    """The thread's runtime (kept between tasks in consumers), or a temporary one closed afterwards."""
    if not keep:
        runtime = WorkerRuntime()
        try:
            yield runtime
        finally:
            runtime.close()
        return
    runtime = getattr(_local, "runtime", None)
    if runtime is None or runtime.loop.is_closed():
        runtime = _local.runtime = WorkerRuntime()
    yield runtime
