"""Change-log delivery in the store: the in-process head signal, gap detection, retention, consumers."""

from __future__ import annotations

import asyncio
import fnmatch

import aiosqlite
import pytest

from syncd.errors import ChangelogGap
from syncd.store import Store, changelog, consumers
from syncd.store.changelog import NewChange
from syncd.store.retention import ChangelogPruner, RetentionPolicy, prune_batch
from syncd.timeutil import NS_PER_S, format_ns, now_ns


def entry(i: int) -> NewChange:
    """A count.updated entry for item ``i``."""
    return NewChange(
        kind="count.updated",
        source="square",
        catalog_object_id=f"ITEM{i}",
        location_id="LOC1",
        state="IN_STOCK",
        old=None,
        new={"quantity": str(i)},
    )


async def append(
    store: Store, n: int, recorded_at: str = "2026-01-01T00:00:00.000000Z"
) -> list[int]:
    """Append ``n`` entries in one committed unit; return their seqs."""
    return await store.write(
        lambda conn: changelog.append(conn, [entry(i) for i in range(n)], recorded_at)
    )


async def read(store: Store, after: int, limit: int = 100) -> list[int]:
    """Seqs after ``after``, through the gap-checking read."""
    return [
        c.seq
        for c in await store.read(lambda conn: changelog.read_after_checked(conn, after, limit))
    ]


async def test_head_signal_wakes_waiters_on_commit_only(store: Store) -> None:
    """A waiter for entries after the head wakes as soon as a unit that appended commits, with the new
    head; a unit that rolls back wakes nobody."""
    await append(store, 2)
    assert store.changelog_head.head == 2
    waiter = asyncio.create_task(store.changelog_head.wait_past(2))

    async def fail(conn: aiosqlite.Connection) -> None:
        await changelog.append(conn, [entry(9)], "2026-01-01T00:00:00.000000Z")
        raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        await store.write(fail)
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await append(store, 3)
    async with asyncio.timeout(1):
        assert await waiter == 5  # seq 3 was rolled back, then reused: seqs stay contiguous


async def test_gap_after_pruning_is_reported_not_skipped(store: Store) -> None:
    """After retention keeps the newest 3 of 10 entries, a reader behind them gets ChangelogGap naming
    the oldest kept seq; a reader at the edge reads on; an emptied log still reports the gap."""
    await append(store, 10)
    deleted = await store.write(lambda conn: prune_batch(conn, cutoff=None, max_rows=3, batch=100))
    assert deleted == 7
    assert await read(store, 7) == [8, 9, 10]
    assert await read(store, 10) == []
    for behind in (0, 5, 6):
        with pytest.raises(ChangelogGap) as info:
            await read(store, behind)
        assert (info.value.after, info.value.oldest) == (behind, 8)
        assert "re-read the mirror" in (info.value.hint or "")
    await store.write(lambda conn: prune_batch(conn, cutoff="9999", max_rows=0, batch=100))
    assert await read(store, 10) == []
    with pytest.raises(ChangelogGap) as info:
        await read(store, 9)
    assert info.value.oldest == 11


async def test_retention_by_age_and_rows_in_batches(store: Store) -> None:
    """The pruner deletes, in batches, every entry older than retain_days and beyond
    retain_max_rows, from the front only; with no limits set it does nothing."""
    day = 86_400 * NS_PER_S
    now = now_ns()
    await append(store, 5, format_ns(now - 3 * day))
    await append(store, 5, format_ns(now - 2 * day))
    await append(store, 5, format_ns(now - 1000))
    off = ChangelogPruner(store, RetentionPolicy(), interval=60)
    assert await off.prune_once(now=now) == 0
    by_age = ChangelogPruner(store, RetentionPolicy(days=2.5), interval=60, batch=2)
    assert await by_age.prune_once(now=now) == 5
    assert await read(store, 5) == list(range(6, 16))
    by_rows = ChangelogPruner(store, RetentionPolicy(days=30, max_rows=4), interval=60, batch=2)
    assert await by_rows.prune_once(now=now) == 6
    assert await read(store, 11) == [12, 13, 14, 15]
    assert by_age.pruned + by_rows.pruned == 11


