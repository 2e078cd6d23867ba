"""Health probes on the public listener: ``GET /healthz`` (liveness), ``GET /readyz`` (readiness).

``/healthz`` answers 200 whenever the process serves HTTP. For one source, ``/readyz`` answers 503
until the database is open and the source's first pass has completed, again whenever its last
successful pass is older than ``max_staleness`` seconds or its grant is revoked; 200 otherwise.
With several sources see :class:`Readiness`. Both bodies are small JSON objects saying why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from syncd.store import Store
from syncd.sync.trigger import SyncTrigger
from syncd.web.app import json_response

HEALTHZ_ROUTE = "/healthz"
READYZ_ROUTE = "/readyz"

READY = "ready"
DATABASE_CLOSED = "database_closed"
FIRST_PASS_PENDING = "first_pass_pending"
STALE = "stale"
UNAUTHORIZED = "unauthorized"
NO_SOURCES = "no_sources"


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """What readiness reads of one source: its trigger's record of passes, and its grant."""

    trigger: SyncTrigger
    unauthorized: Callable[[], bool] = field(default=lambda: False)


@dataclass(slots=True)
class Readiness:
    """What ``/readyz`` looks at: the store, each source's record of passes, the staleness limit.

    The daemon is ready while the database is open and at least one source is; the sources that
    are not (first pass pending, stale, unauthorized) are listed, so one revoked seller does not
    take the app's webhook URL out of a load balancer. ``strict`` (``/readyz?strict=1``) asks for
    every source, ``/readyz?source=NAME`` for one.
    """

    store: Store
    sources: Callable[[], Mapping[str, SourceHealth]]
    max_staleness: float
    clock: Callable[[], float] = field(default=time.monotonic)

    def source_check(self, health: SourceHealth) -> tuple[bool, dict[str, Any]]:
        """(ready, JSON body) of one source."""
        trigger = health.trigger
        if health.unauthorized():
            return False, {
                "status": "not_ready",
                "reason": UNAUTHORIZED,
                "last_error": trigger.last_error,
            }
        last = trigger.last_success
        if last is None:
            body: dict[str, Any] = {
                "status": "not_ready",
                "reason": FIRST_PASS_PENDING,
                "passes": trigger.passes,
            }
            if trigger.last_error:
                body["last_error"] = trigger.last_error
            return False, body
        age = round(self.clock() - last, 3)
        if age > self.max_staleness:
            return False, {
                "status": "not_ready",
                "reason": STALE,
                "last_success_age_s": age,
                "max_staleness_s": self.max_staleness,
                "last_error": trigger.last_error,
            }
        return True, {"status": "ready", "reason": READY, "last_success_age_s": age}

    def check(self, *, strict: bool = False) -> tuple[bool, dict[str, Any]]:
        """(ready, JSON body). With one source the body is that source's, as before sources
        existed, plus ``sources``; with several, ``reason`` is the first not-ready source's."""
        if self.store.closed:
            return False, {"status": "not_ready", "reason": DATABASE_CLOSED}
        checks = {name: self.source_check(h) for name, h in sorted(self.sources().items())}
        if not checks:
            return False, {"status": "not_ready", "reason": NO_SOURCES}
        not_ready = [name for name, (ok, _) in checks.items() if not ok]
        ready = not not_ready if strict else len(not_ready) < len(checks)
        if len(checks) == 1:
            body = dict(next(iter(checks.values()))[1])
        else:
            body = {
                "status": "ready" if ready else "not_ready",
                "reason": READY if ready else checks[not_ready[0]][1]["reason"],
            }
        body["sources"] = {name: detail for name, (_, detail) in checks.items()}
        body["not_ready"] = not_ready
        return ready, body


def add_health_routes(app: web.Application, readiness: Readiness) -> None:
    """Register ``/healthz`` and ``/readyz`` (GET and HEAD)."""

    async def healthz(_: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        name = request.query.get("source")
        if name is not None:
            health = readiness.sources().get(name)
            if health is None:
                return json_response({"status": "not_found", "reason": "no such source"}, 404)
            ready, body = readiness.source_check(health)
        else:
            ready, body = readiness.check(strict=request.query.get("strict") in ("1", "true"))
        return json_response(body, status=200 if ready else 503)

    app.router.add_get(HEALTHZ_ROUTE, healthz)
    app.router.add_get(READYZ_ROUTE, readyz)
