"""Connections, migrations and the single-writer unit of work."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from pathlib import Path

import aiosqlite
import pytest
import structlog

from syncd.errors import SchemaTooNew, StoreClosed
from syncd.store import Store, changelog, identity, sync_state
from syncd.store import counts as counts_store
from syncd.store.changelog import NewChange
from syncd.store.inline import QuerySuspended
from syncd.store.migrations import SCHEMA_VERSION, migrate
from syncd.store.sqlite import Writer, connect_writer
from syncd.timeutil import parse_ns
from tests.helpers import assert_log_invariants, count, project_to_schema


async def test_open_sets_wal_full_and_schema_version(store: Store, db_path: Path) -> None:
    """The database is in WAL mode with synchronous=FULL on the writer and the current schema."""
    async with store._writer.conn.execute("PRAGMA synchronous") as cur:  # type: ignore[union-attr]
        assert (await cur.fetchone()) == (2,)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        conn.close()


async def test_reopen_is_idempotent(db_path: Path) -> None:
    """Opening an up-to-date database runs no migration and keeps the data."""
    store = await Store.open(db_path)
    await store.write(
        lambda c: c.execute(
            "INSERT INTO passes (source, kind, started_at) VALUES ('square', 'full', 'x')"
        )
    )
    await store.aclose()
    store = await Store.open(db_path)
    rows = await store.read(lambda c: c.execute_fetchall("SELECT COUNT(*) FROM passes"))
    assert list(rows) == [(1,)]
    await store.aclose()


async def test_newer_schema_is_refused(db_path: Path) -> None:
    """A database written by a newer syncd is refused with a typed error and a hint."""
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew) as info:
        await Store.open(db_path)
    assert info.value.hint


async def test_readonly_store_cannot_write(store: Store, db_path: Path) -> None:
    """A read-only store opened like another tool's reader refuses writes."""
    reader = await Store.open(db_path, readonly=True)
    try:
        with pytest.raises(StoreClosed):
            await reader.write(lambda c: c.execute("DELETE FROM changes"))
        with pytest.raises(sqlite3.OperationalError):
            await reader.read(lambda c: c.execute("DELETE FROM changes"))
    finally:
        await reader.aclose()


async def test_close_is_idempotent_and_later_use_is_typed(db_path: Path) -> None:
    """aclose() twice is fine; using a closed store raises StoreClosed."""
    store = await Store.open(db_path)
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreClosed):
        await store.write(lambda c: c.execute("SELECT 1"))
    with pytest.raises(StoreClosed):
        await store.read(lambda c: c.execute("SELECT 1"))


async def test_cancellation_does_not_split_a_unit_of_work(store: Store, db_path: Path) -> None:
    """Cancelling the caller mid-unit lets the unit commit whole; the caller still sees the cancel."""
    started = asyncio.Event()

    async def work(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "INSERT INTO passes (source, kind, started_at) VALUES ('square', 'full', 'a')"
        )
        started.set()
        await asyncio.sleep(0.05)
        await conn.execute(
            "INSERT INTO passes (source, kind, started_at) VALUES ('square', 'full', 'b')"
        )

    task = asyncio.create_task(store.write(work))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rows = await store.read(lambda c: c.execute_fetchall("SELECT started_at FROM passes"))
    assert sorted(r[0] for r in rows) == ["a", "b"]


_INSERT_PASS = "INSERT INTO passes (source, kind, started_at) VALUES ('square', 'full', ?)"


async def _started(store: Store) -> list[str]:
    rows = await store.read(lambda c: c.execute_fetchall("SELECT started_at FROM passes"))
    return sorted(str(r[0]) for r in rows)


async def test_inline_unit_runs_on_the_connection_thread_and_announces_its_commit(
    store: Store,
) -> None:
    """write_inline runs the whole unit on aiosqlite's thread (its private ``_execute``, which the
    pin in pyproject guards), with the caller's context, and announces the change-log head after
    COMMIT as ``write`` does."""
    seen: dict[str, object] = {}
    head = store.changelog_head.head

    async def work(conn: aiosqlite.Connection) -> list[int]:
        seen["thread"] = threading.get_ident()
        seen["bound"] = structlog.contextvars.get_contextvars().get("probe")
        await conn.execute(_INSERT_PASS, ("a",))
        return await changelog.append(conn, [NewChange("probe.kind", "square", None, {})], "t")

    with structlog.contextvars.bound_contextvars(probe="yes"):
        seqs = await store.write_inline(work)
    assert seen == {"thread": seen["thread"], "bound": "yes"}
    assert seen["thread"] != threading.get_ident()
    assert seqs == [head + 1]
    assert store.changelog_head.head == head + 1
    assert await _started(store) == ["a"]


