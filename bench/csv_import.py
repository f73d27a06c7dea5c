"""Subscriber CSV import: seconds to check and import 100k lines, against a 10k peer in the same run.

Run: .venv/bin/python bench/csv_import.py [--lines 100000] [--small 10000] [--postgres]
Generates a CSV (key,name,phone,locale,time_zone,groups) and imports it into an empty database through
`webadmin.services.subscriber_csv.import_file`, then imports the same file again (every line exists: the
update path). The ratio large/small should be about lines/small (linear). Target: < 30 s for 100k lines.
SQLite goes to a temporary file; --postgres also uses a dedicated database (see audience_scale.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from audience_scale import bench_app, scratch_database  # noqa: E402

from webadmin.extensions import db  # noqa: E402
from webadmin.services import subscriber_csv  # noqa: E402
from webadmin.services.demo_audience import GROUPS, LOCALES  # noqa: E402

TARGET_SECONDS = 30.0
EXTRA_GROUPS = ("Spring fair 2026", "Loyalty app launch")  # not in the database yet: the import creates them


@dataclass
class ImportTiming:
    """Seconds of one import: checking the file, writing and committing."""

    label: str
    check: float
    write: float
    created: int
    updated: int
    unchanged: int

    @property
    def total(self) -> float:
        """Check + write."""
        return self.check + self.write

    def line(self) -> str:
        """One printed row."""
        return (
            f"{self.label:<40} total {self.total:6.2f} s (check {self.check:5.2f} s, write {self.write:5.2f} s)"
            f"  created {self.created:,} updated {self.updated:,} unchanged {self.unchanged:,}"
        )


def subscriber_csv_bytes(lines: int, seed: int = 3) -> bytes:
    """A believable subscriber file: ~70% with a phone, a few with two groups, some with none."""
    rng = random.Random(seed)
    groups = [*GROUPS, *EXTRA_GROUPS]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["key", "name", "phone", "locale", "time_zone", "groups"])
    for n in range(1, lines + 1):
        locale = rng.choice(list(LOCALES))
        profile = LOCALES[locale]
        first, last = rng.choice(profile.first_names), rng.choice(profile.last_names)
        phone = f"+{profile.country_code}{rng.choice(profile.mobile_prefixes)}{rng.randrange(10**6, 10**7)}"
        key = f"csv.{n}.{first}@example.com".lower()
        chosen = rng.sample(groups, k=rng.choice((0, 0, 1, 1, 1, 2)))
        writer.writerow(
            [key, f"{first} {last}", phone if rng.random() < 0.7 else "", locale, rng.choice(profile.time_zones),
             ";".join(chosen)]
        )
    return out.getvalue().encode()


def import_once(label: str, data: bytes) -> ImportTiming:
    """Check and import a file in the current app context; commit."""
    started = time.perf_counter()
    check = subscriber_csv.check_import(data)
    checked = time.perf_counter()
    if not check.accepted:
        raise SystemExit(f"{label}: the file was rejected: {check.problems[:3]}")
    report = subscriber_csv.import_subscribers(check.rows, actor="bench")
    db.session.commit()
    done = time.perf_counter()
    return ImportTiming(label, checked - started, done - checked, report.created, report.updated, report.unchanged)


def run_backend(backend: str, sizes: tuple[int, int], workdir: str) -> list[ImportTiming]:
    """Import the small and the large file into fresh databases; the large one twice."""
    results = []
    for lines in sizes:
        data = subscriber_csv_bytes(lines)
        with scratch_database(backend, workdir, f"csv_{lines}") as url:
            app = bench_app(url, workdir)
            with app.app_context():
                db.create_all()
                results.append(import_once(f"{backend} {lines:,} lines, new", data))
                print("  " + results[-1].line(), flush=True)
                if lines == sizes[1]:
                    results.append(import_once(f"{backend} {lines:,} lines, again", data))
                    print("  " + results[-1].line(), flush=True)
                db.session.remove()
                db.engine.dispose()
    return results


def main() -> None:
    """Parse options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000, help="the peer measured in the same run")
    parser.add_argument("--postgres", action="store_true")
    options = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d')} · Python {platform.python_version()} · SQLite {sqlite3.sqlite_version} · "
          f"{os.cpu_count()} CPUs")
    backends = ["sqlite", "postgresql"] if options.postgres else ["sqlite"]
    with tempfile.TemporaryDirectory(prefix="webadmin-bench-") as workdir:
        for backend in backends:
            print(f"{backend}:", flush=True)
            small, large, _again = run_backend(backend, (options.small, options.lines), workdir)
            expected = options.lines / options.small
            print(
                f"  ratio {options.lines:,}/{options.small:,} lines: ×{large.total / small.total:.1f} "
                f"(linear would be ×{expected:.0f}); {options.lines:,} lines "
                f"{'meet' if large.total < TARGET_SECONDS else 'MISS'} the {TARGET_SECONDS:.0f} s target"
            )


if __name__ == "__main__":
    main()
