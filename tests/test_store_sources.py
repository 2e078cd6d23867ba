"""The source registry (``sources``) and forgetting a source."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from syncd.errors import UnknownSource
from syncd.store import Store, credentials, queries, sources, sync_state
from syncd.store import counts as counts_store
from syncd.store.sources import SourceRecord
from syncd.store.sync_state import PartitionState
from tests.helpers import assert_log_invariants, changes, count, mirror

T0 = "2026-01-01T00:00:00Z"


def rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def test_register_keeps_first_added_at_and_known_merchant(store: Store) -> None:
    """register adds a source once; later calls keep added_at, fill in the merchant when given
    and keep it when not."""
    await store.write(lambda c: sources.register(c, "north", None, T0))
    await store.write(lambda c: sources.register(c, "north", "MERCHANT_N", "2026-01-02T00:00:00Z"))
    await store.write(lambda c: sources.register(c, "north", None, "2026-01-03T00:00:00Z"))
    await store.write(lambda c: sources.register(c, "east", "MERCHANT_E", T0))
    assert await store.read(sources.list_sources) == [
        SourceRecord("east", "MERCHANT_E", T0, None),
        SourceRecord("north", "MERCHANT_N", T0, None),
    ]


async def test_mark_removed_keeps_first_time_and_register_restores(store: Store) -> None:
    """A removed source stays listed with its removal time (the first one); registering it again
    clears removed_at; an unknown source is not invented."""
    await store.write(lambda c: sources.register(c, "north", "MERCHANT_N", T0))
    assert await store.write(lambda c: sources.mark_removed(c, "north", "2026-01-05T00:00:00Z"))
    assert not await store.write(lambda c: sources.mark_removed(c, "north", "2026-01-06T00:00:00Z"))
    assert not await store.write(lambda c: sources.mark_removed(c, "ghost", "2026-01-06T00:00:00Z"))
    assert await store.read(sources.list_sources) == [
        SourceRecord("north", "MERCHANT_N", T0, "2026-01-05T00:00:00Z")
    ]
    await store.write(lambda c: sources.register(c, "north", None, "2026-01-07T00:00:00Z"))
    assert await store.read(sources.list_sources) == [SourceRecord("north", "MERCHANT_N", T0, None)]


async def test_merchant_map_lists_configured_sources_with_a_known_merchant(store: Store) -> None:
    """Removed sources and sources whose merchant is unknown are not in the map; of two sources
    naming one merchant, the first by name wins."""

    async def setup(conn: aiosqlite.Connection) -> None:
        await sources.register(conn, "north", "MERCHANT_N", T0)
        await sources.register(conn, "south", "MERCHANT_S", T0)
        await sources.register(conn, "pending", None, T0)
        await sources.register(conn, "old-north", "MERCHANT_X", T0)
        await sources.mark_removed(conn, "old-north", T0)
        await sources.register(conn, "b-dup", "MERCHANT_D", T0)
        await sources.register(conn, "a-dup", "MERCHANT_D", T0)

    await store.write(setup)
    assert await store.read(sources.merchant_map) == {
        "MERCHANT_N": "north",
        "MERCHANT_S": "south",
        "MERCHANT_D": "a-dup",
    }


async def _two_sources(store: Store, north_rows: int) -> None:
    """Sources square and north, each with mirror rows at three locations, a partition state,
    OAuth state and a sources row."""

    async def work(conn: aiosqlite.Connection) -> None:
        for source, n in (("square", 20), ("north", north_rows)):
            await sources.register(conn, source, f"M_{source}", T0)
            pass_id = await sync_state.begin_pass(conn, source, "full", T0)
            page = [count(item=f"I{i:06d}", location=f"L{i % 3}") for i in range(n)]
            for start in range(0, n, 1000):
                await counts_store.apply_page(
                    conn, source, page[start : start + 1000], pass_id=pass_id, recorded_at=T0
                )
            # Some rows changed since first sight: the removal must carry the current value.
            await counts_store.apply_page(
                conn,
                source,
                [count(item="I000001", location="L1", quantity="9", at="2026-01-02T00:00:00Z")],
                pass_id=pass_id,
                recorded_at=T0,
            )
            await sync_state.record_partitions(
                conn,
                [
                    sync_state.PartitionRecord(
                        PartitionState(source, partition, T0, "ok", T0, T0, T0, None), 1, n, n
                    )
                    for partition in ("L0", "L1", "L2")
                ],
                pass_id=pass_id,
                started_at=T0,
            )
            await credentials.save_grant(
                conn,
                source,
                access_token=f"tok-{source}",
                expires_at=None,
                refresh_token=None,
                merchant_id=f"M_{source}",
                refreshed_at=T0,
            )

    await store.write(work)


def _spy_chunks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record how many rows each delete statement of a removal took."""
    sizes: list[int] = []
    real = counts_store._delete_logged

    async def spy(*args: Any) -> int:
        n = await real(*args)
        sizes.append(n)
        return n

    monkeypatch.setattr(counts_store, "_delete_logged", spy)
    return sizes


