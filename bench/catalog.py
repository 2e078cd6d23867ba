"""The catalog mirror's speed (issue 12). Prints figures, each beside a baseline measured in the
same run; not a test.

    .venv/bin/python bench/catalog.py [--variations 50000] [--counts 1000000] [--reps 3] [--quick]
                                      [--only 1,2,3,4,5]

(1) first catalog sync of --variations variations (and their items) from the simulator on
    loopback, in-process: objects/s of ``CatalogEngine.run_pass(full=True)`` (the daemon's own
    components, under the collector thresholds a syncd process runs with: ``syncd.collector``)
    beside a bare loop (default GC) that pages the same SearchCatalogObjects with aiohttp + orjson
    and executemany-upserts items and variations into sqlite3 (no change log). Target >= 20,000
    objects/s.
(2) the same as whole processes, start to exit: ``syncd sync`` (catalog, then counts) and
    ``syncd sync --no-catalog`` (counts only) on a fresh database; their difference is the
    catalog's share. Baseline: the bare loop of (1) as a whole process.
(3) a rename of 100 variations, then one incremental catalog pass in-process: from the pass's
    start to the commit of its ``catalog.updated`` entries (target < 100 ms), and the whole pass;
    beside an incremental pass with nothing changed (the pass's fixed cost) and the bare loop
    reading the same incremental chain and upserting it.
(4) the same rename against a running ``syncd run`` with the simulator's webhooks on: from the
    daemon's receipt of ``catalog.version.updated`` (``webhook_events.received_ns``) to the
    entries being visible to a reader process, at the default webhook debounce and at 0.
(5) reads on a --counts mirror (200,000 variations per location, with SKUs, items and location
    names), from a separate python process with sqlite3 opening the file read-only: ``inventory
    WHERE sku = ?`` and ``WHERE sku = ? AND location_name = ?`` (target p99 < 1 ms) beside the
    same lookups by primary key / by object on ``inventory_counts``.

Every measurement runs --reps times (each in a fresh process where it matters); the figure is the
median, with the spread. The simulator runs in a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    ROOT,
    free_port,
    make_counts_db,
    peak_rss_mb,
    run_child,
    sim_post,
    simulator,
)
from syncd import collector

HERE = Path(__file__).resolve()
SEARCH_BODY: dict[str, Any] = {
    "object_types": ["ITEM", "ITEM_VARIATION"],
    "include_deleted_objects": True,
    "limit": 1000,
}
RENAMES = 100
KEY = "bench-signature-key"
WEBHOOK_PATH = "/webhooks/square"
NOTIFICATION_URL = f"https://syncd.example.com{WEBHOOK_PATH}"


# ---- (1) the bare loop ---------------------------------------------------------------------------

_RAW_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, name TEXT, is_deleted INTEGER,"
    " version INTEGER, updated_at TEXT) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS variations (id TEXT PRIMARY KEY, item_id TEXT, name TEXT,"
    " sku TEXT, gtin TEXT, unit TEXT, track INTEGER, is_deleted INTEGER, version INTEGER,"
    " updated_at TEXT) WITHOUT ROWID",
)
_RAW_ITEM = (
    "INSERT INTO items VALUES (?,?,?,?,?) ON CONFLICT DO UPDATE SET name=excluded.name,"
    " is_deleted=excluded.is_deleted, version=excluded.version, updated_at=excluded.updated_at"
    " WHERE excluded.version >= items.version"
)
_RAW_VARIATION = (
    "INSERT INTO variations VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET"
    " item_id=excluded.item_id, name=excluded.name, sku=excluded.sku, gtin=excluded.gtin,"
    " unit=excluded.unit, track=excluded.track, is_deleted=excluded.is_deleted,"
    " version=excluded.version, updated_at=excluded.updated_at"
    " WHERE excluded.version >= variations.version"
)


def raw_connect(db: Path) -> sqlite3.Connection:
    """The bare loop's database: WAL and synchronous=FULL, like syncd's writer."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for statement in _RAW_SCHEMA:
        conn.execute(statement)
    return conn


