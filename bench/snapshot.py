"""Snapshot at a seq (issue 14, part 3): stream a mirror of N counts as NDJSON, with bounded memory.

Each measurement runs in a fresh child process so its peak RSS is its own. Printed beside each other:
- baseline: the bare loop, Python's sqlite3 reading every row of inventory_counts with fetchmany and
  discarding it (what any reader pays);
- syncd: ``syncd.store.snapshot.iter_snapshot`` writing the NDJSON snapshot to /dev/null.
Added RSS is the child's peak RSS minus the peak RSS of the same child after its imports.

Usage: ``python bench/snapshot.py [--counts 1000000]``
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import make_counts_db

ROOT = Path(__file__).resolve().parent.parent


def _child(mode: str, db: Path) -> dict[str, float]:
    from syncd.store.snapshot import iter_snapshot

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    rows = 0
    if mode == "bare":
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        cur = conn.execute("SELECT * FROM inventory_counts")
        while batch := cur.fetchmany(2000):
            rows += len(batch)
        conn.close()
    else:
        with open("/dev/null", "wb") as out:
            for chunk in iter_snapshot(db):
                rows += chunk.count(b"\n")
                out.write(chunk)
        rows -= 2  # header and end lines
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rows": rows,
        "seconds": elapsed,
        "added_rss_mb": (peak - base) / 1024,
        "rss_mb": peak / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, default=1_000_000)
    parser.add_argument("--child", choices=("bare", "syncd"))
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.db)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "syncd.db"
        make_counts_db(db, args.counts)
        print(f"snapshot of {args.counts:,} counts (fresh process each)")
        for mode in ("bare", "syncd"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--db", str(db)],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            r = json.loads(out)
            name = (
                "bare sqlite3 fetchmany (baseline)" if mode == "bare" else "syncd snapshot NDJSON"
            )
            print(
                f"  {name:36} {r['rows']:>9,} rows  {r['seconds']:6.2f} s"
                f"  {r['rows'] / r['seconds']:>10,.0f} rows/s  added RSS {r['added_rss_mb']:5.1f} MB"
                f"  (peak {r['rss_mb']:.0f} MB)"
            )


if __name__ == "__main__":
    main()
