"""The bare loop that bench/sync_throughput.py measures syncd against, as a whole process of its own.

    python bench/_bare_loop.py full|incremental URL DATABASE [OVERLAP_S]

What a hand-written mirror would do and no less: aiohttp + orjson, one chain of batch-retrieve
pages, an ``executemany`` upsert and a commit per page (WAL, synchronous=FULL), no change log. The
incremental run reads from its stored watermark (the newest calculated_at it has seen) minus
OVERLAP_S (default 120, syncd's default ``overlap``), so both tools re-read the same window. Prints
one JSON line: counts read, pages, seconds inside the loop. Imports nothing of syncd or the bench,
so its start-up is the floor such a script pays.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import orjson

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS c (obj TEXT, loc TEXT, state TEXT, type TEXT, qty TEXT, at TEXT,"
    " PRIMARY KEY (obj, loc, state)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (one INTEGER PRIMARY KEY CHECK (one = 1), watermark TEXT)",
)
UPSERT = (
    "INSERT INTO c VALUES (?,?,?,?,?,?) ON CONFLICT DO UPDATE SET qty=excluded.qty,"
    " at=excluded.at, type=excluded.type"
)


def parse(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


def updated_after(conn: sqlite3.Connection, overlap: float) -> str | None:
    row = conn.execute("SELECT watermark FROM meta").fetchone()
    if row is None or row[0] is None:
        return None
    start = parse(row[0]) - timedelta(seconds=overlap)
    return start.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def run(mode: str, url: str, path: str, overlap: float) -> dict[str, Any]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for sql in SCHEMA:
        conn.execute(sql)
    after = updated_after(conn, overlap) if mode == "incremental" else None
    newest: str | None = None
    counts = pages = 0
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        cursor = None
        while True:
            body: dict[str, Any] = {"limit": 1000}
            if after is not None:
                body["updated_after"] = after
            if cursor:
                body["cursor"] = cursor
            async with session.post(
                f"{url}/v2/inventory/counts/batch-retrieve",
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
            ) as resp:
                resp.raise_for_status()
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
            conn.executemany(UPSERT, rows)
            conn.execute("COMMIT")
            for row in rows:  # one time format upstream, so text order is time order
                if newest is None or row[5] > newest:
                    newest = row[5]
            counts += len(rows)
            pages += 1
            cursor = page.get("cursor")
            if not cursor:
                break
    if newest is not None:
        conn.execute(
            "INSERT INTO meta VALUES (1, ?) ON CONFLICT DO UPDATE SET watermark ="
            " max(watermark, excluded.watermark)",
            (newest,),
        )
    seconds = time.perf_counter() - t0
    conn.close()
    return {"counts": counts, "pages": pages, "seconds": seconds}


def main() -> None:
    mode, url, path = sys.argv[1], sys.argv[2], sys.argv[3]
    overlap = float(sys.argv[4]) if len(sys.argv) > 4 else 120.0
    if mode not in ("full", "incremental"):
        raise SystemExit(f"mode must be full or incremental, not {mode!r}")
    print(json.dumps(asyncio.run(run(mode, url, path, overlap))))


if __name__ == "__main__":
    main()
