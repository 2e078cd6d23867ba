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
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite
import structlog

from syncd.errors import SyncdError
from syncd.store import Store, changelog
from syncd.store.changelog import NewChange
from syncd.sync.lifecycle import HEARTBEAT, HEARTBEAT_SOURCE, SourceLifecycle, heartbeat_record
from syncd.sync.sleeper import Sleeper
from syncd.timeutil import format_ns, now_ns

log = structlog.get_logger("syncd.heartbeat")


class Heartbeat:
    """Writes heartbeats into silences of the change log; ``interval`` 0 turns it off."""

    def __init__(
        self,
        store: Store,
        interval: float,
        sources: Callable[[], Sequence[SourceLifecycle]] = list,
    ) -> None:
        self._store = store
        self._interval = interval
        self._sources = sources
        self._sleeper = Sleeper()
        self.written = 0
        self._failing: str | None = None

    @property
    def interval(self) -> float:
        return self._interval

    def set_interval(self, interval: float) -> None:
        """A new interval (SIGHUP); the silence in progress is measured against it at once."""
        self._interval = interval
        self._sleeper.wake()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: wait for a silence of ``interval``, write a heartbeat, repeat.

        A silence is measured from the head's last move (``HeadSignal.moved_at``), read when the
        sleep ends: the loop wakes once per interval, not at every commit (every pass of every
        source appends its ``pass.completed``: issue 11's idle CPU)."""
        signal = self._store.changelog_head
        quiet_since = time.monotonic()
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                if self._interval <= 0:
                    await self._sleeper.sleep(None, stopping)
                    quiet_since = time.monotonic()
                    continue
                seen = signal.head
                left = max(quiet_since, signal.moved_at) + self._interval - time.monotonic()
                if left > 0:
                    await self._sleeper.sleep(left, stopping)
                    continue
                # Written or not (another process wrote meanwhile), a new silence starts now.
                await self.beat(seen)
                quiet_since = time.monotonic()
        finally:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping

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
            written = await self._store.write_inline(work)
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
