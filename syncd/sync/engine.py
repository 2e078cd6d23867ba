"""The sync engine: one pass pulls changed counts from the upstream into the mirror.

A pass runs one cursor chain per partition (one per configured location, or one for all), at most
``partition_concurrency`` at once. Each page is applied in one transaction with its change entries:
in an incremental pass a transaction of its own, in a full pass with the pages read before it, in
batches of ``full_batch_counts`` counts. A partition's watermark
moves only after its chain has read its last page, and never past the pass's signpost (the upstream's own
clock at the start of the chain, minus a margin), so a pass that fails midway leaves the watermark where it
was and the next pass repairs everything without duplicate change entries (re-applying equal data logs
nothing). A full pass also removes rows that vanished upstream (``count.removed``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiosqlite
import structlog

from syncd.errors import SyncdError, UpstreamError
from syncd.logs import HotLog
from syncd.metrics import SYNC_COUNTS, SYNC_PAGES, SYNC_PASS_SECONDS, SYNC_PASSES, child
from syncd.model import InventoryCount, PassSummary
from syncd.store import Store, sync_state
from syncd.store import counts as counts_store
from syncd.store.sync_state import PASS_FAILED, PASS_OK, PartitionState
from syncd.sync.catalog import refresh_figures
from syncd.sync.credentials import SourceUnauthorized
from syncd.sync.lifecycle import SourceLifecycle
from syncd.sync.ports import CountsSource, LocationsSource
from syncd.sync.prefetch import prefetch
from syncd.sync.write_behind import WriteBehind
from syncd.timeutil import NS_PER_S, format_ns, now_ns, now_rfc3339, parse_stored_ns

log = HotLog(structlog.get_logger("syncd.sync"))  # a line or two per page and pass

ALL_LOCATIONS = "*"
PASS_INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Plain parameters of the engine (the daemon maps config onto them)."""

    source: str
    location_ids: tuple[str, ...] = ()
    overlap: float = 120.0
    clock_margin: float = 2.0
    partition_concurrency: int = 4
    full_resync_interval: float = 86_400.0
    full_resync_after: float = 21_600.0
    cursor_restarts: int = 3
    locations_interval: float = 300.0
    full_batch_counts: int = 10_000
    """A full pass applies its pages in write transactions of at least this many counts (the
    last may be smaller), shared by the chains that run at once (their batches are in memory
    together: 4 chains write 2,500 each); an incremental pass applies each page in a transaction
    of its own."""


@dataclass(slots=True)
class _Chain:
    """Running totals of one partition's chains within a pass."""

    pages: int = 0
    counts: int = 0
    changes: int = 0
    removed: int = 0
    signpost_ns: int | None = None
    newest_ns: int | None = None
    # Whether the last page applied held only counts the mirror did not (a first sync): then a
    # full chain inserts the next one without looking its keys up first (``apply_page``).
    all_new: bool = False
    # A chain shared by several partitions (``SyncEngine._shared_chain``): each one's share of it.
    shares: dict[str, _Chain] | None = None


ProgressFn = Callable[[PassSummary], None]
PageCounts = Sequence[InventoryCount]


