"""The mirror and the change log: a change entry exists exactly when a stored value changes."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import aiosqlite
import orjson

from syncd.model import InventoryCount
from syncd.store import Store
from syncd.store import counts as counts_store
from syncd.store.counts import ApplyResult, count_value
from tests.helpers import assert_log_invariants, changes, count, mirror


async def apply(
    store: Store,
    page: list[InventoryCount],
    pass_id: int = 1,
    mark_seen: bool = False,
    keep_seen: bool = False,
    expect_new: bool = False,
) -> ApplyResult:
    async def work(conn: aiosqlite.Connection) -> ApplyResult:
        return await counts_store.apply_page(
            conn,
            "square",
            page,
            pass_id=pass_id,
            recorded_at="2026-01-01T00:00:00.000000Z",
            mark_seen=mark_seen,
            keep_seen=keep_seen,
            expect_new=expect_new,
        )

    return await store.write(work)


async def test_first_sight_is_a_change_with_old_null(store: Store, db_path: Path) -> None:
    """A count never seen before is stored and logged once, with old = null."""
    result = await apply(store, [count()])
    assert result.changes == 1
    [entry] = changes(db_path)
    assert entry["kind"] == "count.updated"
    assert entry["old"] is None
    assert entry["new"] == {
        "quantity": "5",
        "calculated_at": "2026-01-01T00:00:00Z",
        "catalog_object_type": "ITEM_VARIATION",
    }
    assert mirror(db_path)[("ITEM1", "LOC1", "IN_STOCK")]["seq"] == entry["seq"]


async def test_reapplying_same_data_logs_nothing(store: Store, db_path: Path) -> None:
    """Equal data applied again changes nothing and logs nothing."""
    page = [count(item=f"I{i}") for i in range(50)]
    await apply(store, page)
    result = await apply(store, page)
    assert (result.changes, result.unchanged) == (0, 50)
    assert len(changes(db_path)) == 50


async def test_values_compared_as_values_not_strings(store: Store, db_path: Path) -> None:
    """'10' vs '10.00' and 'Z' vs '+00:00' are the same value: no change, and the stored text stays."""
    await apply(store, [count(quantity="10", at="2026-01-01T00:00:00Z")])
    result = await apply(store, [count(quantity="10.00", at="2026-01-01T01:00:00.000+01:00")])
    assert result.changes == 0
    assert mirror(db_path)[("ITEM1", "LOC1", "IN_STOCK")]["quantity"] == "10"
    assert len(changes(db_path)) == 1


async def test_older_count_never_overwrites_newer(store: Store, db_path: Path) -> None:
    """A stale (older calculated_at) row is ignored, even with a different quantity."""
    await apply(store, [count(quantity="7", at="2026-01-02T00:00:00Z")])
    result = await apply(store, [count(quantity="3", at="2026-01-01T00:00:00Z")])
    assert (result.changes, result.stale) == (0, 1)
    assert mirror(db_path)[("ITEM1", "LOC1", "IN_STOCK")]["quantity"] == "7"


async def test_newer_count_updates_with_old_and_new(store: Store, db_path: Path) -> None:
    """A newer value replaces the stored one; the entry carries both."""
    await apply(store, [count(quantity="7", at="2026-01-01T00:00:00Z")])
    await apply(store, [count(quantity="6", at="2026-01-01T00:00:01Z")])
    entries = changes(db_path)
    assert [e["seq"] for e in entries] == [1, 2]
    assert entries[1]["old"]["quantity"] == "7"
    assert entries[1]["new"]["quantity"] == "6"
    assert_log_invariants(db_path)


async def test_duplicates_within_a_page_collapse_to_newest(store: Store, db_path: Path) -> None:
    """The same key twice in one page yields one change: the newest."""
    result = await apply(
        store,
        [
            count(quantity="1", at="2026-01-01T00:00:00Z"),
            count(quantity="2", at="2026-01-01T00:00:05Z"),
        ],
    )
    assert result.changes == 1
    assert mirror(db_path)[("ITEM1", "LOC1", "IN_STOCK")]["quantity"] == "2"


async def test_unknown_states_are_stored(store: Store, db_path: Path) -> None:
    """A state Square adds later is stored like any other."""
    await apply(store, [count(state="SOMETHING_NEW")])
    assert ("ITEM1", "LOC1", "SOMETHING_NEW") in mirror(db_path)


async def test_remove_unseen_logs_removals(store: Store, db_path: Path) -> None:
    """Rows not stamped by a full pass are removed with a count.removed entry; replay still matches."""
    await apply(store, [count(item="A"), count(item="B"), count(item="C")], pass_id=1)
    await apply(store, [count(item="A"), count(item="C")], pass_id=2, mark_seen=True)
    removed = await store.write(
        lambda conn: counts_store.remove_unseen(
            conn, "square", pass_id=2, location_id=None, recorded_at="2026-01-01T00:00:00Z"
        )
    )
    assert removed == 1
    assert set(mirror(db_path)) == {("A", "LOC1", "IN_STOCK"), ("C", "LOC1", "IN_STOCK")}
    last = changes(db_path)[-1]
    assert last["kind"] == "count.removed"
    assert last["key"][0] == "B"
    assert last["new"] is None
    assert_log_invariants(db_path)


async def _remove_unseen(store: Store, pass_id: int) -> int:
    return await store.write(
        lambda conn: counts_store.remove_unseen(
            conn, "square", pass_id=pass_id, location_id=None, recorded_at="2026-01-01T00:00:00Z"
        )
    )


async def test_fast_path_writes_never_make_a_full_pass_remove_a_live_row(
    store: Store, db_path: Path
) -> None:
    """The webhook fast path (``keep_seen``) during full pass 2: a row the pass already saw keeps
    its stamp when the fast path updates it (pass id 0: "no full pass known"), and rows the fast
    path writes with the running pass's id count as seen. Only the row nobody saw goes."""
    await apply(store, [count(item=i) for i in "ABC"], pass_id=1)
    await apply(store, [count(item="A")], pass_id=2, mark_seen=True)  # the pass saw A
    newer = "2026-01-01T00:01:00Z"
    await apply(store, [count(item="A", quantity="7", at=newer)], pass_id=0, keep_seen=True)
    await apply(store, [count(item="B", quantity="8", at=newer)], pass_id=2, keep_seen=True)
    await apply(store, [count(item="D", at=newer)], pass_id=2, keep_seen=True)
    assert await _remove_unseen(store, 2) == 1
    rows = mirror(db_path)
    assert set(rows) == {(i, "LOC1", "IN_STOCK") for i in "ABD"}
    assert (
        rows[("A", "LOC1", "IN_STOCK")]["quantity"],
        rows[("B", "LOC1", "IN_STOCK")]["quantity"],
    ) == ("7", "8")
    assert changes(db_path)[-1]["key"][0] == "C"
    assert_log_invariants(db_path)


