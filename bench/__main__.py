"""Run every benchmark in bench/ in turn: `python -m bench [--quick] [--only NAME,NAME] [--list]` (`make bench`).

A benchmark is a bench/*.py with an `if __name__ == "__main__":` block (helpers without one are not run). Each
runs in its own process, so one's memory and threads cannot disturb the next. Per benchmark, from its --help:
- `--quick` is passed when this runs with --quick (small sizes, one run); benchmarks without the flag get the
  small sizes listed in QUICK_ARGS, or run as they are;
- PostgreSQL (WEBADMIN_BENCH_POSTGRES_URL, default the local test server; each benchmark creates its own database):
  a benchmark with an opt-in `--postgres` flag gets it when the server answers; one with `--no-postgres` gets that
  when the server is down;
- a module-level `REQUIRES = ("postgresql", "redis", "node", …)` names what it cannot run without: servers are
  probed, other names must be programs on PATH; when one is missing the benchmark is skipped and says why.
Results are printed as they come; a summary follows. Exit status 1 if any benchmark failed.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
POSTGRES_URL = os.environ.get("WEBADMIN_BENCH_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("WEBADMIN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# Small sizes for benchmarks that have no --quick flag of their own.
QUICK_ARGS: dict[str, list[str]] = {
    "apns_clients": ["-n", "2000", "--runs", "1"],
    "audience_scale": ["--subscribers", "20000", "--small", "1000", "--requests", "20"],
    "csv_import": ["--lines", "10000", "--small", "1000"],
    "device_upsert": ["--duration", "2"],
    "events_in_process": ["--messages", "5000", "--chunk", "100", "--chunks", "5"],
    "fcm_throughput": ["-n", "1000", "--runs", "1"],
}


def benchmarks() -> list[Path]:
    """bench/*.py files that run as programs, in name order."""
    found = []
    for path in sorted(BENCH.glob("*.py")):
        if path.name.startswith("_"):
            continue
        if re.search(r"^if __name__ == ['\"]__main__['\"]:", path.read_text(), re.MULTILINE):
            found.append(path)
    return found


def requires(path: Path) -> tuple[str, ...]:
    """The module's REQUIRES tuple (read from its source, without importing it)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            names = [node.target.id]
        else:
            continue
        if "REQUIRES" in names:
            return tuple(ast.literal_eval(node.value))
    return ()


def _port_open(url: str, default_port: int) -> bool:
    """Whether something listens at the URL's host and port (only ever 127.0.0.1 or the configured host)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def postgres_up() -> bool:
    """Whether the PostgreSQL server accepts a connection and a query."""
    if not _port_open(POSTGRES_URL, 5432):
        return False
    probe = "import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=3).close()"
    return subprocess.run([sys.executable, "-c", probe, POSTGRES_URL], capture_output=True).returncode == 0


def missing(needs: tuple[str, ...], servers: dict[str, bool]) -> list[str]:
    """What of `needs` is not available here."""
    absent = []
    for need in needs:
        if need in servers:
            if not servers[need]:
                absent.append(f"{need} server is down")
        elif shutil.which(need) is None:
            absent.append(f"{need} is not installed")
    return absent


def arguments(path: Path, quick: bool, servers: dict[str, bool]) -> list[str]:
    """Command-line arguments for one benchmark, from what its --help offers."""
    shown = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, cwd=ROOT).stdout
    extra: list[str] = []
    if quick:
        extra += ["--quick"] if "--quick" in shown else QUICK_ARGS.get(path.stem, [])
    if servers["postgresql"] and re.search(r"--postgres\b(?![-\w])(?! [A-Z_]+)", shown):
        extra.append("--postgres")
    if not servers["postgresql"] and "--no-postgres" in shown:
        extra.append("--no-postgres")
    return extra


def run(path: Path, quick: bool, servers: dict[str, bool]) -> tuple[str, float]:
    """Run one benchmark with its output passed through; returns (status, seconds)."""
    absent = missing(requires(path), servers)
    if absent:
        print(f"skipped: {', '.join(absent)}", flush=True)
        return "skipped (" + ", ".join(absent) + ")", 0.0
    command = [sys.executable, str(path), *arguments(path, quick, servers)]
    print("$ " + " ".join([Path(command[0]).name, *command[1:]]), flush=True)
    began = time.perf_counter()
    code = subprocess.run(command, cwd=ROOT).returncode
    return ("ok" if code == 0 else f"FAILED (exit {code})"), time.perf_counter() - began


def main() -> None:
    """Parse arguments, probe the servers, run the benchmarks one after another, summarise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of every benchmark")
    parser.add_argument("--only", help="comma-separated benchmark names (file names without .py)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args()
    chosen = benchmarks()
    if args.only:
        names = set(args.only.split(","))
        chosen = [p for p in chosen if p.stem in names]
    if args.list:
        print("\n".join(p.stem for p in chosen))
        return
    servers = {"postgresql": postgres_up(), "redis": _port_open(REDIS_URL, 6379)}
    print("servers: " + ", ".join(f"{name} {'up' if up else 'down'}" for name, up in servers.items()))
    outcomes = []
    for path in chosen:
        print(f"\n=== {path.stem} ===", flush=True)
        outcomes.append((path.stem, *run(path, args.quick, servers)))
    print("\n=== summary ===")
    for name, status, seconds in outcomes:
        print(f"{name:<22} {status:<40} {seconds:7.0f} s")
    if any(status.startswith("FAILED") for _, status, _ in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
