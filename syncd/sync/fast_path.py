"""The webhook fast path (issue 14): apply the counts an ``inventory.count.updated`` event carries at
once, instead of waiting for the coalesced pull.

The pull stays the truth. The fast path writes through the same ``apply_page`` as a pass, so the
same rules hold: a count older than the stored one never overwrites it (a replayed or late event
changes nothing), equal values log nothing, and a real change is one entry. The pass that the same
webhook triggers then re-reads the count, finds it equal and logs nothing.

Only counts the mirror already holds are updated: a new count (a new variation or location) waits
for that pass, and so a late event can never bring back a count a full pass removed (there is no
row left to compare it with).

Only counts the pull would mirror are applied: the source's ``states`` and ``catalog_object_ids``
filters and its locations (configured, else discovered) decide, so a count the next full pass would
remove is never written. A row the fast path writes while a full pass runs is stamped as seen by
that pass; otherwise it keeps the stamp it had, so the fast path never makes a full pass take a live
row for a vanished one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite
import structlog

from syncd.errors import SyncdError, UpstreamDataError
from syncd.metrics import FAST_PATH_COUNTS, FAST_PATH_EVENTS
from syncd.model import UNTRACKED_STATES, InventoryCount
from syncd.store import Store
from syncd.store import counts as counts_store
from syncd.timeutil import now_rfc3339

log = structlog.get_logger("syncd.sync")

# Outcomes of each count offered to the fast path: the ``outcome`` label of the metric.
CHANGED = "changed"
UNCHANGED = "unchanged"
STALE = "stale"
UNKNOWN = "unknown"
OUT_OF_SCOPE = "out_of_scope"

# Reads the counts of one decoded event; raises ``UpstreamDataError`` for a malformed one.
CountParser = Callable[[Any], Sequence[InventoryCount]]


@dataclass(frozen=True, slots=True)
class FastPathOptions:
    """The source's filters, as the pull applies them (empty: no filter)."""

    source: str
    states: tuple[str, ...] = ()
    catalog_object_ids: tuple[str, ...] = ()


class FastPath:
    """Applies one source's webhook counts. ``locations`` and ``full_pass`` are read at write time:
    the engine's current location scope (empty: every location) and its running full pass id (None
    when no full pass runs).

    ``submit_event`` queues a decoded event (its counts parsed in the drain's batch, off the
    request's path); one drain task per source applies everything queued in one
    transaction (after ``window`` seconds, and again ``window`` seconds after each batch for what
    arrived meanwhile), so a burst of webhooks costs a few commits, not one each, and does not
    crowd the inbox's own commits off the writer.
    """

    def __init__(
        self,
        store: Store,
        options: FastPathOptions,
        *,
        locations: Callable[[], Sequence[str]],
        full_pass: Callable[[], int | None],
        window: float = 0.0,
    ) -> None:
        self._store = store
        self._window = window
        self.options = options
        self._locations = locations
        self._full_pass = full_pass
        tracked = frozenset(options.states) - UNTRACKED_STATES if options.states else None
        self._states = tracked
        self._objects = frozenset(options.catalog_object_ids) or None
        self._pending: list[tuple[Any, CountParser]] = []  # (decoded event, its parser)
        self._drainer: asyncio.Task[None] | None = None

    def in_scope(self, count: InventoryCount, locations: Collection[str]) -> bool:
        """Whether the pull would return ``count`` (so the mirror may hold it)."""
        return (
            (self._states is None or count.state in self._states)
            and (self._objects is None or count.catalog_object_id in self._objects)
            and (not locations or count.location_id in locations)
        )

    def submit_event(self, event: Any, parse: CountParser) -> None:
        """Queue one decoded event; ``parse`` reads its counts when the batch is drained. An event
        whose counts fail validation is counted ``invalid`` and logged, and left to the pass the
        same event triggers."""
        self._pending.append((event, parse))
        drainer = self._drainer
        if drainer is None or drainer.done():
            self._drainer = asyncio.create_task(
                self._drain(), name=f"fast-path:{self.options.source}"
            )

    async def wait_idle(self) -> None:
        """Return once everything submitted so far has been applied (or given up on)."""
        while self._drainer is not None and not self._drainer.done():
            await asyncio.shield(self._drainer)

    async def aclose(self) -> None:
        """Stop draining; what is still queued is left to the passes (its events are in the
        inbox, unprocessed, so the next pass covers them)."""
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
        self._pending.clear()

    async def _drain(self) -> None:
        if self._window:
            await asyncio.sleep(self._window)  # let a burst gather into one transaction
        while self._pending:
            batch, self._pending = self._pending, []
            counts, invalid = self._counts(batch)
            events = len(batch) - invalid
            if not events:
                continue
            try:
                await self.apply(counts)
            except SyncdError as exc:  # the store is closing or failing: the pass covers it
                FAST_PATH_EVENTS.labels(source=self.options.source, outcome="failed").inc(events)
                log.warning("fast_path_failed", source=self.options.source, **exc.fields())
            else:
                FAST_PATH_EVENTS.labels(source=self.options.source, outcome="applied").inc(events)
            if self._window and self._pending:
                # Busy: gather the next batch too, so a source commits at most about once per
                # window (each commit an fsync the inbox's own commits wait behind).
                await asyncio.sleep(self._window)

    def _counts(self, batch: list[tuple[Any, CountParser]]) -> tuple[list[InventoryCount], int]:
        """The counts of a drained batch, in arrival order, and the number of its events whose
        counts failed validation (counted and logged here)."""
        source = self.options.source
        counts: list[InventoryCount] = []
        invalid = 0
        for event, parse in batch:
            try:
                counts.extend(parse(event))
            except UpstreamDataError as exc:
                invalid += 1
                log.warning("fast_path_invalid", source=source, **exc.fields())
        if invalid:
            FAST_PATH_EVENTS.labels(source=source, outcome="invalid").inc(invalid)
        return counts, invalid

    async def apply(self, counts: Sequence[InventoryCount]) -> None:
        """Apply the in-scope ``counts`` in one transaction; one entry per real change."""
        source = self.options.source
        locations = frozenset(self._locations())
        wanted = [c for c in counts if self.in_scope(c, locations)]
        skipped = len(counts) - len(wanted)
        result = counts_store.ApplyResult(0, 0, 0, None)
        if wanted:
            recorded_at = now_rfc3339()

            async def work(conn: aiosqlite.Connection) -> counts_store.ApplyResult:
                # Read inside the write: the full pass that began before this transaction is the
                # one whose removal rule must see these rows.
                running = self._full_pass() or 0
                return await counts_store.apply_page(
                    conn,
                    source,
                    wanted,
                    pass_id=running,
                    recorded_at=recorded_at,
                    keep_seen=True,
                    known_only=True,
                )

            # The unit awaits nothing but its connection: one trip to the writer's thread for the
            # whole batch, not one per statement (each trip a wake-up of this loop, issue 13).
            result = await self._store.write_inline(work)
        for outcome, n in (
            (CHANGED, result.changes),
            (UNCHANGED, result.unchanged),
            (STALE, result.stale),
            (UNKNOWN, result.unknown),
            (OUT_OF_SCOPE, skipped),
        ):
            if n:
                FAST_PATH_COUNTS.labels(source=source, outcome=outcome).inc(n)
        log.info(
            "fast_path_applied",
            source=source,
            counts=len(counts),
            changes=result.changes,
            unchanged=result.unchanged,
            stale=result.stale,
            unknown=result.unknown,
            out_of_scope=skipped,
            last_seq=result.last_seq,
        )
