"""Helpers shared by the benchmark scripts: free ports, a simulator subprocess, child runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from syncd.store import Store
    from syncd.store.changelog import Row

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def simulator(
    *, locations: int, items: int, page_delay: float = 0.0, timeout: float = 120.0
) -> Iterator[str]:
    """Run `syncd simulate` in its own process (its memory is not syncd's); yield its base URL."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "syncd",
        "simulate",
        "--port",
        str(port),
        "--locations",
        str(locations),
        "--items",
        str(items),
        "--page-delay",
        str(page_delay),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_sim/stats", timeout=1):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("simulator did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def sim_post(url: str, path: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(  # noqa: S310 - loopback http URL built by this script
        f"{url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
        return json.loads(resp.read())


def run_child(script: Path, *args: str) -> dict[str, Any]:
    """Run one measurement in a fresh process (so peak RSS is its own) and return its JSON line."""
    out = subprocess.run(
        [sys.executable, str(script), "--child", *args],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"bench child {args[0]!r} exited with {out.returncode} (its stderr above)")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# Spawns ARGV from a small process, its stdout into a file and its stderr to /dev/null, and prints
# [wall s, CPU s, peak RSS MB, exit code] of that child alone: wall from spawn to exit, CPU (user +
# system) and ru_maxrss from
# wait4, which is the child's own (a child forked from a big parent starts at the parent's size, so
# the measuring parent is this small launcher, not the bench).
_LAUNCHER = """
import json, os, sys, time
out = sys.argv[1]
actions = [
    (os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
]
t0 = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
cpu = usage.ru_utime + usage.ru_stime
print(json.dumps([wall, cpu, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)]))
"""


@dataclass(frozen=True, slots=True)
class Spawned:
    """One whole process as measured from outside: wall seconds from spawn to exit, its CPU
    seconds (user + system), the child's own peak RSS, its exit code and what it printed on
    stdout."""

    wall: float
    cpu: float
    rss_mb: float
    code: int
    stdout: str


def spawn_measured(argv: list[str], *, env: Mapping[str, str] | None = None) -> Spawned:
    """Run ``argv`` (argv[0] an executable path) as one measured process (see ``_LAUNCHER``)."""
    with tempfile.TemporaryDirectory(prefix="syncd-bench-out-") as tmp:
        out = Path(tmp) / "stdout"
        launched = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, str(out), *argv],
            cwd=ROOT,
            env=dict(os.environ if env is None else env),
            capture_output=True,
            text=True,
            check=True,
        )
        wall, cpu, rss, code = json.loads(launched.stdout)
        return Spawned(float(wall), float(cpu), float(rss), int(code), out.read_text())


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_counts_db(path: Path, counts: int, *, with_changes: bool = False) -> None:
    """A migrated syncd database with ``counts`` mirror rows (200,000 objects per location), written
    with plain SQL inserts for speed; ``with_changes``: also one ``count.updated`` entry per row
    (what a first sync leaves), so the change log is as large as the mirror."""
    from syncd.store import Store

    async def migrate() -> None:
        store = await Store.open(path)
        await store.aclose()

    asyncio.run(migrate())
    conn = sqlite3.connect(path)
    at = "2026-01-02T03:04:05.123456Z"
    rows = (
        (
            "square",
            f"ITEM{i % 200_000:07d}",
            f"LOC{i // 200_000}",
            "IN_STOCK",
            "ITEM_VARIATION",
            str(i % 97),
            at,
            i + 1,
        )
        for i in range(counts)
    )
    conn.executemany(
        "INSERT INTO inventory_counts (source, catalog_object_id, location_id, state,"
        " catalog_object_type, quantity, calculated_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    if with_changes:
        new = '{"quantity":"1","calculated_at":"2026-01-02T03:04:05.123456Z"}'
        conn.executemany(
            "INSERT INTO changes (seq, recorded_at, kind, source, catalog_object_id, location_id,"
            " state, new) VALUES (?, ?, 'count.updated', 'square', ?, ?, 'IN_STOCK', ?)",
            (
                (i + 1, at, f"ITEM{i % 200_000:07d}", f"LOC{i // 200_000}", new)
                for i in range(counts)
            ),
        )
    conn.execute(
        "INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('changes', ?)", (counts,)
    )
    conn.commit()
    conn.close()


# ---- change-log writers for the delivery benches (bench/publish.py, bench/outbound.py) ----------


def row(i: int) -> Row:
    """A count.updated entry shaped like the sync's (old and new values as JSON text)."""
    old = orjson.dumps(
        {
            "quantity": str(i % 97),
            "calculated_at": "2026-11-25T15:39:58.001Z",
            "catalog_object_type": "ITEM_VARIATION",
        }
    ).decode()
    new = orjson.dumps(
        {
            "quantity": str(i % 89),
            "calculated_at": "2026-11-25T15:40:00.512Z",
            "catalog_object_type": "ITEM_VARIATION",
        }
    ).decode()
    return (
        "count.updated",
        "bench",
        f"ITEM{i:020d}",
        f"LOC{i % 7:09d}",
        "IN_STOCK",
        None,
        old,
        new,
    )


async def write_steadily(
    store: Store,
    rate: float,
    per_commit: int,
    seconds: float,
    committed: dict[int, float],
    on_commit: Callable[[list[int], list[Row]], None] | None = None,
) -> list[tuple[list[int], list[Row]]]:
    """Commit ``per_commit`` entries at a time, ``rate`` entries/s, for ``seconds``; note each
    seq's commit time in ``committed`` and tell ``on_commit``; return the commits in order."""
    from syncd.store import changelog
    from syncd.timeutil import now_rfc3339

    interval = per_commit / rate
    start = time.perf_counter()
    n = 0
    done = []
    while time.perf_counter() - start < seconds:
        rows = [row(n + i) for i in range(per_commit)]
        seqs = await store.write(lambda conn, r=rows: changelog.append_rows(conn, r, now_rfc3339()))
        now = time.perf_counter()
        for seq in seqs:
            committed[seq] = now
        done.append((seqs, rows))
        if on_commit is not None:
            on_commit(seqs, rows)
        n += per_commit
        await asyncio.sleep(max(0.0, start + (n / per_commit) * interval - time.perf_counter()))
    return done
