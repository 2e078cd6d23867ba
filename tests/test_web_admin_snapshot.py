"""GET /snapshot on the admin listener: the mirror as NDJSON at one seq, taken while syncd writes;
"the snapshot, then the change log after its seq" equals the mirror afterwards (issue 14, part 3)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.simulator import Simulator, SimulatorConfig, serve
from syncd.store.snapshot import iter_snapshot
from tests.conftest import running_daemon
from tests.helpers import catalog_tables, mirror

Key = tuple[str, str, str]


async def _mutate(daemon: Daemon, sim: Simulator, stop: asyncio.Event) -> int:
    """Change counts upstream and poke a pass, over and over, until ``stop``."""
    assert daemon.trigger is not None
    rounds = 0
    while not stop.is_set():
        sim.mutate(7)
        daemon.trigger.poke()
        rounds += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.01)
    return rounds


async def _snapshot(http: aiohttp.ClientSession, url: str) -> tuple[int, list[dict[str, Any]]]:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/x-ndjson"
        lines = [orjson.loads(line) async for line in resp.content if line.strip()]
        return int(resp.headers["X-Syncd-Seq"]), lines


async def _changes_after(
    http: aiohttp.ClientSession, base: str, after: int, head: int
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while after < head:
        async with http.get(f"{base}/changes?after={after}&limit=1000") as resp:
            body = await resp.json()
        entries += body["changes"]
        after = body["next_after"]
    return entries


def _by_key(counts: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Snapshot count lines as tests.helpers.mirror() shapes the stored mirror."""
    fields = ("quantity", "calculated_at", "catalog_object_type", "seq")
    return {
        (c["catalog_object_id"], c["location_id"], c["state"]): {k: c[k] for k in fields}
        for c in counts
    }


