"""The job poller against fake job APIs on loopback: lifecycles, backoff, limits, restart, scale."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from syncd.config import Settings
from syncd.daemon_jobs import JobTracking, open_job_tracking
from syncd.errors import UpstreamError
from syncd.jobs.poller import JobPoller, PollerOptions, ProviderLimits, running
from syncd.jobs.ports import NotFound, Observation
from syncd.jobs.service import JobService
from syncd.jobs.states import JobState
from syncd.jobs.tracking import Timing, TrackedJob, failed_poll, not_found, observed
from syncd.store import Store
from syncd.store.jobs import JobRow, NewJob
from syncd.timeutil import NS_PER_S
from tests.fakes.job_servers import (
    FakeJobServer,
    InstantProvider,
    Step,
    bulk,
    commerce,
    inventory,
    missing,
    rate_limited,
    serve_jobs,
    server_error,
)
from tests.helpers import changes, metric_sum

FAST = {
    "backoff_initial": 0.001,
    "backoff_factor": 2,
    "backoff_max": 0.02,
    "deadline": 10,
    "not_found_grace": 0.1,
}


def providers(url: str, **overrides: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, dict[str, Any]] = {
        "inv": {
            "dialect": "inventory_jobs",
            "base_url": url,
            "token": "inv-token",
            "rate_per_second": 1000,
            "concurrency": 8,
        },
        "bulk": {
            "dialect": "bulk_sales_orders",
            "base_url": url,
            "rate_per_second": 1000,
            "concurrency": 8,
            "params": {"businessUnitId": "BU1"},
        },
        "shop": {
            "dialect": "commerce_jobs",
            "base_url": url,
            "rate_per_second": 1000,
            "concurrency": 8,
        },
    }
    for name, values in overrides.items():
        base[name] = {**base[name], **values}
    return base


@dataclass
class Rig:
    """The job tracking the daemon wires, on a real database, with its poller running."""

    service: JobService
    poller: JobPoller
    db: Path
    settings: Settings


@asynccontextmanager
async def tracking(
    make_settings: Callable[..., Settings],
    url: str,
    *,
    jobs: dict[str, Any] | None = None,
    poke: Callable[[], None] | None = None,
    provider_overrides: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[Rig]:
    """A store, the job adapters, poller and service as the daemon wires them; poller running."""
    conf = providers(url, **(provider_overrides or {}))
    settings = make_settings(jobs={**FAST, "providers": conf, **(jobs or {})})
    store = await Store.open(settings.database)
    jt: JobTracking = open_job_tracking(settings, store, poke)
    try:
        async with running(jt.poller):
            yield Rig(jt.service, jt.poller, settings.database, settings)
    finally:
        await jt.aclose()
        await store.aclose()


async def settle(service: JobService, ref: int | str, state: str, timeout: float = 5) -> JobRow:
    """Wait until the job reaches ``state``; fail on any other end state."""
    async with asyncio.timeout(timeout):
        while True:
            row = await service.get(str(ref))
            if row.state == state:
                return row
            assert row.finished_at is None, f"job ended {row.state}, expected {state}: {row}"
            await asyncio.sleep(0.005)


def job_entries(db: Path) -> list[dict[str, Any]]:
    return [e for e in changes(db) if e["kind"].startswith("job.")]


# --- lifecycles ----------------------------------------------------------------------------------


LIFECYCLES = [
    (
        "inv",
        {},
        [
            inventory("PENDING"),
            inventory("WORKING", item_count=1),
            inventory("WORKING", item_count=5),
            inventory("SUCCESS", success=True),
        ],
        "succeeded",
        ["job.pending", "job.running", "job.succeeded"],
    ),
    (
        "inv",
        {},
        [inventory("WORKING"), inventory("FAILED", messages=("bad row 3",))],
        "failed",
        ["job.pending", "job.running", "job.failed"],
    ),
    ("inv", {}, [inventory("SUCCESS", success=False)], "failed", ["job.pending", "job.failed"]),
    (
        "bulk",
        {},
        [
            bulk("CREATED"),
            bulk("INITIATED"),
            bulk("PROCESSING", processed=1, total=3),
            bulk("COMPLETED", processed=3, total=3),
        ],
        "succeeded",
        ["job.pending", "job.running", "job.succeeded"],
    ),
    (
        "bulk",
        {"businessUnitId": "BU9"},
        [bulk("PROCESSING"), bulk("COMPLETED", failed=2, processed=5, total=5)],
        "partial",
        ["job.pending", "job.running", "job.partial"],
    ),
    (
        "bulk",
        {},
        [bulk("COMPLETED", failed=2, processed=2, total=2)],
        "failed",
        ["job.pending", "job.failed"],
    ),
    (
        "shop",
        {},
        [
            commerce("pending"),
            commerce("started"),
            commerce("failed", error="No results matched the supplied filter"),
        ],
        "failed",
        ["job.pending", "job.running", "job.failed"],
    ),
    (
        "shop",
        {},
        [commerce("started"), commerce("success")],
        "succeeded",
        ["job.pending", "job.running", "job.succeeded"],
    ),
]


@pytest.mark.parametrize(("provider", "params", "script", "end", "expected"), LIFECYCLES)
async def test_lifecycle(
    make_settings: Callable[..., Settings],
    provider: str,
    params: dict[str, str],
    script: list[Step],
    end: str,
    expected: list[str],
) -> None:
    """Each dialect walks its scripted statuses to its end state; every transition writes exactly
    one job.<state> entry carrying the vendor's raw status."""
    written = {
        k: metric_sum("syncd_changes_written_total", source=provider, kind=k) for k in expected
    }
    requests = metric_sum("syncd_upstream_requests_total", source=provider)
    async with serve_jobs() as fake, tracking(make_settings, fake.url) as jt:
        fake.script("J1", *script)
        row, created = await jt.service.register(provider, "J1", params)
        assert created
        done = await settle(jt.service, row.id, end)
        assert done.polls >= 1
        assert done.finished_at is not None
        entries = job_entries(jt.db)
        assert [e["kind"] for e in entries] == expected
        last = entries[-1]["new"]
        assert last["state"] == end
        assert last["provider"] == provider
        assert last["job_id"] == "J1"
        assert last["vendor_status"] == done.vendor_status
        if end == "partial":
            assert len(last["failures"]) == 2
            assert last["progress"] == {"processed": 5, "total": 5}
            assert fake.paths[0].startswith("/business_units/BU9/")
        if provider == "inv":
            assert set(fake.auth) == {"Bearer inv-token"}
        await asyncio.sleep(0.05)
        assert fake.count("J1") == done.polls  # no poll after the end
    # Metrics name the provider, and each entry is counted once.
    for kind in expected:
        n = metric_sum("syncd_changes_written_total", source=provider, kind=kind) - written[kind]
        assert n == expected.count(kind)
    assert metric_sum("syncd_upstream_requests_total", source=provider) - requests == done.polls