def _raw_item(o: dict[str, Any]) -> tuple[Any, ...]:
    d = o.get("item_data") or {}
    return (o["id"], d.get("name"), o.get("is_deleted", False), o["version"], o["updated_at"])


def _raw_variation(o: dict[str, Any]) -> tuple[Any, ...]:
    d = o.get("item_variation_data") or {}
    return (
        o["id"],
        d.get("item_id"),
        d.get("name"),
        d.get("sku") or None,
        d.get("upc") or None,
        d.get("measurement_unit_id"),
        d.get("track_inventory"),
        o.get("is_deleted", False),
        o["version"],
        o["updated_at"],
    )


async def raw_chain(url: str, conn: sqlite3.Connection, begin_time: str | None) -> int:
    """Page one SearchCatalogObjects chain; upsert each page in its own transaction."""
    import aiohttp
    import orjson

    n = 0
    async with aiohttp.ClientSession() as session:
        cursor = None
        while True:
            body = dict(SEARCH_BODY)
            if begin_time is not None:
                body["begin_time"] = begin_time
            if cursor:
                body["cursor"] = cursor
            async with session.post(
                f"{url}/v2/catalog/search",
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
            ) as resp:
                page = orjson.loads(await resp.read())
            objects = page.get("objects", ())
            items = [_raw_item(o) for o in objects if o["type"] == "ITEM"]
            variations = [_raw_variation(o) for o in objects if o["type"] == "ITEM_VARIATION"]
            conn.execute("BEGIN")
            conn.executemany(_RAW_ITEM, items)
            conn.executemany(_RAW_VARIATION, variations)
            conn.execute("COMMIT")
            n += len(items) + len(variations)
            cursor = page.get("cursor")
            if not cursor:
                return n


async def raw_first(url: str, db: Path) -> dict[str, Any]:
    conn = raw_connect(db)
    clocks = _clocks()
    n = await raw_chain(url, conn, None)
    seconds, cpu, main_cpu = _elapsed(clocks)
    conn.close()
    return {
        "objects": n,
        "seconds": seconds,
        "rate": n / seconds,
        "cpu": cpu,
        "main_cpu": main_cpu,
        "rss_mb": peak_rss_mb(),
    }


def _clocks() -> tuple[float, float, float]:
    return time.perf_counter(), time.process_time(), time.thread_time()


