"""The webhook inbox (``webhook_events``): insert once by event_id, group commit, mark processed,
prune.

An accepted webhook is committed here before it is answered, so a crash between the answer and the
sync pass loses nothing: a row stays unprocessed until a pass that started after the row was
received has completed (issue 3). Concurrent webhooks share transactions (group commit):
:class:`Inbox` collects the rows that arrive within ``window`` seconds of an idle writer (or while
the previous batch commits) and writes them with one INSERT statement, its own transaction; each
caller waits for its own batch's commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiosqlite
import orjson
import structlog

from syncd import metrics
from syncd.errors import StoreClosed, SyncdError
from syncd.store import Store, inline
from syncd.store.rows import fetch_dicts
from syncd.timeutil import NS_PER_S, format_ns, now_ns

log = structlog.get_logger("syncd.inbox")

# Batches queued on the writer's thread at once: one committing, the next queued behind it (so the
# thread goes from one commit to the next without waiting for the loop to turn).
MAX_IN_FLIGHT = 2

# SQLite's default limit on bound parameters is 999 (older builds) or 32766; stay under the former.
_MAX_VARIABLES = 500

SECONDS_PER_DAY = 86_400
# The source of events whose merchant no configured source knows (yet); see adopt_unknown.
UNKNOWN_SOURCE = "_unknown"


@dataclass(frozen=True, slots=True)
class InboxEvent:
    """One accepted webhook as stored. ``actionable=False`` (a type syncd does not act on) is stored
    already processed, so it neither triggers a pass at start nor waits for one."""

    event_id: str
    source: str
    type: str
    merchant_id: str | None
    created_at: str | None
    received_ns: int
    body: bytes
    actionable: bool = True


# One statement for a whole batch: the rows travel as one JSON array of arrays (json_each keeps
# their order, so the first of two copies of an event_id wins). Alone, the statement is its own
# transaction (see Store.write_statement).
_INSERT_BATCH = """
INSERT INTO webhook_events (event_id, source, type, merchant_id, created_at, received_at,
                            received_ns, body, processed_at)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
       value ->> 6, CAST(value ->> 7 AS BLOB), value ->> 8
