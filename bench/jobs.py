"""Job poller figures (issue 4). Prints figures; not a test.

    .venv/bin/python bench/jobs.py [--rates 50,200,1000] [--seconds 5] [--jobs 10000]
                                   [--idle-seconds 5]

(1) rate: jobs due at once against a fake inventory-job API on loopback (aiohttp, same process),
    rate_per_second = R, concurrency 16: polls/s achieved, achieved / R, the most requests the
    fake saw in any 1-second window, and the smallest gap between two request arrivals;
(2) overhead: --jobs jobs x 2 polls against an in-memory provider (no HTTP), limits out of the
    way: polls/s and process CPU per poll (scheduler, lanes, limiter, decisions and the SQLite
    group commits), with the time spent in commits broken out;
(3) idle: --jobs jobs registered with their next poll an hour away; process CPU over
    --idle-seconds of waiting, and the start-up time to rebuild the heap from SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncd.jobs.poller import JobPoller, PollerOptions, ProviderLimits, running
from syncd.jobs.service import JobService
from syncd.jobs.tracking import Timing
from syncd.logs import configure_logging
from syncd.store import Store
from syncd.store.jobs import NewJob
from syncd.timeutil import NS_PER_S, now_ns
from syncd.upstream.http import make_session
from syncd.upstream.inventory_jobs import InventoryJobs
from syncd.upstream.job_api import JobApiOptions
from tests.fakes.job_servers import InstantProvider, inventory, serve_jobs

T = TypeVar("T")
FAST = Timing(
    backoff_initial=0.0, backoff_factor=2.0, backoff_max=0.0, deadline=3600, not_found_grace=60
)


async def rate_run(rate: float, seconds: float, concurrency: int = 16) -> dict[str, Any]:
    """Enough jobs for ``seconds`` at ``rate`` (3 polls each), all due at once."""
    polls = max(int(rate * seconds), 30)
    jobs = polls // 3
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "bench.db")
        async with serve_jobs() as fake:
            session = make_session(
                request_timeout=30,
                connect_timeout=5,
                user_agent="bench",
                limit=concurrency + 4,
                limit_per_host=0,
            )
            api = InventoryJobs(JobApiOptions(name="inv", base_url=fake.url), session)
            poller = JobPoller(
                store, {"inv": (api, ProviderLimits(concurrency, rate))}, PollerOptions(timing=FAST)
            )
            service = JobService(store, {"inv": api.check}, poller=poller)
            for i in range(jobs):
                fake.script(
                    str(i),
                    inventory("WORKING", item_count=1),
                    inventory("WORKING", item_count=2),
                    inventory("SUCCESS"),
                )
            try:
                async with running(poller):
                    await service.register_many([NewJob("inv", str(i)) for i in range(jobs)])
                    await poller.wait_idle()
            finally:
                await session.close()
                await store.aclose()
    times = sorted(t for t, _ in fake.requests)
    span = times[-1] - times[0]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return {
        "rate": rate,
        "polls": len(times),
        "achieved": (len(times) - 1) / span,
        "max_1s": fake.max_in_window(1.0),
        "min_gap_ms": min(gaps) * 1000,
        "max_in_flight": fake.max_in_flight,
    }


class TimedStore(Store):
    """A Store that adds up the wall time spent in write transactions."""

    write_s = 0.0

    async def write(self, work: Callable[[Any], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await super().write(work)
        finally:
            self.write_s += time.perf_counter() - started


async def overhead_run(jobs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        opened = await Store.open(Path(tmp) / "bench.db")
        store = TimedStore(opened.path, opened._writer, opened._reader)
        provider = InstantProvider("mem", polls_to_finish=2)
        poller = JobPoller(
            store, {"mem": (provider, ProviderLimits(64, 1e9))}, PollerOptions(timing=FAST)
        )
        service = JobService(store, {"mem": provider.check}, poller=poller)
        try:
            async with running(poller):
                reg_started = time.perf_counter()
                await service.register_many([NewJob("mem", str(i)) for i in range(jobs)])
                registered = time.perf_counter() - reg_started
                store.write_s = 0.0
                wall, cpu = time.perf_counter(), time.process_time()
                await poller.wait_idle()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            await store.aclose()
    return {
        "jobs": jobs,
        "polls": poller.polls,
        "register_s": registered,
        "wall_s": wall,
        "polls_per_s": poller.polls / wall,
        "cpu_us_per_poll": cpu / poller.polls * 1e6,
        "commit_us_per_poll": store.write_s / poller.polls * 1e6,
        "commits": poller.commits,
    }


async def idle_run(jobs: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = await Store.open(path)
        provider = InstantProvider("mem")
        service = JobService(store, {"mem": provider.check})
        await service.register_many([NewJob("mem", str(i)) for i in range(jobs)])
        later = now_ns() + 3600 * NS_PER_S

        async def push_out(conn: Any) -> None:
            await conn.execute("UPDATE jobs SET next_poll_ns = ? + id", (later,))

        await store.write(push_out)
        poller = JobPoller(
            store,
            {"mem": (provider, ProviderLimits(4, 10))},
            PollerOptions(timing=Timing(3600, 2, 3600, 86400, 60)),
        )
        try:
            started = time.perf_counter()
            async with running(poller):
                loaded = time.perf_counter() - started
                wall, cpu = time.perf_counter(), time.process_time()
                await asyncio.sleep(seconds)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            await store.aclose()
    return {
        "jobs": poller.tracked or jobs,
        "load_s": loaded,
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_pct": cpu / wall * 100,
        "polls": provider.total,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="50,200,1000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    configure_logging("warning", "console", stream=sys.stderr)
    structlog.configure(cache_logger_on_first_use=False)

    print(f"python {sys.version.split()[0]}; fake job API in-process on 127.0.0.1")
    print("\n(1) rate limit held: jobs due at once, concurrency 16")
    print(
        f"{'limit/s':>8} {'polls':>6} {'achieved/s':>11} {'ratio':>6} {'max in 1s':>10}"
        f" {'min gap ms':>11} {'in flight':>10}"
    )
    for rate in (float(r) for r in args.rates.split(",")):
        r = await rate_run(rate, args.seconds)
        print(
            f"{r['rate']:>8.0f} {r['polls']:>6} {r['achieved']:>11.1f}"
            f" {r['achieved'] / r['rate']:>6.3f} {r['max_1s']:>10} {r['min_gap_ms']:>11.2f}"
            f" {r['max_in_flight']:>10}"
        )

    o = await overhead_run(args.jobs)
    print(f"\n(2) scheduler overhead: {o['jobs']:,} jobs x 2 polls, in-memory provider, no limits")
    print(f"    registration of {o['jobs']:,} jobs (one transaction): {o['register_s']:.2f} s")
    print(
        f"    {o['polls']:,} polls in {o['wall_s']:.2f} s = {o['polls_per_s']:,.0f} polls/s;"
        f" CPU {o['cpu_us_per_poll']:.0f} us/poll, of which in SQLite commits"
        f" ~{o['commit_us_per_poll']:.0f} us/poll (wall) over {o['commits']} group commits"
    )

    i = await idle_run(args.jobs, args.idle_seconds)
    print(f"\n(3) idle: {i['jobs']:,} jobs waiting (next poll in 1 h)")
    print(
        f"    heap rebuilt from SQLite in {i['load_s']:.2f} s; CPU {i['cpu_s'] * 1000:.1f} ms"
        f" over {i['wall_s']:.1f} s = {i['cpu_pct']:.3f} %; polls made: {i['polls']}"
    )


if __name__ == "__main__":
    asyncio.run(main())