class SyncEngine:
    """Runs passes for one source. Passes never overlap: a second caller waits for the first."""

    def __init__(
        self,
        store: Store,
        upstream: CountsSource,
        options: EngineOptions,
        *,
        clock: Callable[[], int] = now_ns,
        on_page: ProgressFn | None = None,
        locations: LocationsSource | None = None,
        lifecycle: SourceLifecycle | None = None,
    ) -> None:
        self._store = store
        # Pass entries and status transitions in the change log (issue 14).
        self.lifecycle = lifecycle or SourceLifecycle(options.source)
        self._upstream = upstream
        self._locations = locations
        self._discovered: tuple[str, ...] = ()
        self._discovery_error: str | None = None
        self._discovered_at: float | None = None
        self.options = options
        self._clock = clock
        self._on_page = on_page
        self._lock = asyncio.Lock()
        self.last_summary: PassSummary | None = None
        self.full_pass_id: int | None = None  # the full pass running now, if any
        self._records: list[tuple[PartitionState, _Chain]] = []
        self._states: dict[str, PartitionState] | None = None  # see _partition_states
        self._started_at = ""  # of the pass running now (its row may be written late)
        self._applied: PageCounts | None = None  # the page an incremental pass applied last

    @property
    def partitions(self) -> tuple[str, ...]:
        return self.location_scope or (ALL_LOCATIONS,)

    @property
    def location_scope(self) -> tuple[str, ...]:
        """The locations this source mirrors: the configured ones, else the discovered active
        ones, else none (every location of the seller, in one chain)."""
        return self.options.location_ids or self._discovered

    async def _discover(self) -> None:
        """With no configured locations: partition by the seller's active locations. When they
        cannot be listed the partitions stay as they were (one chain for all at first), logged
        once per distinct error: the pass still mirrors every location.

        An answer younger than ``locations_interval`` that the catalog pass got is taken as is
        (one ListLocations per interval, not two); the next look is due when the answer used
        turns ``locations_interval`` old, so the partitions never rest on an older one."""
        if self._locations is None or self.options.location_ids:
            return
        interval = self.options.locations_interval
        now = time.monotonic()
        if self._discovered_at is not None and now - self._discovered_at < interval:
            return
        self._discovered_at = now  # an attempt: one that fails waits the interval too
        try:
            found = await self._locations.active_location_ids(max_age=interval)
        except SyncdError as exc:
            if exc.message != self._discovery_error:
                log.warning(
                    "locations_not_discovered",
                    source=self.options.source,
                    partitions=list(self.partitions),
                    **exc.fields(),
                )
            self._discovery_error = exc.message
            return
        self._discovery_error = None
        answered = self._locations.answered_at
        if answered is not None:
            self._discovered_at = min(now, answered)
        if found and found != self._discovered:
            log.info(
                "locations_discovered",
                source=self.options.source,
                locations=list(found),
                added=sorted(set(found) - set(self._discovered)),
                gone=sorted(set(self._discovered) - set(found)),
            )
            self._discovered = found

    async def run_pass(self, *, full: bool | None = None) -> PassSummary:
        """Run one pass. ``full`` forces (True) or forbids (False) a full pass; None lets state decide.

        A full pass records itself as running before it reads anything (it can take minutes,
        and ``syncd status`` shows it). An incremental pass writes its row with its first change,
        or with its end (issue 11): an idle one, which changes nothing, then costs one
        transaction. A crash before that leaves nothing to repair, as it wrote nothing.
        """
        async with self._lock:
            await self._discover()
            source = self.options.source
            started_at = now_rfc3339()
            states = await self._partition_states()
            kind_full = self._wants_full(states) if full is None else full
            pass_id = None
            if kind_full:
                pass_id = await self._store.write_inline(
                    lambda conn: sync_state.begin_pass(conn, source, "full", started_at)
                )
            return await self._run(states, kind_full, pass_id, started_at)

    async def _partition_states(self) -> dict[str, PartitionState]:
        """The partitions' stored states. The engine is their only writer (one syncd process
        per database, one pass of a source at a time), so after the first read they come from
        what its last pass recorded, and an idle pass reads nothing."""
        if self._states is None:
            source = self.options.source
            rows = await self._store.read_inline(lambda conn: sync_state.partitions(conn, source))
            self._states = {s.partition: s for s in rows}
        return self._states

    def _wants_full(self, states: dict[str, PartitionState]) -> bool:
        now = self._clock()
        for name in self.partitions:
            state = states.get(name)
            if state is None or state.watermark is None or state.last_full_at is None:
                return True
            if (
                now - parse_stored_ns(state.last_full_at)
                > self.options.full_resync_interval * NS_PER_S
            ):
                return True
            if state.last_success_at is None or (
                now - parse_stored_ns(state.last_success_at)
                > self.options.full_resync_after * NS_PER_S
            ):
                return True
        return False

    async def _run(
        self, states: dict[str, PartitionState], full: bool, pass_id: int | None, started_at: str
    ) -> PassSummary:
        source = self.options.source
        kind = "full" if full else "incremental"
        summary = PassSummary(
            source=source,
            pass_id=pass_id,
            kind=kind,
            started_ns=self._clock(),
            partitions=list(self.partitions),
        )
        t0 = time.perf_counter()
        self._started_at = started_at
        # An incremental pass has no id until it writes (``stamp`` in ``_apply``, or ``_finish``):
        # its log lines carry the source, and its ``sync_pass`` line the id.
        ids = {} if pass_id is None else {"pass_id": pass_id}
        bound = structlog.contextvars.bound_contextvars(source=source, **ids)
        outcome = PASS_INTERRUPTED
        if full:
            self.full_pass_id = pass_id
            self._applied = None
        with bound:
            try:
                errors = await self._run_partitions(states, summary, full)
                explicit = self.location_scope
                if full and not errors and explicit:
                    summary.removed += await self._store.write(
                        lambda conn: counts_store.remove_outside(
                            conn,
                            source,
                            location_ids=explicit,
                            recorded_at=now_rfc3339(),
                        )
                    )
                summary.error = "; ".join(errors) if errors else None
                outcome = PASS_FAILED if errors else PASS_OK
                if full:
                    # A full pass reads every count anyway (the first one writes them all): count
                    # anew how many join as unknown (`syncd status`), also those incremental
                    # passes brought since; catalog passes do so after each of theirs. Part of
                    # the pass, so it has ended when its record and `sync_pass` say so.
                    await refresh_figures(self._store, source)
            finally:
                self.full_pass_id = None
                summary.finished_ns = self._clock()
                await asyncio.shield(self._finish(summary, outcome, started_at))
                elapsed = time.perf_counter() - t0
                child(SYNC_PASSES, source, kind, outcome).inc()
                child(SYNC_PASS_SECONDS, source, kind).observe(elapsed)
                log.info(
                    "sync_pass",
                    pass_id=summary.pass_id,
                    kind=kind,
                    outcome=outcome,
                    pages=summary.pages,
                    counts=summary.counts,
                    changes=summary.changes,
                    removed=summary.removed,
                    skipped=summary.skipped,
                    duration_ms=round(elapsed * 1000, 1),
                    error=summary.error,
                )
        self.last_summary = summary
        return summary

    async def _finish(self, summary: PassSummary, outcome: str, started_at: str) -> None:
        """Record every partition's new state and the pass's end in one transaction, with the
        pass's change-log entries (an interrupted pass has none). The states recorded become
        the ones the next pass starts from; if the transaction fails they are read anew."""
        records, self._records = self._records, []
        source = self.options.source

        async def work(conn: aiosqlite.Connection) -> None:
            finished_at = now_rfc3339()
            pass_id = await sync_state.finish_pass(
                conn,
                summary.pass_id,
                source=source,
                kind=summary.kind,
                started_at=started_at,
                outcome=outcome,
                finished_at=finished_at,
                pages=summary.pages,
                counts=summary.counts,
                changes=summary.changes,
                removed=summary.removed,
                error=summary.error,
            )
            summary.pass_id = pass_id
            await sync_state.record_partitions(
                conn,
                [
                    sync_state.PartitionRecord(state, chain.pages, chain.counts, chain.changes)
                    for state, chain in records
                ],
                pass_id=pass_id,
                started_at=started_at,
            )
            if outcome != PASS_INTERRUPTED:
                await self.lifecycle.pass_entries(
                    conn,
                    summary,
                    ok=outcome == PASS_OK,
                    watermarks={state.partition: state.watermark for state, _ in records},
                    started_at=started_at,
                    finished_at=finished_at,
                )

        recorded = summary.pass_id
        try:
            await self.lifecycle.write(self._store, work)
        except BaseException:
            summary.pass_id = recorded
            self._states = None
            raise
        if self._states is not None:
            self._states.update((state.partition, state) for state, _ in records)

    async def _run_partitions(
        self, states: dict[str, PartitionState], summary: PassSummary, full: bool
    ) -> list[str]:
        """Run every partition's chain, bounded; return the errors of the partitions that failed."""
        if not full and self._shareable(states):
            return await self._shared_chain(states, summary)
        gate = asyncio.Semaphore(self.options.partition_concurrency)
        errors: list[str] = []

        async def one(name: str) -> None:
            async with gate:
                error = await self._partition(name, states.get(name), summary, full)
                if error is not None:
                    errors.append(f"{name}: {error}")

        async with asyncio.TaskGroup() as group:
            for name in self.partitions:
                group.create_task(one(name))
        return errors

    async def _partition(
        self,
        name: str,
        state: PartitionState | None,
        summary: PassSummary,
        full: bool,
    ) -> str | None:
        """One partition's chain(s). Returns None on success or the error text; the watermark and the
        partition's outcome are recorded either way."""
        source = self.options.source
        base = state or PartitionState(source, name, None, None, None, None, None, None)
        chain = _Chain()
        locations = None if name == ALL_LOCATIONS else [name]
        overlap_ns = int(self.options.overlap * NS_PER_S)
        try:
            after = (
                None
                if full or base.watermark is None
                else format_ns(parse_stored_ns(base.watermark) - overlap_ns)
            )
            await self._read_chain(chain, summary, locations, after)
            if full:
                # Rows that changed while the listing ran moved to its front and may have been missed:
                # read them again so they count as seen before anything unseen is removed.
                assert chain.signpost_ns is not None
                assert summary.pass_id is not None  # a full pass's row is written first
                full_id = summary.pass_id
                await self._read_chain(
                    chain, summary, locations, format_ns(chain.signpost_ns - overlap_ns)
                )
                chain.removed = await self._store.write(
                    lambda conn: counts_store.remove_unseen(
                        conn,
                        source,
                        pass_id=full_id,
                        location_id=None if name == ALL_LOCATIONS else name,
                        recorded_at=now_rfc3339(),
                    )
                )
                summary.removed += chain.removed
        except SyncdError as exc:
            log.warning("sync_partition_failed", partition=name, pages=chain.pages, **exc.fields())
            self._failed(base, chain, exc, summary)
            return exc.message
        self._succeeded(base, chain, chain, full)
        return None

    def _shareable(self, states: dict[str, PartitionState]) -> bool:
        """Whether an incremental pass reads its partitions in one shared chain: when there are
        several and each one's last chain ended well.

        One chain asks for every partition's location in each request, from the oldest
        watermark less the overlap: an idle source then costs one request per pass instead of
        one per location (its CPU, issue 11, and its share of Square's rate limit), and what the
        partitions' own chains would have read is all in it. After a failure each partition has
        its own chain again, so a location that keeps failing fails alone.
        """
        names = self.partitions
        if len(names) < 2:
            return False
        for name in names:
            state = states.get(name)
            if state is None or state.watermark is None or state.last_outcome != PASS_OK:
                return False
        return True

    async def _shared_chain(
        self, states: dict[str, PartitionState], summary: PassSummary
    ) -> list[str]:
        """Every partition in one chain (see ``_shareable``); each partition's watermark then
        moves as that of a chain over all locations (the '*' partition) would. Returns the
        error, if the chain failed, as every partition's."""
        names = self.partitions
        bases = [states[name] for name in names]
        oldest = min(
            parse_stored_ns(base.watermark) for base in bases if base.watermark is not None
        )
        shared = _Chain(shares={name: _Chain() for name in names})
        after = format_ns(oldest - int(self.options.overlap * NS_PER_S))
        try:
            await self._read_chain(shared, summary, list(names), after)
        except SyncdError as exc:
            log.warning(
                "sync_partition_failed",
                partition=",".join(names),
                shared=True,
                pages=shared.pages,
                **exc.fields(),
            )
            for base in bases:
                self._failed(base, self._share(shared, base.partition), exc, summary)
            return [f"{', '.join(names)}: {exc.message}"]
        finished = now_rfc3339()  # one chain: the partitions ended together
        for base in bases:
            self._succeeded(base, self._share(shared, base.partition), shared, False, finished)
        return []

    @staticmethod
    def _share(shared: _Chain, partition: str) -> _Chain:
        """One partition's share of a shared chain: its own counts and changes, the chain's pages."""
        assert shared.shares is not None
        share = shared.shares[partition]
        share.pages = shared.pages
        return share

    def _failed(
        self, base: PartitionState, chain: _Chain, exc: SyncdError, summary: PassSummary
    ) -> None:
        """Record a partition whose chain failed: its watermark stays where it was."""
        if _refused_token(exc):
            summary.unauthorized = True
        self._record(base, chain, error=exc.message, watermark=base.watermark, full=False)

    def _succeeded(
        self,
        base: PartitionState,
        chain: _Chain,
        read: _Chain,
        full: bool,
        finished: str | None = None,
    ) -> None:
        """Record a partition whose chain (``read``: its own, or the shared one) read its last
        page; ``chain`` holds the partition's figures."""
        watermark = self._next_watermark(base, read, full)
        self._record(base, chain, error=None, watermark=watermark, full=full, finished=finished)

    def _next_watermark(self, state: PartitionState, chain: _Chain, full: bool) -> str | None:
        """min(signpost, newest seen), never moving backwards; unchanged when nothing new was seen."""
        if chain.signpost_ns is None:
            return state.watermark
        if chain.newest_ns is None:
            candidate = chain.signpost_ns if full or state.watermark is None else None
        else:
            candidate = min(chain.signpost_ns, chain.newest_ns)
        if candidate is None:
            return state.watermark
        if state.watermark is not None and candidate <= parse_stored_ns(state.watermark):
            return state.watermark  # not moving: the stored text as it is, not formatted anew
        return format_ns(candidate)

    def _record(
        self,
        base: PartitionState,
        chain: _Chain,
        *,
        error: str | None,
        watermark: str | None,
        full: bool,
        finished: str | None = None,
    ) -> None:
        finished = finished or now_rfc3339()  # also its last success, when it succeeded
        # Built field by field: ``dataclasses.replace`` costs several times more, for every
        # partition of every pass (issue 11).
        state = PartitionState(
            source=base.source,
            partition=base.partition,
            watermark=watermark,
            last_outcome=PASS_FAILED if error else PASS_OK,
            last_success_at=finished if error is None else base.last_success_at,
            last_full_at=finished if full else base.last_full_at,
            last_finished_at=finished,
            error=error,
        )
        # Written with the pass's end (one transaction, one fsync for the whole pass).
        self._records.append((state, chain))

    async def _read_chain(
        self,
        chain: _Chain,
        summary: PassSummary,
        locations: Sequence[str] | None,
        updated_after: str | None,
    ) -> None:
        margin_ns = int(self.options.clock_margin * NS_PER_S)
        # A full chain writes its pages in batches (``full_batch_counts``), one transaction each:
        # a first sync pays one commit (one fsync, and one copy into the WAL of each B-tree page
        # it touched: the mirror's pages are touched in no order) per batch instead of per page.
        # Safe because nothing moves the watermark until the whole pass is read and every batch
        # it covers committed; a crash loses at most the batch in flight, which the next pass
        # reads again. An incremental chain writes each page as it comes (a few pages, the
        # newest changes first).
        full = summary.kind == "full"
        for restart in range(self.options.cursor_restarts + 1):
            pages = self._upstream.pages(location_ids=locations, updated_after=updated_after)
            try:
                async with WriteBehind[PageCounts](
                    lambda batch: self._apply(batch, chain, summary), self._full_batch()
                ) as batches:
                    async for page in prefetch(pages):
                        if chain.signpost_ns is None:
                            chain.signpost_ns = (page.server_date_ns or self._clock()) - margin_ns
                        summary.skipped += page.skipped
                        if full:
                            await batches.add(page.counts)
                        else:
                            await self._apply([page.counts], chain, summary)
                break
            except UpstreamError as exc:
                # An expired or invalid cursor cannot be resumed: read the chain again from its
                # start. Pages already applied are re-read as unchanged and log nothing.
                if not exc.context.get("cursor_invalid") or restart == self.options.cursor_restarts:
                    raise
                log.warning(
                    "sync_chain_restarted",
                    reason="invalid_cursor",
                    restart=restart + 1,
                    pages=chain.pages,
                )
        if chain.signpost_ns is None:  # pragma: no cover - a chain always yields at least one page
            chain.signpost_ns = self._clock() - margin_ns

    def _full_batch(self) -> int:
        """Counts per write transaction of each full chain (``EngineOptions.full_batch_counts``)."""
        chains = max(1, min(self.options.partition_concurrency, len(self.partitions)))
        return max(1, self.options.full_batch_counts // chains)

    async def _apply(self, pages: list[PageCounts], chain: _Chain, summary: PassSummary) -> None:
        """Apply ``pages`` in one write transaction, each page as it would be alone (in order: a
        count on two pages is applied twice, the log telling both changes), then count them."""
        source = self.options.source
        full = summary.kind == "full"
        recorded = summary.pass_id

        async def work(conn: aiosqlite.Connection) -> list[counts_store.ApplyResult]:
            recorded_at = now_rfc3339()

            async def stamp() -> int:
                # An incremental pass's first change: the pass's row goes in with it.
                if summary.pass_id is None:
                    summary.pass_id = await sync_state.begin_pass(
                        conn, source, summary.kind, self._started_at
                    )
                return summary.pass_id

            results = []
            for page in pages:
                if page:
                    result = await counts_store.apply_page(
                        conn,
                        source,
                        page,
                        pass_id=stamp if summary.pass_id is None else summary.pass_id,
                        recorded_at=recorded_at,
                        mark_seen=full,
                        expect_new=full and chain.all_new,
                    )
                    chain.all_new = result.all_new
                    results.append(result)
            return results

        # An empty page (the usual answer of an idle incremental pass) has nothing to write: no
        # transaction, so an idle source costs its request and little else. Nor has the very
        # page an incremental pass applied last: the upstream answered the same request with
        # the same counts (``SquareCounts`` hands back the same tuple), all of them applied,
        # and the mirror only moves forward from there (a full pass forgets it).
        if not full and len(pages) == 1 and pages[0] is self._applied:
            self._tally(pages[0], _NOTHING, chain, summary)
            return
        try:
            results = iter(await self._store.write_inline(work) if any(pages) else ())
        except BaseException:
            summary.pass_id = recorded  # rolled back with the unit
            self._applied = None
            raise
        if not full and pages and pages[-1]:
            self._applied = pages[-1]
        for page in pages:
            self._tally(page, next(results) if page else _NOTHING, chain, summary)

    def _tally(
        self,
        page: PageCounts,
        result: counts_store.ApplyResult,
        chain: _Chain,
        summary: PassSummary,
    ) -> None:
        """Count one applied page in its chain and the pass (metrics, debug log, progress)."""
        source = self.options.source
        if page:
            newest = max(c.calculated_at_ns for c in page)
            chain.newest_ns = newest if chain.newest_ns is None else max(chain.newest_ns, newest)
        chain.pages += 1
        chain.counts += len(page)
        chain.changes += result.changes
        if chain.shares is not None:
            _tally_shares(chain.shares, page, result.written)
        summary.pages += 1
        summary.counts += len(page)
        summary.changes += result.changes
        child(SYNC_PAGES, source).inc()
        child(SYNC_COUNTS, source).inc(len(page))
        log.debug("sync_page", rows=len(page), changes=result.changes, stale=result.stale)
        if self._on_page is not None:
            self._on_page(summary)


_NOTHING = counts_store.ApplyResult(0, 0, 0, None)


def _refused_token(exc: SyncdError) -> bool:
    """The upstream refused the source's credentials: a 401 (after the one token refresh), or an
    OAuth grant that no longer works."""
    if isinstance(exc, SourceUnauthorized):
        return True
    return isinstance(exc, UpstreamError) and exc.status == 401


def _tally_shares(
    shares: dict[str, _Chain], page: Sequence[InventoryCount], written: Sequence[InventoryCount]
) -> None:
    """Each partition's counts and changes in a page of a shared chain (a location the pass did not
    ask for, which the upstream should not send, is in no share)."""
    for count in page:
        share = shares.get(count.location_id)
        if share is not None:
            share.counts += 1
    for count in written:
        share = shares.get(count.location_id)
        if share is not None:
            share.changes += 1
