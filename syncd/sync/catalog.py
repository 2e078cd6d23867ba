"""The catalog engine (issue 12): one pass pulls changed catalog items and variations, and the
seller's locations, into the mirror, so that a count can be read with its SKU and names.

An incremental pass asks SearchCatalogObjects for objects changed after the stored watermark minus
``overlap``. The watermark is the ``latest_time`` Square returned (its own clock, never ours), kept
only once a whole cursor chain was read: a pass that fails midway leaves it where it was, and the
next pass re-reads; re-applied objects change nothing (versions never go backwards). Deleted
objects come back marked (with ``begin_time`` Square returns them even when not asked), and are
kept marked, never forgotten.

A full pass (the first one, then every ``full_interval``) reads the whole catalog, then reads again
what changed while it ran, and marks deleted whatever the mirror has that the catalog no longer
lists: the safety net for deletions an incremental read missed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

import aiosqlite
import structlog

from syncd.errors import SyncdError, UpstreamError
from syncd.logs import HotLog
from syncd.metrics import CATALOG_OBJECTS, CATALOG_PASS_SECONDS, CATALOG_PASSES
from syncd.model import CatalogItem, CatalogPage, CatalogVariation, PassSummary
from syncd.store import Store
from syncd.store import catalog as catalog_store
from syncd.store.catalog import CatalogFigures, CatalogState, LocationRow
from syncd.sync.ports import CatalogSource, LocationDetailsSource
from syncd.sync.prefetch import prefetch
from syncd.sync.write_behind import WriteBehind
from syncd.timeutil import NS_PER_S, format_ns, now_ns, now_rfc3339, parse_ns

log = HotLog(structlog.get_logger("syncd.catalog"))  # a line or two per page and pass

KIND_INCREMENTAL = "catalog"
KIND_FULL = "catalog_full"
CATALOG_KINDS = frozenset({KIND_INCREMENTAL, KIND_FULL})


@dataclass(frozen=True, slots=True)
class CatalogOptions:
    """Plain parameters of the catalog engine (the daemon maps config onto them)."""

    source: str
    overlap: float = 60.0
    full_interval: float = 86_400.0
    cursor_restarts: int = 3
    full_batch_objects: int = 10_000
    """A full pass applies its pages in write transactions of at least this many objects (the
    last may be smaller); an incremental pass applies each page in a transaction of its own."""


@dataclass(slots=True)
class _Chain:
    """What one pass has read so far."""

    pages: int = 0
    objects: int = 0
    changes: int = 0
    stale: int = 0
    latest_time: str | None = None
    newest_ns: int | None = None
    seen_items: set[str] = field(default_factory=set)
    seen_variations: set[str] = field(default_factory=set)
    started_empty: bool | None = None
    """A full chain's: whether the mirror held no catalog object of the source when its first
    write began (None: none yet). Then every object stored since is one the pass applied (it is
    the source's only catalog writer), in ``seen_*``, and only those are looked up."""


class CatalogEngine:
    """Runs catalog passes for one source; passes never overlap (the trigger runs one at a time)."""

    def __init__(
        self,
        store: Store,
        catalog: CatalogSource,
        options: CatalogOptions,
        *,
        locations: LocationDetailsSource | None = None,
        clock: Callable[[], int] = now_ns,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._locations = locations
        self.options = options
        self._clock = clock
        self._passes = 0
        self.last_summary: PassSummary | None = None
        # What this engine last read or wrote of its source's catalog state and locations: one
        # daemon writes a database (the instance lock) and one pass of a source runs at a time,
        # so an idle pass need not read the state back nor rewrite the same locations (issue 11).
        # Forgotten when a write fails, so the next pass reads them again.
        self._state: CatalogState | None = None
        self._locations_applied: list[LocationRow] | None = None
        # The objects of the last incremental page applied: an idle pass re-reads the overlap
        # before the watermark, the same objects at the same versions, and applying them again
        # could change nothing (versions never go backwards; this engine is their only writer).
        # A full pass forgets them: its sweep may mark deleted what a later page revives.
        self._page_applied: tuple[CatalogItem | CatalogVariation, ...] | None = None

    async def run_pass(self, *, full: bool | None = None) -> PassSummary:
        """Run one pass. ``full`` forces (True) or forbids (False) a full pass; None lets the
        stored state decide (no watermark yet, or the last full pass is older than
        ``full_interval``)."""
        source = self.options.source
        state = self._state
        if state is None:
            state = await self._store.read_inline(
                lambda conn: catalog_store.load_state(conn, source)
            )
            self._state = state
        is_full = self._wants_full(state) if full is None else full
        self._passes += 1
        summary = PassSummary(
            source=source,
            pass_id=self._passes,
            kind=KIND_FULL if is_full else KIND_INCREMENTAL,
            started_ns=self._clock(),
        )
        t0 = time.perf_counter()
        outcome = "interrupted"
        figures: CatalogFigures | None = None
        try:
            errors = await self._run(state, summary, is_full)
            summary.error = "; ".join(errors) if errors else None
            outcome = "failed" if errors else "ok"
            # Even a failed pass may have applied pages: count what joins as unknown now. The
            # count reads every count of the source, so a pass that changed nothing (most
            # webhook-triggered and periodic ones) leaves it to the next that does.
            if is_full or summary.changes:
                figures = await refresh_figures(self._store, source)
        finally:
            summary.finished_ns = self._clock()
            elapsed = time.perf_counter() - t0
            CATALOG_PASSES.labels(source=source, kind=summary.kind, outcome=outcome).inc()
            CATALOG_PASS_SECONDS.labels(source=source, kind=summary.kind).observe(elapsed)
            log.info(
                "catalog_pass",
                source=source,
                kind=summary.kind,
                outcome=outcome,
                pages=summary.pages,
                objects=summary.counts,
                changes=summary.changes,
                removed=summary.removed,
                skipped=summary.skipped,
                duration_ms=round(elapsed * 1000, 1),
                error=summary.error,
                unknown_variations=None if figures is None else figures.unknown_variations,
            )
        self.last_summary = summary
        return summary

    def _wants_full(self, state: CatalogState) -> bool:
        if state.latest_time is None or state.last_full_at is None:
            return True
        age_ns = self._clock() - parse_ns(state.last_full_at)
        return age_ns > self.options.full_interval * NS_PER_S

    async def _run(self, state: CatalogState, summary: PassSummary, full: bool) -> list[str]:
        """The locations, then the catalog chain(s); the state is saved either way. Returns the
        errors (empty: the pass succeeded)."""
        errors: list[str] = []
        location_error = await self._sync_locations(summary)
        if location_error is not None:
            errors.append(f"locations: {location_error}")
        chain = _Chain()
        try:
            await self._read_catalog(state, chain, summary, full)
        except SyncdError as exc:
            log.warning("catalog_chain_failed", source=state.source, **exc.fields())
            errors.append(f"catalog: {exc.message}")
            await self._save(replace(state, last_error=exc.message))
            return errors
        finished = now_rfc3339()
        await self._save(
            replace(
                state,
                latest_time=self._next_watermark(state, chain),
                last_full_at=finished if full else state.last_full_at,
                last_success_at=finished if not errors else state.last_success_at,
                last_error="; ".join(errors) if errors else None,
            )
        )
        return errors

    async def _sync_locations(self, summary: PassSummary) -> str | None:
        """Mirror every location with its details; the error text when they cannot be listed."""
        if self._locations is None:
            return None
        source = self.options.source
        try:
            found = await self._locations.locations()
        except SyncdError as exc:
            log.warning("catalog_locations_failed", source=source, **exc.fields())
            return exc.message
        rows = [LocationRow(loc.id, loc.name, loc.status, loc.timezone) for loc in found]
        if rows == self._locations_applied:
            return None  # applied already: nothing could differ from what is stored
        recorded_at = now_rfc3339()
        self._locations_applied = None
        result = await self._store.write_inline(
            lambda conn: catalog_store.apply_locations(conn, source, rows, recorded_at)
        )
        self._locations_applied = rows
        summary.changes += result.changes
        return None

    async def _read_catalog(
        self, state: CatalogState, chain: _Chain, summary: PassSummary, full: bool
    ) -> None:
        overlap_ns = int(self.options.overlap * NS_PER_S)
        begin = None if full or state.latest_time is None else _minus(state.latest_time, overlap_ns)
        await self._read_chain(chain, summary, begin, track_seen=full)
        if not full:
            return
        # Objects that changed while the listing ran may have moved behind its cursor: read what
        # changed since the chain began before anything unseen is marked deleted.
        if chain.latest_time is not None:
            again = _Chain(
                seen_items=chain.seen_items,
                seen_variations=chain.seen_variations,
                started_empty=chain.started_empty,
            )
            await self._read_chain(again, summary, _minus(chain.latest_time, overlap_ns), True)
            chain.latest_time = _later(chain.latest_time, again.latest_time)
        summary.removed += await self._mark_unseen(chain)

    async def _read_chain(
        self, chain: _Chain, summary: PassSummary, begin_time: str | None, track_seen: bool
    ) -> None:
        """Read one cursor chain to its end, applying its pages while the next one is fetched and
        parsed (``prefetch``); an invalid cursor restarts the chain (re-applied pages change
        nothing).

        A full chain (``track_seen``) applies pages in batches of ``full_batch_objects``, one
        write transaction each: a first sync of a large catalog then pays one commit (one fsync,
        and one copy into the WAL of each B-tree page it touched) per batch instead of per page.
        That is safe because nothing here moves the watermark: the state is saved once the whole
        pass is read, after every batch it covers committed; a crash loses at most the batch in
        flight, which the next pass re-reads. Pages read before an upstream error are applied
        before the error propagates, as they would have been one by one.
        """
        batch_objects = self.options.full_batch_objects if track_seen else 1
        for restart in range(self.options.cursor_restarts + 1):
            try:
                async with WriteBehind[CatalogPage](
                    lambda pages: self._apply(pages, chain, summary, track_seen),
                    batch_objects,
                    lambda page: len(page.objects),
                ) as writes:
                    async for page in prefetch(self._pages(begin_time)):
                        await writes.add(page)
                return
            except UpstreamError as exc:
                if not exc.context.get("cursor_invalid") or restart == self.options.cursor_restarts:
                    raise
                log.warning(
                    "catalog_chain_restarted",
                    source=self.options.source,
                    reason="invalid_cursor",
                    restart=restart + 1,
                    pages=chain.pages,
                )

    async def _pages(self, begin_time: str | None) -> AsyncIterator[CatalogPage]:
        """One cursor chain's pages, in order, from its first."""
        cursor: str | None = None
        while True:
            page = await self._catalog.search_catalog(begin_time=begin_time, cursor=cursor)
            yield page
            cursor = page.cursor
            if cursor is None:
                return

    async def _apply(
        self, pages: list[CatalogPage], chain: _Chain, summary: PassSummary, track_seen: bool
    ) -> None:
        """Apply ``pages`` in one write transaction, each page as it would be alone (in order:
        an object on two pages is applied twice, the log telling both changes)."""
        if not pages:
            return
        if track_seen:
            self._page_applied = None
        elif len(pages) == 1 and pages[0].objects == self._page_applied:
            [page] = pages
            self._count(page, catalog_store.CatalogResult(0, 0, len(page.objects)), chain, summary)
            return
        source = self.options.source
        rows = [(page.items, page.variations) for page in pages]
        recorded_at = now_rfc3339()

        async def work(conn: aiosqlite.Connection) -> list[catalog_store.CatalogResult]:
            if track_seen and chain.started_empty is None:
                chain.started_empty = not await catalog_store.holds_catalog(conn, source)
            # A first sync into an empty mirror looks up only what it applied itself (a superset
            # of what is stored: ids are noted before their transaction commits).
            known = bool(track_seen and chain.started_empty)
            results = []
            for items, variations in rows:
                a = await catalog_store.apply_items(
                    conn, source, items, recorded_at, stored_ids=chain.seen_items if known else None
                )
                b = await catalog_store.apply_variations(
                    conn,
                    source,
                    variations,
                    recorded_at,
                    stored_ids=chain.seen_variations if known else None,
                )
                if track_seen:
                    chain.seen_items.update(i.item_id for i in items)
                    chain.seen_variations.update(v.variation_id for v in variations)
                results.append(
                    catalog_store.CatalogResult(
                        a.changes + b.changes, a.stale + b.stale, a.unchanged + b.unchanged
                    )
                )
            return results

        self._page_applied = None
        results = await self._store.write_inline(work)
        if not track_seen and len(pages) == 1:
            self._page_applied = pages[0].objects
        for page, result in zip(pages, results, strict=True):
            self._count(page, result, chain, summary)

    def _count(
        self,
        page: CatalogPage,
        result: catalog_store.CatalogResult,
        chain: _Chain,
        summary: PassSummary,
    ) -> None:
        """Add one applied page to the chain's and the pass's figures."""
        source = self.options.source
        if chain.latest_time is None:  # the same on every page of one chain
            chain.latest_time = page.latest_time
        if page.objects:
            newest = max(o.updated_at_ns for o in page.objects)
            chain.newest_ns = newest if chain.newest_ns is None else max(chain.newest_ns, newest)
        chain.pages += 1
        chain.objects += len(page.objects)
        chain.changes += result.changes
        chain.stale += result.stale
        summary.pages += 1
        summary.counts += len(page.objects)
        summary.changes += result.changes
        summary.skipped += page.skipped
        CATALOG_OBJECTS.labels(source=source).inc(len(page.objects))
        log.debug(
            "catalog_page",
            source=source,
            objects=len(page.objects),
            changes=result.changes,
            stale=result.stale,
            skipped=page.skipped,
        )

    async def _mark_unseen(self, chain: _Chain) -> int:
        self._page_applied = None  # what it marks deleted, a page applied before may revive
        source = self.options.source
        recorded_at = now_rfc3339()
        return await self._store.write_inline(
            lambda conn: catalog_store.mark_unseen_deleted(
                conn,
                source,
                seen_items=chain.seen_items,
                seen_variations=chain.seen_variations,
                recorded_at=recorded_at,
            )
        )

    def _next_watermark(self, state: CatalogState, chain: _Chain) -> str | None:
        """Square's ``latest_time`` of the chain, else the newest ``updated_at`` read; never
        moving backwards, unchanged when the answer named neither."""
        candidate = chain.latest_time
        if candidate is None and chain.newest_ns is not None:
            candidate = format_ns(chain.newest_ns)
        return _later(state.latest_time, candidate)

    async def _save(self, state: CatalogState) -> None:
        self._state = None
        await self._store.write_inline(lambda conn: catalog_store.save_state(conn, state))
        self._state = state


async def refresh_figures(store: Store, source: str) -> CatalogFigures | None:
    """Count and store what ``syncd status`` shows of the source's catalog mirror (variations,
    counts of unknown variations): after each full catalog pass, each catalog pass that changed
    something, and each full counts pass: the passes that change it most. The counting reads every count of the source (some 0.35 s for 1,000,000:
    bench/catalog_figures.py) on the reader connection, so the writer is held only for the one-row
    update. None (nothing stored) when the source's catalog was never read, or the store failed
    (logged)."""
    # Taken before the read's snapshot begins: the figures are at least this new.
    checked_at = now_rfc3339()
    try:
        figures = await store.read_inline(lambda conn: catalog_store.count_figures(conn, source))
        if figures is not None:
            await store.write_inline(
                lambda conn: catalog_store.save_figures(conn, source, figures, checked_at)
            )
    except SyncdError as exc:  # bookkeeping: the pass that asked stands as it ended
        log.warning("catalog_figures_failed", source=source, **exc.fields())
        return None
    return figures


def _minus(rfc3339: str, ns: int) -> str:
    return format_ns(parse_ns(rfc3339) - ns)


def _later(a: str | None, b: str | None) -> str | None:
    """The later of two RFC 3339 instants (either may be None)."""
    if a is None or b is None:
        return a if b is None else b
    return a if parse_ns(a) >= parse_ns(b) else b
