"""Lifecycle entries (issue 14): a pass's entries in its own transaction, source statuses written
on transitions only (by passes and by the monitor), read back after a restart; against the
simulator over real HTTP, into a real SQLite file. The staleness clock is the real one shifted
forward (``Clock``), so no test waits for a limit to pass."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from syncd.simulator import Simulator, SimulatorConfig, serve
from syncd.store import Store
from syncd.sync.engine import EngineOptions, SyncEngine
from syncd.sync.lifecycle import LifecycleMonitor, SourceLifecycle
from syncd.timeutil import NS_PER_S, now_ns, parse_ns
from syncd.upstream.http import RetryPolicy
from syncd.upstream.square import SquareCounts, SquareOptions
from tests.helpers import assert_log_invariants, changes, kinds

LIMIT = 60.0  # the staleness limit the monitor applies (seconds); the clock is shifted past it


class Clock:
    """The wall clock, shifted by ``offset`` seconds (how a test makes time pass)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> int:
        return now_ns() + int(self.offset * NS_PER_S)


@dataclass
class Rig:
    sim: Simulator
    store: Store
    engine: SyncEngine
    clock: Clock
    db: Path
    unauthorized: list[bool]
    pages: list[int]  # the pass id of every page applied

    @property
    def lifecycle(self) -> SourceLifecycle:
        return self.engine.lifecycle

    def monitor(self) -> LifecycleMonitor:
        return LifecycleMonitor(self.store, lambda: [self.lifecycle], LIMIT)

    def restart(self) -> SourceLifecycle:
        """A new lifecycle for the source, as a restarted daemon builds it."""
        lifecycle = SourceLifecycle(
            "square", unauthorized=lambda: self.unauthorized[0], clock=self.clock
        )
        self.engine.lifecycle = lifecycle
        return lifecycle


@asynccontextmanager
async def rig(db: Path) -> AsyncIterator[Rig]:
    async with serve(SimulatorConfig(locations=2, items=10)) as (sim, url):
        store = await Store.open(db)
        try:
            async with aiohttp.ClientSession() as session:
                clock = Clock()
                flag = [False]
                pages: list[int] = []
                engine = SyncEngine(
                    store,
                    SquareCounts(
                        session,
                        SquareOptions(
                            base_url=url,
                            access_token=None,
                            api_version="2025-08-20",
                            page_limit=4,
                            policy=RetryPolicy(max_retries=1, backoff_initial=0, backoff_max=0),
                        ),
                    ),
                    EngineOptions(
                        source="square",
                        location_ids=tuple(sim.location_ids),
                        overlap=1.0,
                        clock_margin=0.0,
                    ),
                    on_page=lambda summary: pages.append(summary.pass_id),
                    lifecycle=SourceLifecycle("square", unauthorized=lambda: flag[0], clock=clock),
                )
                yield Rig(sim, store, engine, clock, db, flag, pages)
        finally:
            await store.aclose()


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def lifecycle_entries(db: Path) -> list[dict[str, Any]]:
    return [e for e in changes(db) if e["kind"].startswith(("pass.", "source."))]


