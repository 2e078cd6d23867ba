"""The published message (syncd.publish.message): flat routing fields plus the entry's JSON record,
byte for byte what `syncd changes` prints."""

from __future__ import annotations

import orjson

from syncd.publish.message import FIELDS, routing_key, to_message
from syncd.store import Store, changelog, outbox
from syncd.store.changelog import NewChange
from syncd.store.jobs import NewJob, register
from syncd.timeutil import now_ns


async def test_payload_is_the_change_log_record_byte_for_byte(store: Store) -> None:
    """For count updates (with nested values and unicode), removals and job entries, the payload
    equals orjson.dumps(Change.to_record()) of the same entry as the store reads it back."""
    entries = [
        NewChange(
            kind="count.updated",
            source="square",
            catalog_object_id="I1",
            location_id="L1",
            state="IN_STOCK",
            old=None,
            new={
                "quantity": "1.50000",
                "calculated_at": "2026-01-01T00:00:00.1Z",
                "catalog_object_type": "ITEM_VARIATION",
                "note": "café ☕",
            },
        ),
        NewChange(
            kind="count.removed",
            source="square",
            catalog_object_id="I1",
            location_id="L1",
            state="IN_STOCK",
            old={"quantity": "1.50000"},
            new=None,
        ),
        NewChange(
            kind="job.succeeded",
            source="inventory",
            job_id=7,
            old={"state": "running"},
            new={"state": "succeeded", "result": [1, 2.5, None]},
        ),
    ]
    await store.write(lambda conn: changelog.append(conn, entries, "2026-01-01T00:00:01.5Z"))
    raw = await store.read(lambda conn: outbox.read_after(conn, 0, 10))
    decoded = await store.read(lambda conn: changelog.read_after(conn, 0, 10))
    assert len(raw) == len(decoded) == 3
    for row, change in zip(raw, decoded, strict=True):
        message = to_message(row)
        assert message.seq == change.seq
        assert [f.encode() for f in FIELDS] == list(message.fields)
        assert message.fields[b"payload"] == orjson.dumps(change.to_record())
        assert message.fields[b"seq"] == str(change.seq).encode()
        assert message.fields[b"kind"] == change.kind.encode()
        assert message.fields[b"source"] == change.source.encode()
        assert message.fields[b"recorded_at"] == b"2026-01-01T00:00:01.5Z"
    assert [routing_key(r) for r in raw] == ["I1|L1|IN_STOCK", "I1|L1|IN_STOCK", "7"]


async def test_job_entries_written_by_the_jobs_store_are_published_as_recorded(
    store: Store,
) -> None:
    """A job registered through the jobs store logs `job.pending`; its message carries the
    provider as source, the job's row id as key, and the same record `syncd changes` prints."""
    await store.write(lambda conn: register(conn, [NewJob("inventory", "J-1")], now_ns()))
    raw = await store.read(lambda conn: outbox.read_after(conn, 0, 10))
    decoded = await store.read(lambda conn: changelog.read_after(conn, 0, 10))
    assert [r.kind for r in raw] == ["job.pending"]
    message = to_message(raw[0])
    assert message.fields[b"source"] == b"inventory"
    assert message.fields[b"key"] == str(decoded[0].job_id).encode()
    assert message.fields[b"payload"] == orjson.dumps(decoded[0].to_record())
