"""The sync engine against the built-in simulator over real HTTP on loopback, into real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from syncd.errors import UpstreamError
from syncd.model import PassSummary
from syncd.simulator import Simulator, SimulatorConfig, serve
from syncd.store import Store
from syncd.store.counts import ApplyResult
from syncd.sync.engine import EngineOptions, SyncEngine
from syncd.timeutil import parse_ns
from syncd.upstream.http import RetryPolicy
from syncd.upstream.square import SquareCounts, SquareOptions
from tests.fakes.square_scripted import Reply, count, run_scripted
from tests.helpers import assert_log_invariants, changes, count_changes, kinds, mirror

FAST_RETRY = RetryPolicy(max_retries=3, backoff_initial=0.001, backoff_max=0.01)


@dataclass
class Rig:
    """A simulator, a store and an engine wired together."""

    sim: Simulator
    store: Store
    engine: SyncEngine
    db_path: Path

    def upstream_state(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        return {
            (r["catalog_object_id"], r["location_id"], r["state"]): r for r in self.sim.snapshot()
        }

    def assert_mirror_equals_upstream(self) -> None:
        got = {k: (v["quantity"], v["calculated_at"]) for k, v in mirror(self.db_path).items()}
        want = {k: (v["quantity"], v["calculated_at"]) for k, v in self.upstream_state().items()}
        assert got == want


@asynccontextmanager
async def rig(
    db_path: Path,
    *,
    sim_config: SimulatorConfig | None = None,
    page_limit: int = 100,
    locations: tuple[str, ...] | None = None,
    overlap: float = 1.0,
    on_page: Callable[[PassSummary], None] | None = None,
    policy: RetryPolicy = FAST_RETRY,
    full_batch_counts: int = 10_000,
) -> AsyncIterator[Rig]:
    async with serve(sim_config or SimulatorConfig(locations=3, items=40)) as (sim, url):
        store = await Store.open(db_path)
        session = aiohttp.ClientSession()
        try:
            partitions = tuple(sim.location_ids) if locations is None else locations
            upstream = SquareCounts(
                session,
                SquareOptions(
                    base_url=url,
                    access_token=None,
                    api_version="2025-08-20",
                    page_limit=page_limit,
                    policy=policy,
                ),
            )
            engine = SyncEngine(
                store,
                upstream,
                EngineOptions(
                    source="square",
                    location_ids=partitions,
                    overlap=overlap,
                    clock_margin=0.0,
                    partition_concurrency=4,
                    full_batch_counts=full_batch_counts,
                ),
                on_page=on_page,
            )
            yield Rig(sim, store, engine, db_path)
        finally:
            await session.close()
            await store.aclose()


async def test_full_sync_equals_upstream(db_path: Path) -> None:
    """The first pass is full, mirrors the upstream exactly, and logs one change per count."""
    async with rig(db_path) as r:
        summary = await r.engine.run_pass()
        assert summary.ok
        assert summary.kind == "full"
        r.assert_mirror_equals_upstream()
        assert len(count_changes(db_path)) == r.sim.count_total() == 120
        # After the counts, the pass's own entries (not changes of the mirror).
        assert kinds(db_path)[120:] == ["pass.completed", "pass.full_completed"]
        assert_log_invariants(db_path)


def _count_writes(store: Store) -> list[int]:
    """How many pages each write transaction of counts the store runs from now on applied (a
    unit of the engine returns one result per non-empty page)."""
    sizes: list[int] = []
    write_inline = store.write_inline

    async def counting(work: Any) -> Any:
        result = await write_inline(work)
        if isinstance(result, list) and all(isinstance(r, ApplyResult) for r in result):
            sizes.append(len(result))
        return result

    store.write_inline = counting  # type: ignore[method-assign]
    return sizes


async def test_full_pass_writes_its_pages_in_batches(db_path: Path) -> None:
    """A full pass applies its pages in transactions of ``full_batch_counts`` counts shared by
    its chains (here 60 by 3: 2 pages of 10 per transaction, 4 pages per location), an
    incremental one each page alone; either way one entry per change, and the mirror is the
    upstream's."""
    async with rig(db_path, page_limit=10, full_batch_counts=60) as r:
        sizes = _count_writes(r.store)
        full = await r.engine.run_pass()
        assert full.ok
        assert full.kind == "full"
        assert max(sizes) == 2
        assert sum(sizes) < full.pages
        assert len(count_changes(db_path)) == 120
        r.assert_mirror_equals_upstream()
        r.sim.mutate(15)
        sizes.clear()
        incremental = await r.engine.run_pass()
        assert incremental.ok
        assert incremental.kind == "incremental"
        assert set(sizes) == {1}
        assert len(count_changes(db_path)) == 135
        r.assert_mirror_equals_upstream()
        assert_log_invariants(db_path)