def _elapsed(clocks: tuple[float, float, float]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds of the process (every thread) and of this thread alone."""
    wall, cpu, main = _clocks()
    return wall - clocks[0], cpu - clocks[1], main - clocks[2]


# ---- (1), (3) syncd in-process -------------------------------------------------------------------


def _settings(url: str, db: Path) -> Any:
    from syncd.config import load_settings
    from syncd.logs import configure_logging

    configure_logging("warning", "json")
    return load_settings(None, env={}, overrides={"database": str(db), "square": {"base_url": url}})


async def syncd_first(url: str, db: Path) -> dict[str, Any]:
    """One full catalog pass on a fresh database, through the daemon's components."""
    from syncd.components import open_components

    async with open_components(_settings(url, db)) as parts:
        catalog = parts.sources["square"].catalog
        assert catalog is not None
        clocks = _clocks()
        summary = await catalog.run_pass(full=True)
        seconds, cpu, main_cpu = _elapsed(clocks)
    assert summary.ok, summary.error
    return {
        "objects": summary.counts,
        "changes": summary.changes,
        "pages": summary.pages,
        "seconds": seconds,
        "rate": summary.counts / seconds,
        "cpu": cpu,
        "main_cpu": main_cpu,
        "rss_mb": peak_rss_mb(),
    }


async def syncd_renames(url: str, db: Path, raw_db: Path, reps: int) -> dict[str, Any]:
    """Per rep: rename 100 variations upstream; one incremental pass (timed to the commit of its
    entries and to its end); the bare loop over the same incremental chain; then an incremental
    pass with nothing new (the fixed cost)."""
    from syncd.components import open_components
    from syncd.store import catalog as catalog_store
    from syncd.store.catalog import CatalogResult
    from syncd.timeutil import format_ns, parse_ns

    out: dict[str, list[float]] = {"commit": [], "pass": [], "empty": [], "raw": [], "read": []}
    async with open_components(_settings(url, db)) as parts:
        catalog = parts.sources["square"].catalog
        assert catalog is not None
        store = parts.store
        committed: list[float] = []

        def timed(write: Any) -> Any:
            """``write`` noting when a unit that applied catalog changes has committed (the
            engine's units return one CatalogResult, or one per page applied)."""

            async def timed_write(work: Any) -> Any:
                result = await write(work)
                results = result if isinstance(result, list) else [result]
                if any(isinstance(r, CatalogResult) and r.changes for r in results):
                    committed.append(time.perf_counter())
                return result

            return timed_write

        store.write = timed(store.write)  # type: ignore[method-assign]
        store.write_inline = timed(store.write_inline)  # type: ignore[method-assign]
        raw = raw_connect(raw_db)
        overlap_ns = int(catalog.options.overlap * 1e9)
        for _ in range(reps):
            await asyncio.to_thread(
                sim_post,
                url,
                "/_sim/catalog/rename",
                {"n": RENAMES, "object_type": "ITEM_VARIATION"},
            )
            state = await store.read(lambda conn: catalog_store.load_state(conn, "square"))
            committed.clear()
            t0 = time.perf_counter()
            summary = await catalog.run_pass(full=False)
            t1 = time.perf_counter()
            assert summary.ok, summary.error
            assert summary.changes >= RENAMES, summary
            out["commit"].append(committed[-1] - t0)
            out["pass"].append(t1 - t0)
            out["read"].append(summary.counts)
            assert state.latest_time is not None
            begin = format_ns(parse_ns(state.latest_time) - overlap_ns)
            t0 = time.perf_counter()
            await raw_chain(url, raw, begin)
            out["raw"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            empty = await catalog.run_pass(full=False)
            out["empty"].append(time.perf_counter() - t0)
            assert empty.ok, empty.error
            assert empty.changes == 0, empty
        raw.close()
    return out


def child(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "raw":
        result = asyncio.run(raw_first(argv[1], Path(argv[2])))
    elif mode == "first":
        collector.tune()
        result = asyncio.run(syncd_first(argv[1], Path(argv[2])))
    elif mode == "renames":
        collector.tune()
        result = asyncio.run(syncd_renames(argv[1], Path(argv[2]), Path(argv[3]), int(argv[4])))
    elif mode == "reads":
        result = reads(Path(argv[1]), int(argv[2]), int(argv[3]))
    else:
        raise SystemExit(f"unknown child mode {mode!r}")
    print(json.dumps(result))


# ---- (2) whole processes -------------------------------------------------------------------------


def sync_config(tmp: Path, db: Path) -> Path:
    path = tmp / "sync.toml"
    path.write_text(f"""
database = "{db}"
[square]
access_token = "bench"
[log]
format = "json"
level = "warning"
""")
    return path


def whole(argv: list[str]) -> float:
    """Wall seconds of one process, start to exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env["PYTHONPATH"] = str(ROOT)
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


# ---- (4) the daemon and webhooks -----------------------------------------------------------------


def daemon_config(tmp: Path, upstream: str, port: int, debounce: float | None) -> Path:
    webhooks = (
        "" if debounce is None else f"[webhooks]\ndebounce = {debounce}\nmax_delay = {debounce}\n"
    )
    path = tmp / "daemon.toml"
    path.write_text(f"""
database = "{tmp / "daemon.db"}"
[square]
base_url = "{upstream}"
access_token = "bench"
notification_url = "{NOTIFICATION_URL}"
webhook_signature_keys = ["{KEY}"]
[http]
listen = "127.0.0.1:{port}"
[admin]
listen = "127.0.0.1:{free_port()}"
[log]
format = "json"
level = "warning"
{webhooks}""")
    return path


@contextmanager
def daemon(config: Path, port: int, timeout: float = 300.0) -> Iterator[None]:
    """`syncd run` until the block ends; yields once /readyz answers 200 (first passes done)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("syncd run did not become ready") from None
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def webhook_renames(url: str, db: Path, reps: int) -> dict[str, list[float]]:
    """Per rep: rename 100 variations; poll the log read-only (every ~1 ms) until their entries
    are there; seconds from the daemon's receipt of the catalog webhook, and from the rename."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    out: dict[str, list[float]] = {"receipt": [], "rename": []}
    try:
        for _ in range(reps):
            head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
            since_ns = time.time_ns()
            sim_post(url, "/_sim/catalog/rename", {"n": RENAMES, "object_type": "ITEM_VARIATION"})
            deadline = time.monotonic() + 30
            while True:
                n = conn.execute(
                    "SELECT COUNT(*) FROM changes WHERE seq > ? AND kind = 'catalog.updated'",
                    (head,),
                ).fetchone()[0]
                if n >= RENAMES:
                    visible_ns = time.time_ns()
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {n} catalog entries after 30 s")
                time.sleep(0.001)
            received = conn.execute(
                "SELECT MIN(received_ns) FROM webhook_events WHERE type = 'catalog.version.updated'"
                " AND received_ns > ?",
                (since_ns,),
            ).fetchone()[0]
            if received is None:
                raise RuntimeError("no catalog.version.updated webhook was received")
            out["receipt"].append((visible_ns - received) / 1e9)
            out["rename"].append((visible_ns - since_ns) / 1e9)
            time.sleep(0.3)  # the next rename is a new catalog version, not part of this pass
    finally:
        conn.close()
    return out


# ---- (5) reads -----------------------------------------------------------------------------------

PER_LOCATION = 200_000  # make_counts_db: ITEM0000000.. per location LOC0, LOC1, ...


def add_catalog(db: Path, counts: int) -> int:
    """Items, variations (the mirror's object ids, with SKUs), and named locations for a database
    made by ``make_counts_db``; returns the number of locations."""
    objects = min(counts, PER_LOCATION)
    locations = max(1, -(-counts // PER_LOCATION))
    at = "2026-01-02T03:04:05.123Z"
    conn = sqlite3.connect(db)
    conn.executemany(
        "INSERT INTO catalog_items (source, item_id, name, is_deleted, version, updated_at, seq)"
        " VALUES ('square', ?, ?, 0, 1, ?, 0)",
        ((f"IT{i:07d}", f"Item {i}", at) for i in range(0, objects, 2)),
    )
    conn.executemany(
        "INSERT INTO catalog_variations (source, variation_id, item_id, name, sku, gtin,"
        " measurement_unit_id, track_inventory, is_deleted, version, updated_at, seq)"
        " VALUES ('square', ?, ?, ?, ?, NULL, NULL, 1, 0, 1, ?, 0)",
        (
            (
                f"ITEM{i:07d}",
                f"IT{i - i % 2:07d}",
                "Regular" if i % 2 else "Large",
                f"SKU-{i:07d}",
                at,
            )
            for i in range(objects)
        ),
    )
    conn.executemany(
        "INSERT INTO locations (source, location_id, name, status, timezone, seq)"
        " VALUES ('square', ?, ?, 'ACTIVE', 'America/New_York', 0)",
        ((f"LOC{n}", f"Store {n + 1}") for n in range(locations)),
    )
    conn.commit()
    conn.close()
    return locations


QUERIES: dict[str, tuple[str, Callable[[random.Random, int, int], tuple[str, ...]]]] = {
    "inventory WHERE sku = ?": (
        "SELECT catalog_object_id, location_name, state, quantity, item_name, variation_name"
        " FROM inventory WHERE sku = ?",
        lambda rng, objs, locs: (f"SKU-{rng.randrange(objs):07d}",),
    ),
    "inventory_counts by object (base)": (
        "SELECT catalog_object_id, location_id, state, quantity FROM inventory_counts"
        " WHERE source = 'square' AND catalog_object_id = ?",
        lambda rng, objs, locs: (f"ITEM{rng.randrange(objs):07d}",),
    ),
    "inventory WHERE sku AND location_name": (
        "SELECT catalog_object_id, location_name, state, quantity, item_name, variation_name"
        " FROM inventory WHERE sku = ? AND location_name = ?",
        lambda rng, objs, locs: (
            f"SKU-{rng.randrange(objs):07d}",
            f"Store {rng.randrange(locs) + 1}",
        ),
    ),
    "inventory_counts by primary key (base)": (
        "SELECT catalog_object_id, location_id, state, quantity FROM inventory_counts"
        " WHERE source = 'square' AND location_id = ? AND catalog_object_id = ?"
        " AND state = 'IN_STOCK'",
        lambda rng, objs, locs: (f"LOC{rng.randrange(locs)}", f"ITEM{rng.randrange(objs):07d}"),
    ),
}


def reads(db: Path, objects: int, locations: int, n: int = 5000, warm: int = 500) -> dict[str, Any]:
    """In a process of its own: each query ``warm + n`` times with random keys (seed 0), each
    timed alone (execute + fetchall); p50, p99 and max of the last ``n`` in microseconds, of wall
    time and of this thread's CPU time (which a busy machine's scheduler does not inflate)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    rng = random.Random(0)
    out: dict[str, Any] = {}
    for label, (sql, params) in QUERIES.items():
        walls: list[int] = []
        cpus: list[int] = []
        rows = 0
        for i in range(warm + n):
            args = params(rng, objects, locations)
            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
            found = conn.execute(sql, args).fetchall()
            wall, cpu = time.perf_counter_ns() - t0, time.thread_time_ns() - c0
            if i >= warm:
                walls.append(wall)
                cpus.append(cpu)
                rows += len(found)
        out[label] = {**_percentiles(walls, ""), **_percentiles(cpus, "cpu_"), "rows": rows / n}
    plan = conn.execute("EXPLAIN QUERY PLAN " + QUERIES["inventory WHERE sku = ?"][0], ("x",))
    out["plan"] = "; ".join(row[3] for row in plan)
    conn.close()
    return out


def _percentiles(ns: list[int], prefix: str) -> dict[str, float]:
    ordered = sorted(ns)
    return {
        f"{prefix}p50_us": ordered[len(ordered) // 2] / 1000,
        f"{prefix}p99_us": ordered[int(len(ordered) * 0.99)] / 1000,
        f"{prefix}max_us": ordered[-1] / 1000,
    }


# ---- the run -------------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], scale: float = 1.0, fmt: str = ".0f") -> str:
    return "/".join(f"{v * scale:{fmt}}" for v in values)


def warm_catalog(url: str) -> None:
    """Build the simulator's item library (on first use) before anything is timed."""
    body = {**SEARCH_BODY, "limit": 1}
    sim_post(url, "/v2/catalog/search", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variations", type=int, default=50_000)
    parser.add_argument("--counts", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,000 variations, 20,000 counts")
    parser.add_argument(
        "--only", default="1,2,3,4,5", help="the figures to measure, e.g. 1,3 (default: all)"
    )
    args = parser.parse_args()
    only = {int(part) for part in args.only.split(",")}
    if args.quick:
        args.variations, args.counts = 2_000, 20_000
    reps = args.reps
    load = os.getloadavg()
    print(
        f"# catalog bench: {args.variations:,} variations, {args.counts:,}-count mirror,"
        f" {reps} reps (median, then each rep); {os.cpu_count()} CPUs,"
        f" load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="syncd-catbench-") as tmp_name:
        measure(Path(tmp_name), args, only)
    load = os.getloadavg()
    print(f"\n# load at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def measure(tmp: Path, args: argparse.Namespace, only: set[int]) -> None:
    """The figures asked for (``only``), in order; databases under ``tmp``."""
    reps = args.reps
    py = sys.executable
    if only & {1, 2, 3}:
        with simulator(locations=1, items=args.variations, timeout=300) as url:
            warm_catalog(url)
            if only & {1, 3}:
                first_sync(url, tmp, reps)
            if 2 in only:
                whole_process(url, tmp, reps, py)
            if 3 in only:
                renames(url, tmp, reps)
    if 4 in only:
        webhook(tmp, args.variations, reps)
    if 5 in only:
        read_figures(tmp, args.counts, reps)


def first_sync(url: str, tmp: Path, reps: int) -> None:
    raws, firsts = [], []
    for i in range(reps):
        raws.append(run_child(HERE, "raw", url, str(tmp / f"raw{i}.db")))
        firsts.append(run_child(HERE, "first", url, str(tmp / f"first{i}.db")))
    raw_rate = med([r["rate"] for r in raws])
    rate = med([r["rate"] for r in firsts])
    f = firsts[0]
    print(
        f"\n(1) first catalog sync, in-process: {f['objects']:,} objects (items + variations),"
        f" {f['pages']} pages; syncd wrote {f['changes']:,} entries"
    )
    print(
        f"{'':<44} {'objects/s':>9} {'wall s':>7} {'CPU s':>6} {'main s':>6} {'RSS MB':>6}"
        "   objects/s reps"
    )
    for label, runs, figure in (
        ("bare aiohttp + orjson + sqlite3 executemany", raws, raw_rate),
        ("syncd CatalogEngine full pass", firsts, rate),
    ):
        print(
            f"{label:<44} {figure:>9,.0f} {med([r['seconds'] for r in runs]):>7.2f}"
            f" {med([r['cpu'] for r in runs]):>6.2f} {med([r['main_cpu'] for r in runs]):>6.2f}"
            f" {max(r['rss_mb'] for r in runs):>6.0f}   {spread([r['rate'] for r in runs])}"
        )
    print(
        f"  ratio {rate / raw_rate:.2f}x; target >= 20,000 objects/s. CPU s: every thread of the"
        " process; main s: the event loop's thread alone (SQLite runs in aiosqlite's thread)"
    )


def whole_process(url: str, tmp: Path, reps: int, py: str) -> None:
    both, counts_only, raw = [], [], []
    for i in range(reps):
        for name, flags, into in (("both", [], both), ("counts", ["--no-catalog"], counts_only)):
            db = tmp / f"whole-{name}{i}.db"
            config = sync_config(tmp, db)
            argv = [py, "-m", "syncd", "sync", "--config", str(config), "--base-url", url, *flags]
            into.append(whole(argv))
        raw.append(whole([py, str(HERE), "--child", "raw", url, str(tmp / f"whole-raw{i}.db")]))
    catalog_share = [b - c for b, c in zip(both, counts_only, strict=True)]
    objects = _objects(url)
    print("\n(2) whole process, start to exit (fresh database each)")
    print(
        f"bare loop of (1) as a process:   {med(raw):6.2f} s  ({objects / med(raw):,.0f} objects/s;"
        f" reps {spread(raw, 1, '.2f')})"
    )
    print(f"syncd sync (catalog + counts):   {med(both):6.2f} s  (reps {spread(both, 1, '.2f')})")
    print(
        f"syncd sync --no-catalog:         {med(counts_only):6.2f} s"
        f"  (reps {spread(counts_only, 1, '.2f')})"
    )
    share = med(catalog_share)
    print(
        f"  the catalog's share:           {share:6.2f} s  ({objects / share:,.0f} objects/s;"
        f" reps {spread(catalog_share, 1, '.2f')})"
    )


def _objects(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as resp:  # noqa: S310
        stats = json.loads(resp.read())["catalog"]
    return int(stats["items"]) + int(stats["variations"])


def renames(url: str, tmp: Path, reps: int) -> None:
    out = run_child(HERE, "renames", url, str(tmp / "first0.db"), str(tmp / "raw0.db"), str(reps))
    print(f"\n(3) rename of {RENAMES} variations, one incremental catalog pass, in-process")
    rows = (
        ("syncd: pass start -> entries committed", out["commit"], "target < 100 ms"),
        ("syncd: the whole pass", out["pass"], ""),
        ("syncd: a pass with nothing changed (base)", out["empty"], ""),
        ("bare loop: same chain, upserted (base)", out["raw"], ""),
    )
    for label, values, target in rows:
        print(f"{label:<44} {med(values) * 1000:7.1f} ms  (reps {spread(values, 1000)})  {target}")
    print(
        f"  objects read per pass (the {RENAMES} renamed, plus earlier renames still inside the"
        f" 60 s overlap): {spread(out['read'])}"
    )


def webhook(tmp: Path, variations: int, reps: int) -> None:
    print(f"\n(4) rename of {RENAMES} variations with `syncd run` and the simulator's webhooks")
    for debounce in (None, 0.0):
        run_dir = tmp / f"daemon-{debounce}"
        run_dir.mkdir()
        with simulator(locations=1, items=variations, timeout=300) as url:
            port = free_port()
            config = daemon_config(run_dir, url, port, debounce)
            with daemon(config, port):
                sim_post(
                    url,
                    "/_sim/webhooks",
                    {
                        "url": f"http://127.0.0.1:{port}{WEBHOOK_PATH}",
                        "signature_key": KEY,
                        "notification_url": NOTIFICATION_URL,
                    },
                )
                out = webhook_renames(url, run_dir / "daemon.db", reps)
        label = "default (0.1 s, max_delay 0.5 s)" if debounce is None else f"{debounce:g} s"
        print(
            f"debounce {label:<32} webhook receipt -> entries visible {med(out['receipt']) * 1000:6.1f}"
            f" ms (reps {spread(out['receipt'], 1000)}); rename call -> visible"
            f" {med(out['rename']) * 1000:6.1f} ms"
        )


def read_figures(tmp: Path, counts: int, reps: int) -> None:
    db = tmp / "reads.db"
    t0 = time.perf_counter()
    make_counts_db(db, counts)
    locations = add_catalog(db, counts)
    objects = min(counts, PER_LOCATION)
    print(
        f"\n(5) reads from another process (sqlite3, read-only) on {counts:,} counts,"
        f" {objects:,} variations x {locations} locations (built in {time.perf_counter() - t0:.1f} s)"
    )
    runs = [run_child(HERE, "reads", str(db), str(objects), str(locations)) for _ in range(reps)]
    print(
        f"{'query':<40} {'p50 us':>7} {'p99 us':>7} {'max us':>8}   {'CPU p50':>7} {'CPU p99':>7}"
        f" {'rows':>4}   p99 reps"
    )
    for label in QUERIES:
        figures = [r[label] for r in runs]
        p99s = [f["p99_us"] for f in figures]

        def m(key: str, figures: list[dict[str, float]] = figures) -> float:
            return med([f[key] for f in figures])

        target = "  target p99 < 1,000 us" if label.startswith("inventory WHERE") else ""
        print(
            f"{label:<40} {m('p50_us'):>7.1f} {m('p99_us'):>7.1f} {m('max_us'):>8.0f}"
            f"   {m('cpu_p50_us'):>7.1f} {m('cpu_p99_us'):>7.1f} {figures[0]['rows']:>4.0f}"
            f"   {spread(p99s, 1, '.0f')}{target}"
        )
    print(
        "  p50/p99/max: wall time per query (a busy machine's scheduler adds its time slices);"
        " CPU: the reader thread's own"
    )
    print(f"  plan of the SKU lookup: {runs[0]['plan']}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