async def test_lost_after_the_404_grace(make_settings: Callable[..., Settings]) -> None:
    """A job that answers 404 for longer than not_found_grace is lost, with the vendor's words."""
    async with serve_jobs() as fake, tracking(make_settings, fake.url) as jt:
        row, _ = await jt.service.register("shop", "ghost")
        started = time.monotonic()
        lost = await settle(jt.service, row.id, "lost")
        assert time.monotonic() - started >= 0.1
        assert lost.last_error == "HTTP 404: Job Not Found"
        assert fake.count("ghost") >= 2
        assert [e["kind"] for e in job_entries(jt.db)] == ["job.pending", "job.lost"]


async def test_a_404_within_the_grace_is_forgiven(make_settings: Callable[..., Settings]) -> None:
    """A new job may 404 for a moment (not yet visible upstream) and then run normally."""
    async with (
        serve_jobs() as fake,
        tracking(make_settings, fake.url, jobs={"not_found_grace": 5}) as jt,
    ):
        fake.script("J2", missing(), missing(), inventory("WORKING"), inventory("SUCCESS"))
        row, _ = await jt.service.register("inv", "J2")
        done = await settle(jt.service, row.id, "succeeded")
        assert done.not_found_since_ns is None
        assert done.last_error is None


async def test_expired_at_the_deadline(make_settings: Callable[..., Settings]) -> None:
    """A job that never ends is expired at jobs.deadline, even with a long backoff."""
    async with (
        serve_jobs() as fake,
        tracking(
            make_settings,
            fake.url,
            jobs={"deadline": 0.3, "backoff_max": 60, "backoff_initial": 0.05},
        ) as jt,
    ):
        fake.script("J3", inventory("WORKING"))
        row, _ = await jt.service.register("inv", "J3")
        started = time.monotonic()
        done = await settle(jt.service, row.id, "expired")
        assert 0.25 <= time.monotonic() - started < 2
        assert done.last_error is not None
        assert "deadline" in done.last_error
        assert [e["kind"] for e in job_entries(jt.db)] == [
            "job.pending",
            "job.running",
            "job.expired",
        ]