class _FailingAfter:
    """An upstream whose every chain fails after its first ``pages`` pages."""

    def __init__(self, inner: Any, pages: int) -> None:
        self._inner = inner
        self._pages = pages

    async def pages(self, **query: Any) -> AsyncIterator[Any]:
        number = 0
        async for page in self._inner.pages(**query):
            if number == self._pages:
                raise UpstreamError("the upstream went away", op="test", status=503)
            number += 1
            yield page


async def test_a_full_pass_that_fails_keeps_the_pages_it_read(db_path: Path) -> None:
    """The pages a full chain read before its upstream failed are written (their batch was not
    full yet), as they were when each page had a transaction of its own; the pass fails, removes
    nothing, and the next one completes the mirror without duplicate entries."""
    async with rig(db_path, page_limit=10, locations=()) as r:
        upstream = r.engine._upstream
        r.engine._upstream = _FailingAfter(upstream, 3)
        failed = await r.engine.run_pass()
        assert not failed.ok
        assert failed.pages == 3
        assert len(mirror(db_path)) == len(count_changes(db_path)) == 30
        r.engine._upstream = upstream
        repaired = await r.engine.run_pass()
        assert repaired.ok
        assert repaired.kind == "full"
        assert len(count_changes(db_path)) == 120
        r.assert_mirror_equals_upstream()
        assert_log_invariants(db_path)


async def test_incremental_after_k_mutations_logs_exactly_k(db_path: Path) -> None:
    """After K upstream mutations, an incremental pass logs exactly K count.updated entries."""
    async with rig(db_path) as r:
        await r.engine.run_pass()
        before = len(count_changes(db_path))
        mutated = r.sim.mutate(17)
        summary = await r.engine.run_pass()
        assert summary.kind == "incremental"
        assert summary.ok
        new = count_changes(db_path)[before:]
        assert len(new) == 17
        assert {e["key"] for e in new} == {
            (m["catalog_object_id"], m["location_id"], m["state"]) for m in mutated
        }
        r.assert_mirror_equals_upstream()
        assert_log_invariants(db_path)


async def test_quiet_pass_logs_nothing(db_path: Path) -> None:
    """With no upstream change, further passes (which overlap the watermark) log no change:
    only each pass's pass.completed entry."""
    async with rig(db_path) as r:
        await r.engine.run_pass()
        before = len(changes(db_path))
        for _ in range(3):
            assert (await r.engine.run_pass()).changes == 0
        assert [e["kind"] for e in changes(db_path)[before:]] == ["pass.completed"] * 3


def passes(db_path: Path) -> list[tuple[int, str, str, str | None]]:
    """(pass_id, kind, outcome, finished_at) of every recorded pass, in id order."""
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(
            "SELECT pass_id, kind, outcome, finished_at FROM passes ORDER BY pass_id"
        ).fetchall()
    finally:
        conn.close()


