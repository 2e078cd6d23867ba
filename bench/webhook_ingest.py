"""Webhook ingest on loopback. Prints figures; not a test.

    .venv/bin/python bench/webhook_ingest.py [--seconds 5] [--clients 64] [--paced-rate 500]

(1) the limit of this machine: a bare aiohttp handler that reads the body and answers 200;
(2) syncd's endpoint (`syncd run`, default settings: signature check, group commit into SQLite
    with synchronous=FULL, canonical log line per webhook to a file), driven by the same load
    generator: accepted webhooks/s, p50/p99 latency, ratio to (1);
(3) p99 at a paced (open-loop) rate, latency measured from each request's scheduled send time;
(4) webhook receipt to change-log entry (p50/p99): the simulator mutates counts at a paced rate and
    sends one signed inventory.count.updated per change; both instants come from the daemon's own
    records (webhook_events.received_ns, changes.recorded_at).
(2) to (4) run twice, against a daemon with the webhook fast path on (the default: each event's
counts are applied at once; in (2) and (3) every webhook carries a new value, so each is a real
write) and against one with it off (`webhooks.apply_counts = false`: a webhook only pokes a pass),
and a summary prints both beside the bare handler.
Every server runs in its own process; the load generator is a raw asyncio HTTP/1.1 client with
keep-alive connections (cheaper per request than aiohttp's client, so it is not the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT, free_port, sim_post, simulator

HERE = Path(__file__).resolve()
KEY = "bench-signature-key"
PATH = "/webhooks/square"
HEADER = "x-square-hmacsha256-signature"
BODY_TEMPLATE = (
    '{"merchant_id":"6SSW7HV8K2ST5","type":"inventory.count.updated","event_id":"%s",'
    '"created_at":"2026-01-01T00:00:00.455006797Z","data":{"type":"inventory_counts",'
    '"id":"84e4ac73-d605-4dbd-a9e5-ffff794ddb9d","object":{"inventory_counts":[{'
    '"calculated_at":"2026-01-01T00:00:00.10296Z","catalog_object_id":"FGQ5JJWT2PYTHF35CKZ2DSKP",'
    '"catalog_object_type":"ITEM_VARIATION","location_id":"YYQR03DGCTXA4","quantity":"10",'
    '"state":"IN_STOCK"}]}}}'
)


# ---- the bare handler (child process) ------------------------------------------------------------


def serve_bare(port: int) -> None:
    """The floor: aiohttp, read the body, answer 200 with a small JSON body."""
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"status":"accepted"}', content_type="application/json")

    app = web.Application()
    app.router.add_post(PATH, handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ---- load generator ------------------------------------------------------------------------------


class Requests:
    """Correctly signed, unique webhook requests for one notification URL. With ``count_key``
    (catalog object id, location id) each carries a new value of that count, later than any
    before: every webhook is a real change for the fast path to write (the worst case)."""

    def __init__(self, notification_url: str, count_key: tuple[str, str] | None = None) -> None:
        self._prefix = secrets.token_hex(4)
        self._n = 0
        self._mac = hmac.new(KEY.encode(), notification_url.encode(), hashlib.sha256)
        self._key = count_key

    def __call__(self) -> bytes:
        self._n += 1
        body = (BODY_TEMPLATE % f"{self._prefix}-{self._n:09d}").encode()
        if self._key is not None:
            obj, loc = self._key
            at = f"2030-01-01T{self._n // 3_600_000_000 % 24:02d}:{self._n // 60_000_000 % 60:02d}:"
            at += f"{self._n // 1_000_000 % 60:02d}.{self._n % 1_000_000:06d}Z"
            body = (
                body.replace(b"FGQ5JJWT2PYTHF35CKZ2DSKP", obj.encode())
                .replace(b"YYQR03DGCTXA4", loc.encode())
                .replace(b'"quantity":"10"', b'"quantity":"%d"' % self._n)
                .replace(b"2026-01-01T00:00:00.10296Z", at.encode())
            )
        mac = self._mac.copy()
        mac.update(body)
        signature = base64.b64encode(mac.digest()).decode()
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{HEADER}: {signature}\r\n\r\n"
        )
        return head.encode() + body


async def _response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            await reader.readexactly(int(line[15:]))
            break
    return status


async def closed_loop(
    port: int, make: Callable[[], bytes], clients: int, seconds: float, warmup: float = 1.0
) -> dict[str, Any]:
    """``clients`` connections, each sending its next request as soon as the previous answered."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (now := time.perf_counter()) < stop_at:
                writer.write(make())
                status = await _response(reader)
                done = time.perf_counter()
                if now >= measure_from:
                    latencies.append(done - now)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    ok = statuses.get(200, 0)
    return {
        "rate": ok / seconds,
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "statuses": statuses,
        "requests": len(latencies),
    }