async def test_forget_source_logs_each_row_and_drops_its_state(
    store: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forgetting north logs one count.removed per row (current value as old, in key order),
    removes its rows, partitions, OAuth state and sources row, and leaves square alone; replay
    still equals the mirror for both."""
    await _two_sources(store, north_rows=50)
    head = changes(db_path)[-1]["seq"]
    north_before = mirror(db_path, "north")
    square_before = mirror(db_path, "square")
    sizes = _spy_chunks(monkeypatch)

    removed = await store.write(
        lambda c: sources.forget_source(c, "north", recorded_at="2026-02-01T00:00:00Z", chunk=7)
    )

    assert removed == 50
    assert sizes == [7] * 7 + [1]  # chunks of at most 7, then the rest
    entries = [e for e in changes(db_path) if e["seq"] > head]
    assert [e["seq"] for e in entries] == list(range(head + 1, head + 51))
    assert {(e["kind"], e["source"], e["new"] is None) for e in entries} == {
        ("count.removed", "north", True)
    }
    keys = [e["key"] for e in entries]
    assert keys == sorted(keys, key=lambda k: (k[1], k[0], k[2]))  # primary-key order
    assert {e["key"]: e["old"] for e in entries} == {
        key: {k: v for k, v in value.items() if k != "seq"} for key, value in north_before.items()
    }
    assert entries[keys.index(("I000001", "L1", "IN_STOCK"))]["old"]["quantity"] == "9"
    assert mirror(db_path, "north") == {}
    assert mirror(db_path, "square") == square_before
    assert_log_invariants(db_path, "north")
    assert_log_invariants(db_path, "square")
    assert rows(db_path, "SELECT DISTINCT source FROM sync_state") == [("square",)]
    assert rows(db_path, "SELECT source FROM source_credentials") == [("square",)]
    assert rows(db_path, "SELECT source FROM sources") == [("square",)]
    # History stays: north's passes and its earlier entries.
    assert rows(db_path, "SELECT COUNT(*) FROM passes WHERE source = 'north'") == [(1,)]
    assert len([e for e in changes(db_path) if e["source"] == "north"]) == 50 + 1 + 50


async def test_forget_source_streams_a_large_source_in_default_chunks(
    store: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source larger than one chunk is removed FORGET_CHUNK rows per statement, all logged."""
    n = 2 * counts_store.FORGET_CHUNK + 123
    await _two_sources(store, north_rows=n)
    sizes = _spy_chunks(monkeypatch)
    removed = await store.write(
        lambda c: sources.forget_source(c, "north", recorded_at="2026-02-01T00:00:00Z")
    )
    assert removed == n
    assert sizes == [counts_store.FORGET_CHUNK] * 2 + [123]
    assert mirror(db_path, "north") == {}
    assert_log_invariants(db_path, "north")
    assert_log_invariants(db_path, "square")


async def test_forget_unknown_source_changes_nothing(store: Store, db_path: Path) -> None:
    """Forgetting a source the database does not know removes nothing and logs nothing."""
    await _two_sources(store, north_rows=5)
    before = changes(db_path)
    removed = await store.write(
        lambda c: sources.forget_source(c, "ghost", recorded_at="2026-02-01T00:00:00Z")
    )
    assert removed == 0
    assert changes(db_path) == before
    assert [r.source for r in await store.read(sources.list_sources)] == ["north", "square"]


async def test_forget_reports_what_it_removed_and_drops_the_inbox_rows(
    store: Store, db_path: Path
) -> None:
    """forget says how many entries it wrote and their seqs, the partitions, inbox rows and OAuth
    state it dropped; the other source's inbox rows stay. A second forget is UnknownSource and
    writes nothing."""
    await _two_sources(store, north_rows=12)
    for source, event_id, processed in (
        ("north", "e1", None),
        ("north", "e2", T0),
        ("square", "e3", None),
    ):
        await store.write_statement(
            "INSERT INTO webhook_events (event_id, source, type, received_at, received_ns, body,"
            " processed_at) VALUES (?, ?, 'inventory.count.updated', ?, 0, x'7b7d', ?)",
            (event_id, source, T0, processed),
        )
    head = changes(db_path)[-1]["seq"]
    assert await store.read(lambda c: sources.known(c, "north"))

    forgotten = await store.write(
        lambda c: sources.forget(c, "north", recorded_at="2026-02-01T00:00:00Z")
    )

    assert forgotten == sources.Forgotten(
        source="north",
        entries=12,
        catalog_entries=0,
        first_seq=head + 1,
        last_seq=head + 12,
        partitions=3,
        webhook_events=2,
        credentials=True,
    )
    assert [e["seq"] for e in changes(db_path) if e["seq"] > head] == list(
        range(head + 1, head + 13)
    )
    assert rows(db_path, "SELECT event_id FROM webhook_events") == [("e3",)]
    assert not await store.read(lambda c: sources.known(c, "north"))
    with pytest.raises(UnknownSource, match="unknown source 'north'"):
        await store.write(lambda c: sources.forget(c, "north", recorded_at=T0))
    assert changes(db_path)[-1]["seq"] == head + 12
    assert_log_invariants(db_path, "north")
    assert_log_invariants(db_path, "square")


async def test_sources_overview_never_reads_the_tokens(store: Store) -> None:
    """The overview lists registered sources and those known only by their rows, with counts,
    partitions, backlog and OAuth status; the tokens appear only as 'stored or not'."""
    await _two_sources(store, north_rows=4)
    await store.write(lambda c: sources.mark_removed(c, "north", "2026-01-05T00:00:00Z"))
    await store.write(
        lambda c: credentials.mark_unauthorized(
            c, "square", "grant revoked", "2026-01-06T00:00:00Z"
        )
    )
    overview = await store.read(queries.sources_overview)
    assert list(overview) == ["north", "square"]
    assert overview["north"]["removed_at"] == "2026-01-05T00:00:00Z"
    assert overview["north"]["counts"] == 4
    assert overview["north"]["partitions"] == 3
    assert overview["square"]["counts"] == 20
    assert overview["square"]["merchant_id"] == "M_square"
    assert overview["square"]["credentials"] == {
        "status": "unauthorized",
        "error": "grant revoked",
        "expires_at": None,
        "refreshed_at": T0,
        "has_access_token": True,
        "has_refresh_token": False,
    }
    assert "tok-" not in repr(overview)
