"""The deliverer: one endpoint's task, POSTing the change log to it in batches, in seq order.

How it stands (``syncd.store.outbound``): the endpoint's position (everything up to it is delivered
or did not match its filter) and the batch in flight. A batch is formed once, from the entries
after the position that match the endpoint's kinds and sources, and its log range is written down
before its first attempt; every retry, also after a crash, sends exactly those entries under the
same ``webhook-id`` (``syncd-<database id>-<epoch>-<first seq>-<last seq>``), so a receiver can
dedupe by it. Only a 2xx acknowledges a batch, and the next one is formed only then: one batch in
flight, so nothing is ever reordered.

Failures (any other status, a timeout, no connection) are retried after capped exponential
backoff with full jitter, or after the endpoint's ``Retry-After``. A 410 disables the endpoint at
once; so does failing for longer than ``disable_after`` without a break (``failing_since`` is kept
in the database, so a restart does not reset the window). A disabled endpoint waits until it is
replayed (``syncd consumers replay NAME [--from SEQ]``), logged and counted meanwhile.

Each endpoint has its own task and HTTP connection pool, reads committed entries on its own
schedule (woken by the store's commit signal) and writes only per batch, so a slow or dead endpoint
never holds up the sync or another endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import structlog

from syncd.backoff import full_jitter
from syncd.metrics import (
    OUTBOUND_ACKED_SEQ,
    OUTBOUND_ATTEMPTS,
    OUTBOUND_DELAY,
    OUTBOUND_DELIVERED,
    OUTBOUND_DISABLED,
    OUTBOUND_LAG,
    OUTBOUND_SKIPPED,
)
from syncd.outbound import signing
from syncd.outbound.ports import Answer, AttemptFailed, Endpoint
from syncd.publish.message import payload
from syncd.store import Store, changelog, identity
from syncd.store import outbound as rows_of
from syncd.store.changelog import HeadSignal
from syncd.store.outbound import EndpointRow, Filter
from syncd.store.outbox import RawChange
from syncd.timeutil import NS_PER_S, format_ns, now_ns, now_rfc3339, parse_ns

log = structlog.get_logger("syncd.outbound")

T = TypeVar("T")

BODY_TYPE = "syncd.changes"
OUTCOMES = ("ok", "http_error", "gone", "timeout", "connection")


@dataclass(frozen=True, slots=True)
class DelivererOptions:
    """One endpoint's plain parameters (the daemon maps ``[outbound.NAME]`` onto them)."""

    name: str
    key: bytes  # the HMAC key (``signing.parse_secret``)
    filter: Filter = field(default_factory=Filter)
    batch_size: int = 100
    backoff_initial: float = 1.0
    backoff_factor: float = 2.0
    max_backoff: float = 300.0
    # Seconds of failing without a break after which the endpoint is disabled; 0: never.
    disable_after: float = 86400.0
    # A new endpoint starts at the head (only entries from then on) instead of the oldest kept.
    from_head: bool = False
    # Most log seqs one read scans for matches (a filter that matches little).
    scan_window: int = 10_000
    # While failing, one ``outbound_failed`` line (and one last_error write) per this many seconds.
    error_log_interval: float = 60.0
    # Position moves past entries that match nothing are written at most this often.
    checkpoint_interval: float = 1.0
    # On stop, how long an attempt in flight may take to finish.
    stop_grace: float = 2.0


@dataclass(frozen=True, slots=True)
class Batch:
    """The entries of the log range (``after``, ``last``] that match the endpoint, as one POST."""

    after: int
    last: int
    rows: list[RawChange]
    msg_id: str
    body: bytes
    # Written down (``pending_after``/``pending_last``): a batch with fewer entries than the
    # batch size, whose range depends on when it was read. A full batch is the same batch
    # whenever it is formed again from the same position, so it needs no write.
    recorded: bool = False

    @property
    def first_seq(self) -> int:
        return self.rows[0].seq

    @property
    def last_seq(self) -> int:
        return self.rows[-1].seq


