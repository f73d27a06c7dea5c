"""Per-worker-thread async runtime: one event loop on its own thread, one kept-alive aiohttp session, cached
backends.

The loop runs in a daemon thread so the worker thread (which owns the database session) keeps working while a
batch is on the wire: it renews the batch's lease, and prepares the next batch (engine.dispatch).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
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
        self._thread = threading.Thread(target=self.loop.run_forever, name="webadmin-send-loop", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Start a coroutine on this runtime's loop; returns a future the calling thread can wait on."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this runtime's loop and wait for its result (from any thread that runs no loop
        itself, or one that does: an embedding app, Playwright's sync API in tests)."""
        return self.submit(coro).result()

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
        """Close backends, the session, the loop and its thread."""
        try:
            for backend in self.backends.values():
                self.run(backend.close())
            self.backends.clear()
            if self.session is not None:
                self.run(self.session.close())
            self.run(asyncio.sleep(0))  # let closed transports finish on the loop
            self.run(self.loop.shutdown_default_executor())  # threads of asyncio.to_thread (token refreshes)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
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
