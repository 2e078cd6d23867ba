"""Lifecycle entries of the change log (issue 14): how a consumer tells "nothing changed" from
"syncd is stale".

Besides the mirror's changes, the log says when each pass of a source completed (with the
source's watermark), when a full pass completed, and when a source turned stale or unauthorized
and when it recovered. None of these is a change of the mirror: a replay of the ``count.*``
entries ignores them and still reproduces ``inventory_counts`` (docs/changelog.md, "Lifecycle
kinds"). Heartbeats (``syncd.sync.heartbeat``) cover the silence in between.

A source's *status* is ``ok``, ``stale`` (its last good pass is older than the staleness limit,
``http.ready_max_staleness``) or ``unauthorized`` (its OAuth grant is revoked, or the upstream
refused its token). An entry is written on each transition only, never once per pass: the status
last written (``logged``) is read back from the log when the source starts, so a restart does not
repeat it either. Pass entries, and the transition a pass causes, commit in the same transaction
as the pass's own state (``passes``, ``sync_state``): a crash cannot log a pass that did not
commit. Transitions that time causes (a source turning stale while nothing runs, a grant found
revoked between passes) are written by :class:`LifecycleMonitor`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import aiosqlite
import structlog

from syncd.errors import SyncdError
from syncd.model import PassSummary
from syncd.store import Store, changelog, sync_state
from syncd.store.changelog import NewChange
from syncd.timeutil import NS_PER_S, format_ns, now_ns, parse_ns, parse_stored_ns

log = structlog.get_logger("syncd.lifecycle")

PASS_COMPLETED = "pass.completed"
PASS_FULL_COMPLETED = "pass.full_completed"
SOURCE_STALE = "source.stale"
SOURCE_UNAUTHORIZED = "source.unauthorized"
SOURCE_RECOVERED = "source.recovered"
HEARTBEAT = "heartbeat"
# The source of heartbeat entries: a name no configured source can have (a leading '_' is
# reserved, see syncd.config.fields).
HEARTBEAT_SOURCE = "_syncd"
LIFECYCLE_KINDS = (
    PASS_COMPLETED,
    PASS_FULL_COMPLETED,
    SOURCE_STALE,
    SOURCE_UNAUTHORIZED,
    SOURCE_RECOVERED,
    HEARTBEAT,
)

STATUS_OK = "ok"
STATUS_STALE = "stale"
STATUS_UNAUTHORIZED = "unauthorized"

_KIND_OF_STATUS = {
    STATUS_OK: SOURCE_RECOVERED,
    STATUS_STALE: SOURCE_STALE,
    STATUS_UNAUTHORIZED: SOURCE_UNAUTHORIZED,
}
# What the newest of these entries of a source says its logged status is: a completed pass is
# written only while the source is ok (with its source.recovered, when it was not).
_STATUS_OF_KIND = {
    PASS_COMPLETED: STATUS_OK,
    SOURCE_RECOVERED: STATUS_OK,
    SOURCE_STALE: STATUS_STALE,
    SOURCE_UNAUTHORIZED: STATUS_UNAUTHORIZED,
}
# How far back the status and the last good pass are looked for when a source starts (entries,
# passes): bounded reads whatever the log's length. A status older than that is taken as ok; at
# worst a restart then writes a source's stale or unauthorized entry once more.
LOOKBACK = 100_000

T = TypeVar("T")


class SourceLifecycle:
    """One source's status and pass entries; shared by its engine and the monitor.

    Every write that may append a transition runs under ``lock`` (``write``), so the status it
    decides from is the one in the log. After a failed write the in-memory state is read again
    from the database at the next use.
    """

    def __init__(
        self,
        source: str,
        *,
        unauthorized: Callable[[], bool] = lambda: False,
        clock: Callable[[], int] = now_ns,
    ) -> None:
        self.source = source
        self._unauthorized = unauthorized
        self._clock = clock
        self.lock = asyncio.Lock()
        self.logged: str | None = None  # None: not read from the log yet
        self.last_success_ns: int | None = None
        self._loaded_success = False
        self.started_ns = clock()
        self.attempted = False  # a pass of this run has ended
        self.rejected = False  # the last pass failed because the upstream refused the token
        self.last_error: str | None = None

    @property
    def unauthorized(self) -> bool:
        return self.rejected or self._unauthorized()

    @property
    def last_success_at(self) -> str | None:
        return None if self.last_success_ns is None else format_ns(self.last_success_ns)

    async def load(self, store: Store) -> None:
        """Read the logged status and the last good pass (at start; cheap when already read)."""
        if self.logged is None or not self._loaded_success:
            await store.read(self._load)

    async def _load(self, conn: aiosqlite.Connection) -> None:
        if self.logged is None:
            kind = await changelog.newest_kind(conn, self.source, _STATUS_OF_KIND, within=LOOKBACK)
            self.logged = STATUS_OK if kind is None else _STATUS_OF_KIND[kind]
        if not self._loaded_success:
            at = await sync_state.last_success_at(conn, self.source, within=LOOKBACK)
            if at is not None and self.last_success_ns is None:
                self.last_success_ns = parse_ns(at)
            self._loaded_success = True

    async def write(self, store: Store, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``work`` (which may call ``pass_entries``/``transition``) in one transaction,
        serialised with this source's other lifecycle writes. It must await nothing but its
        connection: it runs on the connection's thread, in one trip (``Store.write_inline``)."""
        async with self.lock:
            try:
                return await store.write_inline(work)
            except BaseException:
                # Commit or rollback unknown to us: take the state from the database next time.
                self.logged = None
                self.last_success_ns = None
                self._loaded_success = False
                raise

    async def pass_entries(
        self,
        conn: aiosqlite.Connection,
        summary: PassSummary,
        *,
        ok: bool,
        watermarks: Mapping[str, str | None],
        started_at: str,
        finished_at: str,
    ) -> None:
        """Inside the transaction that records a pass's end: its entries, and the transition it
        causes (an ok pass recovers the source; a refused token makes it unauthorized)."""
        await self._load(conn)
        self.attempted = True
        if not ok:
            self.rejected = summary.unauthorized
            self.last_error = summary.error
            if self.unauthorized:
                await self.transition(conn, STATUS_UNAUTHORIZED, pass_id=summary.pass_id)
            return
        self.rejected = False
        self.last_error = None
        self.last_success_ns = parse_ns(finished_at)
        new = pass_record(summary, watermarks, started_at, finished_at)
        kinds = [PASS_COMPLETED] + ([PASS_FULL_COMPLETED] if summary.kind == "full" else [])
        await changelog.append(
            conn, [NewChange(kind, self.source, None, new) for kind in kinds], finished_at
        )
        if not self.unauthorized:
            await self.transition(conn, STATUS_OK, pass_id=summary.pass_id)

    def observe(self, now: int, max_staleness: float) -> str | None:
        """The status as of ``now``; None while it cannot be judged yet (this run's first pass
        has not ended, and started less than ``max_staleness`` ago: a restart after a long stop
        is not stale while its first pass catches up)."""
        if self.unauthorized:
            return STATUS_UNAUTHORIZED
        limit = max_staleness * NS_PER_S
        if not self.attempted and now - self.started_ns <= limit:
            return None
        base = self.last_success_ns if self.last_success_ns is not None else self.started_ns
        return STATUS_STALE if now - base > limit else STATUS_OK

    def settled(self, max_staleness: float) -> bool:
        """True when ``check`` would write nothing now: the state is loaded and the status as of
        now is the logged one (or cannot be judged yet). Cheap: no coroutine, no database."""
        if self.logged is None or not self._loaded_success:
            return False
        return self.observe(self._clock(), max_staleness) in (None, self.logged)

    async def check(self, store: Store, max_staleness: float) -> str | None:
        """Write the transition that time caused, if any; return the status written."""
        if self.logged is None or not self._loaded_success:
            async with self.lock:  # not while a pass's end writes (and sets) the status
                await self.load(store)
        if self.observe(self._clock(), max_staleness) in (None, self.logged):
            return None

        async def work(conn: aiosqlite.Connection) -> str | None:
            status = self.observe(self._clock(), max_staleness)  # again, under the lock
            if status is None or status == self.logged:
                return None
            await self.transition(conn, status, max_staleness=max_staleness)
            return status

        return await self.write(store, work)

    async def transition(
        self,
        conn: aiosqlite.Connection,
        status: str,
        *,
        pass_id: int | None = None,
        max_staleness: float | None = None,
    ) -> None:
        """Append the entry for a move to ``status`` (nothing when it is the logged one)."""
        previous = self.logged
        if status == previous:
            return
        new: dict[str, Any] = {
            "status": status,
            "last_success_at": self.last_success_at,
            "last_error": self.last_error,
        }
        if pass_id is not None:
            new["pass_id"] = pass_id
        if status == STATUS_STALE and max_staleness is not None:
            base = self.last_success_ns if self.last_success_ns is not None else self.started_ns
            new["age_s"] = round((self._clock() - base) / NS_PER_S, 3)
            new["max_staleness_s"] = max_staleness
        at = format_ns(self._clock())
        old = {"status": previous}
        await changelog.append(
            conn, [NewChange(_KIND_OF_STATUS[status], self.source, old, new)], at
        )
        self.logged = status
        event = log.info if status == STATUS_OK else log.warning
        event(
            "source_status",
            source=self.source,
            status=status,
            previous=previous,
            last_success_at=new["last_success_at"],
            last_error=self.last_error,
        )

    def describe(self) -> dict[str, Any]:
        """What a heartbeat says of this source."""
        return {"status": self.logged or STATUS_OK, "last_success_at": self.last_success_at}