async def test_pruner_loop_prunes_then_stops(store: Store) -> None:
    """The pruner's loop prunes at once, and returns promptly when asked to stop."""
    await append(store, 10)
    pruner = ChangelogPruner(store, RetentionPolicy(max_rows=2), interval=30)
    stop = asyncio.Event()
    task = asyncio.create_task(pruner.run(stop))
    async with asyncio.timeout(2):
        while pruner.pruned < 8:
            await asyncio.sleep(0.01)
    stop.set()
    async with asyncio.timeout(1):
        await task


async def test_consumer_offsets(store: Store) -> None:
    """A consumer's offset is absent until acknowledged, then set (forwards or back) and listed."""
    assert await store.read(lambda conn: consumers.acked(conn, "reporting")) is None
    await store.write(lambda conn: consumers.ack(conn, "reporting", 7, "2026-01-01T00:00:00Z"))
    await store.write(lambda conn: consumers.ack(conn, "reporting", 3, "2026-01-02T00:00:00Z"))
    listed = await store.read(consumers.all_consumers)
    assert listed == [{"name": "reporting", "acked_seq": 3, "updated_at": "2026-01-02T00:00:00Z"}]
    assert consumers.valid_name("erp.sync-2")
    assert not consumers.valid_name("-x")
    assert not consumers.valid_name("a b")


def sourced(i: int, source: str) -> NewChange:
    """A count.updated entry for item ``i`` of ``source``."""
    return NewChange(
        kind="count.updated",
        source=source,
        catalog_object_id=f"ITEM{i}",
        location_id="LOC1",
        state="IN_STOCK",
        old=None,
        new={"quantity": str(i)},
    )


async def test_read_batch_filters_by_source_and_moves_past_skipped_entries(store: Store) -> None:
    """With sources, a batch holds only their entries; a full batch stops at its last entry, a
    short one has read up to the head, so the next read skips nothing twice and finds nothing
    again; without sources it is the plain read."""
    order = ["north", "south", "north", "job-x", "south", "south", "north", "south"]
    await store.write(
        lambda conn: changelog.append(
            conn, [sourced(i, s) for i, s in enumerate(order)], "2026-01-01T00:00:00.000000Z"
        )
    )

    async def batch(after: int, limit: int, sources: tuple[str, ...]) -> tuple[list[int], int]:
        got = await store.read(lambda conn: changelog.read_batch(conn, after, limit, sources))
        return [c.seq for c in got.entries], got.position

    assert await batch(0, 2, ("north",)) == ([1, 3], 3)
    assert await batch(3, 2, ("north",)) == ([7], 8)
    assert await batch(8, 2, ("north",)) == ([], 8)
    assert await batch(0, 10, ("north", "job-x")) == ([1, 3, 4, 7], 8)
    assert await batch(0, 10, ("nobody",)) == ([], 8)
    assert await batch(20, 10, ("north",)) == ([], 20)
    assert await batch(0, 3, ()) == ([1, 2, 3], 3)
    assert await batch(8, 3, ()) == ([], 8)


async def test_read_batch_with_sources_reports_a_gap(store: Store) -> None:
    """A filtered reader behind what retention kept gets the gap too, even if none of its own
    entries were among the pruned ones (it cannot know)."""
    await store.write(
        lambda conn: changelog.append(
            conn, [sourced(i, "north" if i > 5 else "south") for i in range(10)], "2026"
        )
    )
    await store.write(lambda conn: prune_batch(conn, cutoff=None, max_rows=3, batch=100))
    with pytest.raises(ChangelogGap) as info:
        await store.read(lambda conn: changelog.read_batch(conn, 0, 10, ("north",)))
    assert (info.value.after, info.value.oldest) == (0, 8)
    got = await store.read(lambda conn: changelog.read_batch(conn, 7, 10, ("north",)))
    assert [c.seq for c in got.entries] == [8, 9, 10]