async def test_inline_unit_that_fails_or_suspends_rolls_back(store: Store) -> None:
    """A unit that raises, or awaits anything but its connection, leaves nothing behind, and the
    connection takes the next unit (no transaction left open)."""

    async def fails(conn: aiosqlite.Connection) -> None:
        await conn.execute(_INSERT_PASS, ("lost",))
        raise ValueError("boom")

    async def suspends(conn: aiosqlite.Connection) -> None:
        await conn.execute(_INSERT_PASS, ("lost too",))
        await asyncio.sleep(0)

    with pytest.raises(ValueError, match="boom"):
        await store.write_inline(fails)
    with pytest.raises(QuerySuspended):
        await store.write_inline(suspends)
    await store.write_inline(lambda c: c.execute(_INSERT_PASS, ("kept",)))
    assert await _started(store) == ["kept"]


async def test_cancelling_an_inline_unit_lets_it_commit_first(store: Store) -> None:
    """A caller cancelled while its inline unit runs sees the cancellation only once the unit has
    committed whole, as with ``write``."""
    running, release = threading.Event(), threading.Event()

    async def work(conn: aiosqlite.Connection) -> None:
        await conn.execute(_INSERT_PASS, ("a",))
        running.set()
        assert release.wait(10), "never released"
        await conn.execute(_INSERT_PASS, ("b",))

    task = asyncio.create_task(store.write_inline(work))
    assert await asyncio.to_thread(running.wait, 10)
    task.cancel()
    await asyncio.sleep(0)
    assert not task.done(), "the caller waits for the unit it started"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _started(store) == ["a", "b"]


async def test_a_queued_job_runs_between_the_units_around_it_and_frees_the_lock_at_once(
    store: Store,
) -> None:
    """Store.queue_write queues a job on the writer's thread (aiosqlite's private ``_running``,
    ``_tx`` and ``_conn``, which the pin in pyproject guards) and returns before it runs: the
    writer's lock is free again at once, and the job runs after the unit queued before it and
    before the one queued after it, each statement its own committed transaction."""
    running, release, job_release = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    async def first(conn: aiosqlite.Connection) -> None:  # a unit on the loop holds the lock
        running.set()
        assert await asyncio.to_thread(release.wait, 10), "never released"
        await conn.execute(_INSERT_PASS, ("a",))
        order.append("first")

    def job(db: sqlite3.Connection) -> None:
        assert job_release.wait(10), "never released"
        assert not db.in_transaction  # autocommit: the statement is its own transaction
        db.execute(_INSERT_PASS, ("b",))
        order.append("job")

    async def last(conn: aiosqlite.Connection) -> None:
        order.append("last")

    held = asyncio.create_task(store.write(first))
    assert await asyncio.to_thread(running.wait, 10)
    queued = asyncio.create_task(store.queue_write(job))
    await asyncio.sleep(0.01)
    assert not queued.done(), "queued only once the unit holding the lock let go of it"
    after = asyncio.create_task(store.write_inline(last))
    release.set()
    await held
    await asyncio.wait_for(queued, 5)  # returns once queued: the job has not run yet
    assert order == ["first"]
    job_release.set()
    await after
    assert order == ["first", "job", "last"]
    assert await _started(store) == ["a", "b"]
    await store.aclose()
    with pytest.raises(StoreClosed):
        await store.queue_write(job)


async def test_inline_read_is_one_snapshot(store: Store) -> None:
    """read_inline runs a query inside one read transaction on the reader's thread."""
    await store.write(lambda c: c.execute(_INSERT_PASS, ("a",)))

    async def query(conn: aiosqlite.Connection) -> tuple[bool, list[str]]:
        rows = await conn.execute_fetchall("SELECT started_at FROM passes")
        return threading.get_ident() != main, [str(r[0]) for r in rows]

    main = threading.get_ident()
    assert await store.read_inline(query) == (True, ["a"])


