"""The jobs table: idempotent registration, the due-time index, transitions with their entries."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from syncd.store import Store
from syncd.store import jobs as jobs_store
from syncd.store.jobs import JobRow, JobUpdate, NewJob
from tests.helpers import changes

NOW = 1_700_000_000_000_000_000


def update(row: JobRow, state: str, *, expected: str | None = None, **changes: Any) -> JobUpdate:
    fields: dict[str, Any] = {
        "id": row.id,
        "expected_state": expected or row.state,
        "state": state,
        "vendor_status": "WORKING",
        "job_type": "REFRESH",
        "attempts": 0,
        "polls": row.polls + 1,
        "next_poll_ns": NOW + 10,
        "not_found_since_ns": None,
        "last_error": None,
        "messages": (),
        "failures": (),
        "progress": None,
        "result": None,
        "finished": state not in ("pending", "running"),
    }
    fields.update(changes)
    return JobUpdate(**fields)


async def register(store: Store, *jobs: NewJob) -> list[tuple[JobRow, bool]]:
    return await store.write(lambda conn: jobs_store.register(conn, jobs, NOW))


async def test_register_is_idempotent(store: Store, db_path: Path) -> None:
    """Registering (provider, job_id) twice keeps one row, its first params, and one entry."""
    [(first, created)] = await register(store, NewJob("inv", "42", {"a": "1"}, "nightly"))
    [(again, created_again)] = await register(store, NewJob("inv", "42", {"a": "2"}))
    assert created
    assert not created_again
    assert again.id == first.id
    assert again.params == {"a": "1"}
    assert again.label == "nightly"
    assert first.state == "pending"
    assert first.next_poll_ns == NOW
    entries = changes(db_path)
    assert [e["kind"] for e in entries] == ["job.pending"]
    assert entries[0]["source"] == "inv"
    assert entries[0]["old"] is None
    assert entries[0]["new"]["job_id"] == "42"
    assert entries[0]["new"]["label"] == "nightly"


async def test_register_many_dedupes_within_a_batch(store: Store, db_path: Path) -> None:
    """A batch naming one job twice creates it once; other providers' equal ids are distinct."""
    results = await register(store, NewJob("inv", "1"), NewJob("inv", "1"), NewJob("shop", "1"))
    assert [created for _, created in results] == [True, False, True]
    assert results[0][0].id == results[1][0].id != results[2][0].id
    assert len(changes(db_path)) == 2


async def test_transition_writes_exactly_one_entry(store: Store, db_path: Path) -> None:
    """A state change writes one job.<state> entry in the same transaction; a poll without one
    writes none; both persist attempts and next poll."""
    [(row, _)] = await register(store, NewJob("inv", "7"))
    [ok] = await store.write(lambda c: jobs_store.record(c, [update(row, "running")], NOW + 1))
    assert ok
    row2 = await store.read(lambda c: jobs_store.get(c, row.id))
    assert row2 is not None
    assert row2.state == "running"
    [ok] = await store.write(
        lambda c: jobs_store.record(
            c, [update(row2, "running", attempts=3, next_poll_ns=NOW + 99)], NOW + 2
        )
    )
    row3 = await store.read(lambda c: jobs_store.get(c, row.id))
    assert ok
    assert row3 is not None
    assert row3.attempts == 3
    assert row3.next_poll_ns == NOW + 99
    entries = changes(db_path)
    assert [e["kind"] for e in entries] == ["job.pending", "job.running"]
    assert entries[1]["old"] == {"state": "pending", "vendor_status": None}
    assert entries[1]["new"]["state"] == "running"
    assert entries[1]["new"]["vendor_status"] == "WORKING"


async def test_stale_or_forgotten_updates_do_not_apply(store: Store, db_path: Path) -> None:
    """An update based on a state the row no longer has, or for a deleted row, changes nothing."""
    [(a, _), (b, _)] = await register(store, NewJob("inv", "a"), NewJob("inv", "b"))
    await store.write(lambda c: jobs_store.forget(c, b.id))
    applied = await store.write(
        lambda c: jobs_store.record(
            c, [update(a, "succeeded", expected="running"), update(b, "running")], NOW
        )
    )
    assert applied == [False, False]
    assert [e["kind"] for e in changes(db_path)] == ["job.pending", "job.pending"]


async def test_two_updates_of_one_job_in_one_batch(store: Store, db_path: Path) -> None:
    """Within one batch, a second update sees the first one's state."""
    [(row, _)] = await register(store, NewJob("inv", "x"))
    applied = await store.write(
        lambda c: jobs_store.record(
            c, [update(row, "running"), update(row, "succeeded", expected="running")], NOW
        )
    )
    assert applied == [True, True]
    assert [e["kind"] for e in changes(db_path)] == ["job.pending", "job.running", "job.succeeded"]
    done = await store.read(lambda c: jobs_store.get(c, row.id))
    assert done is not None
    assert done.finished_at is not None


async def test_due_query_uses_the_index(store: Store, db_path: Path) -> None:
    """Due jobs come soonest first through jobs_due; finished jobs are never due."""
    rows = await register(store, *(NewJob("inv", str(i)) for i in range(5)))
    for i, (row, _) in enumerate(rows):
        await store.write(
            lambda c, row=row, i=i: jobs_store.record(
                c,
                [update(row, "succeeded" if i == 0 else "running", next_poll_ns=NOW + 100 - i)],
                NOW,
            )
        )
    due = await store.read(lambda c: jobs_store.due(c, NOW + 98))
    assert [r.job_id for r in due] == ["4", "3"]
    unfinished = await store.read(jobs_store.unfinished)
    assert [r.job_id for r in unfinished] == ["4", "3", "2", "1"]
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        plan = " ".join(
            str(r)
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE finished_at IS NULL AND next_poll_ns < ?"
                " ORDER BY next_poll_ns LIMIT 10",
                (NOW,),
            )
        )
    finally:
        conn.close()
    assert "jobs_due" in plan


async def test_forget_keeps_the_history(store: Store, db_path: Path) -> None:
    """Forgetting deletes the row; its change entries stay; a second forget finds nothing."""
    [(row, _)] = await register(store, NewJob("inv", "9"))
    assert await store.write(lambda c: jobs_store.forget(c, row.id))
    assert not await store.write(lambda c: jobs_store.forget(c, row.id))
    assert await store.read(lambda c: jobs_store.get(c, row.id)) is None
    assert len(changes(db_path)) == 1
