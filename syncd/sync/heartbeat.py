"""Heartbeat entries (issue 14): after ``interval`` seconds in which nothing was written to the
change log, one ``heartbeat`` entry (source ``_syncd``), and another after each further interval
of silence. A consumer that sees neither changes nor heartbeats for longer than the interval knows
syncd is down or cut off, not that nothing changed; the heartbeat also says how fresh each
source is. Like every entry it reaches every reader (SQL, ``syncd changes``, long-poll, SSE,
Redis), and like every lifecycle entry it is not a change of the mirror (Debezium's heartbeats
play the same part).

Silence is measured on the store's own commits (``HeadSignal``), which wake the task: no polling.
The entry is written only if the log's head is still the one the silence was measured on, so a
heartbeat never follows another entry by less than the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

import aiosqlite
import structlog

from syncd.errors import SyncdError
from syncd.store import Store, changelog
from syncd.store.changelog import NewChange
from syncd.sync.lifecycle import HEARTBEAT, HEARTBEAT_SOURCE, SourceLifecycle, heartbeat_record
from syncd.timeutil import format_ns, now_ns

log = structlog.get_logger("syncd.heartbeat")


class Heartbeat:
    """Writes heartbeats into silences of the change log; ``interval`` 0 turns it off."""

    def __init__(
        self,
        store: Store,
        interval: float,
        sources: Callable[[], Sequence[SourceLifecycle]] = list,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._interval = interval
        self._sources = sources
        self._clock = clock
        self._changed = asyncio.Event()
        self.written = 0
        self._failing: str | None = None

    @property
    def interval(self) -> float:
        return self._interval

    def set_interval(self, interval: float) -> None:
        """A new interval (SIGHUP); the silence in progress is measured against it at once."""
        self._interval = interval
        self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: wait for a silence of ``interval``, write a heartbeat, repeat."""
        signal = self._store.changelog_head
        seen, quiet_since = signal.head, self._clock()
        while not stop.is_set():
            self._changed.clear()
            if self._interval <= 0:
                await _first(stop.wait(), self._changed.wait())
                seen, quiet_since = signal.head, self._clock()
                continue
            left = quiet_since + self._interval - self._clock()
            if left > 0:
                await _first(stop.wait(), self._changed.wait(), signal.wait_past(seen), within=left)
                if signal.head != seen:
                    seen, quiet_since = signal.head, self._clock()
                continue
            # Written or not (another process wrote meanwhile), a new silence starts now.
            await self.beat(seen)
            seen, quiet_since = signal.head, self._clock()

    async def beat(self, head: int) -> bool:
        """Write one heartbeat if the log's head is still ``head``; True if it was written."""
        interval = self._interval
        sources = list(self._sources())

        async def work(conn: aiosqlite.Connection) -> bool:
            if await changelog.high_water(conn) != head:
                return False  # something was written meanwhile (by another process, say)
            seq, recorded_at = await changelog.newest_recorded_at(conn)
            new = heartbeat_record(head, recorded_at if seq == head else None, interval, sources)
            entry = NewChange(HEARTBEAT, HEARTBEAT_SOURCE, None, new)
            await changelog.append(conn, [entry], format_ns(now_ns()))
            return True

        try:
            written = await self._store.write(work)
        except SyncdError as exc:  # busy or closing: the next silence tries again
            if exc.message != self._failing:
                log.warning("heartbeat_not_written", **exc.fields())
            self._failing = exc.message
            return False
        self._failing = None
        if written:
            self.written += 1
            log.debug("heartbeat", head_seq=head)
        return bool(written)


async def _first(*waits: Awaitable[object], within: float | None = None) -> None:
    """Return when the first of ``waits`` is done, or after ``within`` seconds."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