async def test_unknown_status_is_recorded_and_treated_as_running(
    make_settings: Callable[..., Settings],
) -> None:
    """An unknown vendor status is stored and logged once, the job counts as running, and the
    poller carries on to the real end."""
    with capture_logs() as logs:
        async with serve_jobs() as fake, tracking(make_settings, fake.url) as jt:
            fake.script(
                "J4",
                inventory("PENDING"),
                inventory("REQUEUED"),
                inventory("REQUEUED"),
                inventory("REQUEUED"),
                inventory("SUCCESS"),
            )
            row, _ = await jt.service.register("inv", "J4")
            await settle(jt.service, row.id, "succeeded")
    entries = job_entries(jt.db)
    assert [e["kind"] for e in entries] == ["job.pending", "job.running", "job.succeeded"]
    assert entries[1]["new"]["vendor_status"] == "REQUEUED"
    unknown = [e for e in logs if e["event"] == "job_unknown_status"]
    assert len(unknown) == 1
    assert unknown[0]["vendor_status"] == "REQUEUED"


async def test_server_errors_and_retry_after(make_settings: Callable[..., Settings]) -> None:
    """500s are retried without losing the job; a 429's Retry-After holds the next request back
    for that long; the job then finishes. The failures log once, then a recovery with the count."""
    with capture_logs() as logs:
        async with serve_jobs() as fake, tracking(make_settings, fake.url) as jt:
            fake.script("J5", server_error(), server_error(), rate_limited(1), inventory("SUCCESS"))
            row, _ = await jt.service.register("inv", "J5")
            done = await settle(jt.service, row.id, "succeeded")
    times = [t for t, j in fake.requests if j == "J5"]
    assert len(times) == 4
    assert times[3] - times[2] >= 0.95  # Retry-After: 1
    assert done.last_error is None
    assert [e["kind"] for e in job_entries(jt.db)] == ["job.pending", "job.succeeded"]
    failed = [e for e in logs if e["event"] == "job_poll_failed"]
    assert len(failed) == 1
    assert "HTTP 500" in failed[0]["error"]
    assert [e["failures"] for e in logs if e["event"] == "job_provider_recovered"] == [3]


async def test_registration_wakes_the_idle_poller(make_settings: Callable[..., Settings]) -> None:
    """With nothing to do the poller sleeps without a timer; a registration wakes it at once."""
    async with serve_jobs() as fake, tracking(make_settings, fake.url) as jt:
        await asyncio.sleep(0.05)
        assert jt.poller.polls == 0
        fake.script("J6", inventory("SUCCESS"))
        started = time.monotonic()
        row, _ = await jt.service.register("inv", "J6")
        await settle(jt.service, row.id, "succeeded")
        assert time.monotonic() - started < 0.5


async def test_forget_stops_polling(make_settings: Callable[..., Settings]) -> None:
    """A forgotten job is no longer polled and its row is gone; its entries stay."""
    async with (
        serve_jobs() as fake,
        tracking(make_settings, fake.url, jobs={"backoff_max": 0.005}) as jt,
    ):
        fake.script("J7", inventory("WORKING"))
        row, _ = await jt.service.register("inv", "J7")
        await settle(jt.service, row.id, "running")
        await jt.service.forget(str(row.id))
        await asyncio.sleep(0.02)
        count = fake.count("J7")
        await asyncio.sleep(0.1)
        assert fake.count("J7") == count
        assert jt.poller.tracked == 0
        assert [e["kind"] for e in job_entries(jt.db)] == ["job.pending", "job.running"]


# --- restart -------------------------------------------------------------------------------------


async def test_restart_mid_poll_resumes_from_sqlite(make_settings: Callable[..., Settings]) -> None:
    """Stopped while a job runs, the poller leaves next poll and attempts in SQLite; a new poller
    on the same database resumes it (no second job.running) and drives it to its end."""
    async with serve_jobs() as fake:
        fake.script("R1", inventory("WORKING"))
        async with tracking(make_settings, fake.url, jobs={"backoff_max": 0.01}) as jt:
            row, _ = await jt.service.register("inv", "R1")
            await settle(jt.service, row.id, "running")
            async with asyncio.timeout(5):
                while (await jt.service.get(str(row.id))).attempts < 3:
                    await asyncio.sleep(0.005)
            db = jt.db
        before = fake.count("R1")
        async with asyncio.timeout(5):
            stored = await _read_row(db, row.id)
        assert stored.state == "running"
        assert stored.attempts >= 3
        assert stored.finished_at is None
        assert stored.polls == before  # every answered poll was committed before the stop
        fake.script("R1", inventory("WORKING"), inventory("SUCCESS"))
        async with tracking(make_settings, fake.url) as jt2:
            assert jt2.poller.tracked == 1
            done = await settle(jt2.service, row.id, "succeeded")
            assert done.polls == before + 2
        assert [e["kind"] for e in job_entries(db)] == [
            "job.pending",
            "job.running",
            "job.succeeded",
        ]