def _apply(state: dict[Key, dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    for e in entries:
        key = (e["catalog_object_id"], e["location_id"], e["state"])
        if e["kind"] == "count.updated":
            state[key] = {**e["new"], "seq": e["seq"]}
        elif e["kind"] == "count.removed":
            state.pop(key, None)


async def test_snapshot_then_changes_equals_the_mirror_while_a_sync_runs(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(square={"poll_interval": 0.05, "page_limit": 50})
    async with (
        serve(SimulatorConfig(locations=2, items=400)) as (sim, url),
        running_daemon(settings, url) as daemon,
        aiohttp.ClientSession() as http,
    ):
        assert daemon.store is not None
        assert daemon.admin_url is not None
        store, base = daemon.store, daemon.admin_url
        async with asyncio.timeout(20):
            while store.changelog_head.head < 800:
                await asyncio.sleep(0.01)
        stop = asyncio.Event()
        mutator = asyncio.create_task(_mutate(daemon, sim, stop))
        async with asyncio.timeout(20):  # snapshots taken while passes write
            head_before = store.changelog_head.head
            while store.changelog_head.head < head_before + 50:
                await asyncio.sleep(0.01)
        seq, lines = await _snapshot(http, f"{base}/snapshot")
        stop.set()
        assert await mutator > 0
        assert daemon.engine is not None
        await daemon.engine.run_pass()  # a whole pass after the last upstream change

        header, *counts, footer = lines
        assert header["type"] == "snapshot"
        assert header["seq"] == seq
        assert footer == {
            "type": "end",
            "seq": seq,
            "counts": len(counts),
            "locations": 0,
            "catalog": 0,
        }
        assert seq > head_before, "the snapshot was not taken while entries were being written"
        assert all(c["type"] == "count" and c["seq"] <= seq for c in counts)
        state = _by_key(counts)
        entries = await _changes_after(http, base, seq, store.changelog_head.head)
        assert entries, "no change was written after the snapshot: nothing was proven"
        _apply(state, entries)
        assert state == mirror(settings.database)
        upstream = {(r["catalog_object_id"], r["location_id"], r["state"]) for r in sim.snapshot()}
        assert set(state) == upstream


async def test_snapshot_filters_by_source_and_refuses_a_bad_one(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(square={"poll_interval": 300})
    async with (
        serve(SimulatorConfig(locations=1, items=30)) as (_, url),
        running_daemon(settings, url) as daemon,
        aiohttp.ClientSession() as http,
    ):
        assert daemon.store is not None
        assert daemon.admin_url is not None
        async with asyncio.timeout(10):
            while daemon.store.changelog_head.head < 30:
                await asyncio.sleep(0.01)
        _, lines = await _snapshot(http, f"{daemon.admin_url}/snapshot?source=square")
        assert lines[-1]["counts"] == 30
        _, lines = await _snapshot(http, f"{daemon.admin_url}/snapshot?source=other")
        assert lines[-1]["counts"] == 0
        async with http.get(f"{daemon.admin_url}/snapshot?source=Bad!") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "bad_request"


async def test_iter_snapshot_matches_the_stored_mirror(
    make_settings: Callable[..., Settings],
) -> None:
    """The synchronous reader (for `syncd snapshot`) on the database a daemon is writing."""
    settings = make_settings(square={"poll_interval": 300})
    async with (
        serve(SimulatorConfig(locations=2, items=25)) as (_, url),
        running_daemon(settings, url) as daemon,
    ):
        assert daemon.store is not None
        assert daemon.trigger is not None
        async with asyncio.timeout(10):
            while daemon.trigger.last_success is None:
                await asyncio.sleep(0.01)
        chunks = await asyncio.to_thread(lambda: list(iter_snapshot(settings.database)))
    lines = [orjson.loads(line) for chunk in chunks for line in chunk.splitlines()]
    header, *counts, footer = lines
    assert header["seq"] == footer["seq"] == 52  # 50 counts, the pass's 2 entries
    assert footer["counts"] == len(counts) == 50
    assert _by_key(counts) == mirror(settings.database)


def _catalog_by_key(lines: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """Snapshot location and catalog lines in the shape of tests.helpers.catalog_tables()."""
    out: dict[tuple[str, str], Any] = {}
    for line in lines:
        if line["type"] == "location":
            out[("location", line["location_id"])] = line["value"]
        elif line["type"] == "catalog":
            out[("catalog", line["object_id"])] = line["value"]
    return out


async def test_snapshot_carries_the_catalog_consistent_with_its_seq(
    make_settings: Callable[..., Settings],
) -> None:
    """With the catalog mirrored, the snapshot's location and catalog lines, then the catalog.*
    and location.* entries after its seq, equal the catalog tables afterwards (renames and
    deletions written while it streams)."""
    settings = make_settings(square={"poll_interval": 300, "catalog_sync": True})
    async with (
        serve(SimulatorConfig(locations=3, items=60)) as (sim, url),
        running_daemon(settings, url) as daemon,
        aiohttp.ClientSession() as http,
    ):
        assert daemon.store is not None
        assert daemon.admin_url is not None
        runner = daemon.runner("square")
        assert runner is not None
        assert runner.catalog_trigger is not None
        async with asyncio.timeout(10):
            while runner.catalog_trigger.last_success is None:
                await asyncio.sleep(0.01)
        sim.mutate_catalog(5)
        seq, lines = await _snapshot(http, f"{daemon.admin_url}/snapshot")
        sim.mutate_catalog(5)
        poked = time.monotonic()
        runner.catalog_trigger.poke()
        async with asyncio.timeout(10):  # a catalog pass that began after the last change
            while (runner.catalog_trigger.last_success or 0.0) <= poked:
                await asyncio.sleep(0.01)
        entries = await _changes_after(
            http, daemon.admin_url, seq, daemon.store.changelog_head.head
        )
    footer = lines[-1]
    state = _catalog_by_key(lines)
    assert footer["locations"] == 3
    assert footer["catalog"] == sum(1 for key in state if key[0] == "catalog") > 60
    assert all(line["seq"] <= seq for line in lines[1:-1])
    catalog_entries = [e for e in entries if e["kind"].startswith(("catalog.", "location."))]
    assert catalog_entries, "no catalog change after the snapshot: nothing was proven"
    for e in catalog_entries:
        family = e["kind"].split(".")[0]
        state[(family, e["catalog_object_id"] or e["location_id"])] = e["new"]
    assert state == catalog_tables(settings.database)
