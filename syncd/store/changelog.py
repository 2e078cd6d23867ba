"""The change log (table ``changes``): the only code that inserts into it, and the ways to read it.

Sequence numbers are allocated here, explicitly, inside the caller's write transaction: the writer
holds the database's write lock, so ``head + 1 .. head + n`` are ours, and the AUTOINCREMENT
high-water mark (``sqlite_sequence``) guarantees a seq is never reused, even after the newest
entries are pruned. Seqs are therefore contiguous: the only holes are at the front, where retention
pruned, and a reader asking for entries from inside that hole gets
:class:`~syncd.errors.ChangelogGap` (``read_after_checked``).

The daemon's own commits move a :class:`HeadSignal`, which wakes in-process readers (the admin API's
long-poll and SSE streams) without polling SQLite.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from syncd.errors import ChangelogGap
from syncd.model import Change, InventoryCount
from syncd.store import bulk

if TYPE_CHECKING:
    import aiosqlite


@dataclass(frozen=True, slots=True)
class NewChange:
    """An entry to append; ``old``/``new`` are JSON-able dicts (None for 'did not exist')."""

    kind: str
    source: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    catalog_object_id: str | None = None
    location_id: str | None = None
    state: str | None = None
    job_id: int | None = None
    sku: str | None = None


_COLUMNS = (
    "seq, recorded_at, kind, source, catalog_object_id, location_id, state, job_id, old, new, sku"
)


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


async def high_water(conn: aiosqlite.Connection) -> int:
    """The largest seq ever allocated (0 if none), pruned entries included."""
    # execute_fetchall: one trip to the connection's thread (execute, fetch and close are three).
    rows = await conn.execute_fetchall("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
    return int(next(iter(rows))[0]) if rows else 0


Row = tuple[str, str, str | None, str | None, str | None, int | None, str | None, str | None]
"""An entry before it has a seq: kind, source, catalog_object_id, location_id, state, job_id, old JSON,
new JSON."""


async def append(
    conn: aiosqlite.Connection, entries: Sequence[NewChange], recorded_at: str
) -> list[int]:
    """Append entries in order inside the current transaction; return their seqs."""
    return await append_rows(
        conn,
        [
            (
                e.kind,
                e.source,
                e.catalog_object_id,
                e.location_id,
                e.state,
                e.job_id,
                _json(e.old),
                _json(e.new),
            )
            for e in entries
        ],
        recorded_at,
        skus=[e.sku for e in entries],
    )


async def append_rows(
    conn: aiosqlite.Connection,
    rows: Sequence[Row],
    recorded_at: str,
    *,
    skus: Sequence[str | None] | None = None,
) -> list[int]:
    """``append`` for callers that already hold encoded rows (the sync hot path); ``skus`` is
    each row's SKU (None: no row has one)."""
    if not rows:
        return []
    base = await high_water(conn)
    seqs = list(range(base + 1, base + 1 + len(rows)))
    if skus is not None and len(skus) != len(rows):
        raise ValueError(f"{len(skus)} SKUs for {len(rows)} entries")
    # Every NULL bound as '' (see _INSERT_VALUES): a catalog entry has four or five of them. Many
    # rows per statement (syncd.store.bulk: no GIL hand-over per row on the writer's thread).
    await bulk.insert_values(
        conn,
        _INSERT_HEAD,
        _INSERT_VALUES,
        [
            (
                seq,
                recorded_at,
                kind,
                source,
                oid or "",
                lid or "",
                state or "",
                "" if job is None else job,
                old or "",
                new or "",
                sku or "",
            )
            for seq, (kind, source, oid, lid, state, job, old, new), sku in zip(
                seqs, rows, itertools.repeat(None) if skus is None else skus, strict=False
            )
        ],
    )
    _note_appended(seqs[-1], Counter((row[1], row[0]) for row in rows))
    return seqs


def _note_appended(head: int, by_kind: Mapping[tuple[str, str], int]) -> None:
    """Tell the unit of work in progress (if any) the log's new head and the entries written per
    (source, kind): announced once its transaction commits (the Store's on_commit hook)."""
    # Imported here: syncd.store.sqlite needs asyncio and aiosqlite, and the read-only commands
    # import this module for its queries alone (syncd.store.readonly).
    from syncd.store.sqlite import current_unit

    unit = current_unit()
    if unit is not None:
        unit.changelog_head = head
        counted = unit.changes_by_kind
        for key, n in by_kind.items():
            counted[key] = counted.get(key, 0) + n


# ``append_rows``' entry: every nullable column bound as '' for NULL (none is ever an empty string;
# a job id is never 0), for the reason the count entry's statement below gives: binding a None
# costs an adapter lookup, and a first catalog sync appends some 80,000 entries of four or five.
_INSERT_HEAD = (
    "INSERT INTO changes (seq, recorded_at, kind, source, catalog_object_id, location_id, state,"
    " job_id, old, new, sku)"
)
_INSERT_VALUES = (
    "(?, ?, ?, ?, NULLIF(?, ''), NULLIF(?, ''), NULLIF(?, ''), NULLIF(?, ''), NULLIF(?, ''),"
    " NULLIF(?, ''), NULLIF(?, ''))"
)