async def test_a_pass_logs_its_completion_and_the_sources_watermark(db_path: Path) -> None:
    """A full pass ends with pass.completed and pass.full_completed, an incremental one with
    pass.completed: after its counts, with the pass's id, kind and figures, each partition's
    watermark as stored in sync_state and the source's (their lowest), its finished_at the one
    in passes; no status entry while the source stays ok. Replaying the counts is the mirror."""
    async with rig(db_path) as r:
        full = await r.engine.run_pass()
        r.sim.mutate(3)
        incremental = await r.engine.run_pass()
    assert (full.kind, incremental.kind) == ("full", "incremental")
    entries = changes(db_path)
    assert [e["kind"] for e in entries[20:]] == [
        "pass.completed",
        "pass.full_completed",
        "count.updated",
        "count.updated",
        "count.updated",
        "pass.completed",
    ]
    marks = dict(rows(db_path, "SELECT partition, watermark FROM sync_state"))
    finished = dict(rows(db_path, "SELECT pass_id, finished_at FROM passes"))
    completed, full_completed, *_, last = entries[20:]
    assert completed["new"] == full_completed["new"]
    for entry, summary in ((completed, full), (last, incremental)):
        new = entry["new"]
        assert (entry["source"], entry["old"], entry["key"]) == ("square", None, (None,) * 3)
        assert new["pass_id"] == summary.pass_id
        assert new["pass_kind"] == summary.kind
        assert (new["pages"], new["counts"], new["changes"]) == (
            summary.pages,
            summary.counts,
            summary.changes,
        )
        assert new["finished_at"] == finished[summary.pass_id]
        assert set(new["partitions"]) == set(r.sim.location_ids)
    assert last["new"]["partitions"] == marks
    assert last["new"]["watermark"] == min(marks.values(), key=parse_ns)
    assert kinds(db_path, "source.") == []
    assert_log_invariants(db_path)


async def test_failed_and_interrupted_passes_complete_nothing(db_path: Path) -> None:
    """A pass that fails (503s) or is cancelled mid-way writes no pass entry (and, not being
    refused its token, no status entry); the next good pass writes its pass.completed."""
    async with rig(db_path) as r:
        await r.engine.run_pass()
        before = kinds(db_path)
        r.sim.fail_next(503, times=20)
        assert not (await r.engine.run_pass()).ok
        assert kinds(db_path) == before
        r.sim.faults.clear()
        r.sim.config.page_delay = 0.2  # each page answers slowly: cancelled while it reads
        applied = len(r.pages)
        task = asyncio.create_task(r.engine.run_pass(full=True))  # 3 pages per location
        async with asyncio.timeout(5):  # cancelled once its first page is in
            while len(r.pages) == applied:
                await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert rows(db_path, "SELECT outcome FROM passes ORDER BY pass_id")[-1] == ("interrupted",)
        assert kinds(db_path) == before
        r.sim.config.page_delay = 0.0
        assert (await r.engine.run_pass()).ok
        assert kinds(db_path) == [*before, "pass.completed"]


async def test_a_refused_token_is_logged_once_and_the_recovery_with_the_good_pass(
    db_path: Path,
) -> None:
    """Passes answered 401 make the source unauthorized: one source.unauthorized entry, however
    many passes fail; the first good pass writes its pass.completed and then source.recovered
    (the same transaction: adjacent seqs)."""
    async with rig(db_path) as r:
        await r.engine.run_pass()
        r.sim.fail_next(401, times=100)
        for _ in range(3):
            failed = await r.engine.run_pass()
            assert not failed.ok
            assert failed.unauthorized
        [refused] = [e for e in changes(db_path) if e["kind"] == "source.unauthorized"]
        assert refused["old"] == {"status": "ok"}
        assert refused["new"]["status"] == "unauthorized"
        assert refused["new"]["pass_id"] == failed.pass_id - 2
        assert "401" in refused["new"]["last_error"]
        r.sim.faults.clear()
        good = await r.engine.run_pass()
        assert good.ok
        *_, completed, recovered = changes(db_path)
        assert (completed["kind"], recovered["kind"]) == ("pass.completed", "source.recovered")
        assert recovered["seq"] == completed["seq"] + 1
        assert recovered["old"] == {"status": "unauthorized"}
        assert recovered["new"]["pass_id"] == good.pass_id
        assert recovered["new"]["last_success_at"] == completed["new"]["finished_at"]
        assert kinds(db_path, "source.") == ["source.unauthorized", "source.recovered"]
        assert_log_invariants(db_path)