async def test_seq_never_reused_after_newest_entries_deleted(store: Store, db_path: Path) -> None:
    """Deleting the newest entries (e.g. retention) never lets their seq be handed out again."""
    await apply(store, [count(item="A"), count(item="B")])
    await store.write(lambda conn: conn.execute("DELETE FROM changes"))
    await apply(store, [count(item="C")])
    assert [e["seq"] for e in changes(db_path)] == [3]


async def test_failed_unit_of_work_rolls_back(store: Store, db_path: Path) -> None:
    """An error inside a unit of work leaves neither mirror rows nor change entries behind."""

    async def broken(conn: aiosqlite.Connection) -> None:
        await counts_store.apply_page(conn, "square", [count()], pass_id=1, recorded_at="x")
        raise RuntimeError("boom")

    with contextlib.suppress(RuntimeError):
        await store.write(broken)
    assert mirror(db_path) == {}
    assert changes(db_path) == []


async def test_load_finds_exactly_the_stored_keys_of_a_large_page(
    store: Store, db_path: Path
) -> None:
    """``load`` answers one key set of any size in one statement: of 2,500 keys over two
    locations (more than the old 300-key chunks, in an order unlike the primary key's) it returns
    the 1,200 stored ones with their stored text, and none of the others."""
    stored = [
        count(item=f"I{i:05d}", location=f"L{i % 2}", quantity=str(i % 7)) for i in range(1200)
    ]
    for start in range(0, len(stored), 400):
        await apply(store, stored[start : start + 400])
    unknown = [(f"X{i:05d}", f"L{i % 2}", "IN_STOCK") for i in range(1200)]
    other_state = [(f"I{i:05d}", f"L{i % 2}", "SOLD") for i in range(100)]
    keys = [(c.catalog_object_id, c.location_id, c.state) for c in reversed(stored)]
    keys += unknown + other_state
    async with aiosqlite.connect(db_path) as conn:
        found = await counts_store.load(conn, "square", keys)
        assert await counts_store.load(conn, "other-source", keys) == {}
        assert await counts_store.load(conn, "square", []) == {}
    assert set(found) == {(c.catalog_object_id, c.location_id, c.state) for c in stored}
    row = found[("I00012", "L0", "IN_STOCK")]
    assert (row.quantity, row.calculated_at, row.catalog_object_type) == (
        "5",
        "2026-01-01T00:00:00Z",
        "ITEM_VARIATION",
    )


