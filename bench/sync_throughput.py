"""Sync throughput against the simulator on loopback. Prints figures; not a test.

    .venv/bin/python bench/sync_throughput.py [--counts 200000] [--big 1000000]

(1) raw limit: a minimal aiohttp + sqlite3 executemany loop over the same pages (no change log);
(2) syncd full sync of N counts (change log included) -> counts/s, ratio to (1), peak RSS;
(3) an incremental pass after 1,000 upstream changes into the N-row mirror (duration inside the engine);
(4) full sync with 100 ms latency per page over 10 locations: sequential vs partitioned;
(5) optional: peak RSS of a full sync of --big counts.
Each measurement runs in its own process; the simulator runs in another, so RSS is syncd's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import peak_rss_mb, run_child, sim_post, simulator

HERE = Path(__file__).resolve()


async def raw_limit(url: str, db: Path) -> dict[str, Any]:
    """The floor-level loop: fetch pages, executemany an upsert, commit per page."""
    import aiohttp
    import orjson

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE c (obj TEXT, loc TEXT, state TEXT, type TEXT, qty TEXT, at TEXT,"
        " PRIMARY KEY (obj, loc, state)) WITHOUT ROWID"
    )
    sql = (
        "INSERT INTO c VALUES (?,?,?,?,?,?) ON CONFLICT DO UPDATE SET qty=excluded.qty,"
        " at=excluded.at, type=excluded.type"
    )
    n = 0
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        cursor = None
        while True:
            body: dict[str, Any] = {"limit": 1000}
            if cursor:
                body["cursor"] = cursor
            async with session.post(
                f"{url}/v2/inventory/counts/batch-retrieve",
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
            ) as resp:
                page = orjson.loads(await resp.read())
            rows = [
                (
                    c["catalog_object_id"],
                    c["location_id"],
                    c["state"],
                    c.get("catalog_object_type"),
                    c["quantity"],
                    c["calculated_at"],
                )
                for c in page.get("counts", [])
            ]
            conn.execute("BEGIN")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
            n += len(rows)
            cursor = page.get("cursor")
            if not cursor:
                break
    seconds = time.perf_counter() - t0
    conn.close()
    return {"counts": n, "seconds": seconds, "rate": n / seconds, "rss_mb": peak_rss_mb()}


async def syncd_pass(
    url: str, db: Path, *, full: bool, concurrency: int, locations: list[str]
) -> dict[str, Any]:
    """One syncd pass, through the same components the daemon uses."""
    from syncd.config import load_settings
    from syncd.daemon import open_components
    from syncd.logs import configure_logging

    configure_logging("warning", "json")
    settings = load_settings(
        None,
        env={},
        overrides={
            "database": str(db),
            "square": {
                "base_url": url,
                "location_ids": locations,
                "partition_concurrency": concurrency,
                "overlap": 5,
                "clock_margin": 0,
            },
        },
    )
    async with open_components(settings) as parts:
        t0 = time.perf_counter()
        summary = await parts.engine.run_pass(full=full)
        seconds = time.perf_counter() - t0
    assert summary.ok, summary.error
    return {
        "counts": summary.counts,
        "changes": summary.changes,
        "pages": summary.pages,
        "seconds": seconds,
        "rate": summary.counts / seconds,
        "rss_mb": peak_rss_mb(),
    }


def child(argv: list[str]) -> None:
    mode, url, db = argv[0], argv[1], Path(argv[2])
    if mode == "raw":
        result = asyncio.run(raw_limit(url, db))
    else:
        concurrency = int(argv[3])
        locations = json.loads(argv[4])
        result = asyncio.run(
            syncd_pass(url, db, full=mode == "full", concurrency=concurrency, locations=locations)
        )
    print(json.dumps(result))


def location_ids(url: str) -> list[str]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as resp:  # noqa: S310
        stats = json.loads(resp.read())
    return list(stats["locations"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, default=200_000)
    parser.add_argument("--big", type=int, default=0, help="also measure RSS at this many counts")
    parser.add_argument("--latency-counts", type=int, default=50_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    locs = 10
    print(f"# sync throughput, {args.counts} counts over {locs} locations, loopback simulator")
    with simulator(locations=locs, items=args.counts // locs) as url:
        raw = run_child(HERE, "raw", url, str(tmp / "raw.db"))
        print(
            f"raw limit (aiohttp + sqlite3 executemany): {raw['rate']:,.0f} counts/s"
            f"  ({raw['counts']} in {raw['seconds']:.2f}s, peak RSS {raw['rss_mb']:.0f} MB)"
        )
        full = run_child(HERE, "full", url, str(tmp / "syncd.db"), "1", "[]")
        print(
            f"syncd full sync:                          {full['rate']:,.0f} counts/s"
            f"  ({full['counts']} in {full['seconds']:.2f}s, {full['changes']} changes,"
            f" peak RSS {full['rss_mb']:.0f} MB)  ratio {full['rate'] / raw['rate']:.2f}x"
        )
        sim_post(url, "/_sim/mutate", {"n": 1000})
        inc = run_child(HERE, "incremental", url, str(tmp / "syncd.db"), "1", "[]")
        print(
            f"incremental pass after 1,000 changes:     {inc['seconds'] * 1000:.1f} ms"
            f"  ({inc['changes']} changes, {inc['pages']} pages)"
        )
    n = args.latency_counts
    print(f"# {n} counts, 10 locations, 100 ms latency per page")
    with simulator(locations=10, items=n // 10, page_delay=0.1) as url:
        ids = location_ids(url)
        seq = run_child(HERE, "full", url, str(tmp / "seq.db"), "1", json.dumps(ids))
        par = run_child(HERE, "full", url, str(tmp / "par.db"), "10", json.dumps(ids))
        print(
            f"sequential (1 chain at a time): {seq['seconds']:.2f}s ({seq['rate']:,.0f} counts/s)"
        )
        print(
            f"partitioned (10 chains):        {par['seconds']:.2f}s ({par['rate']:,.0f} counts/s)"
            f"  speed-up {seq['seconds'] / par['seconds']:.1f}x"
        )
    if args.big:
        with simulator(locations=locs, items=args.big // locs, timeout=600) as url:
            big = run_child(HERE, "full", url, str(tmp / "big.db"), "1", "[]")
            print(
                f"full sync of {big['counts']}: {big['rate']:,.0f} counts/s,"
                f" peak RSS {big['rss_mb']:.0f} MB"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
