"""CPU of one idle incremental pass, in-process (issue 11's idle CPU). Prints figures; not a test.

    .venv/bin/python bench/idle_pass.py [--passes 200] [--locations 4] [--profile]

The simulator runs in its own process, so its CPU is not counted. A source with ``--locations``
partitions (discovered, as by default) has one synced baseline. Then ``--passes`` incremental
passes run back to back with nothing changed upstream, and the process CPU per pass is printed.
Each of those passes re-reads the overlap (one row per partition; the partitions share one chain,
so one request). Beside it, in the same run, is a bare loop doing the least an idle pass must do:
one aiohttp POST for every location to the same upstream and one sqlite3 INSERT + COMMIT
(synchronous=FULL, WAL). 200 sources polling every 60 s make 3.3
passes/s, so 1 % of a core is 3 ms per pass. ``--profile`` prints the top of a cProfile of the
syncd passes, timed in main-thread CPU (``time.thread_time``): waiting in epoll is not counted, and
neither is the SQLite connection's thread, which the printed per-pass figure (process CPU) includes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import pstats
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import simulator
from syncd.config import load_settings
from syncd.source_parts import open_source
from syncd.store import Store


async def syncd_passes(
    url: str, tmp: Path, passes: int, profile: bool, sort: str = "tottime"
) -> float:
    """CPU ms per idle incremental pass of syncd's engine."""
    settings = load_settings(
        None,
        env={},
        overrides={
            "database": str(tmp / "syncd.db"),
            "sources": {"s": {"base_url": url, "access_token": "bench", "catalog_sync": False}},
        },
    )
    store = await Store.open(settings.database)
    parts = open_source(store, "s", settings.sources["s"])
    try:
        await parts.engine.run_pass()  # full: the baseline
        await parts.engine.run_pass()  # warm
        prof = cProfile.Profile(time.thread_time) if profile else None
        t0 = time.process_time()
        if prof is not None:
            prof.enable()
        for _ in range(passes):
            await parts.engine.run_pass(full=False)
        if prof is not None:
            prof.disable()
        cpu = (time.process_time() - t0) / passes * 1000
    finally:
        await parts.aclose()
        await store.aclose()
    if prof is not None:
        pstats.Stats(prof).sort_stats(sort).print_stats(25)
    return cpu


async def catalog_passes(url: str, tmp: Path, passes: int) -> float:
    """CPU ms per idle incremental catalog pass (locations + catalog search, nothing changed)."""
    settings = load_settings(
        None,
        env={},
        overrides={
            "database": str(tmp / "catalog.db"),
            "sources": {"c": {"base_url": url, "access_token": "bench"}},
        },
    )
    store = await Store.open(settings.database)
    parts = open_source(store, "c", settings.sources["c"])
    assert parts.catalog is not None
    try:
        await parts.catalog.run_pass()  # full: the baseline
        await parts.catalog.run_pass(full=False)  # warm
        t0 = time.process_time()
        for _ in range(passes):
            await parts.catalog.run_pass(full=False)
        cpu = (time.process_time() - t0) / passes * 1000
    finally:
        await parts.aclose()
        await store.aclose()
    return cpu


async def bare_passes(url: str, tmp: Path, passes: int, locations: list[str]) -> float:
    """CPU ms per pass of the bare loop: one POST for every location, one durable INSERT."""
    conn = sqlite3.connect(tmp / "bare.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE passes (id INTEGER PRIMARY KEY, at TEXT)")
    endpoint = f"{url}/v2/inventory/counts/batch-retrieve"
    async with aiohttp.ClientSession() as session:
        t0 = time.process_time()
        for _ in range(passes):
            body = {"location_ids": locations, "updated_after": "2099-01-01T00:00:00Z"}
            async with session.post(endpoint, json=body) as resp:
                await resp.read()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO passes (at) VALUES (datetime('now'))")
            conn.execute("COMMIT")
        cpu = (time.process_time() - t0) / passes * 1000
    conn.close()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=200)
    parser.add_argument("--locations", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--profile-sort", default="tottime", help="pstats order: tottime, cumulative"
    )
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp, simulator(locations=args.locations, items=20) as url:
        ours = asyncio.run(
            syncd_passes(url, Path(tmp), args.passes, args.profile, args.profile_sort)
        )
        catalog = asyncio.run(catalog_passes(url, Path(tmp), args.passes))
        ids = [f"LOC{i}" for i in range(args.locations)]
        bare = asyncio.run(bare_passes(url, Path(tmp), args.passes, ids))
    print(
        f"idle incremental pass, {args.locations} partitions, {args.passes} passes, CPU per pass:"
    )
    print(f"  syncd engine                      {ours:6.2f} ms")
    print(f"  bare: one POST + INSERT          {bare:6.2f} ms   ratio {ours / bare:.1f}x")
    print(f"  syncd catalog pass (every 300 s)  {catalog:6.2f} ms")
    share = ours * 200 / 60 / 10
    with_catalog = share + catalog * 200 / 300 / 10
    print(f"  at 200 sources every 60 s: {share:.2f} % of a core; with their catalog passes every")
    print(f"  300 s: {with_catalog:.2f} % (target < 1 %)")


if __name__ == "__main__":
    main()