async def test_an_incremental_pass_writes_its_row_with_its_first_write(db_path: Path) -> None:
    """An incremental pass is recorded with its first change (the rows it writes carry its id)
    or, when it changes nothing, with its end: an idle pass that re-reads the overlap is one
    write (issue 11). A full pass is recorded as running before it reads."""
    seen: list[list[tuple[int, str, str, str | None]]] = []
    async with rig(db_path, on_page=lambda _: seen.append(passes(db_path))) as r:
        first = await r.engine.run_pass()
        assert first.kind == "full"
        assert all((first.pass_id, "full", "running", None) in rows for rows in seen)

        seen.clear()
        quiet = await r.engine.run_pass()
        assert quiet.kind == "incremental"
        assert quiet.changes == 0
        assert quiet.counts > 0, "it re-read the overlap, which changed nothing"
        assert seen
        assert all(len(rows) == 1 for rows in seen), "no row while it reads"
        [_, (pass_id, kind, outcome, finished_at)] = passes(db_path)
        assert (pass_id, kind, outcome) == (quiet.pass_id, "incremental", "ok")
        assert finished_at is not None

        seen.clear()
        mutated = r.sim.mutate(3)
        busy = await r.engine.run_pass()
        assert busy.changes == 3
        assert busy.pass_id is not None
        assert busy.pass_id > pass_id
        assert (busy.pass_id, "incremental", "running", None) in seen[0]
        conn = sqlite3.connect(db_path)
        try:
            stamps = {
                conn.execute(
                    "SELECT seen_pass FROM inventory_counts WHERE catalog_object_id = ?"
                    " AND location_id = ? AND state = ?",
                    (m["catalog_object_id"], m["location_id"], m["state"]),
                ).fetchone()[0]
                for m in mutated
            }
        finally:
            conn.close()
        assert stamps == {busy.pass_id}
        assert passes(db_path)[-1][1:3] == ("incremental", "ok")

        r.sim.fail_next(503, times=50)
        failed = await r.engine.run_pass()
        assert not failed.ok
        assert failed.pass_id is not None
        assert passes(db_path)[-1][:3] == (failed.pass_id, "incremental", "failed")
        entries = [e for e in changes(db_path) if e["kind"] == "pass.completed"]
        assert [e["new"]["pass_id"] for e in entries] == [
            first.pass_id,
            quiet.pass_id,
            busy.pass_id,
        ]


async def _until_watermark_settles(r: Rig, newest_ns: int) -> None:
    """Pass until the watermark is the newest change's instant. Until the upstream's ``Date``
    (whole seconds) passes that instant, the watermark is the ``Date`` and moves with it, so the
    passes of that second read a window that moves once more."""
    async with asyncio.timeout(10):
        while True:
            conn = sqlite3.connect(r.db_path)
            try:
                [(watermark,)] = conn.execute(
                    "SELECT DISTINCT watermark FROM sync_state"
                ).fetchall()
            finally:
                conn.close()
            if parse_ns(watermark) == newest_ns:
                return
            await asyncio.sleep(0.05)
            await r.engine.run_pass()


