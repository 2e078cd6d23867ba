"""The catalog engine (syncd.sync.catalog) against the simulator served on 127.0.0.1, with a real
store: first sync, renames, deletions, new variations, faults mid-chain, the full pass's sweep,
counts joined by SKU through the ``inventory`` view, and a replay of the log that reproduces the
catalog tables."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from syncd.config import Settings
from syncd.simulator import Marketplace, SimulatorConfig, serve_marketplace
from syncd.simulator.catalog import Simulator
from syncd.source_parts import SourceParts, open_source
from syncd.store import Store, changelog
from syncd.store import catalog as cat
from syncd.sync.catalog import CatalogEngine
from syncd.timeutil import parse_ns
from tests.helpers import catalog_tables, changes, replay_catalog

SOURCE = "square"


@dataclass
class Rig:
    sim: Simulator
    parts: SourceParts
    db_path: Path

    @property
    def catalog(self) -> CatalogEngine:
        assert self.parts.catalog is not None
        return self.parts.catalog

    def entries(self, kind_prefix: str = "catalog.") -> list[dict[str, Any]]:
        return [e for e in changes(self.db_path) if e["kind"].startswith(kind_prefix)]

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db_path)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


@asynccontextmanager
async def rig(
    store: Store,
    db_path: Path,
    make_settings: Callable[..., Settings],
    config: SimulatorConfig,
    **source: Any,
) -> AsyncIterator[Rig]:
    """One simulated seller and the source parts the daemon would build for it."""
    async with serve_marketplace([config]) as (market, url):
        conf = {"base_url": url, "access_token": "t", "catalog_sync": True, **source}
        settings = make_settings(square=conf)
        parts = open_source(store, SOURCE, settings.sources[SOURCE])
        try:
            yield Rig(_first(market), parts, db_path)
        finally:
            await parts.aclose()


def _first(market: Marketplace) -> Simulator:
    return market.first


def live_variations(r: Rig) -> dict[str, dict[str, Any]]:
    """The simulator's live variations by id, as it would serve them."""
    return {str(o["id"]): o for o in r.sim.catalog_snapshot() if o["type"] == "ITEM_VARIATION"}


