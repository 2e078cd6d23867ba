"""``GET /metrics`` on the admin listener: every syncd metric in the Prometheus text format.

Counters and histograms move where the work happens. The state gauges (watermark lag, last good
pass, change-log range, inbox backlog, jobs by state) are read from the database in one snapshot at
scrape time, so they are exact and cost nothing between scrapes; so are the counts of unknown
variations, as the passes last stored them (counting them live would read every count).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiosqlite
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from syncd.metrics import (
    CATALOG_UNKNOWN_VARIATIONS,
    CHANGELOG_HEAD,
    CHANGELOG_OLDEST,
    JOBS_BY_STATE,
    REGISTRY,
    SYNC_LAST_SUCCESS,
    WATERMARK_LAG,
    WEBHOOK_INBOX_BACKLOG,
)
from syncd.store import Store, queries, sync_state
from syncd.store import catalog as catalog_store
from syncd.timeutil import NS_PER_S, now_ns, parse_ns


async def _snapshot(conn: aiosqlite.Connection) -> dict[str, Any]:
    state = await queries.service_state(conn)
    state["partitions"] = await sync_state.partitions(conn)
    state["catalog"] = await catalog_store.overview(conn)
    return state


def apply_snapshot(snapshot: dict[str, Any], now: int) -> None:
    """Set the scrape-time gauges from one database snapshot (``now`` in ns)."""
    CHANGELOG_HEAD.set(snapshot["changelog"]["high_water"])
    CHANGELOG_OLDEST.set(snapshot["changelog"]["retained_from"])
    for gauge in (
        WATERMARK_LAG,
        SYNC_LAST_SUCCESS,
        WEBHOOK_INBOX_BACKLOG,
        JOBS_BY_STATE,
        CATALOG_UNKNOWN_VARIATIONS,
    ):
        gauge.clear()  # a partition, source or state that disappeared must not linger
    for p in snapshot["partitions"]:
        if p.watermark is not None:
            WATERMARK_LAG.labels(source=p.source, partition=p.partition).set(
                (now - parse_ns(p.watermark)) / NS_PER_S
            )
        if p.last_success_at is not None:
            SYNC_LAST_SUCCESS.labels(source=p.source, partition=p.partition).set(
                parse_ns(p.last_success_at) / NS_PER_S
            )
    for source, events in snapshot["backlog"].items():
        WEBHOOK_INBOX_BACKLOG.labels(source=source).set(events)
    for state, jobs in snapshot["jobs"].items():
        JOBS_BY_STATE.labels(state=state).set(jobs)
    for source, catalog in snapshot.get("catalog", {}).items():
        if catalog["unknown_variations"] is not None:  # not counted yet: no series, not 0
            CATALOG_UNKNOWN_VARIATIONS.labels(source=source).set(catalog["unknown_variations"])


def add_metrics_routes(
    app: web.Application, store: Store, *, clock: Callable[[], int] = now_ns
) -> None:
    """Register ``GET /metrics`` (behind the admin app's bearer token, like every admin route)."""

    async def metrics(request: web.Request) -> web.Response:
        snapshot = await store.read(_snapshot)
        # No await between setting the gauges and rendering them: one consistent view.
        apply_snapshot(snapshot, clock())
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.router.add_get("/metrics", metrics)