async def paced(
    port: int, make: Callable[[], bytes], rate: float, seconds: float, connections: int
) -> dict[str, Any]:
    """Open loop: request i is due at t0 + i/rate, whatever happened before (no coordinated
    omission: latency counts from the due time, so queueing behind a slow answer is included)."""
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    t0 = time.perf_counter() + 0.1

    async def one(due: float) -> None:
        conn = await idle.get()
        conn[1].write(make())
        status = await _response(conn[0])
        latencies.append(time.perf_counter() - due)
        statuses[status] = statuses.get(status, 0) + 1
        idle.put_nowait(conn)

    tasks = []
    for i in range(int(rate * seconds)):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait()[1].close()
    return {
        "rate": rate,
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "max_ms": max(latencies) * 1000,
        "statuses": statuses,
    }


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000


# ---- processes -----------------------------------------------------------------------------------


def _wait_http(
    url: str, proc: subprocess.Popen[bytes], want_ok: bool, timeout: float = 30.0
) -> None:
    """Until ``url`` answers (200 only, with ``want_ok``: e.g. /readyz after the first pass)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310
                return
        except urllib.error.HTTPError:
            if not want_ok:
                return
            time.sleep(0.05)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.05)


@contextlib.contextmanager
def process(
    cmd: list[str], ready_url: str, log: Path | None = None, *, want_ok: bool = False
) -> Iterator[None]:
    out = log.open("ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        _wait_http(ready_url, proc, want_ok)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def daemon_config(
    tmp: Path, upstream: str, port: int, *, apply_counts: bool = True
) -> tuple[Path, str]:
    notification_url = f"https://syncd.example.com{PATH}"
    config = tmp / "syncd.toml"
    config.write_text(f"""
database = "{tmp / "syncd.db"}"
[webhooks]
apply_counts = {"true" if apply_counts else "false"}
[square]
base_url = "{upstream}"
access_token = "bench"
notification_url = "{notification_url}"
webhook_signature_keys = ["{KEY}"]
[http]
listen = "127.0.0.1:{port}"
[admin]
listen = "127.0.0.1:{free_port()}"
[log]
format = "json"
""")
    return config, notification_url


def change_latencies(db: Path, since_ns: int) -> list[float]:
    """Seconds from each simulator webhook's receipt to the change-log entry it announced."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        entries: dict[tuple[str, str, str, str], str] = {}
        for obj, loc, state, new, recorded in conn.execute(
            "SELECT catalog_object_id, location_id, state, new, recorded_at FROM changes"
            " WHERE kind = 'count.updated'"
        ):
            at = json.loads(new)["calculated_at"]
            entries.setdefault((obj, loc, state, at), recorded)
        out = []
        for received_ns, body in conn.execute(
            "SELECT received_ns, body FROM webhook_events WHERE received_ns > ?", (since_ns,)
        ):
            for count in json.loads(body)["data"]["object"]["inventory_counts"]:
                key = (
                    count["catalog_object_id"],
                    count["location_id"],
                    count["state"],
                    count["calculated_at"],
                )
                if key in entries:
                    out.append((_ns(entries[key]) - received_ns) / 1e9)
        return out
    finally:
        conn.close()


def _ns(rfc3339: str) -> int:
    from syncd.timeutil import parse_ns

    return parse_ns(rfc3339)


async def mutate_paced(sim_url: str, rate: float, seconds: float) -> int:
    """Ask the simulator for one change at a time, ``rate`` per second (it sends the webhooks)."""
    n = int(rate * seconds)
    t0 = time.perf_counter()
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await asyncio.to_thread(sim_post, sim_url, "/_sim/mutate", {"n": 1})
    return n


