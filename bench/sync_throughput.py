"""Sync throughput against the simulator on loopback. Prints figures; not a test.

    python bench/sync_throughput.py [--counts 200000] [--reps 3]      # in-process (default)
    python bench/sync_throughput.py --counts 1000000 --latency-counts 0  # in-process at 1M
    python bench/sync_throughput.py --whole-process [--counts 200000] [--reps 3]

In-process (each measurement in a child process of its own, the simulator in another, so RSS is
syncd's alone; medians of --reps, a fresh database each; syncd's children run under the collector
thresholds of a `syncd` process, ``syncd.collector``):
(1) raw limit: a minimal aiohttp + sqlite3 executemany loop over the same pages (no change log);
(2) syncd full sync of N counts (change log included) -> counts/s, ratio to (1), peak RSS;
(3) an incremental pass after 1,000 upstream changes into the N-row mirror (duration inside the
    engine), with its re-read ratio: rows read / rows changed; twice: as the first pass of a fresh
    process (cold: the engine's first pass reads its state and lists the locations, SQLite's page
    cache is empty) and in a warm engine, as in the daemon (one pass first, then the changes);
(4) successive incremental passes at the default overlap (120 s): --runs of 1,000 changes each,
    one after the other as a daemon polling faster than the overlap would, each with its re-read
    ratio (what the overlap re-reads grows with every pass that falls inside it);
(5) full sync with 100 ms latency per page over 10 locations: sequential vs partitioned.

Whole process (--whole-process): each tool as a whole process as a shell script would run it,
wall from spawn to exit and the child's own peak RSS (bench._common.spawn_measured), each rep
against a freshly started simulator (the same seeded data), medians of --reps:
- bench/_bare_loop.py (aiohttp + orjson + sqlite3 executemany upsert, no change log) full, then
  incremental after 1,000 changes reading from its newest calculated_at minus 120 s;
- `syncd sync --full --no-catalog` on a fresh database (change log written), then `syncd sync
  --no-catalog` (incremental) after the same 1,000 changes, both at syncd's defaults (overlap
  120 s, partitions by the discovered locations);
- the share of `syncd sync`'s wall that is start-up imports (`python -X importtime`).
This checkout's syncd is byte-compiled first, as pip does when it installs syncd: otherwise, with
PYTHONDONTWRITEBYTECODE set (or a read-only tree), every spawned `syncd sync` would compile its
modules from source (~70 ms), which an installed syncd never does.
Targets (issue 13): full >= 0.8x the bare loop's throughput, incremental <= 2x its wall.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT, peak_rss_mb, run_child, sim_post, simulator, spawn_measured

HERE = Path(__file__).resolve()
BARE = HERE.parent / "_bare_loop.py"
MUTATIONS = 1000
DEFAULT_OVERLAP = 120.0


async def raw_limit(url: str, db: Path) -> dict[str, Any]:
    """The floor-level loop (bench/_bare_loop.py's full sync, here in-process): fetch pages,
    executemany an upsert, commit per page."""
    from bench._bare_loop import run

    result = await run("full", url, str(db), DEFAULT_OVERLAP)
    n, seconds = result["counts"], result["seconds"]
    return {"counts": n, "seconds": seconds, "rate": n / seconds, "rss_mb": peak_rss_mb()}


async def syncd_pass(
    url: str,
    db: Path,
    *,
    full: bool,
    concurrency: int,
    locations: list[str],
    overlap: float = 5.0,
    clock_margin: float = 0.0,
    mutate: int = 0,
) -> dict[str, Any]:
    """One syncd pass, through the same components the daemon uses. With ``mutate``: a pass
    first (warming the engine and SQLite's cache, as a daemon's earlier passes have), then that
    many upstream changes, then the pass measured."""
    from syncd.components import open_components
    from syncd.config import load_settings
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
                "overlap": overlap,
                "clock_margin": clock_margin,
            },
        },
    )
    async with open_components(settings) as parts:
        if mutate:
            await parts.engine.run_pass(full=full)
            await asyncio.to_thread(sim_post, url, "/_sim/mutate", {"n": mutate})
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
        from syncd import collector

        collector.tune()  # as the `syncd` command runs (the bare loop keeps CPython's defaults)
        concurrency = int(argv[3])
        locations = json.loads(argv[4])
        overlap, margin = (float(argv[5]), float(argv[6])) if len(argv) > 6 else (5.0, 0.0)
        mutate = int(argv[7]) if len(argv) > 7 else 0
        result = asyncio.run(
            syncd_pass(
                url,
                db,
                full=mode == "full",
                concurrency=concurrency,
                locations=locations,
                overlap=overlap,
                clock_margin=margin,
                mutate=mutate,
            )
        )
    print(json.dumps(result))


def location_ids(url: str) -> list[str]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as resp:  # noqa: S310
        stats = json.loads(resp.read())
    return list(stats["locations"])


def reread(counts: int, changes: int) -> str:
    """Rows read per row changed, as printed."""
    return f"{counts / changes:.2f}" if changes else "n/a (no change)"


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min) on {os.cpu_count()} cores"


# ---- in-process ------------------------------------------------------------------------------


def in_process(args: argparse.Namespace, tmp: Path) -> None:
    locs = args.locations
    print(f"# in-process: {args.counts:,} counts over {locs} locations, medians of {args.reps}")
    print(f"# {load_note()}")
    raws: list[dict[str, Any]] = []
    fulls: list[dict[str, Any]] = []
    incs: list[dict[str, Any]] = []
    warms: list[dict[str, Any]] = []
    with simulator(locations=locs, items=args.counts // locs, timeout=600) as url:
        for rep in range(args.reps):
            raws.append(run_child(HERE, "raw", url, str(tmp / f"raw{rep}.db")))
            db = str(tmp / f"syncd{rep}.db")
            fulls.append(run_child(HERE, "full", url, db, "1", "[]"))
            sim_post(url, "/_sim/mutate", {"n": MUTATIONS})
            incs.append(run_child(HERE, "incremental", url, db, "1", "[]"))
            warm = ["1", "[]", "5", "0", str(MUTATIONS)]
            warms.append(run_child(HERE, "incremental", url, db, *warm))
    raw_rate, full_rate = median_of(raws, "rate"), median_of(fulls, "rate")
    print(
        f"raw limit (aiohttp + sqlite3 executemany): {raw_rate:,.0f} counts/s"
        f"  (median {median_of(raws, 'seconds'):.2f}s, peak RSS {max(r['rss_mb'] for r in raws):.0f} MB)"
    )
    print(
        f"syncd full sync:                          {full_rate:,.0f} counts/s"
        f"  (median {median_of(fulls, 'seconds'):.2f}s, {fulls[0]['changes']} changes,"
        f" peak RSS {max(r['rss_mb'] for r in fulls):.0f} MB)  ratio {full_rate / raw_rate:.2f}x"
    )
    each = ", ".join(f"{r['rate']:,.0f}" for r in fulls)
    print(f"  each rep: {each} counts/s")
    print(
        f"incremental pass after {MUTATIONS:,} changes:     {median_of(incs, 'seconds') * 1000:.1f} ms"
        f"  (median; {incs[0]['changes']} changes, {incs[0]['pages']} pages; re-read ratio"
        f" {', '.join(reread(r['counts'], r['changes']) for r in incs)} rows read per row changed;"
        f" overlap 5 s; the first pass of a fresh process)"
    )
    each_warm = ", ".join(f"{r['seconds'] * 1000:.1f}" for r in warms)
    print(
        f"  the same in a warm engine (the daemon): {median_of(warms, 'seconds') * 1000:.1f} ms"
        f"  ({warms[0]['changes']} changes, {warms[0]['pages']} pages; each rep: {each_warm} ms)"
    )
    if args.runs:
        successive(args, tmp)
    if args.latency_counts:
        latency(args.latency_counts, tmp)


def successive(args: argparse.Namespace, tmp: Path) -> None:
    """Incremental passes one after the other at the default overlap: the re-read ratio."""
    locs = args.locations
    print(
        f"# successive incremental passes, overlap {DEFAULT_OVERLAP:.0f} s (the default),"
        f" {MUTATIONS:,} changes before each, {args.counts:,} counts"
    )
    with simulator(locations=locs, items=args.counts // locs, timeout=600) as url:
        db = str(tmp / "successive.db")
        opts = ["1", "[]", str(DEFAULT_OVERLAP), "2"]
        run_child(HERE, "full", url, db, *opts)
        t0 = time.monotonic()
        for run in range(1, args.runs + 1):
            sim_post(url, "/_sim/mutate", {"n": MUTATIONS})
            inc = run_child(HERE, "incremental", url, db, *opts)
            print(
                f"run {run} (t+{time.monotonic() - t0:4.1f}s): read {inc['counts']:>5} rows,"
                f" {inc['changes']} changed, re-read ratio {reread(inc['counts'], inc['changes'])},"
                f" {inc['seconds'] * 1000:.1f} ms"
            )


def latency(n: int, tmp: Path) -> None:
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


# ---- whole process ---------------------------------------------------------------------------

_SUMMARY = re.compile(
    r"(?P<kind>full|incremental) pass .*?(?P<counts>\d+) counts, (?P<changes>\d+) changes"
)


def child_env() -> dict[str, str]:
    """The environment of a measured tool: this checkout's syncd, no SYNCD_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def syncd_argv(url: str, db: Path, *, full: bool) -> list[str]:
    argv = [sys.executable, "-m", "syncd", "sync", "--no-catalog", "--base-url", url]
    return [*argv, "--database", str(db), *(["--full"] if full else [])]


def measure_syncd(url: str, db: Path, *, full: bool) -> dict[str, Any]:
    """`syncd sync` as a whole process; its summary line tells the pass kind and rows."""
    spawned = spawn_measured(syncd_argv(url, db, full=full), env=child_env())
    found = _SUMMARY.search(spawned.stdout)
    if spawned.code != 0 or found is None:
        raise RuntimeError(f"syncd sync exited {spawned.code}: {spawned.stdout!r}")
    kind = found["kind"]
    if kind != ("full" if full else "incremental"):
        raise RuntimeError(f"expected a {'full' if full else 'incremental'} pass, got {kind}")
    return {
        "wall": spawned.wall,
        "rss_mb": spawned.rss_mb,
        "counts": int(found["counts"]),
        "changes": int(found["changes"]),
    }


def measure_bare(url: str, db: Path, *, full: bool) -> dict[str, Any]:
    mode = "full" if full else "incremental"
    argv = [sys.executable, str(BARE), mode, url, str(db), str(DEFAULT_OVERLAP)]
    spawned = spawn_measured(argv, env=child_env())
    if spawned.code != 0:
        raise RuntimeError(f"bare loop exited {spawned.code}")
    figures = json.loads(spawned.stdout)
    return {"wall": spawned.wall, "rss_mb": spawned.rss_mb, "counts": figures["counts"]}


def import_seconds(url: str, db: Path) -> tuple[float, float, float]:
    """(seconds of all start-up imports, of those under ``syncd``, wall) of one incremental `syncd
    sync` under -X importtime: sums of the top-level imports' cumulative times."""
    argv = syncd_argv(url, db, full=False)
    t0 = time.perf_counter()
    out = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t0
    total_us = syncd_us = 0
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if name.startswith("  "):  # nested: its top-level import's cumulative covers it
            continue
        total_us += int(cumulative)
        if name.strip().split(".")[0] == "syncd":
            syncd_us += int(cumulative)
    return total_us / 1e6, syncd_us / 1e6, wall


def byte_compile() -> None:
    """Write the bytecode of this checkout's syncd (see the module docstring); the measured
    processes read it whatever PYTHONDONTWRITEBYTECODE says."""
    if not compileall.compile_dir(ROOT / "syncd", quiet=1):
        raise RuntimeError("could not byte-compile syncd")


def whole_process(args: argparse.Namespace, tmp: Path) -> None:
    locs = args.locations
    byte_compile()
    print(
        f"# whole process: {args.counts:,} counts over {locs} locations, {MUTATIONS:,} changes,"
        f" each tool spawned to exit, medians of {args.reps} (a fresh simulator each)"
    )
    print(f"# {load_note()}; syncd byte-compiled first, as pip installs it")
    runs: dict[str, list[dict[str, Any]]] = {
        "bare_full": [],
        "syncd_full": [],
        "bare_inc": [],
        "syncd_inc": [],
    }
    imports: tuple[float, float, float] | None = None
    for rep in range(args.reps):
        with simulator(locations=locs, items=args.counts // locs, timeout=600) as url:
            bare_db, syncd_db = tmp / f"bare{rep}.db", tmp / f"wp{rep}.db"
            runs["bare_full"].append(measure_bare(url, bare_db, full=True))
            runs["syncd_full"].append(measure_syncd(url, syncd_db, full=True))
            sim_post(url, "/_sim/mutate", {"n": MUTATIONS})
            runs["bare_inc"].append(measure_bare(url, bare_db, full=False))
            runs["syncd_inc"].append(measure_syncd(url, syncd_db, full=False))
            if rep == args.reps - 1:
                imports = import_seconds(url, syncd_db)
        print(
            f"  rep {rep + 1}: " + ", ".join(f"{k} {v[-1]['wall']:.2f}s" for k, v in runs.items())
        )

    def fig(key: str) -> tuple[float, float]:
        return median_of(runs[key], "wall"), max(r["rss_mb"] for r in runs[key])

    (bf, bfr), (sf, sfr) = fig("bare_full"), fig("syncd_full")
    (bi, bir), (si, sir) = fig("bare_inc"), fig("syncd_inc")
    inc = runs["syncd_inc"][-1]
    print(f"{'':<34} {'bare loop':>16} {'syncd sync':>16}  ratio")
    print(
        f"{'full sync, wall / peak RSS':<34} {bf:>7.2f}s {bfr:>5.0f} MB {sf:>7.2f}s {sfr:>5.0f} MB"
        f"  {bf / sf:.2f}x the bare loop's throughput (target >= 0.8x)"
    )
    print(
        f"{'incremental, wall / peak RSS':<34} {bi:>7.2f}s {bir:>5.0f} MB {si:>7.2f}s {sir:>5.0f} MB"
        f"  {si / bi:.2f}x the bare loop's wall (target <= 2x)"
    )
    print(
        f"syncd incremental: read {inc['counts']} rows for {inc['changes']} changes, re-read ratio"
        f" {reread(inc['counts'], inc['changes'])} (bare loop read {runs['bare_inc'][-1]['counts']})"
    )
    if imports is not None:
        seconds, ours, wall = imports
        print(
            f"start-up imports of `syncd sync` (-X importtime, one incremental run of {wall:.2f}s):"
            f" {seconds * 1000:.0f} ms ({ours * 1000:.0f} ms under syncd) = {seconds / sf:.0%} of"
            f" the full sync's median wall, {seconds / si:.0%} of the incremental's"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, default=200_000)
    parser.add_argument("--locations", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--whole-process", action="store_true", help="each tool as a whole process (see above)"
    )
    parser.add_argument(
        "--runs", type=int, default=5, help="successive incremental passes at overlap 120 (0: skip)"
    )
    parser.add_argument("--latency-counts", type=int, default=50_000, help="0: skip (5)")
    args = parser.parse_args()
    section: Callable[[argparse.Namespace, Path], None] = (
        whole_process if args.whole_process else in_process
    )
    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
        section(args, Path(tmp))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
