"""The relay: copies the change log into a stream, in seq order, exactly once (issue 7).

Transactional outbox: ``changes`` in SQLite stays the source of truth, and the relay trails it. Each
entry becomes one stream entry whose ID is ``<seq>-0``, so the stream itself refuses a second copy of
a seq. Where the relay stands:

- The stream's last ID is the authority. On start, and again after every failure, the relay asks
  for it and resumes after it. That is the max of the offset stored in SQLite and the stream's last
  ID in the usual case (a crash between a batch and the offset's commit), and it also covers a
  stream that lost entries it had acknowledged (Redis restarted without its last writes, a
  failover): those are published again, under the same IDs.
- Every batch is sent only if the stream's last ID is still the one the relay expects (the target
  checks it atomically with the batch), so a lost or foreign write is noticed before a later ID
  could leave a hole behind it.
- One database per stream (issue 11): the relay claims its stream for this database's id
  (``database_info``) before it publishes anything, and every batch is sent only under that claim.
  A stream another database claimed, or one that holds seqs this log never wrote, is refused: the
  relay writes nothing to it, says why (log, ``syncd_publish_stream_conflict``, ``syncd status``)
  and looks again after a backoff, while the sync goes on. A restored backup of this database
  keeps its id, so its claim still holds.
- The offset in ``publish_offsets`` is a checkpoint for ``syncd status`` and for noticing a stream
  that went back; it is written when the relay catches up and at most every
  ``checkpoint_interval`` seconds while it is busy.

The relay never holds up the sync: it reads committed entries on its own schedule, wakes on the
store's commit signal (no polling), and a target outage only grows its lag. Failures are retried with
capped exponential backoff and full jitter; error logs are rate-limited and end with
``publish_recovered``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiosqlite
import structlog

from syncd.backoff import full_jitter
from syncd.errors import PublishError, StreamConflict, SyncdError
from syncd.metrics import (
    PUBLISH_BATCH_SECONDS,
    PUBLISH_DELAY,
    PUBLISH_ENTRIES,
    PUBLISH_FAILURES,
    PUBLISH_LAG,
    PUBLISH_REFUSED,
    PUBLISH_SEQ,
    PUBLISH_SKIPPED,
    PUBLISH_STREAM_CONFLICT,
)
from syncd.publish.message import to_message
from syncd.publish.ports import StreamTarget
from syncd.store import Store, changelog, identity, outbox
from syncd.store.changelog import HeadSignal
from syncd.timeutil import NS_PER_S, now_ns, now_rfc3339, parse_ns

log = structlog.get_logger("syncd.publish.relay")


@dataclass(frozen=True, slots=True)
class RelayOptions:
    """The relay's plain parameters (the daemon maps ``[publish.redis]`` onto them)."""

    stream: str
    batch_size: int = 500
    backoff_initial: float = 0.5
    backoff_factor: float = 2.0
    backoff_max: float = 30.0
    # While failing, one ``publish_failed`` line per this many seconds (the rest are counted).
    error_log_interval: float = 60.0
    # While busy, the offset is written at most this often (always when caught up).
    checkpoint_interval: float = 1.0
    # On stop, how long the relay may spend publishing what was committed until then.
    stop_drain_timeout: float = 2.0


