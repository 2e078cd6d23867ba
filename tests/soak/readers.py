"""Readers under load: read-only processes query the mirror and follow the change log while a large
sync writes.

The driver starts `syncd simulate` (its own process) with ``counts`` counts over 10 locations,
`syncd run` against it, and ``readers`` reader processes (``python -m tests.soak.readers --reader``),
each opening the database the way docs/schema.md tells other tools to (``mode=ro``, a busy
timeout). Each reader loops, and in every iteration, inside one read transaction (one snapshot):

- follows the change log: every entry after the last one it saw, which must continue the seq
  without a gap (a gap would mean it saw a later commit before an earlier one);
- counts the mirror's rows, which must equal the first-sight ``count.updated`` entries minus the
  ``count.removed`` entries it has followed so far: a page's rows and its entries appear together
  (no torn page);
- looks up one location's first rows (what a tool does);

and every ``--orphan-every`` iterations checks that every mirror row's ``seq`` names an existing
entry. Any ``sqlite3`` error (e.g. "database is locked") is a violation. Latencies are reported per
kind as p50/p99/max. Meanwhile the daemon runs its first (full) pass, then incremental passes after
``counts // 10`` upstream changes; then the readers stop, the daemon gets SIGTERM, and the end state
is checked (mirror == upstream, the committed-state invariants).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import socket
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from tests.process_kit import ROOT, clean_env, syncd
from tests.soak.invariants import Checker
from tests.soak.report import ScenarioResult

LOCATIONS = 10


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# --- the reader process ----------------------------------------------------------------------------


def reader(db: Path, stop: Path, out: Path, *, orphan_every: int, seed: int) -> None:
    """One reader process's loop; writes its findings to ``out`` as JSON when ``stop`` appears."""
    rng = random.Random(seed)
    conn = sqlite3.connect(
        f"{db.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=5.0
    )  # the busy timeout docs/schema.md asks readers to set
    latency: dict[str, list[float]] = {
        "snapshot": [],
        "follow": [],
        "count": [],
        "lookup": [],
        "orphans": [],
    }
    errors: list[str] = []
    violations: list[str] = []
    after, first_sights, removed, iterations, entries, checks = 0, 0, 0, 0, 0, 0
    locations: list[str] = []
    while not stop.exists():
        iterations += 1
        try:
            t0 = time.perf_counter()
            conn.execute("BEGIN")
            t = time.perf_counter()
            rows = conn.execute(
                "SELECT seq, kind, old IS NULL FROM changes WHERE seq > ? ORDER BY seq", (after,)
            ).fetchall()
            latency["follow"].append(time.perf_counter() - t)
            for seq, kind, first in rows:
                checks += 1
                if seq != after + 1 and after:
                    violations.append(f"gap in the change log: {after} -> {seq}")
                after = seq
                first_sights += kind == "count.updated" and bool(first)
                removed += kind == "count.removed"
            entries += len(rows)
            t = time.perf_counter()
            mirrored = conn.execute("SELECT COUNT(*) FROM inventory_counts").fetchone()[0]
            latency["count"].append(time.perf_counter() - t)
            checks += 1
            if mirrored != first_sights - removed:
                violations.append(
                    f"torn read at seq {after}: {mirrored} mirror rows but"
                    f" {first_sights} first sights - {removed} removals"
                )
            if not locations:
                locations = [
                    r[0]
                    for r in conn.execute(
                        "SELECT DISTINCT location_id FROM inventory_counts LIMIT 20"
                    )
                ]
            if locations:
                t = time.perf_counter()
                conn.execute(
                    "SELECT catalog_object_id, quantity FROM inventory_counts"
                    " WHERE source = 'square' AND location_id = ? LIMIT 50",
                    (rng.choice(locations),),
                ).fetchall()
                latency["lookup"].append(time.perf_counter() - t)
            scan = 0.0  # the occasional orphan scan is timed on its own, not as a snapshot
            if orphan_every and iterations % orphan_every == 0:
                t = time.perf_counter()
                orphans = conn.execute(
                    "SELECT COUNT(*) FROM inventory_counts AS m"
                    " WHERE NOT EXISTS (SELECT 1 FROM changes AS c WHERE c.seq = m.seq)"
                ).fetchone()[0]
                scan = time.perf_counter() - t
                latency["orphans"].append(scan)
                checks += 1
                if orphans:
                    violations.append(f"{orphans} mirror rows whose seq has no entry (seq {after})")
            conn.execute("COMMIT")
            latency["snapshot"].append(time.perf_counter() - t0 - scan)
        except sqlite3.Error as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            time.sleep(0.01)
        time.sleep(0.002)
    conn.close()
    out.write_bytes(
        orjson.dumps(
            {
                "iterations": iterations,
                "entries": entries,
                "checks": checks,
                "errors": errors[:20],
                "error_count": len(errors),
                "violations": violations[:20],
                "violation_count": len(violations),
                "after": after,
                "latency_ms": {
                    k: {
                        "n": len(v),
                        "p50": 1000 * percentile(v, 0.5),
                        "p99": 1000 * percentile(v, 0.99),
                        "max": 1000 * max(v, default=0.0),
                    }
                    for k, v in latency.items()
                },
            }
        )
    )