async def _read_row(db: Path, id_: int) -> JobRow:
    store = await Store.open(db, readonly=True)
    try:
        return await JobService(store, {}).get(str(id_))
    finally:
        await store.aclose()


# --- limits --------------------------------------------------------------------------------------


async def test_rate_limit_held_at_the_server(make_settings: Callable[..., Settings]) -> None:
    """40 polls due at once under rate_per_second = 20: the fake never sees more than 20 within
    a second (allowing 50 ms of loopback delivery jitter), and the rate stays close to 20."""
    async with (
        serve_jobs() as fake,
        tracking(
            make_settings,
            fake.url,
            jobs={"backoff_initial": 0, "backoff_max": 0},
            provider_overrides={"inv": {"rate_per_second": 20, "concurrency": 8}},
        ) as jt,
    ):
        for i in range(20):
            fake.script(f"L{i}", inventory("WORKING"), inventory("SUCCESS"))
        await jt.service.register_many([NewJob("inv", f"L{i}") for i in range(20)])
        async with asyncio.timeout(10):
            await jt.poller.wait_idle()
    times = sorted(t for t, _ in fake.requests)
    assert len(times) == 40
    assert fake.max_in_window(0.95) <= 20
    span = times[-1] - times[0]
    assert span >= 39 / 20 * 0.97  # never faster than the limit ...
    assert 39 / span >= 20 * 0.8  # ... and not far below it


async def test_concurrency_limit_held(make_settings: Callable[..., Settings]) -> None:
    """With slow answers and 30 jobs due, at most `concurrency` requests are ever in flight."""
    async with (
        serve_jobs() as fake,
        tracking(
            make_settings,
            fake.url,
            provider_overrides={"shop": {"concurrency": 3, "rate_per_second": 10000}},
        ) as jt,
    ):
        for i in range(30):
            fake.script(f"C{i}", Step(body=commerce("success").body, delay=0.02))
        await jt.service.register_many([NewJob("shop", f"C{i}") for i in range(30)])
        async with asyncio.timeout(10):
            await jt.poller.wait_idle()
        assert fake.max_in_flight == 3
        assert jt.poller.lane_stats("shop") == (0, 3)


async def test_ten_thousand_jobs(db_path: Path) -> None:
    """10,000 jobs registered at once are each polled to success (3 entries each, no more), fast,
    with the concurrency limit held and nothing left scheduled."""
    store = await Store.open(db_path)
    provider = InstantProvider("fast", polls_to_finish=2)
    poller = JobPoller(
        store,
        {"fast": (provider, ProviderLimits(64, 1_000_000))},
        PollerOptions(timing=Timing(0.001, 2, 0.01, 600, 1)),
    )
    service = JobService(store, {"fast": provider.check}, poller=poller)
    try:
        with capture_logs():
            async with running(poller):
                started = time.monotonic()
                await service.register_many([NewJob("fast", str(i)) for i in range(10_000)])
                async with asyncio.timeout(60):
                    await poller.wait_idle()
                elapsed = time.monotonic() - started
    finally:
        await store.aclose()
    assert provider.total == 20_000
    assert set(provider.polls.values()) == {2}
    assert poller.lane_stats("fast")[1] <= 64
    entries = job_entries(db_path)
    assert len(entries) == 30_000
    per_job: dict[str, list[str]] = {}
    for e in entries:
        per_job.setdefault(e["new"]["job_id"], []).append(e["kind"])
    assert len(per_job) == 10_000
    assert all(k == ["job.pending", "job.running", "job.succeeded"] for k in per_job.values())
    assert elapsed < 30, f"10,000 jobs took {elapsed:.1f}s"


async def test_idle_poller_uses_no_cpu(db_path: Path) -> None:
    """2,000 jobs waiting an hour: the poller sleeps until the first is due (no tick)."""
    store = await Store.open(db_path)
    provider = InstantProvider("fast")
    poller = JobPoller(
        store,
        {"fast": (provider, ProviderLimits(4, 100))},
        PollerOptions(timing=Timing(3600, 2, 3600, 86400, 1)),
    )
    service = JobService(store, {"fast": provider.check}, poller=poller)
    try:
        await service.register_many([NewJob("fast", str(i)) for i in range(2000)])
        rows = await service.list_jobs(limit=5000)
        for row in rows:  # push every first poll an hour out
            poller.forget(row.id)
        poller.track(_later(r, 3600) for r in rows)
        async with running(poller):
            cpu = time.process_time()
            await asyncio.sleep(0.3)
            used = time.process_time() - cpu
        assert provider.total == 0
        assert used < 0.05, f"idle poller used {used:.3f}s CPU in 0.3s"
    finally:
        await store.aclose()


