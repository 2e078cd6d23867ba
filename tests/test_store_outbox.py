"""The publish outbox in the store (syncd.store.outbox): raw reads, offsets; and reads that a
cancelled caller leaves behind."""

from __future__ import annotations

import asyncio

from syncd.store import Store, changelog, outbox
from syncd.store.changelog import NewChange


def entry(i: int) -> NewChange:
    return NewChange(
        kind="count.updated",
        source="square",
        catalog_object_id=f"I{i}",
        location_id="L",
        state="IN_STOCK",
        old=None,
        new={"quantity": str(i)},
    )


async def test_read_after_returns_raw_rows_in_seq_order(store: Store) -> None:
    """Entries come back undecoded (old/new as JSON text), after the given seq, limited."""
    await store.write(lambda conn: changelog.append(conn, [entry(i) for i in range(5)], "t"))
    rows = await store.read(lambda conn: outbox.read_after(conn, 2, 2))
    assert [r.seq for r in rows] == [3, 4]
    assert rows[0].new == '{"quantity":"2"}'
    assert rows[0].old is None


async def test_offsets_are_recorded_per_target_and_stream(store: Store) -> None:
    """An offset is created, moved (also back), kept per (target, stream), and listed."""
    assert await store.read(lambda conn: outbox.published(conn, "redis", "s1")) is None
    await store.write(lambda conn: outbox.record(conn, "redis", "s1", 10, "t1"))
    await store.write(lambda conn: outbox.record(conn, "redis", "s1", 7, "t2"))
    await store.write(lambda conn: outbox.record(conn, "redis", "s2", 3, "t3"))
    assert await store.read(lambda conn: outbox.published(conn, "redis", "s1")) == 7
    assert await store.read(outbox.all_offsets) == [
        {
            "target": "redis",
            "stream": "s1",
            "published_seq": 7,
            "updated_at": "t2",
            "refused": None,
        },
        {
            "target": "redis",
            "stream": "s2",
            "published_seq": 3,
            "updated_at": "t3",
            "refused": None,
        },
    ]


async def test_a_refusal_is_recorded_and_cleared_without_moving_the_offset(store: Store) -> None:
    """Why a stream is refused (issue 11) is set and cleared on its row; the offset and its time
    stay; a stream without a row gets one at the given seq."""
    await store.write(lambda conn: outbox.record(conn, "redis", "s1", 7, "t1"))
    await store.write(lambda conn: outbox.record_refused(conn, "redis", "s1", 9, "owned", "t2"))
    await store.write(lambda conn: outbox.record_refused(conn, "redis", "s2", 0, "ahead", "t3"))
    assert await store.read(outbox.all_offsets) == [
        {
            "target": "redis",
            "stream": "s1",
            "published_seq": 7,
            "updated_at": "t1",
            "refused": "owned",
        },
        {
            "target": "redis",
            "stream": "s2",
            "published_seq": 0,
            "updated_at": "t3",
            "refused": "ahead",
        },
    ]
    await store.write(lambda conn: outbox.record_refused(conn, "redis", "s1", 9, None, "t4"))
    [s1, _] = await store.read(outbox.all_offsets)
    assert (s1["published_seq"], s1["updated_at"], s1["refused"]) == (7, "t1", None)


async def test_a_read_cancelled_at_any_point_leaves_the_reader_usable(store: Store) -> None:
    """Regression (found by the publish relay): a read cancelled right after it queued BEGIN left
    the reader connection inside that transaction, and every later read failed. Cancelled at each
    of its first steps, reads afterwards still work."""
    await store.write(lambda conn: changelog.append(conn, [entry(0)], "t"))
    for steps in range(6):
        task = asyncio.ensure_future(store.read(changelog.head))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await store.read(changelog.head) == 1
