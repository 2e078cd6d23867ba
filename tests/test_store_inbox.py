"""The webhook inbox (syncd.store.inbox) on a real SQLite file: insert once, group commit, mark
processed, prune."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from syncd.errors import StoreClosed
from syncd.store import Store
from syncd.store.inbox import UNKNOWN_SOURCE, Inbox, InboxEvent
from syncd.timeutil import NS_PER_S, now_ns
from tests.webhook_kit import inbox_rows


def ev(
    event_id: str,
    received_ns: int | None = None,
    *,
    source: str = "square",
    actionable: bool = True,
    type: str = "inventory.count.updated",
) -> InboxEvent:
    return InboxEvent(
        event_id=event_id,
        source=source,
        type=type,
        merchant_id="M1",
        created_at="2026-01-01T00:00:00Z",
        received_ns=now_ns() if received_ns is None else received_ns,
        body=b'{"event_id":"%s"}' % event_id.encode(),
        actionable=actionable,
    )


async def test_insert_once_by_event_id(store: Store, db_path: Path) -> None:
    """A repeated event_id is stored once: the first add reports new, repeats report duplicate, and
    the stored row keeps the first copy."""
    inbox = Inbox(store, window=0)
    await inbox.start()
    try:
        assert await inbox.add(ev("E1")) is True
        assert await inbox.add(ev("E1")) is False
        assert await inbox.add(ev("E2")) is True
    finally:
        await inbox.aclose()
    rows = inbox_rows(db_path)
    assert [r["event_id"] for r in rows] == ["E1", "E2"]
    assert rows[0]["body"] == b'{"event_id":"E1"}'
    assert rows[0]["merchant_id"] == "M1"
    assert all(r["processed_at"] is None for r in rows)


async def test_concurrent_adds_share_one_commit(store: Store, db_path: Path) -> None:
    """200 concurrent adds within the group-commit window share a handful of transactions, each
    caller learns whether its own event was new, and repeats inside one batch are stored once."""
    inbox = Inbox(store, window=0.05)
    await inbox.start()
    try:
        ids = [f"E{i}" for i in range(200)] + ["E0", "E1"]
        results = await asyncio.gather(*(inbox.add(ev(i)) for i in ids))
    finally:
        await inbox.aclose()
    assert results[:200] == [True] * 200
    assert results[200:] == [False, False]
    assert inbox.commits <= 3, inbox.commits
    assert len(inbox_rows(db_path)) == 200


async def test_add_returns_only_after_commit(store: Store, db_path: Path) -> None:
    """When add() returns, the row is visible to another connection: it was committed first."""
    inbox = Inbox(store, window=0.01)
    await inbox.start()
    try:
        await inbox.add(ev("E1"))
        assert [r["event_id"] for r in inbox_rows(db_path)] == ["E1"]
    finally:
        await inbox.aclose()


async def test_cancelled_caller_still_commits(store: Store, db_path: Path) -> None:
    """A request cancelled while waiting for its batch does not take the event out of the batch."""
    inbox = Inbox(store, window=0.05)
    await inbox.start()
    try:
        waiting = asyncio.create_task(inbox.add(ev("E1")))
        await asyncio.sleep(0.01)
        waiting.cancel()
        await inbox.add(ev("E2"))
    finally:
        await inbox.aclose()
    assert {r["event_id"] for r in inbox_rows(db_path)} == {"E1", "E2"}


async def test_aclose_commits_what_is_queued_then_refuses(store: Store, db_path: Path) -> None:
    """aclose() lets queued events land, is idempotent, and later adds raise StoreClosed."""
    inbox = Inbox(store, window=10)  # a long window: only aclose() flushes this batch
    await inbox.start()
    adds = [asyncio.create_task(inbox.add(ev(f"E{i}"))) for i in range(5)]
    await asyncio.sleep(0.01)
    await inbox.aclose()
    await inbox.aclose()
    assert [t.result() for t in adds] == [True] * 5
    assert len(inbox_rows(db_path)) == 5
    with pytest.raises(StoreClosed):
        await inbox.add(ev("late"))


async def test_commit_failure_reaches_every_caller(store: Store) -> None:
    """If the batch cannot commit (here: the store is closed under it), each waiting caller gets
    the error and the batching task survives for later batches."""
    inbox = Inbox(store, window=0.01)
    await inbox.start()
    try:
        await store.aclose()
        results = await asyncio.gather(
            inbox.add(ev("E1")), inbox.add(ev("E2")), return_exceptions=True
        )
        assert all(isinstance(r, StoreClosed) for r in results)
        with pytest.raises(StoreClosed):
            await inbox.add(ev("E3"))
    finally:
        await inbox.aclose()


async def test_mark_processed_writes_nothing_once_a_source_has_nothing_unprocessed(
    store: Store, db_path: Path
) -> None:
    """After a pass that left nothing of its source unprocessed, marking again writes nothing
    (issue 11: most passes follow no webhook); an event that arrives later, or one received
    during the pass that marked, is still marked by the next pass."""
    inbox = Inbox(store, window=0)
    await inbox.start()
    writes = 0
    write_inline = store.write_inline

    async def counting(work: object) -> object:
        nonlocal writes
        writes += 1
        return await write_inline(work)  # type: ignore[arg-type]

    store.write_inline = counting  # type: ignore[method-assign,assignment]
    t = now_ns()
    try:
        await inbox.add(ev("first", t - 10))
        assert await inbox.mark_processed("square", started_ns=t) == 1
        before = writes
        assert await inbox.mark_processed("square", started_ns=t + 5) == 0
        assert writes == before  # known clean: no transaction
        await inbox.add(ev("during", t + 10))
        assert await inbox.mark_processed("square", started_ns=t + 5) == 0  # received after
        assert await inbox.count_unprocessed("square") == 1
        assert await inbox.mark_processed("square", started_ns=t + 20) == 1
        assert await inbox.count_unprocessed("square") == 0
        before = writes
        assert await inbox.mark_processed("square", started_ns=t + 30) == 0
        assert writes == before
    finally:
        await inbox.aclose()


async def test_mark_processed_only_rows_received_before_the_pass_started(
    store: Store, db_path: Path
) -> None:
    """A pass that started at T covers rows received before T only, of its own source only; a row
    received during the pass waits for the next one."""
    inbox = Inbox(store, window=0)
    await inbox.start()
    t = now_ns()
    try:
        for event in (
            ev("before", t - 10),
            ev("during", t + 10),
            ev("other", t - 10, source="other"),
        ):
            await inbox.add(event)
        assert await inbox.count_unprocessed("square") == 2
        assert await inbox.mark_processed("square", started_ns=t) == 1
        assert await inbox.count_unprocessed("square") == 1
        assert await inbox.count_unprocessed() == 2
        assert await inbox.mark_processed("square", started_ns=t + 20) == 1
    finally:
        await inbox.aclose()
    state = {r["event_id"]: r["processed_at"] is not None for r in inbox_rows(db_path)}
    assert state == {"before": True, "during": True, "other": False}


async def test_events_not_acted_on_are_stored_processed(store: Store, db_path: Path) -> None:
    """An event type syncd does not act on is kept (for deduplication) but is not waiting for a
    pass, so it never triggers one at start."""
    inbox = Inbox(store, window=0)
    await inbox.start()
    try:
        await inbox.add(ev("E1", actionable=False, type="catalog.version.updated"))
        assert await inbox.count_unprocessed() == 0
    finally:
        await inbox.aclose()
    [row] = inbox_rows(db_path)
    assert row["type"] == "catalog.version.updated"
    assert row["processed_at"] == row["received_at"]


async def test_prune_removes_only_old_processed_rows(store: Store, db_path: Path) -> None:
    """Pruning deletes rows processed longer ago than the retention; recent and unprocessed rows
    stay (an unprocessed row is never pruned, however old)."""
    now = now_ns()
    day = 86_400 * NS_PER_S
    clock = [now]
    inbox = Inbox(store, window=0, clock=lambda: clock[0])
    await inbox.start()
    try:
        await inbox.add(ev("old", now - 10 * day))
        await inbox.add(ev("recent", now - 1))
        await inbox.add(ev("pending", now + 1))
        clock[0] = now - 8 * day  # a pass processes "old" 8 days ago
        assert await inbox.mark_processed("square", started_ns=now - 9 * day) == 1
        clock[0] = now - day  # and "recent" yesterday
        assert await inbox.mark_processed("square", started_ns=now) == 1
        clock[0] = now
        assert await inbox.prune(retain_days=7) == 1
        assert await inbox.prune(retain_days=7) == 0
    finally:
        await inbox.aclose()
    assert {r["event_id"] for r in inbox_rows(db_path)} == {"recent", "pending"}


async def test_prune_forever_runs_at_once_and_stops(store: Store, db_path: Path) -> None:
    """The background pruning loop prunes right away, then waits its interval, and returns as soon
    as it is told to stop."""
    inbox = Inbox(store, window=0)
    await inbox.start()
    try:
        await inbox.add(ev("E1", now_ns() - 100 * 86_400 * NS_PER_S))
        await inbox.mark_processed("square", started_ns=now_ns())
        stop = asyncio.Event()
        task = asyncio.create_task(inbox.prune_forever(stop, retain_days=0, interval=3600))
        async with asyncio.timeout(5):
            while inbox_rows(db_path):
                await asyncio.sleep(0.01)
            stop.set()
            await task
    finally:
        await inbox.aclose()


async def test_bodies_are_stored_byte_for_byte(store: Store, db_path: Path) -> None:
    """The raw signed body is kept exactly: non-ASCII text, JSON escapes and odd whitespace come
    back as the same bytes."""
    body = '{"event_id": "E1",\t"type": "t", "note": "é ✓ \\u00e9 \\"q\\" \\\\"}\r\n'.encode()
    inbox = Inbox(store, window=0)
    await inbox.start()
    try:
        event = InboxEvent("E1", "square", "t", None, None, now_ns(), body)
        assert await inbox.add(event) is True
    finally:
        await inbox.aclose()
    assert inbox_rows(db_path)[0]["body"] == body


async def test_batches_are_capped_in_bytes(store: Store, db_path: Path) -> None:
    """A batch stops growing once its bodies reach max_batch_bytes (the statement's one parameter
    stays a sane size); the rest goes in the next batches, and everything lands."""
    inbox = Inbox(store, window=0.05, max_batch_bytes=100)
    await inbox.start()
    try:
        events = [ev(f"E{i}") for i in range(6)]
        big = [
            InboxEvent(f"B{i}", "square", "t", None, None, now_ns(), b"x" * 60) for i in range(4)
        ]
        results = await asyncio.gather(*(inbox.add(e) for e in [*big, *events]))
    finally:
        await inbox.aclose()
    assert all(results)
    assert inbox.commits >= 2
    assert len(inbox_rows(db_path)) == 10


async def test_unknown_merchant_events_are_adopted_or_pruned(store: Store, db_path: Path) -> None:
    """Events of a merchant no source knew (kept under ``_unknown``) move to the source that
    learns that merchant, unprocessed, so its next pass covers them; other merchants' stay; an
    unclaimed one older than the retention is pruned, a recent one stays."""
    now = now_ns()
    day = 86_400 * NS_PER_S
    inbox = Inbox(store, window=0, clock=lambda: now)
    await inbox.start()
    try:
        await inbox.add(ev("mine", now - 1, source=UNKNOWN_SOURCE))
        await inbox.add(replace(ev("other", now - 1, source=UNKNOWN_SOURCE), merchant_id="M2"))
        stale = ev("stale", now - 8 * day, source=UNKNOWN_SOURCE)
        await inbox.add(replace(stale, merchant_id="M3"))
        assert await inbox.adopt_unknown("M1", "shop") == 1
        assert await inbox.adopt_unknown("M1", "shop") == 0
        assert await inbox.count_unprocessed("shop") == 1
        assert await inbox.prune(retain_days=7) == 1
    finally:
        await inbox.aclose()
    rows = {r["event_id"]: r for r in inbox_rows(db_path)}
    assert set(rows) == {"mine", "other"}
    assert (rows["mine"]["source"], rows["mine"]["processed_at"]) == ("shop", None)
    assert rows["other"]["source"] == UNKNOWN_SOURCE


async def test_commits_are_pipelined_and_each_caller_waits_for_its_own(
    store: Store, db_path: Path
) -> None:
    """Pipelined group commits (issue 13): while one batch commits, the next is already queued on
    the writer's thread behind it, and a third waits to be queued; each caller is answered only
    once its own batch has committed (its row is visible to another connection), in order."""
    blocked, release = threading.Event(), threading.Event()

    def hold(db: sqlite3.Connection) -> None:  # the writer's thread busy, as with a slow fsync
        blocked.set()
        assert release.wait(10), "never released"

    inbox = Inbox(store, window=0)
    await inbox.start()
    answered: list[tuple[str, list[str]]] = []

    async def add(event_id: str) -> None:
        assert await inbox.add(ev(event_id)) is True
        answered.append((event_id, [r["event_id"] for r in inbox_rows(db_path)]))

    try:
        await store.queue_write(hold)
        assert await asyncio.to_thread(blocked.wait, 10)
        first = asyncio.create_task(add("E1"))
        await asyncio.sleep(0.02)
        second = asyncio.create_task(add("E2"))
        await asyncio.sleep(0.02)
        third = asyncio.create_task(add("E3"))
        await asyncio.sleep(0.02)
        assert inbox._in_flight == 2, "E1's and E2's batches both queued behind the held thread"
        assert answered == []
        assert inbox_rows(db_path) == []
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second, third), 10)
    finally:
        release.set()
        await inbox.aclose()
    assert [event_id for event_id, _ in answered] == ["E1", "E2", "E3"]
    for event_id, visible in answered:
        assert event_id in visible
    assert inbox.commits == 3
