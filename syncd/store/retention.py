"""Change-log retention: pruning the oldest entries by age (``retain_days``) and count
(``retain_max_rows``).

Entries leave from the front only, so the kept log stays contiguous and the first kept seq tells a
reader exactly what is gone. Deletes run in batches of their own transactions, so the writer is
never held for long. Age is judged by ``recorded_at``, which grows with seq: pruning stops at the
first entry young enough to keep (should the clock have stepped back, a few older entries may stay a
while longer; none is ever pruned early).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import aiosqlite
import structlog

from syncd.metrics import CHANGELOG_PRUNED
from syncd.store import Store, changelog
from syncd.timeutil import NS_PER_S, format_ns, now_ns

log = structlog.get_logger("syncd.store.retention")

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What to keep: entries younger than ``days`` (0: any age), at most ``max_rows`` (0: any)."""

    days: float = 0.0
    max_rows: int = 0

    @property
    def enabled(self) -> bool:
        return self.days > 0 or self.max_rows > 0


async def prune_batch(
    conn: aiosqlite.Connection, *, cutoff: str | None, max_rows: int, batch: int
) -> int:
    """Delete up to ``batch`` of the oldest entries the policy no longer keeps; return how many.

    ``cutoff``: entries recorded before it go (None: no age limit). ``max_rows``: keep the newest
    ``max_rows`` (0: no limit).
    """
    first = await changelog.oldest(conn)
    if first is None:
        return 0
    head = await changelog.head(conn)
    end = min(first + batch, head + 1)  # delete seq < end at most: one batch, from the front
    boundary = first
    if max_rows > 0:
        boundary = max(boundary, head - max_rows + 1)
    if cutoff is not None:
        # Walks at most one batch of rows in seq order: the first entry young enough to keep.
        async with conn.execute(
            "SELECT seq FROM changes WHERE seq >= ? AND seq < ? AND recorded_at >= ?"
            " ORDER BY seq LIMIT 1",
            (first, end, cutoff),
        ) as cur:
            row = await cur.fetchone()
        boundary = max(boundary, int(row[0]) if row else end)
    stop = min(boundary, end)
    if stop <= first:
        return 0
    async with conn.execute("DELETE FROM changes WHERE seq < ?", (stop,)) as cur:
        return cur.rowcount


class ChangelogPruner:
    """Prunes the change log every ``interval`` seconds while the daemon runs."""

    def __init__(
        self, store: Store, policy: RetentionPolicy, *, interval: float, batch: int = 10_000
    ) -> None:
        self._store = store
        self.policy = policy
        self.interval = interval
        self._batch = batch
        self.pruned = 0

    async def prune_once(self, *, now: int | None = None) -> int:
        """One round: delete batch after batch until the policy is met; return the rows deleted."""
        policy = self.policy
        if not policy.enabled:
            return 0
        at = now_ns() if now is None else now
        cutoff = format_ns(at - int(policy.days * DAY_S * NS_PER_S)) if policy.days > 0 else None
        total = 0
        while True:
            deleted = await self._store.write(
                lambda conn: prune_batch(
                    conn, cutoff=cutoff, max_rows=policy.max_rows, batch=self._batch
                )
            )
            total += deleted
            if deleted < self._batch:
                break
        if total:
            self.pruned += total
            CHANGELOG_PRUNED.inc(total)
            oldest = await self._store.read(changelog.retained_from)
            log.info(
                "changelog_pruned",
                rows=total,
                oldest_seq=oldest,
                retain_days=policy.days,
                retain_max_rows=policy.max_rows,
            )
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Prune at once, then every ``interval`` seconds, until ``stop``. A failed round is logged
        and retried at the next interval; it never stops the daemon."""
        while not stop.is_set():
            try:
                await self.prune_once()
            except Exception as exc:  # retention must never take the daemon down
                log.error("changelog_prune_failed", error=str(exc), error_type=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