async def test_first_pass_is_full_and_mirrors_the_whole_catalog_and_locations(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """The first pass reads everything: one entry per item, variation and location; SKUs, names
    and GTINs as served (SKU null where there is none); the watermark is Square's latest_time."""
    async with rig(store, db_path, make_settings, SimulatorConfig(items=40, locations=2)) as r:
        summary = await r.catalog.run_pass()
        snapshot = r.sim.catalog_snapshot()
        served = live_variations(r)
        served_locations = {loc["id"]: loc for loc in r.sim.locations()}
    assert summary.ok, summary.error
    assert summary.kind == "catalog_full"
    entries = r.entries()
    assert len([e for e in entries if e["kind"] == "catalog.updated"]) == len(snapshot)
    stored = {
        row[0]: row[1:]
        for row in r.rows(
            "SELECT variation_id, sku, name, gtin, is_deleted FROM catalog_variations"
        )
    }
    assert set(stored) == set(served)
    for vid, obj in served.items():
        data = obj["item_variation_data"]
        assert stored[vid] == (data.get("sku") or None, data["name"], data.get("upc"), 0)
    assert any(v[0] is None for v in stored.values())
    located = r.rows("SELECT location_id, name, status, timezone FROM locations")
    assert len(located) == 2
    for location_id, name, status, tz in located:
        loc = served_locations[location_id]
        assert (name, status, tz) == (loc["name"], loc["status"], loc["timezone"])
    assert len(r.entries("location.")) == 2
    state = await store.read(lambda conn: cat.load_state(conn, SOURCE))
    assert state.latest_time == max(str(o["updated_at"]) for o in snapshot)
    assert state.last_full_at is not None
    assert state.last_error is None


async def test_rename_reaches_the_log_once_and_a_quiet_pass_logs_nothing(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """An incremental pass after renames writes one catalog.updated per renamed object with the
    old and new names; the next pass (which re-reads the overlap) writes nothing."""
    config = SimulatorConfig(items=30, locations=1)
    async with rig(store, db_path, make_settings, config, catalog_overlap=30) as r:
        await r.catalog.run_pass()
        before = len(r.entries())
        renamed = r.sim.rename_catalog(5) + r.sim.rename_catalog(2, "ITEM")
        second = await r.catalog.run_pass()
        after_rename = r.entries()[before:]
        third = await r.catalog.run_pass()
        after_quiet = r.entries()[before:]
    assert second.ok
    assert second.kind == "catalog"
    assert sorted(e["key"][0] for e in after_rename) == sorted(str(o["id"]) for o in renamed)
    for entry in after_rename:
        assert entry["kind"] == "catalog.updated"
        assert entry["old"]["name"] != entry["new"]["name"]
    assert third.ok
    assert third.changes == 0
    assert after_quiet == after_rename


async def test_deleted_objects_are_marked_not_forgotten(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """A deleted item and variation are kept with is_deleted = 1 (one catalog.deleted each); the
    inventory view flags counts of deleted variations."""
    async with rig(store, db_path, make_settings, SimulatorConfig(items=20, locations=1)) as r:
        await r.catalog.run_pass()
        await r.parts.engine.run_pass()
        deleted = r.sim.delete_catalog(2)
        await r.catalog.run_pass()
    ids = sorted(str(o["id"]) for o in deleted if o["type"] == "ITEM_VARIATION")
    assert len(ids) == 2
    assert all(o["is_deleted"] for o in deleted if o["type"] == "ITEM_VARIATION")
    every = sorted(str(o["id"]) for o in deleted)  # with the items left without variations
    assert sorted(e["key"][0] for e in r.entries("catalog.deleted")) == every
    marks = ",".join("?" * len(ids))
    assert r.rows(
        f"SELECT variation_id, is_deleted FROM catalog_variations WHERE variation_id IN ({marks})"
        " ORDER BY 1",
        *ids,
    ) == [(i, 1) for i in ids]
    flagged = r.rows(
        f"SELECT DISTINCT catalog_object_id FROM inventory WHERE catalog_deleted = 1"
        f" AND catalog_object_id IN ({marks}) ORDER BY 1",
        *ids,
    )
    assert [row[0] for row in flagged] == ids


async def test_new_variations_join_their_counts_once_the_catalog_knows_them(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """Counts of a variation the catalog does not know yet are kept and join as unknown; once a
    catalog pass has read it they join with item, variation and location names."""
    async with rig(store, db_path, make_settings, SimulatorConfig(items=10, locations=2)) as r:
        await r.catalog.run_pass()
        added = r.sim.add_variations(1)
        await r.parts.engine.run_pass()
        vid = next(str(o["id"]) for o in added if o["type"] == "ITEM_VARIATION")
        sql = (
            "SELECT unknown_variation, item_name, variation_name, location_name FROM inventory"
            " WHERE catalog_object_id = ? ORDER BY location_name"
        )
        before = r.rows(sql, vid)
        unknown_total = await store.read(lambda conn: cat.unknown_variation_counts(conn, SOURCE))
        await r.catalog.run_pass()
        after = r.rows(sql, vid)
        counted = [c for c in r.sim.snapshot() if c["catalog_object_id"] == vid]
    assert len(before) == len(counted) == 2
    assert all(row[0] == 1 and row[1] is None and row[2] is None for row in before)
    assert unknown_total == 2
    assert len(after) == 2
    assert all(row[0] == 0 and row[1] and row[2] and row[3] for row in after)


async def test_counts_by_sku_and_location_name_through_the_view(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """`WHERE sku = ?` returns exactly the counts of that SKU's variation, with its names;
    `WHERE location_name = ?` exactly that location's counts."""
    async with rig(store, db_path, make_settings, SimulatorConfig(items=30, locations=3)) as r:
        await r.catalog.run_pass()
        await r.parts.engine.run_pass()
        served = live_variations(r)
        counts = r.sim.snapshot()
        names = {loc["id"]: loc["name"] for loc in r.sim.locations()}
    with_sku = {vid: o for vid, o in served.items() if o["item_variation_data"].get("sku")}
    assert with_sku
    for vid, obj in list(with_sku.items())[:5]:
        sku = obj["item_variation_data"]["sku"]
        got = r.rows(
            "SELECT catalog_object_id, location_id, quantity, variation_name FROM inventory"
            " WHERE sku = ?",
            sku,
        )
        expected = {
            (c["catalog_object_id"], c["location_id"], c["quantity"])
            for c in counts
            if c["catalog_object_id"] == vid
        }
        assert {row[:3] for row in got} == expected
        assert {row[3] for row in got} == {obj["item_variation_data"]["name"]}
    location_id, name = next(iter(names.items()))
    at = r.rows("SELECT location_id FROM inventory WHERE location_name = ?", name)
    assert len(at) == sum(1 for c in counts if c["location_id"] == location_id)
    assert {row[0] for row in at} == {location_id}


async def test_a_fault_mid_chain_keeps_the_watermark_and_the_next_pass_repairs(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """A chain that fails on a later page applies the pages before it but keeps the watermark;
    the next pass reads from the old watermark and logs each change exactly once."""
    config = SimulatorConfig(items=60, locations=1)
    async with rig(store, db_path, make_settings, config, max_retries=0, page_limit=10) as r:
        first = await r.catalog.run_pass()
        state = await store.read(lambda conn: cat.load_state(conn, SOURCE))
        renamed = r.sim.rename_catalog(30)
        r.sim.fail_catalog_next(503, times=1, after=1)
        failed = await r.catalog.run_pass()
        kept = await store.read(lambda conn: cat.load_state(conn, SOURCE))
        repaired = await r.catalog.run_pass()
    assert first.ok
    assert not failed.ok
    assert failed.error is not None
    assert failed.pages == 1
    assert failed.changes > 0
    assert kept.latest_time == state.latest_time
    assert kept.last_error is not None
    assert repaired.ok
    updated = [e["key"][0] for e in r.entries("catalog.updated")[len(r.sim.catalog_snapshot()) :]]
    assert sorted(updated) == sorted(str(o["id"]) for o in renamed)


async def test_a_full_pass_writes_pages_in_batches_and_keeps_them_on_a_fault(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """A full pass applies several pages per write transaction (``full_batch_objects``); when its
    chain fails midway the pages read before the fault are kept and the watermark stays unset;
    the next pass logs each object once over all."""
    config = SimulatorConfig(items=60, locations=1)
    async with rig(store, db_path, make_settings, config, max_retries=0, page_limit=10) as r:
        r.catalog.options = replace(r.catalog.options, full_batch_objects=35)
        batches = _catalog_batches(store)
        r.sim.fail_catalog_next(503, times=1, after=6)
        failed = await r.catalog.run_pass(full=True)
        batches.append(0)
        kept = await store.read(lambda conn: cat.load_state(conn, SOURCE))
        applied = len(r.entries(""))
        repaired = await r.catalog.run_pass()
        snapshot = r.sim.catalog_snapshot()
    assert not failed.ok
    assert failed.pages == 6
    assert batches[0] == 2  # 4 pages of 10 objects reach 35; then the 2 before the fault
    assert kept.latest_time is None
    assert applied == failed.changes > 0
    assert repaired.ok, repaired.error
    assert repaired.kind == "catalog_full"
    assert 0 < batches[1] < repaired.pages
    logged = [e["key"][0] for e in r.entries()]
    assert sorted(logged) == sorted(str(o["id"]) for o in snapshot)


def _catalog_batches(store: Store) -> list[int]:
    """Counts the catalog write transactions the store runs from now on (a batch of pages returns
    a list of results) into the last figure of the list returned; append 0 to start another.
    Units run either way are counted (the catalog engine's run inline)."""
    batches: list[int] = [0]

    def counted(write: Any) -> Any:
        async def counting(work: Any) -> Any:
            result = await write(work)
            if isinstance(result, list):
                batches[-1] += 1
            return result

        return counting

    store.write = counted(store.write)  # type: ignore[method-assign]
    store.write_inline = counted(store.write_inline)  # type: ignore[method-assign]
    return batches


async def test_full_pass_marks_deleted_what_the_catalog_no_longer_lists(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """An object the mirror has but a full read no longer lists (purged upstream) is marked
    deleted with one catalog.deleted entry; an incremental pass never does that."""
    ghost = cat.VariationRow("GHOST", None, "Gone", "SKU-GONE", None, None, None, False, 1, "x")
    async with rig(store, db_path, make_settings, SimulatorConfig(items=5, locations=1)) as r:
        await r.catalog.run_pass()
        await store.write(lambda conn: cat.apply_variations(conn, SOURCE, [ghost], "t"))
        incremental = await r.catalog.run_pass()
        after_incremental = r.rows(
            "SELECT is_deleted FROM catalog_variations WHERE variation_id = 'GHOST'"
        )
        full = await r.catalog.run_pass(full=True)
    assert incremental.ok
    assert incremental.removed == 0
    assert after_incremental == [(0,)]
    assert full.ok
    assert full.removed == 1
    assert r.rows("SELECT is_deleted FROM catalog_variations WHERE variation_id = 'GHOST'") == [
        (1,)
    ]
    gone = r.entries("catalog.deleted")
    assert [e["key"][0] for e in gone] == ["GHOST"]
    assert gone[0]["old"]["sku"] == "SKU-GONE"
    assert gone[0]["new"]["is_deleted"] is True


async def test_replaying_the_log_reproduces_the_catalog_tables(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """After a first sync, mutations of every kind and a full pass, applying each catalog and
    location entry's new value in seq order gives exactly the stored rows."""
    config = SimulatorConfig(items=25, locations=2, seed=7)
    async with rig(store, db_path, make_settings, config) as r:
        await r.catalog.run_pass()
        r.sim.rename_catalog(3)
        r.sim.delete_catalog(1, "ITEM")
        r.sim.add_variations(2)
        r.sim.mutate_catalog(10)
        await r.catalog.run_pass()
        await r.catalog.run_pass(full=True)
    assert replay_catalog(db_path) == catalog_tables(db_path)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_catalog_fails_the_pass_with_the_reason(
    store: Store, db_path: Path, make_settings: Callable[..., Settings], status: int
) -> None:
    """A seller whose token lacks ITEMS_READ (403) or is refused (401): the pass fails with the
    reason stored in catalog_state.last_error; the counts are not affected."""
    async with rig(store, db_path, make_settings, SimulatorConfig(items=5, locations=1)) as r:
        r.sim.fail_catalog_next(status, times=10)
        summary = await r.catalog.run_pass()
        counts = await r.parts.engine.run_pass()
    assert not summary.ok
    state = await store.read(lambda conn: cat.load_state(conn, SOURCE))
    assert state.last_error is not None
    assert str(status) in state.last_error
    assert state.latest_time is None
    assert counts.ok


async def test_count_entries_carry_the_sku_the_catalog_had(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """With the catalog read first, every count entry's `sku` is its variation's SKU (NULL for a
    variation without one, or not known yet); the public record carries it too."""
    async with rig(store, db_path, make_settings, SimulatorConfig(items=30, locations=2)) as r:
        await r.catalog.run_pass()
        added = r.sim.add_variations(1)
        await r.parts.engine.run_pass()
        new = next(str(o["id"]) for o in added if o["type"] == "ITEM_VARIATION")
        records = await store.read(lambda conn: changelog.read_after(conn, 0, 100_000))
    skus = dict(r.rows("SELECT variation_id, sku FROM catalog_variations"))
    counted = [c for c in records if c.kind == "count.updated"]
    assert counted
    for change in counted:
        assert change.catalog_object_id is not None
        assert change.sku == skus.get(change.catalog_object_id)
        assert change.to_record()["sku"] == change.sku
    assert any(c.sku is not None for c in counted)
    assert any(c.sku is None and c.catalog_object_id in skus for c in counted)  # no SKU
    assert {c.sku for c in counted if c.catalog_object_id == new} == {None}  # not known yet
    variation_entries = [c for c in records if c.kind == "catalog.updated" and c.sku]
    assert all(c.sku == skus[str(c.catalog_object_id)] for c in variation_entries)


def figures(r: Rig) -> tuple[Any, ...]:
    """The stored figures: (variations, unknown_variations, unknown_checked_at)."""
    [row] = r.rows(
        "SELECT variations, unknown_variations, unknown_checked_at FROM catalog_state"
        " WHERE source = ?",
        SOURCE,
    )
    return tuple(row)


def unknown_now(r: Rig) -> int:
    [(n,)] = r.rows("SELECT COUNT(*) FROM inventory WHERE unknown_variation = 1")
    return int(n)


async def test_counts_of_unknown_variations_are_recounted_after_catalog_and_full_passes(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """The stored figure of counts whose variation is unknown follows the view: 0 after the
    first catalog pass and the first (full) counts pass; after new variations' counts arrive it
    is recounted by the next full counts pass (an incremental one leaves it as it was: counting
    reads every count); the catalog pass that reads the variations brings it back to 0."""
    async with rig(store, db_path, make_settings, SimulatorConfig(items=20, locations=2)) as r:
        await r.catalog.run_pass()
        assert figures(r)[:2] == (len(live_variations(r)), 0)  # no counts yet
        first = await r.parts.engine.run_pass()
        assert first.kind == "full"
        assert first.changes > 0
        variations, unknown, checked_first = figures(r)
        assert (variations, unknown) == (len(live_variations(r)), 0)

        r.sim.add_variations(2)
        incremental = await r.parts.engine.run_pass()
        assert incremental.kind == "incremental"
        assert unknown_now(r) == 2 * 2  # 2 variations at 2 locations
        assert figures(r)[1:] == (0, checked_first)  # not recounted

        await r.parts.engine.run_pass(full=True)
        assert unknown_now(r) == 4
        after_full = figures(r)
        assert after_full[1] == 4
        assert parse_ns(after_full[2]) >= parse_ns(checked_first)

        summary = await r.catalog.run_pass()
        assert summary.ok, summary.error
        assert unknown_now(r) == 0
        assert figures(r)[:2] == (len(live_variations(r)), 0)
        assert parse_ns(figures(r)[2]) >= parse_ns(after_full[2])


async def test_a_refused_catalog_shows_every_count_as_unknown(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """A catalog the token may not read (403): its failed pass still stores the figures, and
    after the first counts pass every count is counted unknown (the view joins none)."""
    async with rig(store, db_path, make_settings, SimulatorConfig(items=5, locations=2)) as r:
        r.sim.fail_catalog_next(403, times=10)
        assert not (await r.catalog.run_pass()).ok
        assert figures(r)[:2] == (0, 0)
        await r.parts.engine.run_pass()
        total = len(r.sim.snapshot())
    assert total > 0
    assert figures(r)[:2] == (0, total)
    assert unknown_now(r) == total


async def test_without_the_catalog_no_figures_are_stored(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """With catalog_sync off no catalog pass runs: a full counts pass stores no figures (every
    count would be unknown, and `syncd status` says the catalog is off instead)."""
    async with rig(
        store, db_path, make_settings, SimulatorConfig(items=5, locations=1), catalog_sync=False
    ) as r:
        assert r.parts.catalog is None
        assert (await r.parts.engine.run_pass()).changes > 0
    assert r.rows("SELECT COUNT(*) FROM catalog_state") == [(0,)]


async def test_a_later_pass_of_the_same_engine_logs_a_location_change_once(
    store: Store, db_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """The engine remembers the locations it applied (an idle pass rewrites nothing), yet a
    location renamed upstream reaches the log once, on the next pass, and not again after."""
    async with rig(store, db_path, make_settings, SimulatorConfig(items=5, locations=2)) as r:
        await r.catalog.run_pass()
        quiet = await r.catalog.run_pass()
        first = r.sim.locations()[0]["id"]
        r.sim.rename_location(first, "Harbour Street")
        renamed = await r.catalog.run_pass()
        again = await r.catalog.run_pass()
    assert quiet.ok
    assert quiet.changes == 0
    assert renamed.ok
    assert renamed.changes == 1
    assert again.ok
    assert again.changes == 0
    updates = r.entries("location.")
    assert len(updates) == 3  # two at the first pass, one for the rename
    assert updates[-1]["key"][1] == first
    assert updates[-1]["old"]["name"] != "Harbour Street"
    assert updates[-1]["new"]["name"] == "Harbour Street"
    assert r.rows("SELECT name FROM locations WHERE location_id = ?", first) == [
        ("Harbour Street",)
    ]


async def test_an_idle_catalog_pass_writes_only_its_state(
    store: Store,
    db_path: Path,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Passes that re-read the same overlap, answered the same, write one unit each (the
    state), reading nothing back; a rename upstream is applied anew, and after a full pass the
    overlap is applied once more (its sweep may have marked deleted what the page revives)."""
    config = SimulatorConfig(items=20, locations=2)
    async with rig(store, db_path, make_settings, config, catalog_overlap=3600) as r:
        writes: list[object] = []
        reads: list[object] = []
        write_inline, read_inline = store.write_inline, store.read_inline

        def counting_write(work: Any) -> Any:
            writes.append(work)
            return write_inline(work)

        def counting_read(work: Any) -> Any:
            reads.append(work)
            return read_inline(work)

        monkeypatch.setattr(store, "write_inline", counting_write)
        monkeypatch.setattr(store, "read_inline", counting_read)
        await r.catalog.run_pass()
        first = await r.catalog.run_pass()
        assert first.ok
        assert first.changes == 0
        assert first.counts > 0
        for _ in range(3):
            writes.clear()
            reads.clear()
            quiet = await r.catalog.run_pass()
            assert quiet.ok
            assert quiet.kind == "catalog"
            assert quiet.changes == 0
            assert quiet.counts == first.counts, "the same overlap, read again"
            assert len(writes) == 1, "its state only"
            assert reads == []
        renamed = r.sim.rename_catalog(2)
        writes.clear()
        changed = await r.catalog.run_pass()
        assert changed.changes == len(renamed)
        assert len(writes) == 3, "the page, the state, and the figures a change recounts"
        await r.catalog.run_pass(full=True)
        writes.clear()
        after_full = await r.catalog.run_pass()
        assert after_full.changes == 0
        assert len(writes) == 2, "after a full pass the overlap is applied once more"
    assert replay_catalog(db_path) == catalog_tables(db_path)