class Relay:
    """Publishes ``store``'s change log to one stream of ``target``; ``run`` until stopped."""

    def __init__(
        self,
        store: Store,
        target: StreamTarget,
        options: RelayOptions,
        *,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._target = target
        self.options = options
        self._rand = rand
        self._clock = clock
        # Every entry up to ``position`` is in the stream, or was pruned before it could be.
        self.position = 0
        # The stream's last seq, as the relay knows it (the expectation each batch is sent with).
        self.stream_last = 0
        self.reconciled = False
        self.failures = 0  # consecutive failed attempts
        # This database's id (``database_info``), read at the first reconciliation: the claim.
        self.database_id: str | None = None
        # Why the stream is refused right now (a StreamConflict), None while it is ours.
        self.conflict: StreamConflict | None = None
        self._recorded_refusal: str | None = None  # what publish_offsets.refused says
        self.published = HeadSignal()  # moves after each batch; tests and the bench wait on it
        self._loaded = False
        self._checkpointed: int | None = None
        self._checkpoint_at = -math.inf
        self._failing_since: float | None = None
        self._last_error_log = -math.inf
        self._suppressed = 0
        label = target.name
        PUBLISH_LAG.labels(target=label).set_function(self.lag)
        self._seq_gauge = PUBLISH_SEQ.labels(target=label)
        self._entries = PUBLISH_ENTRIES.labels(target=label)
        self._refused = PUBLISH_REFUSED.labels(target=label)
        self._skipped = PUBLISH_SKIPPED.labels(target=label)
        self._failed_attempts = PUBLISH_FAILURES.labels(target=label)
        self._batch_seconds = PUBLISH_BATCH_SECONDS.labels(target=label)
        self._delay = PUBLISH_DELAY.labels(target=label)
        self._conflict_gauges = {
            reason: PUBLISH_STREAM_CONFLICT.labels(target=label, reason=reason)
            for reason in ("owned", "ahead")
        }
        for gauge in self._conflict_gauges.values():
            gauge.set(0)

    @property
    def stream(self) -> str:
        return self.options.stream

    def lag(self) -> int:
        """Committed entries not published yet (``syncd_publish_lag_entries``)."""
        return max(0, self._store.changelog_head.head - self.position)

    # --- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop``, then what was committed by then (bounded), and checkpoint.

        Publishing failures never end it: each is logged (rate-limited) and retried after a
        backoff, with a reconciliation first.
        """
        try:
            while not stop.is_set():
                try:
                    if not self.reconciled:
                        await self.reconcile()
                    await self.drain(stop)
                except Exception as exc:  # the relay must outlive any outage; see _failed
                    delay = self._failed(exc)
                    if isinstance(exc, StreamConflict):
                        await self._refuse(exc)
                    await _sleep_unless(stop, delay)
                    continue
                if self.failures:  # reconciled and caught up, with nothing new to send
                    self._recovered()
                await self._wait_for_commits(stop)
            if self.reconciled:
                # What the last passes committed before the stop: publish it now if that is quick,
                # else the next start does.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.options.stop_drain_timeout):
                        await self.drain(None)
        finally:
            lag = self.lag()  # the gauge must not keep reading a relay that is gone
            PUBLISH_LAG.labels(target=self._target.name).set_function(lambda: lag)
            try:
                await self._checkpoint(force=True)
            except Exception as exc:  # the stream stays the authority; the next start reconciles
                log.warning(
                    "publish_checkpoint_failed",
                    stream=self.stream,
                    error=str(exc),
                    error_type=type(exc).__name__,
                )

    async def reconcile(self) -> None:
        """Claim the stream (or find it is this database's already) and resume after its last ID
        (see the module docstring). Raises StreamConflict when the stream is not ours to write."""
        row, high_water, retained_from, database_id, refused = await self._store.read(
            self._stored_state
        )
        if database_id is None:
            raise PublishError(
                "the database has no database_id (schema older than 7)",
                op="publish.reconcile",
                hint="open it read-write once so syncd migrates it",
            )
        self.database_id = database_id
        stored = row or 0
        if not self._loaded:  # until the stream answers, the lag is counted from the checkpoint
            self.position = self.stream_last = stored
            self._checkpointed = row
            self._recorded_refusal = refused
            self._loaded = True
            await self._checkpoint(force=True)  # a first row, so `syncd status` shows the lag
        stream = self.stream
        owner = await self._target.owner(stream)
        if owner is not None and owner != database_id:
            raise _stream_owned(stream, owner, database_id, self._target.reset_command(stream))
        last = await self._target.last_seq(stream)
        if last > high_water:
            raise _stream_ahead(
                stream,
                last,
                high_water,
                database_id=database_id,
                owned=owner == database_id,
                reset=self._target.reset_command(stream),
            )
        if owner is None:
            # A new stream, or one from before claims existed (its seqs fit this log). Of two
            # databases claiming at once, one wins; the other refuses here.
            owner = await self._target.claim(stream, database_id)
            if owner != database_id:
                raise _stream_owned(stream, owner, database_id, self._target.reset_command(stream))
            log.info(
                "publish_stream_claimed", stream=stream, database_id=database_id, stream_last=last
            )
        lost = stored - max(last, retained_from - 1)
        if lost > 0:
            log.warning(
                "publish_stream_behind",
                stream=self.stream,
                offset=stored,
                stream_last=last,
                republish=lost,
                hint="the stream lost entries it had acknowledged (Redis restarted without"
                " its last writes, a failover, or the key was deleted);"
                " publishing them again under the same IDs",
            )
        self.position = self.stream_last = last
        self.reconciled = True
        self._seq_gauge.set(last)
        if self.conflict is not None or self._recorded_refusal is not None:
            await self._refuse(None)
        log.info(
            "publish_reconciled",
            stream=self.stream,
            offset=stored,
            stream_last=last,
            head=high_water,
            lag=max(0, high_water - last),
        )
        await self._checkpoint(force=True)

    async def drain(self, stop: asyncio.Event | None) -> None:
        """Publish batch after batch until every committed entry is out (or ``stop``).

        While a full batch is on its way to the target, the next one is read from SQLite.
        """
        size = self.options.batch_size
        pending: asyncio.Future[tuple[list[outbox.RawChange], int]] | None = None
        try:
            while stop is None or not stop.is_set():
                # Shielded: a cancelled relay must not cut a read transaction in half.
                rows, high_water = await asyncio.shield(pending or self._read_after(self.position))
                pending = None
                if not rows:
                    if high_water > self.position:  # all that is left was pruned unpublished
                        self._skip(high_water)
                    await self._checkpoint(force=True)
                    return
                if len(rows) == size:
                    pending = self._read_after(rows[-1].seq)
                await self._publish(rows)
                if len(rows) < size:
                    await self._checkpoint(force=True)
                    return
                await self._checkpoint(force=False)
        finally:
            if pending is not None:  # after a failure: that batch is read again, after reconciling
                # Let the short read finish rather than cancel it mid-transaction.
                with contextlib.suppress(Exception):
                    await asyncio.shield(pending)

    # --- one batch ------------------------------------------------------------------------------

    async def _publish(self, rows: list[outbox.RawChange]) -> None:
        if rows[0].seq != self.position + 1:
            self._skip(rows[0].seq - 1)
        messages = [to_message(row) for row in rows]
        started = time.perf_counter()
        assert self.database_id is not None  # set by reconcile, which runs first
        refused = await self._target.append(
            self.stream, messages, expect_last=self.stream_last, owner=self.database_id
        )
        self._batch_seconds.observe(time.perf_counter() - started)
        self.position = self.stream_last = rows[-1].seq
        with contextlib.suppress(ValueError):  # a malformed recorded_at must not stop publishing
            self._delay.observe(max(0.0, (now_ns() - parse_ns(rows[0].recorded_at)) / NS_PER_S))
        self._entries.inc(len(rows) - refused)
        self._seq_gauge.set(self.position)
        if refused:
            self._refused.inc(refused)
            log.warning(
                "publish_refused",
                stream=self.stream,
                entries=refused,
                last_seq=self.position,
                hint="the stream already had these IDs: another writer publishes to it?",
            )
        if self.failures:
            self._recovered()
        self.published.publish(self.position)

    def _skip(self, upto: int) -> None:
        """Entries after ``position`` up to ``upto`` were pruned before they were published."""
        skipped = upto - self.position
        self._skipped.inc(skipped)
        log.warning(
            "publish_gap",
            stream=self.stream,
            after=self.position,
            skipped=skipped,
            next_seq=upto + 1,
            hint="retention pruned entries the stream never got: keep changelog.retain_*"
            " longer than Redis outages last",
        )
        self.position = upto

    # --- store access ---------------------------------------------------------------------------

    async def _stored_state(
        self, conn: aiosqlite.Connection
    ) -> tuple[int | None, int, int, str | None, str | None]:
        return (
            await outbox.published(conn, self._target.name, self.stream),
            await changelog.high_water(conn),
            await changelog.retained_from(conn),
            await identity.database_id(conn),
            await outbox.refused(conn, self._target.name, self.stream),
        )

    def _read_after(self, after: int) -> asyncio.Future[tuple[list[outbox.RawChange], int]]:
        """The next batch after ``after``, and the high-water seq when there is none."""

        async def batch(conn: aiosqlite.Connection) -> tuple[list[outbox.RawChange], int]:
            rows = await outbox.read_after(conn, after, self.options.batch_size)
            return rows, (rows[-1].seq if rows else await changelog.high_water(conn))

        return asyncio.ensure_future(self._store.read(batch))

    async def _checkpoint(self, *, force: bool) -> None:
        """Write the offset if it moved (and, unless ``force``, the interval has passed)."""
        if not self._loaded or self.position == self._checkpointed:
            return
        now = self._clock()
        if not force and now - self._checkpoint_at < self.options.checkpoint_interval:
            return
        seq, target, stream, at = self.position, self._target.name, self.stream, now_rfc3339()
        await self._store.write(lambda conn: outbox.record(conn, target, stream, seq, at))
        self._checkpointed = seq
        self._checkpoint_at = now

    async def _wait_for_commits(self, stop: asyncio.Event) -> None:
        """Until the change log moves past ``position``, or ``stop``."""
        head = self._store.changelog_head
        if head.head > self.position:
            return
        moved = asyncio.ensure_future(head.wait_past(self.position))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([moved, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (moved, stopped):
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    # --- failures -------------------------------------------------------------------------------

    def _failed(self, exc: Exception) -> float:
        """Count and (rate-limited) log a failure; return the backoff before the next attempt."""
        self.failures += 1
        self.reconciled = False
        self._failed_attempts.inc()
        options = self.options
        delay = full_jitter(
            self.failures - 1,
            initial=options.backoff_initial,
            factor=options.backoff_factor,
            cap=options.backoff_max,
            rand=self._rand,
        )
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        if isinstance(exc, StreamConflict):
            if exc.hint is None:  # raised by the target mid-batch: the relay knows the remedy
                exc.hint = _owned_hint(self.stream, self._target.reset_command(self.stream))
            if _conflict_key(exc) != _conflict_key(self.conflict):
                self._last_error_log = -math.inf  # a new refusal is logged at once
        if self.failures == 1 or now - self._last_error_log >= options.error_log_interval:
            event = (
                "publish_stream_owned"
                if isinstance(exc, StreamConflict) and exc.reason == "owned"
                else "publish_failed"
            )
            log.error(
                event,
                **{
                    **_error_fields(exc),
                    "stream": self.stream,
                    "failures": self.failures,
                    "suppressed": self._suppressed,
                    "backoff_s": round(delay, 3),
                    "lag": self.lag(),
                },
            )
            self._last_error_log = now
            self._suppressed = 0
        else:
            self._suppressed += 1
        return delay

    def _recovered(self) -> None:
        since = self._failing_since if self._failing_since is not None else self._clock()
        log.info(
            "publish_recovered",
            stream=self.stream,
            failures=self.failures,
            down_s=round(self._clock() - since, 3),
            lag=self.lag(),
        )
        self.failures = 0
        self._failing_since = None
        self._suppressed = 0
        self._last_error_log = -math.inf

    async def _refuse(self, conflict: StreamConflict | None) -> None:
        """Show (or, with None, clear) why the stream is refused: the conflict gauge, and the
        ``refused`` column of ``publish_offsets`` for ``syncd status``."""
        text = None if conflict is None else conflict.message
        changed = _conflict_key(conflict) != _conflict_key(self.conflict) or (text is None) != (
            self._recorded_refusal is None
        )
        self.conflict = conflict
        for reason, gauge in self._conflict_gauges.items():
            gauge.set(1 if conflict is not None and conflict.reason == reason else 0)
        if not changed:
            return
        target, stream, seq, at = self._target.name, self.stream, self.position, now_rfc3339()
        try:
            await self._store.write(
                lambda conn: outbox.record_refused(conn, target, stream, seq, text, at)
            )
            self._recorded_refusal = text
        except Exception as exc:  # shown in the log and the gauge anyway
            log.warning(
                "publish_refusal_not_recorded", stream=stream, error=str(exc) or type(exc).__name__
            )


def _conflict_key(conflict: StreamConflict | None) -> tuple[str, object] | None:
    """What makes a refusal a new one (not the head it was found at, which grows)."""
    return None if conflict is None else (conflict.reason, conflict.context.get("owner"))


def _owned_hint(stream: str, reset: str) -> str:
    return (
        "another syncd database publishes to this stream: give each instance its own key"
        ' (publish.redis.stream = "syncd:changes:{instance}" with a distinct instance name).'
        " If this database replaces that one on purpose, reset the stream (its consumers start"
        f" over): {reset}"
    )


def _stream_owned(stream: str, owner: str, database_id: str, reset: str) -> StreamConflict:
    """Another database claimed the stream."""
    return StreamConflict(
        f"stream {stream} belongs to database {owner}, not to this one ({database_id})",
        reason="owned",
        op="publish.reconcile",
        stream=stream,
        owner=owner,
        database_id=database_id,
        hint=_owned_hint(stream, reset),
    )


def _stream_ahead(
    stream: str, last: int, high_water: int, *, database_id: str, owned: bool, reset: str
) -> StreamConflict:
    """The stream holds seqs this change log never wrote: another database publishes to it (an
    unclaimed stream of an older syncd), or this one is a backup older than its stream."""
    if owned:
        hint = (
            "this database claimed the stream but its log is behind it: restored from a backup"
            " older than the stream? Its next seqs would reuse IDs consumers have seen. With"
            ' syncd stopped, move the log past the stream (sqlite3 DATABASE "UPDATE'
            f" sqlite_sequence SET seq = {last} WHERE name = 'changes'\") and run syncd sync"
            f" --full; or reset the stream (its consumers start over): {reset}"
        )
    else:
        hint = (
            "another database publishes to this stream: give each syncd its own"
            " publish.redis.stream (e.g. syncd:changes:{instance} with a distinct instance name)"
        )
    return StreamConflict(
        f"stream {stream} is ahead of this change log (its last ID is {last}-0, the log's newest"
        f" seq is {high_water})",
        reason="ahead",
        op="publish.reconcile",
        stream=stream,
        stream_last=last,
        head=high_water,
        database_id=database_id,
        hint=hint,
    )


def _error_fields(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, SyncdError):
        return exc.fields()
    return {"error": str(exc) or type(exc).__name__, "error_type": type(exc).__name__}


async def _sleep_unless(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)