async def test_a_re_read_page_applied_already_writes_nothing(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passes that re-read the same overlap, answered the same, apply it once: each later one
    writes only its own end (one unit). A change upstream, or a full pass, applies anew."""
    async with rig(db_path, overlap=3600.0, locations=()) as r:
        units: list[object] = []
        write_inline = r.store.write_inline

        def counting(work: Any) -> Any:
            units.append(work)
            return write_inline(work)

        monkeypatch.setattr(r.store, "write_inline", counting)
        await r.engine.run_pass()
        changed = r.sim.mutate(3)
        assert (await r.engine.run_pass()).changes == 3
        await _until_watermark_settles(r, max(parse_ns(str(c["calculated_at"])) for c in changed))
        first = await r.engine.run_pass()  # from the watermark the changes moved
        assert first.changes == 0
        for _ in range(3):
            units.clear()
            quiet = await r.engine.run_pass()
            assert quiet.kind == "incremental"
            assert quiet.changes == 0
            assert quiet.counts == first.counts > 0, "the same overlap, read again"
            assert len(units) == 1, "its end only"
        r.sim.mutate(2)
        units.clear()
        assert (await r.engine.run_pass()).changes == 2
        assert len(units) == 2
        units.clear()
        assert (await r.engine.run_pass(full=True)).changes == 0
        units.clear()
        quiet = await r.engine.run_pass()
        assert len(units) == 2, "after a full pass the overlap is applied once more"
        assert quiet.changes == 0
        r.assert_mirror_equals_upstream()
        assert_log_invariants(db_path)


async def test_equal_calculated_at_across_page_boundaries(db_path: Path) -> None:
    """Many counts sharing one calculated_at, split over small pages, are each applied once."""
    async with rig(db_path, page_limit=3) as r:
        await r.engine.run_pass()
        before = len(count_changes(db_path))
        r.sim.mutate(11, same_instant=True)
        await r.engine.run_pass()
        assert len(count_changes(db_path)) - before == 11
        r.assert_mirror_equals_upstream()
        assert_log_invariants(db_path)


async def test_short_non_final_pages_are_followed(db_path: Path) -> None:
    """A page shorter than the limit that still carries a cursor is not the end."""
    async with rig(
        db_path, sim_config=SimulatorConfig(locations=2, items=60, short_pages=True), page_limit=25
    ) as r:
        await r.engine.run_pass()
        r.assert_mirror_equals_upstream()


async def test_stale_row_never_overwrites_newer(db_path: Path) -> None:
    """An out-of-order (older) row from upstream leaves the newer mirrored value and logs nothing."""
    async with rig(db_path) as r:
        await r.engine.run_pass()
        row = r.sim.snapshot()[0]
        key = (row["catalog_object_id"], row["location_id"], row["state"])
        r.sim.set_count(*key, quantity="999", calculated_at="2001-01-01T00:00:00Z")
        before = len(count_changes(db_path))
        await r.engine.run_pass(full=True)
        assert mirror(db_path)[key]["quantity"] == row["quantity"]
        assert len(count_changes(db_path)) == before


async def test_vanished_counts_removed_by_full_pass(db_path: Path) -> None:
    """A full pass removes counts that vanished upstream, one count.removed entry each."""
    async with rig(db_path) as r:
        await r.engine.run_pass()
        gone = r.sim.remove(5)
        summary = await r.engine.run_pass(full=True)
        assert summary.removed == 5
        removed = [e for e in changes(db_path) if e["kind"] == "count.removed"]
        assert {e["key"] for e in removed} == {
            (g["catalog_object_id"], g["location_id"], g["state"]) for g in gone
        }
        r.assert_mirror_equals_upstream()
        assert_log_invariants(db_path)


async def test_unpartitioned_pass_uses_one_chain(db_path: Path) -> None:
    """With no locations configured there is one partition '*' covering every location."""
    async with rig(db_path, locations=()) as r:
        summary = await r.engine.run_pass()
        assert summary.partitions == ["*"]
        r.assert_mirror_equals_upstream()


def partition_rows(db_path: Path) -> dict[str, tuple[str, int, int, int]]:
    """partition -> (last_outcome, pages, counts_seen, changes) from sync_state."""
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(
            "SELECT partition, last_outcome, pages, counts_seen, changes FROM sync_state"
        ).fetchall()
    finally:
        conn.close()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


async def test_healthy_partitions_share_one_chain_in_incremental_passes(db_path: Path) -> None:
    """Once every partition has a watermark and its last chain ended well, an incremental pass reads
    them all in one chain (one request here, not one per location), logs each change once, and
    records each partition's own counts and changes."""
    async with rig(db_path) as r:
        await r.engine.run_pass()
        mutated = r.sim.mutate(17)
        before, requests = len(count_changes(db_path)), r.sim.requests
        summary = await r.engine.run_pass()
        assert summary.ok
        assert summary.kind == "incremental"
        assert r.sim.requests - requests == 1
        assert len(count_changes(db_path)) - before == 17
        rows = partition_rows(db_path)
        assert set(rows) == set(r.sim.location_ids)
        for location, (outcome, pages, _seen, changed) in rows.items():
            assert (outcome, pages) == ("ok", 1)
            assert changed == sum(m["location_id"] == location for m in mutated)
        assert sum(row[2] for row in rows.values()) == summary.counts
        r.assert_mirror_equals_upstream()
        assert_log_invariants(db_path)


async def test_a_failed_shared_chain_gives_each_partition_its_own_again(db_path: Path) -> None:
    """A shared chain that fails fails every partition in it, moving no watermark; the next pass
    gives each partition its own chain (so one failing location fails alone), and once they have
    all ended well they share again."""
    async with rig(db_path) as r:
        await r.engine.run_pass()
        marks = watermarks(db_path)
        r.sim.fail_next(500, times=FAST_RETRY.max_retries + 1)
        failed = await r.engine.run_pass()
        assert not failed.ok
        assert {row[0] for row in partition_rows(db_path).values()} == {"failed"}
        assert watermarks(db_path) == marks
        r.sim.mutate(5)
        requests = r.sim.requests
        assert (await r.engine.run_pass()).ok
        assert r.sim.requests - requests == len(r.sim.location_ids)
        requests = r.sim.requests
        assert (await r.engine.run_pass()).ok
        assert r.sim.requests - requests == 1
        r.assert_mirror_equals_upstream()
        assert_log_invariants(db_path)


async def test_429_with_retry_after_then_success(db_path: Path) -> None:
    """A 429 with Retry-After is waited out and the pass succeeds."""
    async with rig(db_path) as r:
        r.sim.fail_next(429, times=1, retry_after=0)
        summary = await r.engine.run_pass()
        assert summary.ok
        r.assert_mirror_equals_upstream()


async def test_500s_then_success(db_path: Path) -> None:
    """Transient 500s are retried and the pass succeeds."""
    async with rig(db_path) as r:
        r.sim.fail_next(500, times=2)
        assert (await r.engine.run_pass()).ok
        r.assert_mirror_equals_upstream()


def watermarks(db_path: Path) -> dict[str, str | None]:
    conn = sqlite3.connect(db_path)
    try:
        return dict(conn.execute("SELECT partition, watermark FROM sync_state").fetchall())
    finally:
        conn.close()


async def test_failure_midway_keeps_watermark_and_repairs_without_duplicates(db_path: Path) -> None:
    """A pass that fails after some pages leaves the watermark; the next one repairs, no duplicates."""
    holder: dict[str, Simulator] = {}
    armed = [True]

    def fail_after_first_page(summary: PassSummary) -> None:
        if summary.kind == "incremental" and summary.pages == 1 and armed[0]:
            armed[0] = False
            holder["sim"].fail_next(503, times=50)

    async with rig(db_path, page_limit=5, on_page=fail_after_first_page, locations=()) as r:
        holder["sim"] = r.sim
        await r.engine.run_pass()
        marks = watermarks(db_path)
        before = len(count_changes(db_path))
        passes = kinds(db_path, "pass.")
        r.sim.mutate(20)
        failed = await r.engine.run_pass()
        assert not failed.ok
        assert 1 <= failed.pages < 4
        assert watermarks(db_path) == marks
        assert kinds(db_path, "pass.") == passes, "a failed pass is not a completed one"
        r.sim.faults.clear()
        repaired = await r.engine.run_pass()
        assert repaired.ok
        assert len(count_changes(db_path)) - before == 20
        assert kinds(db_path, "pass.") == [*passes, "pass.completed"]
        r.assert_mirror_equals_upstream()
        assert_log_invariants(db_path)


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (Reply(raw=b'{"counts": [', headers={}), "not JSON"),
        (Reply(body={"counts": [count(quantity="lots")]}), "quantity"),
        (
            Reply(
                body={
                    "counts": [
                        {
                            "catalog_object_id": "X",
                            "state": "IN_STOCK",
                            "quantity": "1",
                            "calculated_at": "2026-01-01T00:00:00Z",
                        }
                    ]
                }
            ),
            "location_id",
        ),
    ],
)
async def test_malformed_page_fails_pass_cleanly(db_path: Path, reply: Reply, problem: str) -> None:
    """A malformed page fails the pass with a named problem; watermark and mirror stay as they were."""
    good = Reply(body={"counts": [count(obj="A", calculated_at="2026-01-01T00:00:00Z")]})
    async with run_scripted([good, good, reply]) as server:
        store = await Store.open(db_path)
        session = aiohttp.ClientSession()
        try:
            engine = SyncEngine(
                store,
                SquareCounts(
                    session,
                    SquareOptions(
                        base_url=server.url,
                        access_token="t",
                        api_version="2025-08-20",
                        policy=FAST_RETRY,
                    ),
                ),
                EngineOptions(source="square", clock_margin=0.0),
            )
            assert (await engine.run_pass()).ok  # full pass: listing + catch-up chain
            marks = watermarks(db_path)
            failed = await engine.run_pass()
            assert not failed.ok
            assert failed.error is not None
            assert problem in failed.error
            assert watermarks(db_path) == marks
            assert len(mirror(db_path)) == 1
            assert len(count_changes(db_path)) == 1
            # The first (full) pass's entries; the failed pass has none.
            assert kinds(db_path, "pass.") == ["pass.completed", "pass.full_completed"]
        finally:
            await session.close()
            await store.aclose()