def pass_record(
    summary: PassSummary,
    watermarks: Mapping[str, str | None],
    started_at: str,
    finished_at: str,
) -> dict[str, Any]:
    """``new`` of a pass entry. The source's ``watermark`` is its partitions' lowest: every
    count that changed upstream before it is in the mirror."""
    known = list(watermarks.values())
    lowest = (
        None
        if not known or None in known
        else format_ns(min(parse_stored_ns(w) for w in known if w is not None))
    )
    return {
        "pass_id": summary.pass_id,
        "pass_kind": summary.kind,
        "watermark": lowest,
        "partitions": dict(sorted(watermarks.items())),
        "started_at": started_at,
        "finished_at": finished_at,
        "pages": summary.pages,
        "counts": summary.counts,
        "changes": summary.changes,
        "removed": summary.removed,
        "skipped": summary.skipped,
    }


class LifecycleMonitor:
    """Writes the transitions time causes, for every running source: a source whose last good
    pass grows older than ``max_staleness`` turns stale at most a ``tick`` after it did, one whose
    grant is found revoked between passes unauthorized."""

    def __init__(
        self,
        store: Store,
        sources: Callable[[], Iterable[SourceLifecycle]],
        max_staleness: float,
    ) -> None:
        self._store = store
        self._sources = sources
        self.max_staleness = max_staleness
        self._failing: str | None = None

    @property
    def tick(self) -> float:
        """How often the sources are looked at: a hundredth of the limit, within 50 ms .. 5 s
        (the default limit of 600 s is checked every 5 s: 200 sources looked at every second
        were a tenth of a daemon's idle CPU, issue 11)."""
        return min(5.0, max(0.05, self.max_staleness / 100))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.check_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.tick)

    async def check_all(self) -> list[tuple[str, str]]:
        """One round; returns the (source, status) transitions written."""
        written = []
        max_staleness = self.max_staleness
        for lifecycle in list(self._sources()):
            if lifecycle.settled(max_staleness):
                continue  # the usual case each tick: no coroutine per source (issue 11)
            try:
                status = await lifecycle.check(self._store, self.max_staleness)
            except SyncdError as exc:  # the database is busy or closing: next round
                if exc.message != self._failing:
                    log.warning(
                        "source_status_not_written", source=lifecycle.source, **exc.fields()
                    )
                self._failing = exc.message
                continue
            self._failing = None
            if status is not None:
                written.append((lifecycle.source, status))
        return written


def heartbeat_record(
    head_seq: int, head_recorded_at: str | None, interval: float, sources: Sequence[SourceLifecycle]
) -> dict[str, Any]:
    """``new`` of a heartbeat: the log's head before it, and each running source's status."""
    return {
        "head_seq": head_seq,
        "head_recorded_at": head_recorded_at,
        "interval_s": interval,
        "sources": {s.source: s.describe() for s in sorted(sources, key=lambda s: s.source)},
    }