async def test_load_searches_the_primary_key_without_scanning_the_mirror(
    store: Store, db_path: Path
) -> None:
    """The lookup's plan (with the sqlite_stat1 figures migration 7 writes): one primary-key
    search per key and no Bloom filter, which SQLite builds by scanning the whole mirror (what
    made every page of a full sync read all of it)."""
    async with (
        aiosqlite.connect(db_path) as conn,
        conn.execute(
            "EXPLAIN QUERY PLAN " + counts_store._LOAD, ('[["I","L","IN_STOCK"]]', "square")
        ) as cur,
    ):
        plan = " / ".join(str(row[3]) for row in await cur.fetchall())
    assert "BLOOM" not in plan, plan
    assert "SEARCH c USING PRIMARY KEY" in plan, plan
    assert "SCAN c" not in plan, plan


async def test_entry_json_is_exactly_the_values_encoding(store: Store, db_path: Path) -> None:
    """The entries of a page are written by SQLite from one JSON document: their ``old`` and
    ``new`` texts are byte for byte what ``orjson`` makes of the values (keys in order, no spaces),
    also for an object type that needs escaping or is absent, and a page's seqs are contiguous
    and in the page's order, each mirror row naming its own."""
    odd = 'IT\\EM "x"\n\t\x01 é ✓'
    first = [count(item="A", object_type=odd), count(item="B", object_type=None), count(item="C")]
    await apply(store, first)
    await apply(store, [count(item="A", quantity="6", object_type=None), count(item="B")])
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(
            "SELECT seq, catalog_object_id, old, new FROM changes ORDER BY seq"
        ).fetchall()
        seqs = dict(conn.execute("SELECT catalog_object_id, seq FROM inventory_counts"))
    finally:
        conn.close()
    values = {
        1: (None, count_value(first[0])),
        2: (None, count_value(first[1])),
        3: (None, count_value(first[2])),
        4: (count_value(first[0]), count_value(count(item="A", quantity="6", object_type=None))),
        5: (count_value(first[1]), count_value(count(item="B"))),
    }
    assert [(r[0], r[1]) for r in rows] == [(1, "A"), (2, "B"), (3, "C"), (4, "A"), (5, "B")]
    for seq, _, old, new in rows:
        want_old, want_new = values[seq]
        assert old == (None if want_old is None else orjson.dumps(want_old).decode())
        assert new == orjson.dumps(want_new).decode()
    assert seqs == {"A": 4, "B": 5, "C": 3}


async def test_expect_new_is_only_a_shortcut(store: Store, db_path: Path) -> None:
    """``expect_new`` (a first sync's pages) inserts a page of new counts without looking them
    up, logging each once with old = null; on a page with stored keys it changes nothing of the
    outcome: the unchanged and stale counts log nothing, the changed one logs its old value, and
    the seqs stay contiguous, each mirror row naming its entry."""
    first = await apply(store, [count(item="A"), count(item="B")], expect_new=True)
    assert (first.changes, first.first_sight, first.all_new) == (2, 2, True)
    page = [
        count(item="A"),  # unchanged
        count(item="B", quantity="7", at="2026-01-02T00:00:00Z"),  # changed
        count(item="C"),  # new
        count(item="A", at="2025-12-31T00:00:00Z"),  # stale: the newest of A in the page wins
    ]
    second = await apply(store, page, expect_new=True, mark_seen=True, pass_id=2)
    assert (second.changes, second.unchanged, second.first_sight, second.all_new) == (
        2,
        1,
        1,
        False,
    )
    entries = changes(db_path)
    assert [(e["seq"], e["key"][0]) for e in entries] == [(1, "A"), (2, "B"), (3, "B"), (4, "C")]
    assert entries[2]["old"] == count_value(count(item="B"))
    assert [e["old"] for e in (entries[0], entries[1], entries[3])] == [None, None, None]
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute("SELECT catalog_object_id, seq, seen_pass FROM inventory_counts")
        assert {r[0]: (r[1], r[2]) for r in rows} == {"A": (1, 2), "B": (3, 2), "C": (4, 2)}
    finally:
        conn.close()
    assert_log_invariants(db_path)