def fmt(result: dict[str, Any]) -> str:
    return (
        f"{result['rate']:8.0f} /s   p50 {result['p50_ms']:6.2f} ms   p99 "
        f"{result['p99_ms']:6.2f} ms   statuses {result['statuses']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--paced-rate", type=float, default=500.0)
    parser.add_argument("--change-rates", default="2,20", help="mutations/s for phase (4)")
    parser.add_argument("--change-seconds", type=float, default=15.0)
    parser.add_argument("--child-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_bare:
        serve_bare(args.child_bare)
        return
    print(
        f"webhook ingest on loopback, {os.cpu_count()} CPUs, {args.clients} closed-loop clients,"
        f" {args.seconds:g} s each (after 1 s warm-up)\n"
    )

    port = free_port()
    with process(
        [sys.executable, str(HERE), "--child-bare", str(port)], f"http://127.0.0.1:{port}{PATH}"
    ):
        bare = asyncio.run(closed_loop(port, Requests("http://x"), args.clients, args.seconds))
    print(f"(1) bare aiohttp 200 handler      {fmt(bare)}")

    rows: list[tuple[str, dict[str, Any]]] = []
    for apply_counts in (True, False):
        label = "fast path on" if apply_counts else "fast path off (webhooks.apply_counts = false)"
        print(f"\n-- syncd, {label}")
        rows.append((label, daemon_phases(args, bare, apply_counts)))
    print("\nsummary (same run)        ingest/s  ratio  receipt->log p50 at each change rate")
    for label, r in rows:
        lat = "  ".join(f"{rate:g}/s: {p50:.0f} ms" for rate, p50 in r["latency"])
        print(f"  {label[:22]:22} {r['rate']:9.0f}  {r['rate'] / bare['rate']:.2f}x  {lat}")
    print("    (defaults: webhooks.debounce 0.1 s, max_delay 0.5 s, group_commit_window 2 ms)")


def daemon_phases(
    args: argparse.Namespace, bare: dict[str, Any], apply_counts: bool
) -> dict[str, Any]:
    """Phases (2) to (4) against one `syncd run` process with the fast path on or off."""
    latency: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp, simulator(locations=3, items=200) as sim_url:
        port = free_port()
        config, notification_url = daemon_config(
            Path(tmp), sim_url, port, apply_counts=apply_counts
        )
        log = Path(tmp) / "daemon.log"
        with process(
            [sys.executable, "-m", "syncd", "run", "--config", str(config)],
            f"http://127.0.0.1:{port}/readyz",
            log,
            want_ok=True,
        ):
            with urllib.request.urlopen(f"{sim_url}/_sim/counts", timeout=5) as resp:  # noqa: S310
                first = json.loads(resp.read())["counts"][0]
            make = Requests(notification_url, (first["catalog_object_id"], first["location_id"]))
            durable = asyncio.run(closed_loop(port, make, args.clients, args.seconds))
            print(f"(2) syncd endpoint (durable)     {fmt(durable)}")
            print(
                f"    ratio to bare: {durable['rate'] / bare['rate']:.2f}x  (every webhook a new value)"
            )
            pacing = asyncio.run(paced(port, make, args.paced_rate, args.seconds, args.clients))
            print(
                f"(3) syncd at a paced {args.paced_rate:g}/s:     p50 {pacing['p50_ms']:.2f} ms"
                f"   p99 {pacing['p99_ms']:.2f} ms   max {pacing['max_ms']:.2f} ms"
                f"   statuses {pacing['statuses']}"
            )
            time.sleep(2)  # let the passes poked by (2) and (3) finish
            sim_post(
                sim_url,
                "/_sim/webhooks",
                {
                    "url": f"http://127.0.0.1:{port}{PATH}",
                    "signature_key": KEY,
                    "notification_url": notification_url,
                },
            )
            for rate in (float(r) for r in args.change_rates.split(",")):
                since = time.time_ns()
                sent = asyncio.run(mutate_paced(sim_url, rate, args.change_seconds))
                time.sleep(2)
                lat = change_latencies(Path(tmp) / "syncd.db", since)
                latency.append((rate, _pct(lat, 50)))
                print(
                    f"(4) receipt -> change log at {rate:g} changes/s: {len(lat)}/{sent} matched*"
                    f"   p50 {_pct(lat, 50):.0f} ms   p99 {_pct(lat, 99):.0f} ms"
                    f"   mean {statistics.fmean(lat) * 1000 if lat else float('nan'):.0f} ms"
                )
        conn = sqlite3.connect(Path(tmp) / "syncd.db")
        stored = conn.execute("SELECT COUNT(*) FROM webhook_events").fetchone()[0]
        passes = conn.execute("SELECT COUNT(*) FROM passes").fetchone()[0]
        conn.close()
        print(f"    inbox rows stored: {stored}; sync passes run: {passes}")
        print(
            "    * a change whose value was superseded upstream before a pass read it has no"
            " entry of its own"
        )
    return {"rate": durable["rate"], "latency": latency}


if __name__ == "__main__":
    main()