# --- the driver ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=300) as resp:  # noqa: S310 - loopback, our own URL
        return orjson.loads(resp.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    headers = {"Content-Type": "application/json"}
    req = urllib.request.Request(url, data=orjson.dumps(body), method="POST", headers=headers)  # noqa: S310
    with urllib.request.urlopen(req, timeout=300) as resp:  # noqa: S310
        return orjson.loads(resp.read())


async def _start_simulator(counts: int, seed: int) -> tuple[asyncio.subprocess.Process, str]:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        "simulate",
        "--port",
        str(port),
        "--locations",
        str(LOCATIONS),
        "--items",
        str(max(1, counts // LOCATIONS)),
        "--seed",
        str(seed),
        "--log-level",
        "warning",
        cwd=ROOT,
        env=clean_env(),
        stdout=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    async with asyncio.timeout(300):
        while True:
            try:
                await asyncio.to_thread(_get, f"{url}/_sim/stats")
                return proc, url
            except OSError:
                if proc.returncode is not None:
                    raise RuntimeError("the simulator did not start") from None
                await asyncio.sleep(0.1)


def write_config(path: Path, *, database: Path, upstream: str, location_ids: list[str]) -> Path:
    locations = ", ".join(f'"{loc}"' for loc in location_ids)
    path.write_text(
        f"""
database = "{database}"
shutdown_timeout = 10

[square]
base_url = "{upstream}"
access_token = "test-token"
location_ids = [{locations}]
page_limit = 1000
partition_concurrency = 4
poll_interval = 1
overlap = 1
clock_margin = 0

[http]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[log]
format = "json"
level = "info"
""",
        encoding="utf-8",
    )
    return path


async def run_readers(
    *,
    counts: int,
    readers: int,
    workdir: Path,
    seed: int,
    orphan_every: int = 50,
    sync_timeout: float = 600.0,
) -> ScenarioResult:
    """Run the scenario; the row's notes carry the latency figures."""
    started = time.monotonic()
    db = workdir / "syncd.db"
    stop = workdir / "readers.stop"
    checker = Checker(db)
    sim_proc, sim_url = await _start_simulator(counts, seed)
    reader_procs: list[asyncio.subprocess.Process] = []
    results: list[dict[str, Any]] = []
    try:
        stats = await asyncio.to_thread(_get, f"{sim_url}/_sim/stats")
        config = write_config(
            workdir / "syncd.toml",
            database=db,
            upstream=sim_url,
            location_ids=list(stats["locations"]),
        )
        async with syncd("run", "--config", str(config), env=clean_env()) as daemon:
            await daemon.event("daemon_started")
            for i in range(readers):
                reader_procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "tests.soak.readers",
                        "--reader",
                        "--db",
                        str(db),
                        "--stop",
                        str(stop),
                        "--out",
                        str(workdir / f"reader-{i}.json"),
                        "--orphan-every",
                        str(orphan_every),
                        "--seed",
                        str(seed + i),
                        cwd=ROOT,
                        env=clean_env(),
                    )
                )
            full = await daemon.wait_for(
                lambda e: e.get("event") == "sync_pass" and e.get("outcome") == "ok",
                timeout=sync_timeout,
            )
            await asyncio.to_thread(_post, f"{sim_url}/_sim/mutate", {"n": max(1, counts // 10)})
            # The first pass to end from here may have started before the change; the second
            # started after the first ended, so after the change.
            mark = len(daemon.events)
            incremental: list[dict[str, Any]] = []
            for _ in range(2):
                incremental.append(
                    await daemon.wait_for(
                        lambda e: e.get("event") == "sync_pass" and e.get("outcome") == "ok",
                        after=mark,
                        timeout=sync_timeout,
                    )
                )
                mark = daemon.events.index(incremental[-1]) + 1
            stop.touch()
            for proc in reader_procs:
                async with asyncio.timeout(120):
                    checker.check(await proc.wait() == 0, f"reader exited {proc.returncode}")
            checker.check(daemon.proc.returncode is None, "syncd exited on its own")
            daemon.signal(signal.SIGTERM)
            checker.check(await daemon.wait(30) == 0, "syncd did not exit 0 after SIGTERM")
        upstream = (await asyncio.to_thread(_get, f"{sim_url}/_sim/counts"))["counts"]
    finally:
        stop.touch()
        for proc in reader_procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        sim_proc.terminate()
        await sim_proc.wait()
    for i in range(readers):
        path = workdir / f"reader-{i}.json"
        if checker.check(path.exists(), f"reader {i} wrote no result"):
            results.append(orjson.loads(path.read_bytes()))
    for i, r in enumerate(results):
        checker.checks += r["checks"]
        checker.check(
            r["error_count"] == 0,
            f"reader {i}: {r['error_count']} sqlite errors, e.g. {r['errors'][:3]}",
        )
        checker.check(r["violation_count"] == 0, f"reader {i}: {r['violations'][:3]}")
        checker.check(r["iterations"] > 10, f"reader {i} ran only {r['iterations']} times")
    checker.committed_state()
    checker.mirror_equals(upstream)

    def worst(kind: str, stat: str) -> float:
        return max((r["latency_ms"][kind][stat] for r in results), default=0.0)

    reads = sum(r["iterations"] for r in results)
    notes = (
        f"{counts:,} counts, {readers} readers, {reads} snapshots,"
        f" {sum(r['entries'] for r in results):,} entries followed;"
        f" full pass {full.get('duration_ms', 0) / 1000:.1f} s,"
        f" then {sum(int(e.get('changes', 0)) for e in incremental)} changes;"
        f" p99 ms: lookup {worst('lookup', 'p99'):.1f}, follow {worst('follow', 'p99'):.1f},"
        f" count {worst('count', 'p99'):.1f}, snapshot {worst('snapshot', 'p99'):.1f}"
        f" (max {worst('snapshot', 'max'):.0f}); orphan scan p50"
        f" {worst('orphans', 'p50'):.0f}; sqlite errors"
        f" {sum(r['error_count'] for r in results)}"
    )
    return ScenarioResult(
        scenario=f"readers under load ({counts:,} counts)",
        seed=seed,
        rounds=reads,
        faults=0,
        checks=checker.checks,
        violations=checker.violations,
        seconds=time.monotonic() - started,
        notes=notes,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.readers")
    parser.add_argument("--reader", action="store_true", help="run one reader (used by the driver)")
    parser.add_argument("--db", type=Path)
    parser.add_argument("--stop", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--orphan-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1, 2**31))
    parser.add_argument("--counts", type=int, default=100_000)
    parser.add_argument("--readers", type=int, default=3)
    args = parser.parse_args(argv)
    if args.reader:
        reader(args.db, args.stop, args.out, orphan_every=args.orphan_every, seed=args.seed)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="syncd-readers-"))
    print(f"seed {args.seed}, work directory {workdir}", file=sys.stderr)
    result = asyncio.run(
        run_readers(counts=args.counts, readers=args.readers, workdir=workdir, seed=args.seed)
    )
    print(result.describe())
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
