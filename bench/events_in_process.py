"""Server CPU per request of POST /api/v1/events against GET /api/v1/health, in process (WSGI calls, no HTTP).

Run: .venv/bin/python bench/events_in_process.py [--messages 20000] [--chunk 200] [--chunks 30]
The database, campaign and API key are bench/events_endpoint.py's (a temporary SQLite file). The app is called
as a WSGI server would call it, in alternating chunks of --chunk requests: health, events (one event each, the
same mix as the gunicorn benchmark), and an authenticated request refused at validation (the key check's cost).
CPU time per request is taken per chunk; the figures are medians over --chunks rounds, and the ratio is the
median of each round's health / events. Under gunicorn every request also pays the HTTP parser, the socket and
the response writing, which this leaves out: the ratio here is lower than under gunicorn, and it moves with the
events endpoint's own cost much less noisily than a gunicorn run on a shared machine does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from engine_materialize import bench_database  # noqa: E402
from events_endpoint import EventMix, _prepare  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402


def _environ(method: str, path: str, body: bytes = b"", authorization: str | None = None) -> dict[str, Any]:
    """The WSGI environ of this request (built before the timing starts)."""
    headers = {"Authorization": authorization} if authorization else {}
    return EnvironBuilder(path=path, method=method, data=body or None, headers=headers,
                          content_type="application/json" if body else None).get_environ()


def _call(app: Any, environ: dict[str, Any]) -> str:
    """Run one request to the end; its status line."""
    status: list[str] = []
    body = app(environ, lambda line, headers, exc_info=None: status.append(line))
    b"".join(body)
    if hasattr(body, "close"):
        body.close()
    return status[0]


def main() -> None:
    """Build, then measure the three kinds of request in alternating chunks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages of the campaign events are about")
    parser.add_argument("--chunk", type=int, default=200, help="requests per chunk")
    parser.add_argument("--chunks", type=int, default=30, help="rounds of one chunk of each kind")
    args = parser.parse_args()
    with bench_database("sqlite") as (url, folder):
        env, secret, uuids, _ = _prepare(url, folder, args.messages)
        os.environ.update(env)
        from webadmin import create_app

        app = create_app()
        mix = EventMix(uuids, 1)
        mix.prepare(min(args.messages, args.chunk * (args.chunks + 1)))
        key = f"Bearer {secret}"
        kinds = {
            "health": lambda: _environ("GET", "/api/v1/health"),
            "events": lambda: _environ("POST", "/api/v1/events", mix.body(), key),
            "key only": lambda: _environ("POST", "/api/v1/events", b'{"events": []}', key),
        }
        expected = {"health": "200 OK", "events": "200 OK", "key only": "422 UNPROCESSABLE ENTITY"}
        for name, make in kinds.items():  # warm-up, and a check that each kind answers as it should
            assert _call(app, make()) == expected[name], name
        cpu: dict[str, list[float]] = {name: [] for name in kinds}
        for _ in range(args.chunks):
            for name, make in kinds.items():
                environs = [make() for _ in range(args.chunk)]
                started = time.process_time()
                statuses = {_call(app, environ) for environ in environs}
                cpu[name].append((time.process_time() - started) / args.chunk * 1e6)
                assert statuses == {expected[name]}, (name, statuses)
        ratios = [h / e for h, e in zip(cpu["health"], cpu["events"], strict=True)]
        print(f"in process, SQLite, {args.messages:,} messages, {args.chunks} rounds of {args.chunk} requests per "
              f"kind, load average {os.getloadavg()[0]:.1f}")
        for name, values in cpu.items():
            print(f"  {name:<9} {statistics.median(values):6.1f} µs CPU per request (median; "
                  f"{min(values):.1f}–{max(values):.1f})")
        print(f"  health / events: {statistics.median(ratios):.3f} (median of the rounds' ratios)")


if __name__ == "__main__":
    main()
