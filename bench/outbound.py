"""Outbound webhooks (issue 14): delivery to a local receiver. Prints figures; not a test.

    .venv/bin/python bench/outbound.py [--entries 200000] [--batch-size 100]
                                       [--rate 1000] [--per-commit 10] [--seconds 10]

The receiver is its own process (aiohttp on a free loopback port; it reads each body and answers
200), the same for every figure, so that its CPU is not the deliverer's. In the same run:
(1) drain: --entries change-log rows created directly in a fresh database, then the deliverer
    (syncd.outbound) delivers them all from seq 0 in batches of --batch-size: entries/s. Baseline:
    a bare aiohttp POST loop sending the same bodies (pre-encoded, unsigned, no database), one
    request at a time like the deliverer: entries/s. The gap is syncd's own cost per batch
    (reading the batch from SQLite, encoding, signing, the task switches).
(2) steady state: a writer commits --per-commit entries per transaction at --rate entries/s for
    --seconds while the deliverer runs: latency from the commit (store.write returned) to the
    receiver's 2xx for the batch holding the entry: p50 / p99 / max. Baseline: the same writer
    with a bare client that POSTs each commit's rows as soon as store.write returns.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from bench._common import ROOT, free_port, peak_rss_mb, row, write_steadily
from syncd.logs import configure_logging
from syncd.outbound import signing
from syncd.outbound.deliverer import Deliverer, DelivererOptions
from syncd.outbound.http_target import HttpEndpoint
from syncd.outbound.ports import Answer
from syncd.store import Store, changelog
from syncd.timeutil import now_rfc3339


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# --- the receiver (its own process) --------------------------------------------------------------


def serve_receiver(port: int) -> None:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--receiver", str(port)], cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}/hook"

    async def ready() -> None:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    async with http.post(url, data=b"{}") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit("the receiver did not start")
                await asyncio.sleep(0.05)

    asyncio.run(ready())
    return proc, url


# --- deliverer vs bare client --------------------------------------------------------------------


class TimedEndpoint(HttpEndpoint):
    """The deliverer's HTTP endpoint, noting when each batch's 2xx came (by its last seq)."""

    answered: list[tuple[int, float]]

    async def post(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        answer = await super().post(body, headers)
        last = int(headers["webhook-id"].rsplit("-", 1)[1])
        self.answered.append((last, time.perf_counter()))
        return answer


def options(batch_size: int) -> DelivererOptions:
    return DelivererOptions(
        name="bench", key=signing.parse_secret(signing.new_secret()), batch_size=batch_size
    )


async def create(db: Path, entries: int) -> Store:
    store = await Store.open(db)
    chunk = 50_000
    for start in range(0, entries, chunk):
        rows = [row(i) for i in range(start, min(entries, start + chunk))]
        await store.write(lambda conn, r=rows: changelog.append_rows(conn, r, now_rfc3339()))
    return store


async def bodies(store: Store, batch_size: int) -> list[bytes]:
    """What the deliverer sends, batch by batch (for the bare loop: the same bytes)."""
    from syncd.outbound.deliverer import batch_body
    from syncd.store.outbox import read_after

    out: list[bytes] = []
    after = 0
    while True:
        rows = await store.read(lambda conn, a=after: read_after(conn, a, batch_size))
        if not rows:
            return out
        out.append(batch_body("bench", rows))
        after = rows[-1].seq


async def drain(url: str, db: Path, entries: int, batch_size: int) -> None:
    t0 = time.perf_counter()
    store = await create(db, entries)
    print(f"created {entries:,} change-log rows in {time.perf_counter() - t0:.1f} s")
    try:
        prepared = await bodies(store, batch_size)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
            t0 = time.perf_counter()
            for body in prepared:
                async with http.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    await resp.read()
                    assert resp.status == 200
            bare = time.perf_counter() - t0
        endpoint = HttpEndpoint(url, timeout=30)
        deliverer = Deliverer(store, endpoint, options(batch_size))
        stop = asyncio.Event()
        t0 = time.perf_counter()
        task = asyncio.create_task(deliverer.run(stop))
        async with asyncio.timeout(600):
            while deliverer.position < entries:
                await deliverer.delivered.wait_past(deliverer.delivered.head)
        took = time.perf_counter() - t0
        stop.set()
        await task
        await endpoint.aclose()
    finally:
        await store.aclose()
    print(
        f"(1) drain, batches of {batch_size}: deliverer {entries / took:,.0f} entries/s"
        f" ({took:.1f} s, {len(prepared):,} POSTs, signed; position written at most once a second);"
        f" baseline bare aiohttp POST loop, same bodies: {entries / bare:,.0f} entries/s"
        f" ({bare:.1f} s); peak RSS {peak_rss_mb():.0f} MB"
    )


def latencies(committed: dict[int, float], answered: list[tuple[int, float]]) -> list[float]:
    """Per committed seq: ms from its commit to the 2xx of the first batch that held it."""
    out = []
    answers = sorted(answered)
    i = 0
    for seq in sorted(committed):
        while answers[i][0] < seq:
            i += 1
        out.append((answers[i][1] - committed[seq]) * 1000)
    return out


def report(name: str, values: list[float]) -> None:
    print(
        f"    {name}: p50 {pct(values, 50):.2f} ms, p99 {pct(values, 99):.2f} ms,"
        f" max {max(values):.2f} ms"
    )


async def steady(
    url: str, base: Path, rate: float, per_commit: int, seconds: float, batch_size: int
) -> None:
    # syncd's deliverer
    store = await Store.open(base / "steady.db")
    endpoint = TimedEndpoint(url, timeout=30)
    endpoint.answered = []
    deliverer = Deliverer(store, endpoint, options(batch_size))
    stop = asyncio.Event()
    task = asyncio.create_task(deliverer.run(stop))
    committed: dict[int, float] = {}
    try:
        await write_steadily(store, rate, per_commit, seconds, committed)
        async with asyncio.timeout(30):
            while deliverer.position < max(committed):
                await deliverer.delivered.wait_past(deliverer.delivered.head)
    finally:
        stop.set()
        await task
        await endpoint.aclose()
        await store.aclose()
    syncd_ms = latencies(committed, endpoint.answered)

    # baseline: a bare client POSTing each commit's rows as soon as it returns
    store = await Store.open(base / "steady-bare.db")
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    answered: list[tuple[int, float]] = []
    bare_committed: dict[int, float] = {}

    async def post_loop(http: aiohttp.ClientSession) -> None:
        while True:
            last, body = await queue.get()
            async with http.post(url, data=body) as resp:
                await resp.read()
            answered.append((last, time.perf_counter()))
            queue.task_done()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
        poster = asyncio.create_task(post_loop(http))
        try:
            await write_steadily(
                store,
                rate,
                per_commit,
                seconds,
                bare_committed,
                on_commit=lambda seqs, rows: queue.put_nowait(
                    (seqs[-1], orjson.dumps({"changes": [list(r) for r in rows]}))
                ),
            )
            await queue.join()
        finally:
            poster.cancel()
            await asyncio.gather(poster, return_exceptions=True)
            await store.aclose()
    bare_ms = latencies(bare_committed, answered)

    print(
        f"(2) steady state: {len(committed):,} entries in {seconds:.0f} s"
        f" ({len(committed) / seconds:,.0f}/s, {per_commit} per commit, synchronous=FULL),"
        f" batches of up to {batch_size}"
    )
    report("deliverer: commit -> receiver's 2xx", syncd_ms)
    report("baseline bare POST per commit: commit -> 2xx", bare_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="steady state entries/s")
    parser.add_argument("--per-commit", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        serve_receiver(args.receiver)
        return
    configure_logging("warning", "console")
    proc, url = start_receiver()
    try:
        with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
            base = Path(tmp)
            asyncio.run(drain(url, base / "drain.db", args.entries, args.batch_size))
            asyncio.run(
                steady(url, base, args.rate, args.per_commit, args.seconds, args.batch_size)
            )
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