FROM json_each(?) WHERE true
ON CONFLICT (event_id) DO NOTHING
"""


def insert_batch(events: Sequence[InboxEvent]) -> tuple[str, tuple[object, ...]]:
    """The statement (and its one parameter) that stores the events not stored yet.

    Bodies are JSON (the handler parsed them), hence valid UTF-8: they travel as JSON strings and
    are stored as the exact same bytes.
    """
    rows = []
    for e in events:
        received_at = format_ns(e.received_ns)
        rows.append(
            (
                e.event_id,
                e.source,
                e.type,
                e.merchant_id,
                e.created_at,
                received_at,
                e.received_ns,
                e.body.decode(),
                None if e.actionable else received_at,
            )
        )
    return _INSERT_BATCH, (orjson.dumps(rows),)


@dataclass(frozen=True, slots=True)
class _InsertJob:
    """One batch's INSERT as the writer's thread runs it (autocommit: the statement is its own
    transaction, committed and fsynced when it returns). Hands ``settle`` the stored receipts of
    the batch's events when some were repeats, None when every distinct event was inserted, or
    the exception, through the loop (the thread never touches the callers' futures)."""

    sql: str
    params: tuple[object, ...]
    events: Sequence[InboxEvent]
    settle: Callable[[Mapping[str, int] | BaseException | None], None]
    loop: asyncio.AbstractEventLoop

    def __call__(self, db: sqlite3.Connection) -> None:
        outcome: Mapping[str, int] | BaseException | None
        try:
            inserted = db.execute(self.sql, self.params).rowcount
            distinct = list(dict.fromkeys(e.event_id for e in self.events))
            outcome = None
            if inserted != len(distinct):  # some were repeats: ask which (rare, so not up front)
                outcome = inline.run(partial(stored_receipts, event_ids=distinct), db)
        except Exception as exc:
            outcome = exc
        self.loop.call_soon_threadsafe(self.settle, outcome)


async def stored_receipts(conn: aiosqlite.Connection, event_ids: Sequence[str]) -> dict[str, int]:
    """``received_ns`` of the stored copy of each of these events (those stored at all)."""
    found: dict[str, int] = {}
    for start in range(0, len(event_ids), _MAX_VARIABLES):
        chunk = list(event_ids[start : start + _MAX_VARIABLES])
        marks = ",".join("?" * len(chunk))
        for event_id, received_ns in await conn.execute_fetchall(
            f"SELECT event_id, received_ns FROM webhook_events WHERE event_id IN ({marks})", chunk
        ):
            found[str(event_id)] = int(received_ns)
    return found


def new_flags(events: Sequence[InboxEvent], stored: Mapping[str, int] | None) -> list[bool]:
    """Per event, in order: was it stored by this batch (not a repeat of an event stored before,
    nor of one earlier in the batch)? ``stored=None`` means the batch inserted one row per distinct
    event_id, so each first copy is new; otherwise ``stored`` maps event_id -> stored received_ns,
    and a copy is new when the stored row is its own (same receipt instant)."""
    flags = []
    seen: set[str] = set()
    for e in events:
        first = e.event_id not in seen
        seen.add(e.event_id)
        flags.append(first and (stored is None or stored.get(e.event_id) == e.received_ns))
    return flags


async def mark_processed(
    conn: aiosqlite.Connection, source: str, started_ns: int, processed_at: str
) -> int:
    """Mark processed the rows of ``source`` received before a pass that started at ``started_ns``
    (and has completed). Returns how many rows were marked."""
    cur = await conn.execute(
        "UPDATE webhook_events SET processed_at = ?"
        " WHERE source = ? AND processed_at IS NULL AND received_ns < ?",
        (processed_at, source, started_ns),
    )
    return cur.rowcount


async def adopt_unknown(conn: aiosqlite.Connection, merchant_id: str, source: str) -> int:
    """Hand the unprocessed events of ``merchant_id`` kept under ``UNKNOWN_SOURCE`` (received
    before any source knew that merchant) to ``source``; returns how many moved."""
    cur = await conn.execute(
        "UPDATE webhook_events SET source = ?"
        " WHERE source = ? AND merchant_id = ? AND processed_at IS NULL",
        (source, UNKNOWN_SOURCE, merchant_id),
    )
    return cur.rowcount


async def delete_source(conn: aiosqlite.Connection, source: str) -> int:
    """Delete every stored event of ``source``, processed or not (the source is being forgotten:
    no pass of it will ever cover them); returns how many."""
    cur = await conn.execute("DELETE FROM webhook_events WHERE source = ?", (source,))
    return cur.rowcount


async def unprocessed(
    conn: aiosqlite.Connection, source: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Rows still waiting for a pass, oldest first (without their bodies)."""
    sql = (
        "SELECT event_id, source, type, merchant_id, created_at, received_at, received_ns"
        " FROM webhook_events WHERE processed_at IS NULL"
    )
    params: list[Any] = []
    if source is not None:
        sql += " AND source = ?"
        params.append(source)
    sql += " ORDER BY received_ns"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return await fetch_dicts(conn, sql, params)


async def count_unprocessed(conn: aiosqlite.Connection, source: str | None = None) -> int:
    """How many rows are waiting for a pass (of one source, or of all)."""
    sql = "SELECT COUNT(*) FROM webhook_events WHERE processed_at IS NULL"
    params: tuple[str, ...] = ()
    if source is not None:
        sql += " AND source = ?"
        params = (source,)
    async with conn.execute(sql, params) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def prune(conn: aiosqlite.Connection, processed_before: str, received_before_ns: int) -> int:
    """Delete processed rows whose ``processed_at`` is older than ``processed_before``, and
    events of unknown merchants received before ``received_before_ns`` (no source claimed them
    within the retention; a pass of a source that comes later reads the truth anyway)."""
    cur = await conn.execute(
        "DELETE FROM webhook_events WHERE processed_at IS NOT NULL AND processed_at < ?",
        (processed_before,),
    )
    removed = cur.rowcount
    cur = await conn.execute(
        "DELETE FROM webhook_events WHERE source = ? AND processed_at IS NULL AND received_ns < ?",
        (UNKNOWN_SOURCE, received_before_ns),
    )
    return removed + cur.rowcount


class Inbox:
    """The group-committing writer of the inbox, plus its maintenance (mark processed, prune).

    Lifecycle: ``start()`` launches the batching task; ``aclose()`` commits what is queued, then
    stops it (idempotent). ``add`` after ``aclose`` raises :class:`StoreClosed`.
    """

    def __init__(
        self,
        store: Store,
        *,
        window: float,
        max_batch: int = 1000,
        max_batch_bytes: int = 8 * 1024 * 1024,
        clock: Callable[[], int] = now_ns,
    ) -> None:
        self._store = store
        self.window = window
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self._clock = clock
        self._pending: list[tuple[InboxEvent, asyncio.Future[bool]]] = []
        self._wakeup = asyncio.Event()
        self._flush = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._first_at = 0.0  # loop time the oldest pending event arrived
        self._in_flight = 0  # batches queued on the writer's thread, not settled yet
        self._closing = False
        self.commits = 0  # transactions written, for tests and the benchmark
        self.rows = 0  # events offered (new or repeated)
        # Sources known to have no unprocessed row, so that marking after a pass (every pass of
        # every source, most of them with no webhook since the last: issue 11's idle CPU) writes
        # nothing. Learnt by ``mark_processed`` itself; every event offered for a source, and
        # every commit or adoption of its events, takes it out again (``_touch``).
        self._clean: set[str] = set()
        self._touched: dict[str, int] = {}

    async def start(self) -> None:
        """Start the batching task (owned here, stopped and reaped by ``aclose``)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhook-inbox")

    async def add(self, event: InboxEvent) -> bool:
        """Commit ``event`` (shared with concurrent callers); True if new, False if already stored.

        Returns only after the commit. If the caller is cancelled meanwhile, the event is still
        committed with its batch.
        """
        if self._closing or self._task is None or self._task.done():
            raise StoreClosed("webhook inbox is not accepting events", op="inbox.add")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._touch(event.source)
        if not self._pending:
            self._first_at = loop.time()  # the window runs from here (see _run)
            self._wakeup.set()
        self._pending.append((event, future))
        return await future

    async def _run(self) -> None:
        while True:
            while not self._pending or self._in_flight >= MAX_IN_FLIGHT:
                if self._closing and not self._pending and not self._in_flight:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            # Wait for company only when no batch is committing; events that queued up while
            # one committed go at once (they have waited a commit already).
            if not self._in_flight and self.window > 0 and not self._closing:
                # Let concurrent requests join this batch, for what is left of the window since
                # the first of them arrived: on a busy loop this task wakes late, and by then
                # the requests received meanwhile have joined (an insert waits at most the
                # window, never a window more while the writer idles). aclose() cuts it short.
                loop = asyncio.get_running_loop()
                left = self._first_at + self.window - loop.time()
                if left > 0:
                    self._flush.clear()
                    timer = loop.call_later(left, self._flush.set)
                    await self._flush.wait()
                    timer.cancel()
            taken, size = 0, 0
            for event, _ in self._pending[: self.max_batch]:
                taken += 1
                size += len(event.body)
                if size >= self.max_batch_bytes:
                    break  # keeps the statement's one parameter a sane size
            batch = self._pending[:taken]
            del self._pending[:taken]
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[InboxEvent, asyncio.Future[bool]]]) -> None:
        """Queue the batch's INSERT on the writer's thread and go on (pipelined commits): the
        next batch fills, and is queued behind this one, while this one commits. The thread
        reports back straight to ``_settle``, which answers the batch's callers."""
        events = [event for event, _ in batch]
        loop = asyncio.get_running_loop()
        try:
            job = _InsertJob(*insert_batch(events), events, partial(self._settle, batch), loop)
            await self._store.queue_write(job)
        except Exception as exc:
            self._fail(batch, exc)
        else:
            self._in_flight += 1

    def _settle(
        self,
        batch: list[tuple[InboxEvent, asyncio.Future[bool]]],
        outcome: Mapping[str, int] | BaseException | None,
    ) -> None:
        """On the loop, once the batch's job has ended: ``outcome`` as ``_InsertJob`` gives it."""
        self._in_flight -= 1
        self._wakeup.set()
        if isinstance(outcome, BaseException):
            self._fail(batch, outcome)
            return
        events = [event for event, _ in batch]
        for source in {event.source for event in events}:
            self._touch(source)
        self.commits += 1
        self.rows += len(batch)
        metrics.WEBHOOK_COMMIT_BATCH.observe(len(batch))
        flags = new_flags(events, outcome)
        for (_, future), new in zip(batch, flags, strict=True):
            if not future.done():
                future.set_result(new)

    @staticmethod
    def _fail(batch: list[tuple[InboxEvent, asyncio.Future[bool]]], exc: BaseException) -> None:
        """Each waiting request answers the error (503); the batching task lives on."""
        log.error(
            "webhook_commit_failed", rows=len(batch), error=str(exc), error_type=type(exc).__name__
        )
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def aclose(self) -> None:
        """Commit what is queued, then stop the batching task. Idempotent."""
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            return
        self._wakeup.set()
        self._flush.set()
        try:
            await task
        finally:
            for _, future in self._pending:  # only if the task died: never leave a caller hanging
                if not future.done():
                    future.set_exception(StoreClosed("webhook inbox closed", op="inbox.add"))
            self._pending.clear()

    async def mark_processed(self, source: str, started_ns: int) -> int:
        """After a pass of ``source`` that started at ``started_ns`` completed: mark what it
        covered. Writes nothing when the source is known to have no unprocessed row."""
        if source in self._clean:
            return 0
        processed_at = format_ns(self._clock())
        touched = self._touched.get(source, 0)

        async def work(conn: aiosqlite.Connection) -> tuple[int, bool]:
            marked = await mark_processed(conn, source, started_ns, processed_at)
            return marked, await count_unprocessed(conn, source) == 0

        marked, none_left = await self._store.write_inline(work)
        # Clean only if no event of the source was offered or committed meanwhile: one that
        # commits after this unit takes the source out again when it does.
        if none_left and self._touched.get(source, 0) == touched:
            self._clean.add(source)
        if marked:
            metrics.WEBHOOK_EVENTS_PROCESSED.labels(source).inc(marked)
        return marked

    async def adopt_unknown(self, merchant_id: str, source: str) -> int:
        """See :func:`adopt_unknown`."""
        self._touch(source)
        try:
            return await self._store.write(lambda conn: adopt_unknown(conn, merchant_id, source))
        finally:
            self._touch(source)

    def _touch(self, source: str) -> None:
        """``source`` may have unprocessed rows now."""
        self._clean.discard(source)
        self._touched[source] = self._touched.get(source, 0) + 1

    async def count_unprocessed(self, source: str | None = None) -> int:
        """Rows waiting for a pass."""
        return await self._store.read(lambda conn: count_unprocessed(conn, source))

    async def prune(self, retain_days: float) -> int:
        """Delete rows processed more than ``retain_days`` ago (and unclaimed ones of unknown
        merchants received that long ago); return how many."""
        cutoff = self._clock() - int(retain_days * SECONDS_PER_DAY * NS_PER_S)
        before = format_ns(cutoff)
        removed = await self._store.write(lambda conn: prune(conn, before, cutoff))
        if removed:
            metrics.WEBHOOK_EVENTS_PRUNED.inc(removed)
            log.info("webhook_events_pruned", rows=removed, processed_before=before)
        return removed

    async def prune_forever(
        self, stop: asyncio.Event, *, retain_days: float, interval: float
    ) -> None:
        """Prune now and then every ``interval`` seconds until ``stop``; a failure is logged and
        retried at the next interval."""
        while not stop.is_set():
            try:
                await self.prune(retain_days)
            except SyncdError as exc:
                log.warning("webhook_prune_failed", **exc.fields())
            except Exception as exc:  # e.g. sqlite3.OperationalError: retried next interval
                log.warning("webhook_prune_failed", error=str(exc), error_type=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