async def test_the_monitor_logs_stale_once_and_a_good_pass_recovers(db_path: Path) -> None:
    """Once the last good pass is older than the limit, the monitor writes source.stale (with
    the age and the limit), once however often it looks; a good pass writes source.recovered."""
    async with rig(db_path) as r:
        monitor = r.monitor()
        await r.engine.run_pass()
        assert await monitor.check_all() == []
        r.clock.offset = LIMIT - 5
        assert await monitor.check_all() == []
        r.clock.offset = LIMIT + 5
        assert await monitor.check_all() == [("square", "stale")]
        assert await monitor.check_all() == []
        [stale] = [e for e in changes(db_path) if e["kind"] == "source.stale"]
        assert stale["old"] == {"status": "ok"}
        assert stale["new"]["max_staleness_s"] == LIMIT
        assert LIMIT < stale["new"]["age_s"] < LIMIT + 60
        assert (
            stale["new"]["last_success_at"] == lifecycle_entries(db_path)[0]["new"]["finished_at"]
        )
        assert (await r.engine.run_pass()).ok
        assert kinds(db_path, "source.") == ["source.stale", "source.recovered"]
        r.clock.offset = 0
        assert await monitor.check_all() == []


async def test_a_revoked_grant_between_passes_is_logged_by_the_monitor(db_path: Path) -> None:
    """A grant found revoked without a pass (the token keeper's check): the monitor writes
    source.unauthorized, and source.recovered once the grant works again."""
    async with rig(db_path) as r:
        monitor = r.monitor()
        await r.engine.run_pass()
        r.unauthorized[0] = True
        assert await monitor.check_all() == [("square", "unauthorized")]
        assert await monitor.check_all() == []
        r.unauthorized[0] = False
        assert await monitor.check_all() == [("square", "ok")]
        assert kinds(db_path, "source.") == ["source.unauthorized", "source.recovered"]


async def test_a_restart_reads_the_logged_status_back(db_path: Path) -> None:
    """A restarted source takes its status and last good pass from the database: stale is not
    logged again, and its first good pass logs the recovery; a source that was ok logs nothing."""
    async with rig(db_path) as r:
        await r.engine.run_pass()
        r.clock.offset = LIMIT + 5
        assert await r.monitor().check_all() == [("square", "stale")]
        lifecycle = r.restart()
        await lifecycle.load(r.store)
        assert lifecycle.logged == "stale"
        assert lifecycle.last_success_ns is not None
        # Judged at once after a pass attempt; before it, only once the limit has passed.
        assert await r.monitor().check_all() == []
        assert (await r.engine.run_pass()).ok
        assert kinds(db_path, "source.") == ["source.stale", "source.recovered"]
        r.clock.offset = 0
        lifecycle = r.restart()
        await lifecycle.load(r.store)
        assert lifecycle.logged == "ok"
        assert (await r.engine.run_pass()).ok
        assert kinds(db_path, "source.") == ["source.stale", "source.recovered"]


async def test_a_long_stopped_source_is_not_stale_while_its_first_pass_catches_up(
    db_path: Path,
) -> None:
    """After a stop longer than the limit, a restarted source is not judged before its first
    pass ends (or the limit has passed since the start): a first pass that succeeds logs no
    status; one that fails leaves the source stale at the monitor's next look."""
    async with rig(db_path) as r:
        await r.engine.run_pass()
        r.clock.offset = LIMIT * 10  # the daemon was down for ten limits
        lifecycle = r.restart()
        await lifecycle.load(r.store)
        assert await r.monitor().check_all() == []
        r.sim.fail_next(503, times=20)
        assert not (await r.engine.run_pass()).ok
        assert await r.monitor().check_all() == [("square", "stale")]
        r.sim.faults.clear()
        r.clock.offset = 0  # back to the time the passes' own timestamps are taken in
        r.restart()
        await r.engine.lifecycle.load(r.store)
        assert (await r.engine.run_pass()).ok
        assert await r.monitor().check_all() == []
        assert kinds(db_path, "source.") == ["source.stale", "source.recovered"]
