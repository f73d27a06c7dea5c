"""PostgreSQL: materialise 1M messages under the old and the new messages schema, interleaved in one process.

Run: .venv/bin/python bench/materialize_schemas.py [--size 1000000] [--runs 3] [--quick] [--postgres-url URL]
Schemas (the same code, `campaigns.start()` of an all-devices campaign into an empty table; the table is altered
between runs):
- fk-int: foreign keys on messages.campaign_id / device_id, 32-bit id (the schema before 5970d2d12ebe) — the peer;
- fk-bigint: foreign keys, 64-bit id (what the id change alone costs);
- triggers-int: the parents' triggers instead of the foreign keys, 32-bit id;
- triggers-bigint: the schema now (38f3b8215035).
Round-robin so load drift on a shared machine hits every schema alike; medians and ratios against fk-int.
Its own database (webadmin_bench_materialize_schemas), created and dropped here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine_materialize import (  # noqa: E402
    POSTGRES_SERVER,
    bench_app,
    bench_database,
    build_audience,
    postgres_up,
    reset_messages,
    started_campaign,
)
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from webadmin.extensions import db  # noqa: E402
from webadmin.models.message import PARENT_TRIGGERS_DDL, PARENT_TRIGGERS_DROP  # noqa: E402

REQUIRES = ("postgresql",)
DATABASE = "webadmin_bench_materialize_schemas"
SCHEMAS = ("fk-int", "fk-bigint", "triggers-int", "triggers-bigint")
FOREIGN_KEYS = (
    "ALTER TABLE messages ADD CONSTRAINT fk_messages_campaign_id_campaigns FOREIGN KEY (campaign_id) "
    "REFERENCES campaigns (id) ON DELETE CASCADE",
    "ALTER TABLE messages ADD CONSTRAINT fk_messages_device_id_devices FOREIGN KEY (device_id) "
    "REFERENCES devices (id) ON DELETE SET NULL",
)


def use_schema(name: str) -> None:
    """Alter the (empty) messages table to the schema `name`."""
    statements = [
        "ALTER TABLE messages DROP CONSTRAINT IF EXISTS fk_messages_campaign_id_campaigns",
        "ALTER TABLE messages DROP CONSTRAINT IF EXISTS fk_messages_device_id_devices",
        *PARENT_TRIGGERS_DROP["postgresql"],
    ]
    id_type = name.split("-")[1]
    statements += [f"ALTER TABLE message_related_objects ALTER COLUMN message_id TYPE {id_type}",
                   f"ALTER TABLE messages ALTER COLUMN id TYPE {id_type}"]
    statements += FOREIGN_KEYS if name.startswith("fk") else PARENT_TRIGGERS_DDL["postgresql"]
    for statement in statements:
        db.session.execute(text(statement))
    db.session.commit()


def main() -> None:
    """Build the audience once, then each schema in turn, `runs` rounds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 messages, one round (a smoke test)")
    parser.add_argument("--postgres-url", default=POSTGRES_SERVER)
    parser.add_argument("--schemas", default=",".join(SCHEMAS), help="comma-separated subset (fk-int always runs)")
    args = parser.parse_args()
    schemas = ["fk-int", *(n for n in args.schemas.split(",") if n in SCHEMAS and n != "fk-int")]
    if args.quick:
        args.size, args.runs = 20_000, 1
    if not postgres_up(args.postgres_url):
        print(f"[postgresql] skipped: no server at {make_url(args.postgres_url).host}")
        return
    seconds: dict[str, list[float]] = {name: [] for name in schemas}
    loads: list[float] = []
    with bench_database("postgresql", args.postgres_url, DATABASE) as (url, folder):
        app = bench_app(url, folder)
        with app.app_context():
            app_id = build_audience(args.size)
            for round_ in range(args.runs):
                for name in schemas:
                    reset_messages()
                    use_schema(name)
                    db.session.execute(text("CHECKPOINT"))  # every run starts without the last one's dirty pages
                    db.session.commit()
                    _, targeted, took = started_campaign(app_id)
                    assert targeted == args.size, (targeted, args.size)
                    seconds[name].append(took)
                    loads.append(os.getloadavg()[0])
                    print(f"round {round_ + 1} {name}: {took:.2f} s (load {loads[-1]:.1f})", flush=True)
            db.session.remove()
            db.engine.dispose()
    peer = statistics.median(seconds["fk-int"])
    print(f"materialise {args.size:,} messages on PostgreSQL, load average {min(loads):.1f}–{max(loads):.1f}:")
    for name in schemas:
        median = statistics.median(seconds[name])
        runs = "/".join(f"{s:.2f}" for s in seconds[name])
        print(f"  {name:16} median {median:6.2f} s ({runs}) = {args.size / median:9,.0f} rows/s; "
              f"{median / peer:.2f}x of fk-int")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s in all)")
