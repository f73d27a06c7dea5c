"""Worker memory while sending: peak RSS above idle of a process running the engine, 10k against 1M messages.

Run: .venv/bin/python bench/engine_memory.py [--sizes 10000,1000000] [--runs 3] [--batch-size 1000] [--quick]
For each size this process builds a SQLite database (temporary folder) with an audience and a started campaign
(materialised, not dispatched), then a fresh child process — a worker: the app built, its database connection
open, the engine imported — reads its idle VmRSS, resets the kernel's high-water mark (/proc/self/clear_refs),
runs `webadmin.sending.engine.dispatch` to the end (Debug backend) and reads VmHWM. Target: peak ≤ 100 MB above
idle and flat from 10k to 1M (the peer is the smallest size, measured in the same run; the ratio is large/small).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from engine_materialize import bench_app, bench_database, build_audience, started_campaign

from webadmin.extensions import db

MIB = 1024


def _status_kib(field: str) -> int:
    """A VmXXX line of /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakSampler:
    """Peak RSS since start: the kernel's VmHWM after clear_refs, or sampling where that is not allowed."""

    def __init__(self) -> None:
        self.peak = 0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.kernel = True
        except OSError:
            self.kernel = False
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()

    def _sample(self) -> None:
        """Every 10 ms, keep the largest RSS seen."""
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, _status_kib("VmRSS"))

    def result(self) -> int:
        """The peak in KiB."""
        if self.kernel:
            return _status_kib("VmHWM")
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        return max(self.peak, _status_kib("VmRSS"))


def child(url: str, folder: str, campaign_id: int, batch_size: int) -> None:
    """The worker: get ready, measure idle, dispatch, measure the peak; print one JSON line."""
    from sqlalchemy import select

    from webadmin.models.campaign import Campaign
    from webadmin.sending.channels import routes_for_app
    from webadmin.sending.engine import dispatch

    app = bench_app(url, Path(folder), create=False, ENGINE_BATCH_SIZE=batch_size)
    with app.app_context():
        app_id = db.session.scalar(select(Campaign.app_id).where(Campaign.id == campaign_id))
        routes_for_app(app_id)  # connection open, statements compiled once, as in a consumer waiting for tasks
        db.session.commit()
        idle = _status_kib("VmRSS")
        sampler = PeakSampler()
        began = time.perf_counter()
        report = dispatch(campaign_id)
        seconds = time.perf_counter() - began
        peak = sampler.result()
        print(json.dumps({"idle": idle, "peak": peak, "after": _status_kib("VmRSS"), "sent": report.sent,
                          "seconds": seconds, "stopped": report.stopped_because, "kernel_hwm": sampler.kernel}))


def one_run(size: int, batch_size: int) -> dict[str, Any]:
    """Build a database with a started campaign of `size` messages, dispatch it in a child, return its figures."""
    with bench_database("sqlite") as (url, folder):
        app = bench_app(url, folder)
        with app.app_context():
            campaign_id, targeted, _ = started_campaign(build_audience(size))
            db.session.remove()
            db.engine.dispose()
        command = [sys.executable, __file__, "--child", url, str(folder), str(campaign_id), str(batch_size)]
        done = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ.copy())
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        assert figures["sent"] == targeted and figures["stopped"] == "finished", figures
        return figures


def report(sizes: list[int], results: dict[int, list[dict[str, Any]]]) -> None:
    """Print the table and the large/small ratio."""
    print(f"{'messages':>10} {'idle MiB':>9} {'peak MiB':>9} {'above idle (median)':>20}  runs (MiB)   msg/s")
    growth: dict[int, float] = {}
    for size in sizes:
        runs = results[size]
        above = [(r["peak"] - r["idle"]) / MIB for r in runs]
        growth[size] = statistics.median(above)
        rate = statistics.median(r["sent"] / r["seconds"] for r in runs)
        print(f"{size:>10,} {statistics.median(r['idle'] for r in runs) / MIB:9.1f} "
              f"{statistics.median(r['peak'] for r in runs) / MIB:9.1f} {growth[size]:20.1f}  "
              f"{'/'.join(f'{a:.1f}' for a in above):<12} {rate:,.0f}")
    small, large = sizes[0], sizes[-1]
    verdict = "met" if growth[large] <= 100 else "MISSED"
    print(f"peak above idle: {growth[large]:.1f} MiB at {large:,} vs {growth[small]:.1f} MiB at {small:,} "
          f"(peer) = {growth[large] / max(growth[small], 0.1):.2f}x; target <= 100 MB and flat: {verdict}")
    if not all(r["kernel_hwm"] for runs in results.values() for r in runs):
        print("(clear_refs was refused: the peak was sampled every 10 ms instead of read from VmHWM)")


def main() -> None:
    """Parse arguments; run every size `runs` times, interleaved; report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000", help="audience sizes, smallest first (the peer)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000, help="ENGINE_BATCH_SIZE of the worker")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run (a smoke test)")
    parser.add_argument("--child", nargs=4, metavar=("URL", "FOLDER", "CAMPAIGN", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, folder, campaign_id, batch_size = args.child
        child(url, folder, int(campaign_id), int(batch_size))
        return
    sizes = [2_000, 20_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    runs = 1 if args.quick else args.runs
    results: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    for _ in range(runs):
        for size in sizes:
            results[size].append(one_run(size, args.batch_size))
    report(sizes, results)


if __name__ == "__main__":
    main()