def message_id(database_id: str, epoch: int, first: int, last: int) -> str:
    """The batch's ``webhook-id``: the same for every attempt at the same entries; another one
    for another database (its seqs start again at 1) and after a replay (a new epoch)."""
    return f"syncd-{database_id[:16]}-{epoch}-{first}-{last}"


def batch_body(endpoint: str, rows: list[RawChange]) -> bytes:
    """The POST body: the Standard Webhooks payload shape (``type``, ``timestamp``, ``data``),
    each change the record ``syncd changes`` prints, byte for byte. It depends on the entries
    only, so every attempt at a batch sends the same bytes."""
    return orjson.dumps(
        {
            "type": BODY_TYPE,
            "timestamp": rows[-1].recorded_at,
            "data": {
                "endpoint": endpoint,
                "first_seq": rows[0].seq,
                "last_seq": rows[-1].seq,
                "changes": [orjson.Fragment(payload(row)) for row in rows],
            },
        }
    )


class _Interrupted(Exception):
    """A replay request (or the stop) cut a wait or an attempt short."""


@dataclass(slots=True)
class _Replay:
    from_seq: int | None
    done: asyncio.Future[EndpointRow]


class Deliverer:
    """Delivers ``store``'s change log to one endpoint; ``run`` until stopped."""

    def __init__(
        self,
        store: Store,
        endpoint: Endpoint,
        options: DelivererOptions,
        *,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], int] = now_ns,
    ) -> None:
        self._store = store
        self._endpoint = endpoint
        self.options = options
        self._rand = rand
        self._clock = clock
        self._wall = wall
        self.position = 0  # everything up to it is acknowledged (or matched nothing)
        self.pending: Batch | None = None
        self.epoch = 0
        self.disabled: str | None = None  # why, while disabled
        self.failures = 0  # consecutive failed attempts
        self.failing_since: int | None = None  # wall ns of the streak's first failure
        self.database_id = ""
        self.loaded = False
        # Counts acknowledged batches (replays included); tests and the bench wait on it.
        self.delivered = HeadSignal()
        self._stored_position = 0
        self._checkpoint_at = -math.inf
        self._error_logged_at = -math.inf
        self._suppressed = 0
        self._requests: list[_Replay] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        name = options.name
        OUTBOUND_LAG.labels(endpoint=name).set_function(self.lag)
        self._acked_gauge = OUTBOUND_ACKED_SEQ.labels(endpoint=name)
        self._disabled_gauge = OUTBOUND_DISABLED.labels(endpoint=name)
        self._delivered = OUTBOUND_DELIVERED.labels(endpoint=name)
        self._skipped = OUTBOUND_SKIPPED.labels(endpoint=name)
        self._delay = OUTBOUND_DELAY.labels(endpoint=name)
        self._attempts = {o: OUTBOUND_ATTEMPTS.labels(endpoint=name, outcome=o) for o in OUTCOMES}

    @property
    def name(self) -> str:
        return self.options.name

    def lag(self) -> int:
        """Committed entries after the position (``syncd_outbound_lag_entries``)."""
        return max(0, self._store.changelog_head.head - self.position)

    def state(self) -> dict[str, Any]:
        """Where the endpoint stands right now (the admin API's ``GET /outbound``)."""
        return {
            "endpoint": self.name,
            "state": rows_of.STATE_DISABLED if self.disabled else rows_of.STATE_ACTIVE,
            "disabled_reason": self.disabled,
            "acked_seq": self.position,
            "lag": self.lag(),
            "epoch": self.epoch,
            "pending": None
            if self.pending is None
            else {"webhook_id": self.pending.msg_id, "entries": len(self.pending.rows)},
            "failures": self.failures,
            "failing_since": None if self.failing_since is None else format_ns(self.failing_since),
        }

    # --- requests from outside ------------------------------------------------------------------

    async def replay(self, from_seq: int | None) -> EndpointRow:
        """Re-enable the endpoint (``from_seq``: and deliver again from that seq on); done by the
        running loop between two attempts (an attempt in flight is cut short). Raises
        ChangelogGap or ReplayRefused for a position the log cannot give."""
        done: asyncio.Future[EndpointRow] = asyncio.get_running_loop().create_future()
        self._requests.append(_Replay(from_seq, done))
        self._wake.set()
        return await done

    # --- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop``. No failure of the endpoint or the store ends it: each is
        retried after a backoff."""
        self._stop = stop
        try:
            while not stop.is_set():
                try:
                    if not self.loaded:
                        await self._load()
                    await self._serve_requests()
                    if self.disabled is not None:
                        await self._idle()
                        continue
                    batch = self.pending or await self._form_batch()
                    if batch is None:  # caught up
                        await self._checkpoint(force=False)
                        due = await self._idle(
                            self._store.changelog_head.wait_past(self.position),
                            at_most=self._checkpoint_due(),
                        )
                        if due:  # no new entry for checkpoint_interval: write the position
                            await self._checkpoint(force=True)
                        continue
                    await self._deliver(batch)
                except _Interrupted:
                    continue
                except Exception as exc:  # the store failed: log, back off, try again
                    self.failures += 1
                    delay = self._backoff()
                    log.error(
                        "outbound_store_failed",
                        endpoint=self.name,
                        error=str(exc) or type(exc).__name__,
                        error_type=type(exc).__name__,
                        backoff_s=round(delay, 3),
                    )
                    await self._idle(asyncio.sleep(delay))
        finally:
            lag = self.lag()  # the gauge must not keep reading a deliverer that is gone
            OUTBOUND_LAG.labels(endpoint=self.name).set_function(lambda: lag)
            for pending in self._requests:
                if not pending.done.done():
                    pending.done.cancel()
            with contextlib.suppress(Exception):
                await self._checkpoint(force=True)

    async def _load(self) -> None:
        at = now_rfc3339()
        name, from_head = self.name, self.options.from_head

        async def load(conn: Any) -> tuple[EndpointRow, str | None]:
            row = await rows_of.ensure(conn, name, from_head=from_head, at=at)
            return row, await identity.database_id(conn)

        row, database_id = await self._store.write(load)
        self.database_id = database_id or "0"
        self._adopt(row)
        if row.pending_last is not None and row.pending_after == row.acked_seq:
            # The batch in flight when syncd stopped: the same entries, the same webhook-id.
            batch = await self._read_batch(row.acked_seq, row.pending_last, recorded=True)
            if batch is not None and batch.last != row.pending_last:  # batch_size shrank
                after, last = batch.after, batch.last
                await self._store.write(
                    lambda conn: rows_of.record_pending(conn, name, after, last, at)
                )
            self.pending = batch
        self.loaded = True
        log.info(
            "outbound_started",
            endpoint=name,
            acked_seq=self.position,
            epoch=self.epoch,
            state=row.state,
            pending=None if self.pending is None else self.pending.msg_id,
        )
        if self.disabled is not None:
            log.warning(
                "outbound_disabled_at_start",
                endpoint=name,
                reason=self.disabled,
                disabled_at=row.disabled_at,
                hint=_replay_hint(name),
            )

    def _adopt(self, row: EndpointRow) -> None:
        """Take the stored row as the state in memory."""
        self.position = self._stored_position = row.acked_seq
        self.epoch = row.epoch
        self.disabled = (row.disabled_reason or "disabled") if row.disabled else None
        self.failing_since = None if row.failing_since is None else parse_ns(row.failing_since)
        self.pending = None
        self._acked_gauge.set(self.position)
        self._disabled_gauge.set(1 if self.disabled else 0)

    async def _serve_requests(self) -> None:
        self._wake.clear()
        if self._requests:  # the replay starts from what is stored: store the position first
            await self._checkpoint(force=True)
        while self._requests:
            request = self._requests.pop(0)
            if request.done.done():  # the caller gave up
                continue
            try:
                row = await self._store.write(self._replay_work(request.from_seq))
            except Exception as exc:
                request.done.set_exception(exc)
                continue
            pending = self.pending if request.from_seq is None else None
            name = self.name
            self._adopt(row)
            self.pending = pending
            self.failures = 0
            self._suppressed = 0
            self._error_logged_at = -math.inf
            log.info(
                "outbound_replayed",
                endpoint=name,
                from_seq=request.from_seq,
                acked_seq=row.acked_seq,
                epoch=row.epoch,
            )
            request.done.set_result(row)

    def _replay_work(self, from_seq: int | None) -> Callable[[Any], Awaitable[EndpointRow]]:
        name, from_head, at = self.name, self.options.from_head, now_rfc3339()
        return lambda conn: rows_of.replay(conn, name, from_seq, from_head=from_head, at=at)

    # --- batches --------------------------------------------------------------------------------

    async def _read(self, after: int, upto: int | None) -> tuple[list[RawChange], int, int]:
        """Matching entries after ``after`` (see ``read_batch``), the range's end, and the oldest
        seq kept (retention may have pruned entries after ``after``)."""
        opts = self.options

        async def read(conn: Any) -> tuple[list[RawChange], int, int]:
            oldest = await changelog.retained_from(conn)
            start = max(after, oldest - 1)
            rows, end = await rows_of.read_batch(
                conn, start, upto, opts.batch_size, flt=opts.filter, window=opts.scan_window
            )
            return rows, end, oldest

        rows, end, oldest = await self._store.read(read)
        if oldest - 1 > after:
            self._skip(after, oldest - 1)
        return rows, end, max(after, oldest - 1)

    def _batch(
        self, after: int, last: int, rows: list[RawChange], *, recorded: bool = False
    ) -> Batch:
        first, final = rows[0].seq, rows[-1].seq
        return Batch(
            after=after,
            last=last,
            rows=rows,
            msg_id=message_id(self.database_id, self.epoch, first, final),
            body=batch_body(self.name, rows),
            recorded=recorded,
        )

    async def _read_batch(
        self, after: int, upto: int | None, *, recorded: bool = False
    ) -> Batch | None:
        """The batch after ``after`` (None when nothing there matches: the position then moves
        to the end of what was read)."""
        rows, end, start = await self._read(after, upto)
        if not rows:
            self.position = max(self.position, end)
            return None
        return self._batch(start, end, rows, recorded=recorded)

    async def _form_batch(self) -> Batch | None:
        """The next batch after the position. One with fewer entries than the batch size (the
        log's head is in it) is written down, with the position, before its first attempt:
        after a crash it is sent again as it was, under the same webhook-id, however many
        entries were committed since. A full batch is formed the same from the same position,
        so it needs no write."""
        batch = await self._read_batch(self.position, None)
        if batch is None:
            return None
        self.position = batch.after
        if len(batch.rows) < self.options.batch_size:
            name, at, after, last = self.name, now_rfc3339(), batch.after, batch.last
            await self._store.write(
                lambda conn: rows_of.record_pending(conn, name, after, last, at)
            )
            self._stored_position = after
            self._checkpoint_at = self._clock()
            batch = dataclasses.replace(batch, recorded=True)
        self.pending = batch
        return batch

    # --- attempts -------------------------------------------------------------------------------

    async def _deliver(self, batch: Batch) -> None:
        """Attempt ``batch`` until a 2xx, a disable, a replay request or the stop."""
        while not self._stop.is_set():
            timestamp = self._wall() // NS_PER_S
            headers = signing.headers(self.options.key, batch.msg_id, timestamp, batch.body)
            try:
                answer = await self._guarded(self._endpoint.post(batch.body, headers))
            except AttemptFailed as exc:
                delay = await self._failed(exc.reason, exc.message, None)
            else:
                if 200 <= answer.status < 300:
                    await self._acknowledged(batch)
                    return
                if answer.status == 410:
                    self._attempts["gone"].inc()
                    await self._disable(f"the endpoint answered 410 Gone{_detail(answer)}")
                    return
                delay = await self._failed("http_error", f"HTTP {answer.status}", answer)
            if delay is None:  # disabled: failing for longer than disable_after
                return
            await self._idle(asyncio.sleep(delay))
            if self._requests:
                return

    async def _acknowledged(self, batch: Batch) -> None:
        """A 2xx: the position moves past the batch. It is written at most every
        ``checkpoint_interval`` (and when the next batch is written down, when the endpoint is
        caught up, recovers or stops): after a crash the batches since are formed again from the
        stored position, the same batches under the same webhook-ids, and sent again."""
        self._attempts["ok"].inc()
        self._delivered.inc(len(batch.rows))
        with contextlib.suppress(ValueError):  # a malformed recorded_at must not stop delivery
            delay = (self._wall() - parse_ns(batch.rows[0].recorded_at)) / NS_PER_S
            self._delay.observe(max(0.0, delay))
        self.position = max(self.position, batch.last)
        self.pending = None
        self._acked_gauge.set(self.position)
        recovering = self.failures > 0
        if recovering:
            self._recovered()
        await self._checkpoint(force=recovering)  # a streak's end is written at once
        self.delivered.publish(self.delivered.head + 1)

    async def _failed(self, outcome: str, error: str, answer: Answer | None) -> float | None:
        """Count and (rate-limited) log a failed attempt, keep the streak's start; return the
        delay before the next attempt, or None when the failure window disabled the endpoint."""
        self.failures += 1
        self._attempts[outcome].inc()
        if answer is not None:
            error += _detail(answer)
        now, wall = self._clock(), self._wall()
        first = self.failing_since is None
        if self.failing_since is None:
            self.failing_since = wall
        window = self.options.disable_after
        failing_s = (wall - self.failing_since) / NS_PER_S
        if window > 0 and failing_s >= window:
            await self._disable(
                f"failing for {failing_s:.0f} s without a break (disable_after {window:g} s);"
                f" last error: {error}"
            )
            return None
        delay = self._backoff()
        if answer is not None and answer.retry_after is not None:
            delay = answer.retry_after
        if first or now - self._error_logged_at >= self.options.error_log_interval:
            since, name, at = format_ns(self.failing_since), self.name, now_rfc3339()
            await self._store.write(
                lambda conn: rows_of.record_failing(conn, name, since, error, at)
            )
            log.warning(
                "outbound_failed",
                endpoint=name,
                error=error,
                outcome=outcome,
                status=None if answer is None else answer.status,
                failures=self.failures,
                suppressed=self._suppressed,
                failing_since=since,
                retry_in_s=round(delay, 3),
                webhook_id=None if self.pending is None else self.pending.msg_id,
                lag=self.lag(),
            )
            self._error_logged_at = now
            self._suppressed = 0
        else:
            self._suppressed += 1
        return delay

    def _backoff(self) -> float:
        opts = self.options
        return full_jitter(
            self.failures - 1,
            initial=opts.backoff_initial,
            factor=opts.backoff_factor,
            cap=opts.max_backoff,
            rand=self._rand,
        )

    def _recovered(self) -> None:
        since = self.failing_since
        log.info(
            "outbound_recovered",
            endpoint=self.name,
            failures=self.failures,
            down_s=None if since is None else round((self._wall() - since) / NS_PER_S, 3),
            lag=self.lag(),
        )
        self.failures = 0
        self.failing_since = None
        self._suppressed = 0
        self._error_logged_at = -math.inf

    async def _disable(self, reason: str) -> None:
        await self._checkpoint(force=True)
        name, at = self.name, now_rfc3339()
        await self._store.write(lambda conn: rows_of.disable(conn, name, reason, at))
        self.disabled = reason
        self._disabled_gauge.set(1)
        log.error(
            "outbound_disabled",
            endpoint=name,
            reason=reason,
            acked_seq=self.position,
            lag=self.lag(),
            webhook_id=None if self.pending is None else self.pending.msg_id,
            hint=_replay_hint(name),
        )

    def _skip(self, after: int, upto: int) -> None:
        """Entries after ``after`` up to ``upto`` were pruned before the endpoint got them."""
        self._skipped.inc(upto - after)
        log.warning(
            "outbound_gap",
            endpoint=self.name,
            after=after,
            skipped=upto - after,
            next_seq=upto + 1,
            hint="retention pruned entries this endpoint never got: keep changelog.retain_*"
            " longer than endpoint outages last (or than outbound.NAME.disable_after)",
        )

    def _checkpoint_due(self) -> float | None:
        """Seconds until the position, which moved, may be written (None: nothing to write)."""
        if self.position <= self._stored_position:
            return None
        since = self._clock() - self._checkpoint_at
        return max(0.0, self.options.checkpoint_interval - since)

    async def _checkpoint(self, *, force: bool) -> None:
        """Write the position if it moved: at most every ``checkpoint_interval`` unless
        ``force``. The write also ends a failure streak; a recorded batch in flight stays
        recorded."""
        if not self.loaded or self.position <= self._stored_position:
            return
        now = self._clock()
        if not force and now - self._checkpoint_at < self.options.checkpoint_interval:
            return
        pending = self.pending
        span = (pending.after, pending.last) if pending is not None and pending.recorded else None
        seq, name, at = self.position, self.name, now_rfc3339()
        failing = self.failing_since is not None
        await self._store.write(
            lambda conn: rows_of.record_ack(conn, name, seq, at, pending=span, failing=failing)
        )
        self._stored_position = seq
        self._checkpoint_at = now
        self._acked_gauge.set(seq)

    # --- waiting --------------------------------------------------------------------------------

    async def _guarded(self, work: Awaitable[T]) -> T:
        """``work``'s result, unless a replay request comes first or the stop has lasted
        ``stop_grace`` (then it is cancelled: _Interrupted)."""
        task = asyncio.ensure_future(work)
        wake = asyncio.ensure_future(self._wake.wait())
        stopped = asyncio.ensure_future(self._stopped_for(self.options.stop_grace))
        try:
            await asyncio.wait({task, wake, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel(wake, stopped)
            if not task.done():
                await _cancel(task)
        if task.cancelled():
            raise _Interrupted
        return task.result()

    async def _stopped_for(self, grace: float) -> None:
        await self._stop.wait()
        await asyncio.sleep(grace)

    async def _idle(
        self, until: Awaitable[Any] | None = None, *, at_most: float | None = None
    ) -> bool:
        """Until ``until`` is done (forever without it), ``at_most`` seconds, a replay request
        or the stop; True when it was ``at_most``."""
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
        ]
        if until is not None:
            waiters.append(asyncio.ensure_future(until))
        timer = None
        if at_most is not None:
            timer = asyncio.ensure_future(asyncio.sleep(at_most))
            waiters.append(timer)
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel(*waiters)
        return timer is not None and timer in done


def _detail(answer: Answer) -> str:
    return f": {answer.detail[:200]}" if answer.detail else ""


def _replay_hint(name: str) -> str:
    return (
        f"fix the endpoint, then resume it with: syncd consumers replay {name}"
        f" (or from an earlier seq: syncd consumers replay {name} --from SEQ)"
    )


async def _cancel(*futures: asyncio.Future[Any]) -> None:
    for future in futures:
        future.cancel()
    for future in futures:
        # An attempt that ended with its own error just as it was cancelled: already handled.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await future
