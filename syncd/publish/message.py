"""The published message: a change-log entry as flat routing fields plus its full JSON record.

Fields (docs/changelog.md, "Redis Streams"): ``seq``, ``kind``, ``source``, ``key``, ``recorded_at``
and ``payload``, the entry's JSON record exactly as ``syncd changes`` prints it. ``old`` and ``new``
are stored as JSON text already and are embedded as they are (``orjson.Fragment``), which is what
makes the relay fast: no payload is parsed to be published.
"""

from __future__ import annotations

import orjson

from syncd.publish.ports import Message
from syncd.store.outbox import RawChange

FIELDS = ("seq", "kind", "source", "key", "recorded_at", "payload")


def routing_key(row: RawChange) -> str:
    """``catalog_object_id|location_id|state`` for count entries, the job's id for job entries,
    else empty."""
    if row.job_id is not None:
        return str(row.job_id)
    if row.catalog_object_id is not None:
        return f"{row.catalog_object_id}|{row.location_id or ''}|{row.state or ''}"
    return ""


def payload(row: RawChange) -> bytes:
    """The entry's public JSON record (``Change.to_record``), byte for byte."""
    return orjson.dumps(
        {
            "seq": row.seq,
            "recorded_at": row.recorded_at,
            "kind": row.kind,
            "source": row.source,
            "catalog_object_id": row.catalog_object_id,
            "location_id": row.location_id,
            "state": row.state,
            "sku": row.sku,
            "job_id": row.job_id,
            "old": None if row.old is None else orjson.Fragment(row.old),
            "new": None if row.new is None else orjson.Fragment(row.new),
        }
    )


def to_message(row: RawChange) -> Message:
    """The message published for one change-log entry (fields encoded once, here)."""
    return Message(
        row.seq,
        {
            b"seq": b"%d" % row.seq,
            b"kind": row.kind.encode(),
            b"source": row.source.encode(),
            b"key": routing_key(row).encode(),
            b"recorded_at": row.recorded_at.encode(),
            b"payload": payload(row),
        },
    )