def _raw(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows exactly as stored (text as hex, so the comparison is byte for byte)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


_CHANGES_RAW = (
    "SELECT seq, typeof(seq), hex(recorded_at), hex(kind), hex(source), hex(catalog_object_id),"
    " hex(location_id), hex(state), job_id, hex(old), typeof(old), hex(new), typeof(new)"
    " FROM changes ORDER BY seq"
)


async def _build_v5(path: Path) -> None:
    """A database at schema 5, built by the real migration path, holding what the normal store
    functions write (projected onto schema 5's columns): two sources with passes, updates and a
    full-pass removal, plus rows of a source with no pass."""
    written = path.with_name("written-today.db")
    conn = await connect_writer(written)
    await migrate(conn)
    writer = Writer(conn)

    async def history(c: aiosqlite.Connection) -> None:
        for source, started in (
            ("square", "2025-12-01T00:00:00Z"),
            ("north", "2025-12-05T00:00:00Z"),
        ):
            first = await sync_state.begin_pass(c, source, "full", started)
            await counts_store.apply_page(
                c,
                source,
                [count(item=f"I{i}") for i in range(30)],
                pass_id=first,
                recorded_at="2025-12-06T00:00:00.000000Z",
                mark_seen=True,
            )
            second = await sync_state.begin_pass(c, source, "full", "2025-12-07T00:00:00Z")
            await counts_store.apply_page(
                c,
                source,
                [
                    count(item=f"I{i}", quantity="7", at="2026-01-01T00:00:01Z")
                    for i in range(0, 30, 2)
                ],
                pass_id=second,
                recorded_at="2025-12-07T00:00:01.000000Z",
                mark_seen=True,
            )
            await counts_store.remove_unseen(
                c,
                source,
                pass_id=second,
                location_id=None,
                recorded_at="2025-12-07T00:00:02.000000Z",
            )
        await counts_store.apply_page(
            c, "orphan", [count(item="X")], pass_id=0, recorded_at="2025-12-08T00:00:00.000000Z"
        )

    await writer.run(history)
    await writer.aclose()
    await project_to_schema(written, path, 5)


async def test_v5_database_migrates_in_place_keeping_the_change_log(db_path: Path) -> None:
    """A v5 database with counts and changes migrates to the current schema without any change
    entry rewritten or renumbered; replay still equals the mirror; sources seen are registered."""
    await _build_v5(db_path)
    assert _raw(db_path, "PRAGMA user_version") == [(5,)]
    before = _raw(db_path, _CHANGES_RAW)
    mirror_before = _raw(db_path, "SELECT * FROM inventory_counts ORDER BY 1, 2, 3, 4")
    high_water_before = _raw(db_path, "SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
    assert len(before) == 2 * (30 + 15 + 15) + 1  # first sight, updates, removals; the orphan

    store = await Store.open(db_path)
    try:
        assert _raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert _raw(db_path, _CHANGES_RAW) == before
        assert _raw(db_path, "SELECT * FROM inventory_counts ORDER BY 1, 2, 3, 4") == mirror_before
        assert _raw(db_path, "SELECT seq FROM sqlite_sequence WHERE name = 'changes'") == (
            high_water_before
        )
        for source in ("square", "north", "orphan"):
            assert_log_invariants(db_path, source)
        seen = {
            r[0]: r[1:]
            for r in _raw(db_path, "SELECT source, merchant_id, added_at, removed_at FROM sources")
        }
        assert seen.keys() == {"square", "north", "orphan"}
        assert seen["square"] == (None, "2025-12-01T00:00:00Z", None)  # since its first pass
        assert seen["north"] == (None, "2025-12-05T00:00:00Z", None)
        assert seen["orphan"][0] is None
        assert seen["orphan"][2] is None
        parse_ns(seen["orphan"][1])  # no pass: the migration's time, still RFC 3339
        assert _raw(db_path, "SELECT COUNT(*) FROM source_credentials") == [(0,)]
        # Schema 7: the database got an id of its own, and publish_offsets a `refused` column.
        [(database_id, created_at)] = _raw(
            db_path, "SELECT database_id, created_at FROM database_info"
        )
        assert re.fullmatch(r"[0-9a-f]{32}", str(database_id))
        parse_ns(str(created_at))
        assert await store.read(identity.database_id) == database_id
        columns = [r[1] for r in _raw(db_path, "PRAGMA table_info(publish_offsets)")]
        assert columns[-1] == "refused"
        # The next entry continues after the old high-water mark.
        await store.write(
            lambda c: counts_store.apply_page(
                c, "square", [count(item="NEW")], pass_id=9, recorded_at="2026-02-01T00:00:00Z"
            )
        )
        assert _raw(db_path, "SELECT MAX(seq) FROM changes") == [(high_water_before[0][0] + 1,)]
    finally:
        await store.aclose()


async def test_each_database_has_its_own_id_kept_across_opens_and_copies(tmp_path: Path) -> None:
    """Two new databases get different ids (the publish relay claims its stream with it, issue
    11); reopening keeps the id, and so does a copy of the file (a backup, restored); a read-only
    store of a database from before schema 8 has none."""
    ids = []
    for name in ("a.db", "b.db"):
        store = await Store.open(tmp_path / name)
        ids.append(await store.read(identity.database_id))
        await store.aclose()
    assert ids[0] != ids[1]
    assert all(i is not None and len(i) == 32 for i in ids)
    store = await Store.open(tmp_path / "a.db")
    assert await store.read(identity.database_id) == ids[0]
    await store.aclose()
    src = sqlite3.connect(tmp_path / "a.db")
    dst = sqlite3.connect(tmp_path / "copy.db")
    src.backup(dst)
    dst.close()
    src.close()
    store = await Store.open(tmp_path / "copy.db")
    assert await store.read(identity.database_id) == ids[0]
    await store.aclose()
    conn = await connect_writer(tmp_path / "old.db")
    await migrate(conn, target=6)
    await conn.close()
    reader = await Store.open(tmp_path / "old.db", readonly=True)
    try:
        assert await reader.read(identity.database_id) is None
    finally:
        await reader.aclose()
