"""Heartbeats (issue 14): written into silences of the change log only, each at least an interval
after the entry before it, never while entries come; off at 0, and the interval changes live.
Real SQLite files; every wait is on a condition with a deadline."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from syncd.store import Store, changelog
from syncd.store.changelog import NewChange
from syncd.sync.heartbeat import Heartbeat
from syncd.sync.lifecycle import SourceLifecycle
from syncd.timeutil import NS_PER_S, format_ns, now_ns, parse_ns
from tests.helpers import changes

INTERVAL = 0.1


def a_count(i: int) -> NewChange:
    return NewChange(
        kind="count.updated",
        source="square",
        catalog_object_id=f"ITEM{i}",
        location_id="LOC1",
        state="IN_STOCK",
        old=None,
        new={"quantity": str(i)},
    )


async def write_count(store: Store, i: int) -> int:
    [seq] = await store.write(
        lambda conn: changelog.append(conn, [a_count(i)], format_ns(now_ns()))
    )
    return seq


@asynccontextmanager
async def beating(heartbeat: Heartbeat) -> AsyncIterator[asyncio.Task[None]]:
    """``heartbeat.run`` in the background until the block ends (then stopped, and reaped)."""
    stop = asyncio.Event()
    task = asyncio.create_task(heartbeat.run(stop))
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task


async def until_heartbeats(db: Path, n: int, timeout: float = 10.0) -> list[dict[str, object]]:
    async with asyncio.timeout(timeout):
        while len(beats := [e for e in changes(db) if e["kind"] == "heartbeat"]) < n:
            await asyncio.sleep(0.01)
    return beats


def recorded(db: Path) -> dict[int, int]:
    """seq -> recorded_at (ns) of every entry."""
    conn = sqlite3.connect(db)
    try:
        return {s: parse_ns(at) for s, at in conn.execute("SELECT seq, recorded_at FROM changes")}
    finally:
        conn.close()


async def test_heartbeats_fill_silences_only(store: Store, db_path: Path) -> None:
    """With nothing written, a heartbeat (source _syncd) every interval, each naming the head
    before it and how each source stands; a count written after a heartbeat pushes the next
    one back: every heartbeat comes at least an interval after the entry before it."""
    ok = SourceLifecycle("north")
    ok.logged, ok.last_success_ns = "ok", now_ns()
    stale = SourceLifecycle("south")
    stale.logged = "stale"
    await write_count(store, 0)
    heartbeat = Heartbeat(store, INTERVAL, lambda: [stale, ok])
    async with beating(heartbeat):
        await until_heartbeats(db_path, 2)
        written = await write_count(store, 1)
        beats = await until_heartbeats(db_path, 3)
    entries = changes(db_path)
    kinds = [e["kind"] for e in entries]
    assert kinds[:4] == ["count.updated", "heartbeat", "heartbeat", "count.updated"]
    assert kinds[4:] == ["heartbeat"] * (len(kinds) - 4)
    assert entries[3]["seq"] == written
    at = recorded(db_path)
    for beat in beats:
        seq = int(beat["seq"])  # type: ignore[call-overload]
        assert beat["source"] == "_syncd"
        assert beat["old"] is None
        assert beat["new"] == {
            "head_seq": seq - 1,
            "head_recorded_at": format_ns(at[seq - 1]),
            "interval_s": INTERVAL,
            "sources": {
                "north": {"status": "ok", "last_success_at": format_ns(ok.last_success_ns)},
                "south": {"status": "stale", "last_success_at": None},
            },
        }
        assert at[seq] - at[seq - 1] >= INTERVAL * NS_PER_S
    assert heartbeat.written == len(beats)


async def test_no_heartbeat_while_entries_keep_coming(store: Store, db_path: Path) -> None:
    """Entries written more often than the interval hold heartbeats back; the first one comes
    an interval after the last entry."""
    heartbeat = Heartbeat(store, 0.3)
    async with beating(heartbeat):
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.0
        i = 0
        while loop.time() < end:
            await write_count(store, i)  # back to back: each waits for the previous commit
            i += 1
        last = store.changelog_head.head
        async with asyncio.timeout(10):
            while store.changelog_head.head == last:
                await asyncio.sleep(0.01)
    at = recorded(db_path)
    entries = changes(db_path)
    assert [e["kind"] for e in entries].count("count.updated") == i
    after = entries[last]
    assert (after["seq"], after["kind"]) == (last + 1, "heartbeat")
    assert after["new"]["head_seq"] == last
    # Every heartbeat follows a silence of the interval; the pauses between writes are shorter
    # (a heartbeat among them means the machine stretched one into a silence: still one).
    for e in entries:
        if e["kind"] == "heartbeat":
            assert at[e["seq"]] - at[e["seq"] - 1] >= 0.3 * NS_PER_S


async def test_off_at_zero_and_the_interval_changes_live(tmp_path: Path) -> None:
    """Interval 0 writes none: while a beating instance on another database has written three,
    the one at 0 has written nothing; set to a positive interval, it starts beating."""
    quiet = await Store.open(tmp_path / "quiet.db")
    loud = await Store.open(tmp_path / "loud.db")
    try:
        off = Heartbeat(quiet, 0)
        async with beating(off), beating(Heartbeat(loud, INTERVAL)):
            await until_heartbeats(tmp_path / "loud.db", 3)
            assert changes(tmp_path / "quiet.db") == []
            off.set_interval(INTERVAL)
            await until_heartbeats(tmp_path / "quiet.db", 1)
        assert off.interval == INTERVAL
    finally:
        await quiet.aclose()
        await loud.aclose()


async def test_a_heartbeat_is_not_written_after_a_head_it_did_not_see(store: Store) -> None:
    """``beat`` writes only while the log's head is the one the silence was measured on."""
    heartbeat = Heartbeat(store, INTERVAL)
    await write_count(store, 0)
    assert not await heartbeat.beat(0)
    assert store.changelog_head.head == 1
    assert await heartbeat.beat(1)
    assert store.changelog_head.head == 2