# A count entry: ``old`` and ``sku`` bound as '' for NULL (neither is ever an empty string: an old
# value is a JSON object, an empty SKU is stored NULL), since ``sqlite3`` binds a None through its
# adapter lookup, about 1.2 us each (measured; three per entry were a fifth of the statement's
# cost); ``new`` is built here from the count's fields, as ``counts.count_value`` spells it (keys
# in that order, no spaces: the same text orjson makes of it).
_INSERT_COUNT = (
    "INSERT INTO changes (seq, recorded_at, kind, source, catalog_object_id, location_id, state,"
    " job_id, old, new, sku) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULLIF(?, ''),"
    " json_object('quantity', ?, 'calculated_at', ?, 'catalog_object_type', ?), NULLIF(?, ''))"
)


async def append_counts(
    conn: aiosqlite.Connection,
    kind: str,
    source: str,
    counts: Sequence[InventoryCount],
    olds: Sequence[str | None],
    skus: Sequence[str | None],
    recorded_at: str,
) -> int:
    """Append one entry of ``kind`` per count, in order, inside the current transaction: its new
    value the count's, its old value ``olds[i]`` (JSON text, None: first sight), its SKU
    ``skus[i]``; return the first entry's seq (the others follow it, contiguous). The sync hot
    path: one statement, no row of entries built in between."""
    base = await high_water(conn)
    await conn.executemany(
        _INSERT_COUNT,
        [
            (
                seq,
                recorded_at,
                kind,
                source,
                c.catalog_object_id,
                c.location_id,
                c.state,
                old or "",
                c.quantity,
                c.calculated_at,
                c.catalog_object_type,
                sku or "",
            )
            for seq, c, old, sku in zip(itertools.count(base + 1), counts, olds, skus)
        ],
    )
    _note_appended(base + len(counts), {(source, kind): len(counts)})
    return base + 1


def _row_to_change(row: Sequence[Any]) -> Change:
    return Change(
        seq=row[0],
        recorded_at=row[1],
        kind=row[2],
        source=row[3],
        catalog_object_id=row[4],
        location_id=row[5],
        state=row[6],
        job_id=row[7],
        old=orjson.loads(row[8]) if row[8] is not None else None,
        new=orjson.loads(row[9]) if row[9] is not None else None,
        sku=row[10],
    )


async def read_after(conn: aiosqlite.Connection, after: int, limit: int) -> list[Change]:
    """Up to ``limit`` entries with seq > ``after``, in seq order."""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
    ) as cur:
        rows = await cur.fetchall()
    return [_row_to_change(r) for r in rows]


async def newest_kind(
    conn: aiosqlite.Connection, source: str, kinds: Collection[str], *, within: int
) -> str | None:
    """The kind of ``source``'s newest entry among ``kinds``, looking at the newest ``within``
    seqs only (a bounded read, however long the log); None when there is none there."""
    names = sorted(set(kinds))
    if not names:
        return None
    floor = await high_water(conn) - within
    async with conn.execute(
        f"SELECT kind FROM changes WHERE seq > ? AND source = ?"
        f" AND kind IN ({','.join('?' for _ in names)}) ORDER BY seq DESC LIMIT 1",
        (floor, source, *names),
    ) as cur:
        row = await cur.fetchone()
    return None if row is None else str(row[0])


async def newest_recorded_at(conn: aiosqlite.Connection) -> tuple[int, str | None]:
    """(seq, recorded_at) of the newest entry kept; (0, None) when the log is empty."""
    async with conn.execute(
        "SELECT seq, recorded_at FROM changes ORDER BY seq DESC LIMIT 1"
    ) as cur:
        row = await cur.fetchone()
    return (0, None) if row is None else (int(row[0]), str(row[1]))


async def head(conn: aiosqlite.Connection) -> int:
    """The newest seq present (0 if the log is empty)."""
    async with conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def oldest(conn: aiosqlite.Connection) -> int | None:
    """The oldest seq still kept, or None if the log is empty."""
    async with conn.execute("SELECT MIN(seq) FROM changes") as cur:
        row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def retained_from(conn: aiosqlite.Connection) -> int:
    """The first seq a reader can still get: the oldest kept, or the next one if none is kept."""
    first = await oldest(conn)
    return first if first is not None else await high_water(conn) + 1


async def check_retained(conn: aiosqlite.Connection, after: int) -> None:
    """Raise ChangelogGap when entries with seq > ``after`` were pruned."""
    first = await retained_from(conn)
    if after + 1 < first:
        raise ChangelogGap(after, first)


