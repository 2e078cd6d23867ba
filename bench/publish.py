"""Publishing the change log to Redis Streams (issue 7). Prints figures; not a test.

    .venv/bin/python bench/publish.py [--entries 1000000] [--batch-size 500]
                                      [--rate 1000] [--per-commit 10] [--seconds 10]

Against a real redis-server started here (loopback, free port, appendonly yes, appendfsync
everysec, in a temp dir):
(1) drain: --entries change-log rows created directly in a fresh database (changelog.append_rows,
    50,000 per transaction, ~330-byte payloads), then the relay publishes them all from seq 0:
    entries/s, and the stream checked (length, last ID);
(2) steady state: a writer commits --per-commit entries per transaction at --rate entries/s for
    --seconds while the relay runs: latency from the commit (store.write returned) to the XADD
    acknowledged by Redis (the batch's EXEC answered), and to a consumer's blocking XREAD receiving
    it: p50 / p99 / max.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import free_port, peak_rss_mb, row, write_steadily
from syncd.logs import configure_logging
from syncd.publish.ports import Message
from syncd.publish.redis_target import RedisStreamTarget
from syncd.publish.relay import Relay, RelayOptions
from syncd.store import Store, changelog
from syncd.timeutil import now_rfc3339

STREAM = "syncd:changes:bench"


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A redis-server on a free loopback port with AOF on; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(30)


class TimedTarget(RedisStreamTarget):
    """The Redis target, noting when each seq's batch was acknowledged."""

    acked: dict[int, float]

    async def append(
        self, stream: str, messages: Sequence[Message], *, expect_last: int, owner: str
    ) -> int:
        refused = await super().append(stream, messages, expect_last=expect_last, owner=owner)
        now = time.perf_counter()
        for message in messages:
            self.acked[message.seq] = now
        return refused


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def drain(url: str, db: Path, entries: int, batch_size: int) -> None:
    store = await Store.open(db)
    try:
        t0 = time.perf_counter()
        chunk = 50_000
        for start in range(0, entries, chunk):
            rows = [row(i) for i in range(start, min(entries, start + chunk))]
            await store.write(lambda conn, r=rows: changelog.append_rows(conn, r, now_rfc3339()))
        created = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
        print(
            f"created {entries:,} change-log rows in {created:.1f} s"
            f" ({entries / created:,.0f} rows/s, database {size / 1e6:.0f} MB)"
        )
        target = RedisStreamTarget.from_url(url)
        relay = Relay(store, target, RelayOptions(stream=STREAM, batch_size=batch_size))
        stop = asyncio.Event()
        t0 = time.perf_counter()
        task = asyncio.create_task(relay.run(stop))
        await relay.published.wait_past(entries - 1)
        took = time.perf_counter() - t0
        stop.set()
        await task
        await target.aclose()
        redis = Redis.from_url(url)
        info = await redis.xinfo_stream(STREAM)
        used = (await redis.info("memory"))["used_memory"]
        await redis.aclose()
        assert info["length"] == entries
        assert info["last-generated-id"] == f"{entries}-0".encode()
        print(
            f"(1) drain: published {entries:,} entries in {took:.1f} s ="
            f" {entries / took:,.0f} entries/s (batch_size {batch_size});"
            f" stream length {info['length']:,}, Redis memory {used / 1e6:.0f} MB,"
            f" peak RSS {peak_rss_mb():.0f} MB"
        )
    finally:
        await store.aclose()


async def steady(
    url: str, db: Path, rate: float, per_commit: int, seconds: float, batch_size: int
) -> None:
    store = await Store.open(db)
    target = TimedTarget.from_url(url)
    assert isinstance(target, TimedTarget)
    target.acked = {}
    relay = Relay(store, target, RelayOptions(stream=STREAM + ":steady", batch_size=batch_size))
    await relay.reconcile()  # before the clock starts; run() then goes straight to publishing
    stop = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))
    committed: dict[int, float] = {}
    received: dict[int, float] = {}
    everything = asyncio.Event()  # the consumer got the last committed seq
    last_seq = 0
    reader = Redis.from_url(url)

    async def consume() -> None:
        last = "0"
        while True:
            reply = await reader.xread({STREAM + ":steady": last}, block=1000, count=1000)
            now = time.perf_counter()
            for _, items in reply or []:
                for entry_id, _fields in items:
                    seq = int(entry_id.split(b"-")[0])
                    received[seq] = now
                    last = entry_id.decode()
                    if seq == last_seq:
                        everything.set()

    consumer = asyncio.create_task(consume())
    try:
        await write_steadily(store, rate, per_commit, seconds, committed)
        last_seq = max(committed)
        if last_seq not in received:
            async with asyncio.timeout(10):
                await everything.wait()
    finally:
        stop.set()
        await relay_task
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await reader.aclose()
        await target.aclose()
        await store.aclose()
    to_xadd = [(target.acked[s] - t) * 1000 for s, t in committed.items()]
    to_read = [(received[s] - t) * 1000 for s, t in committed.items()]
    achieved = len(committed) / seconds
    print(
        f"(2) steady state: {len(committed):,} entries in {seconds:.0f} s ({achieved:,.0f}/s,"
        f" {per_commit} per commit, synchronous=FULL)"
    )
    for name, values in (
        ("commit -> XADD acknowledged", to_xadd),
        ("commit -> consumer XREAD", to_read),
    ):
        print(
            f"    {name}: p50 {pct(values, 50):.2f} ms, p99 {pct(values, 99):.2f} ms,"
            f" max {max(values):.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rate", type=float, default=1000.0, help="steady state entries/s")
    parser.add_argument("--per-commit", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    configure_logging("warning", "console")
    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
        base = Path(tmp)
        (base / "redis").mkdir()
        with redis_server(base / "redis") as url:
            asyncio.run(drain(url, base / "drain.db", args.entries, args.batch_size))
            asyncio.run(
                steady(
                    url,
                    base / "steady.db",
                    args.rate,
                    args.per_commit,
                    args.seconds,
                    args.batch_size,
                )
            )


if __name__ == "__main__":
    main()
