"""`demo load` on a fresh database: seconds per loader and in total, on SQLite and on PostgreSQL.

Run: .venv/bin/python bench/demo_load.py [--runs 3] [--postgres] [--only sqlite|postgresql] [--peer-root DIR]
Each run is a fresh process on an empty database (a new SQLite file; with --postgres a dedicated database
`webadmin_bench_demo` on the local server, created and dropped again): create the tables, then time
`demo.load()` loader by loader, then a second load (which must add nothing). The peer measured in the same run is
the same loaders from another checkout (--peer-root, say the main branch: "before"), interleaved run by run with
this one ("after"); without it, the idempotent second load is the peer. Prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_SERVER = os.environ.get("WEBADMIN_BENCH_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
BENCH_DATABASE = "webadmin_bench_demo"


def one_run(database_url: str) -> dict[str, float]:
    """In this process: an empty schema, then demo.load() twice; seconds per loader, total and second load."""
    from flask import Flask  # noqa: F401  (imported from the checkout on sys.path)

    from webadmin import create_app
    from webadmin.extensions import db
    from webadmin.services import demo

    with tempfile.TemporaryDirectory() as instance:
        app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "INSTANCE_PATH": instance,
                          "SECRET_KEY": "bench", "QUEUE_IMMEDIATE": True})
        timings: dict[str, float] = {}
        first = [True]  # loader timings of the first load only
        with app.app_context():
            db.create_all()
            for index, (name, loader) in enumerate(list(demo.LOADERS)):
                def timed(loader=loader, name=name):
                    started = time.perf_counter()
                    try:
                        return loader()
                    finally:
                        if first[0]:
                            timings[name] = time.perf_counter() - started
                demo.LOADERS[index] = (name, timed)
            started = time.perf_counter()
            report = demo.load(actor="bench")
            timings["total"] = time.perf_counter() - started
            first[0] = False
            started = time.perf_counter()
            again = demo.load(actor="bench")
            timings["second load"] = time.perf_counter() - started
            assert again == "nothing new", again
            timings["report"] = report  # type: ignore[assignment]
            db.session.remove()
            db.engine.dispose()
    return timings


def _postgres_database() -> str:
    """A fresh dedicated PostgreSQL database; its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_SERVER).set(drivername="postgresql+psycopg")
    server = create_engine(url, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {BENCH_DATABASE}"))
    server.dispose()
    return url.set(database=BENCH_DATABASE).render_as_string(hide_password=False)


def _drop_postgres_database() -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = create_engine(make_url(POSTGRES_SERVER).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)"))
    server.dispose()


def spawn(root: Path, backend: str, workdir: str) -> dict[str, float]:
    """One run in a fresh process with `root`'s webadmin on its path."""
    url = f"sqlite:///{Path(workdir) / 'demo.sqlite3'}" if backend == "sqlite" else _postgres_database()
    if backend == "sqlite":
        Path(workdir, "demo.sqlite3").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(root), "FLASK_SKIP_DOTENV": "1"}
    try:
        out = subprocess.run([sys.executable, __file__, "--child", url], env=env, cwd=root, check=True,
                             capture_output=True, text=True).stdout
    finally:
        if backend == "postgresql":
            _drop_postgres_database()
    return json.loads(out.strip().splitlines()[-1])


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs if key in run)


def _print_runs(label: str, runs: list[dict[str, float]]) -> None:
    keys = [k for k in runs[0] if k not in ("total", "second load", "report")]
    parts = ", ".join(f"{k} {_median(runs, k):.2f}" for k in keys)
    totals = ", ".join(f"{run['total']:.2f}" for run in runs)
    print(f"  {label}: total median {_median(runs, 'total'):.2f} s (runs {totals}); {parts}; second load "
          f"{_median(runs, 'second load'):.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--peer-root", type=Path, help="another checkout to compare with (before)")
    parser.add_argument("--quick", action="store_true", help="one run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args.child)))
        return
    runs = 1 if args.quick else args.runs
    backends = [args.only] if args.only else ["sqlite"] + (["postgresql"] if args.postgres else [])
    print(f"demo load: {runs} run(s) per checkout and backend; load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        for backend in backends:
            after: list[dict[str, float]] = []
            before: list[dict[str, float]] = []
            for _ in range(runs):  # interleaved, so both see the same load of the machine
                if args.peer_root:
                    before.append(spawn(args.peer_root, backend, workdir))
                after.append(spawn(ROOT, backend, workdir))
            print(f"{backend}: {after[0]['report']}", flush=True)
            _print_runs(f"this checkout ({ROOT})", after)
            if before:
                _print_runs(f"peer ({args.peer_root})", before)
                ratio = _median(after, "total") / _median(before, "total")
                print(f"  ratio this/peer: {ratio:.2f}", flush=True)
            else:
                ratio = _median(after, "second load") / _median(after, "total")
                print(f"  ratio second load/first load: {ratio:.3f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