def _later(row: JobRow, seconds: float) -> JobRow:
    return replace(row, next_poll_ns=row.next_poll_ns + int(seconds * NS_PER_S))


# --- pure decisions ------------------------------------------------------------------------------


def _job(**kw: Any) -> TrackedJob:
    base: dict[str, Any] = {
        "id": 1,
        "provider": "p",
        "job_id": "j",
        "params": {},
        "state": JobState.RUNNING,
        "vendor_status": "WORKING",
        "job_type": None,
        "registered_ns": 0,
        "next_poll_ns": 0,
    }
    base.update(kw)
    return TrackedJob(**base)


T = Timing(
    backoff_initial=1, backoff_factor=2, backoff_max=300, deadline=86400, not_found_grace=300
)


def test_backoff_grows_and_resets_on_progress() -> None:
    """Without progress the delay ceiling doubles per poll (full jitter: rand=1 is the ceiling);
    new progress figures or a new status reset it."""
    job = _job(attempts=3, progress={"itemCount": 1})
    same = observed(
        job,
        Observation(JobState.RUNNING, "WORKING", progress={"itemCount": 1}),
        now_ns=0,
        timing=T,
        rand=lambda: 1.0,
    )
    assert same.update.attempts == 4
    assert same.update.next_poll_ns == 16 * NS_PER_S
    moved = observed(
        job,
        Observation(JobState.RUNNING, "WORKING", progress={"itemCount": 2}),
        now_ns=0,
        timing=T,
        rand=lambda: 1.0,
    )
    assert moved.update.attempts == 0
    assert moved.update.next_poll_ns == NS_PER_S
    assert not moved.transition
    capped = observed(
        _job(attempts=20),
        Observation(JobState.RUNNING, "WORKING"),
        now_ns=0,
        timing=T,
        rand=lambda: 1.0,
    )
    assert capped.update.next_poll_ns == 300 * NS_PER_S


def test_polls_never_scheduled_past_the_deadline_or_grace() -> None:
    """The next poll is capped at the deadline, and during 404s at the end of the grace."""
    job = _job(attempts=20, registered_ns=0)
    timing = Timing(1, 2, 300, deadline=10, not_found_grace=5)
    assert (
        observed(
            job,
            Observation(JobState.RUNNING, "WORKING"),
            now_ns=NS_PER_S,
            timing=timing,
            rand=lambda: 1.0,
        ).update.next_poll_ns
        == 10 * NS_PER_S
    )
    nf = not_found(job, NotFound(), now_ns=NS_PER_S, timing=timing, rand=lambda: 1.0)
    assert nf.update.next_poll_ns == 6 * NS_PER_S
    assert nf.new_state is JobState.RUNNING
    lost = not_found(
        _job(not_found_since_ns=NS_PER_S), NotFound(), now_ns=6 * NS_PER_S, timing=timing
    )
    assert lost.new_state is JobState.LOST
    assert lost.update.finished


def test_failed_poll_honours_retry_after() -> None:
    """Retry-After replaces the backoff; the state and the vendor's last words are kept."""
    exc = UpstreamError("HTTP 429", status=429, retryable=True, retry_after=7)
    job = _job(messages=("m",))
    out = failed_poll(job, exc, now_ns=0, timing=T)
    assert out.update.next_poll_ns == 7 * NS_PER_S
    assert out.retry_after == 7
    assert out.update.state == "running"
    assert tuple(out.update.messages) == ("m",)
    assert out.update.vendor_status == "WORKING"
    assert out.update.last_error == "HTTP 429"


def test_a_terminal_job_never_moves_again() -> None:
    """An observation cannot move a job back (running stays running on 'pending')."""
    out = observed(_job(), Observation(JobState.PENDING, "PENDING"), now_ns=0, timing=T)
    assert out.new_state is JobState.RUNNING
    assert not out.transition


def test_window_count_helper() -> None:
    """The fake server counts requests per window as expected (guards the rate test itself)."""
    fake = FakeJobServer()
    fake.requests = [(0.0, "a"), (0.5, "a"), (0.99, "a"), (1.0, "a"), (1.2, "a")]
    assert fake.max_in_window(1.0) == 4
    fake.requests = [(0.0, "a"), (1.0, "a"), (2.0, "a")]
    assert fake.max_in_window(1.0) == 1