def kinded(i: int, kind: str, source: str = "square") -> NewChange:
    """An entry of ``kind`` (lifecycle kinds carry no count key)."""
    key = i if kind.startswith("count.") else None
    return NewChange(
        kind=kind,
        source=source,
        catalog_object_id=None if key is None else f"ITEM{key}",
        location_id=None if key is None else "LOC1",
        state=None if key is None else "IN_STOCK",
        old=None,
        new={"i": i},
    )


async def test_read_batch_filters_by_kind_globs(store: Store) -> None:
    """Kind globs select entries like fnmatchcase ('*' any run, '?' one character, nothing else
    special); they combine with sources; a short filtered batch has read up to the head."""
    order = [
        ("count.updated", "north"),
        ("pass.completed", "north"),
        ("count.removed", "south"),
        ("heartbeat", "_syncd"),
        ("pass.full_completed", "south"),
        ("source.stale", "south"),
        ("job.pending", "shop"),
        ("count.updated", "south"),
    ]
    await store.write(
        lambda conn: changelog.append(
            conn, [kinded(i, k, s) for i, (k, s) in enumerate(order)], "2026-01-01T00:00:00Z"
        )
    )

    async def batch(
        after: int, limit: int, kinds: tuple[str, ...], sources: tuple[str, ...] = ()
    ) -> tuple[list[int], int]:
        got = await store.read(
            lambda conn: changelog.read_batch(conn, after, limit, sources, kinds=kinds)
        )
        return [c.seq for c in got.entries], got.position

    assert await batch(0, 10, ("count.*",)) == ([1, 3, 8], 8)
    assert await batch(0, 2, ("count.*",)) == ([1, 3], 3)
    assert await batch(3, 2, ("count.*",)) == ([8], 8)
    assert await batch(0, 10, ("pass.*", "heartbeat")) == ([2, 4, 5], 8)
    assert await batch(0, 10, ("count.updated",), ("south",)) == ([8], 8)
    assert await batch(0, 10, ("*completed",)) == ([2, 5], 8)
    assert await batch(0, 10, ("job.pendin?",)) == ([7], 8)
    assert await batch(0, 10, ("Count.*",)) == ([], 8)  # case-sensitive
    assert await batch(0, 10, ("count",)) == ([], 8)  # a whole-kind match, not a prefix
    assert await batch(0, 10, ("*",)) == (list(range(1, 9)), 8)
    # the same as fnmatchcase on every kind, for each pattern above
    for pattern in ("count.*", "*completed", "job.pendin?", "*", "s*.st?le", "[cj]*", "[a-h]*"):
        want = [i + 1 for i, (k, _) in enumerate(order) if fnmatch.fnmatchcase(k, pattern)]
        assert (await batch(0, 10, (pattern,)))[0] == want, pattern


def test_kind_globs_are_validated() -> None:
    """Repeated and comma-separated patterns are split, trimmed and deduplicated; an empty or
    overlong pattern, one with other characters (a negated set among them), or too many, is
    refused with the reason."""
    assert changelog.split_kind_globs(["count.*", "pass.*, heartbeat", "count.*"]) == (
        "count.*",
        "pass.*",
        "heartbeat",
    )
    assert changelog.split_kind_globs([]) == ()
    for values, why in (
        ([""], "must not be empty"),
        (["count.*,"], "must not be empty"),
        (["[^c]*"], "only letters"),
        (["count[!x]"], "only letters"),
        (["count updated"], "only letters"),
        (["x" * 65], "at most 64 characters"),
        ([",".join(f"k{i}" for i in range(33))], "at most 32 kind patterns"),
    ):
        with pytest.raises(ValueError, match=why):
            changelog.split_kind_globs(values)