async def read_after_checked(conn: aiosqlite.Connection, after: int, limit: int) -> list[Change]:
    """Like ``read_after``, but raise ChangelogGap instead of silently skipping pruned entries."""
    entries = await read_after(conn, after, limit)
    if not entries or entries[0].seq != after + 1:  # seqs are contiguous: only then can a gap exist
        await check_retained(conn, after)
    return entries


@dataclass(frozen=True, slots=True)
class Batch:
    """Entries read, and ``position``: the seq the log has been read up to, where the next read
    starts. Without a source filter it is the last entry's seq (or the ``after`` asked for); with
    one it can be past the last entry, since the entries of other sources up to it were skipped."""

    entries: list[Change]
    position: int


KIND_GLOB_MAX = 64  # characters in one kind pattern
KIND_GLOBS_MAX = 32  # patterns in one filter
_KIND_GLOB = re.compile(r"[A-Za-z0-9_.*?\[\]-]+")


def kind_glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a kind filter (None: it is one).

    A kind filter is a glob over the ``kind`` field, as SQLite's ``GLOB`` reads it: ``*`` matches
    any run of characters, ``?`` one character, ``[...]`` one of the characters listed,
    everything else itself (case-sensitive). The characters allowed are those of an outbound
    endpoint's ``kinds`` (``syncd.config.fields``); without ``^`` or ``!`` a bracket means the
    same to Python's ``fnmatch.fnmatchcase``.
    """
    if not pattern:
        return "a kind pattern must not be empty"
    if len(pattern) > KIND_GLOB_MAX:
        return f"a kind pattern has at most {KIND_GLOB_MAX} characters"
    if not _KIND_GLOB.fullmatch(pattern):
        return (
            f"kind pattern {pattern[:KIND_GLOB_MAX]!r}: only letters, digits, '.', '_', '-'"
            " and the wildcards '*', '?' and '[...]'"
        )
    return None


def split_kind_globs(values: Sequence[str]) -> tuple[str, ...]:
    """Kind patterns from repeated and comma-separated values, in order, without repeats; raise
    ValueError with the reason for a bad one (or too many)."""
    out: list[str] = []
    for value in values:
        for pattern in value.split(","):
            pattern = pattern.strip()
            problem = kind_glob_problem(pattern)
            if problem is not None:
                raise ValueError(problem)
            if pattern not in out:
                out.append(pattern)
    if len(out) > KIND_GLOBS_MAX:
        raise ValueError(f"at most {KIND_GLOBS_MAX} kind patterns")
    return tuple(out)


async def read_batch(
    conn: aiosqlite.Connection,
    after: int,
    limit: int,
    sources: Collection[str] = (),
    kinds: Collection[str] = (),
) -> Batch:
    """Up to ``limit`` entries with seq > ``after``, only those whose ``source`` is one of
    ``sources`` when it is not empty, and whose ``kind`` matches one of the globs ``kinds``
    (``kind_glob_problem``) when that is not empty; ChangelogGap when entries after ``after``
    were pruned.

    A filtered batch shorter than ``limit`` has read the whole log as of this read transaction,
    so its position is the head: the next read does not scan the skipped entries again.
    """
    if not sources and not kinds:
        entries = await read_after_checked(conn, after, limit)
        return Batch(entries, entries[-1].seq if entries else after)
    await check_retained(conn, after)
    where = ["seq > ?"]
    params: list[object] = [after]
    if sources:
        names = sorted(set(sources))
        where.append(f"source IN ({','.join('?' for _ in names)})")
        params.extend(names)
    if kinds:
        globs = sorted(set(kinds))
        where.append("(" + " OR ".join("kind GLOB ?" for _ in globs) + ")")
        params.extend(globs)
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM changes WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
        (*params, limit),
    ) as cur:
        rows = await cur.fetchall()
    entries = [_row_to_change(r) for r in rows]
    if len(entries) == limit:
        return Batch(entries, entries[-1].seq)
    return Batch(entries, max(after, await head(conn)))


class HeadSignal:
    """The newest committed seq, and a way to wait for it to move.

    The store publishes to it after each commit that appended entries; waiters (long-poll, SSE) wake
    at once, in-process, instead of polling SQLite.
    """

    def __init__(self, head: int = 0) -> None:
        import asyncio  # only the daemon's store and relay make one: the module stays loop-free

        self.head = head
        self._moved = asyncio.Event()
        # ``time.monotonic()`` of the last move (of the signal's creation before one): a task
        # that only needs the silence since then reads it when it wakes, instead of waking for
        # every move (the heartbeat, issue 11).
        self.moved_at = time.monotonic()

    def publish(self, head: int) -> None:
        """Record a new head and wake every waiter (a head that does not move is ignored)."""
        if head <= self.head:
            return
        import asyncio

        self.head = head
        self.moved_at = time.monotonic()
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def wait_past(self, seq: int) -> int:
        """Return the head as soon as it is greater than ``seq`` (at once if it already is)."""
        while self.head <= seq:
            await self._moved.wait()
        return self.head
