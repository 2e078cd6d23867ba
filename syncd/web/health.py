"""Health probes on the public listener: ``GET /healthz`` (liveness), ``GET /readyz`` (readiness).

``/healthz`` answers 200 whenever the process serves HTTP. ``/readyz`` answers 503 until the
database is open and the first sync pass has completed, and again whenever the last successful pass
is older than ``max_staleness`` seconds; 200 otherwise. Both bodies are small JSON objects saying
why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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


@dataclass(slots=True)
class Readiness:
    """What ``/readyz`` looks at: the store, the trigger's record of passes, the staleness limit."""

    store: Store
    trigger: SyncTrigger
    max_staleness: float
    clock: Callable[[], float] = field(default=time.monotonic)

    def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, JSON body with ``reason`` and, when known, the last good pass's age)."""
        if self.store.closed:
            return False, {"status": "not_ready", "reason": DATABASE_CLOSED}
        last = self.trigger.last_success
        if last is None:
            body: dict[str, Any] = {
                "status": "not_ready",
                "reason": FIRST_PASS_PENDING,
                "passes": self.trigger.passes,
            }
            if self.trigger.last_error:
                body["last_error"] = self.trigger.last_error
            return False, body
        age = round(self.clock() - last, 3)
        if age > self.max_staleness:
            return False, {
                "status": "not_ready",
                "reason": STALE,
                "last_success_age_s": age,
                "max_staleness_s": self.max_staleness,
                "last_error": self.trigger.last_error,
            }
        return True, {"status": "ready", "reason": READY, "last_success_age_s": age}


def add_health_routes(app: web.Application, readiness: Readiness) -> None:
    """Register ``/healthz`` and ``/readyz`` (GET and HEAD)."""

    async def healthz(_: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready, body = readiness.check()
        return json_response(body, status=200 if ready else 503)

    app.router.add_get(HEALTHZ_ROUTE, healthz)
    app.router.add_get(READYZ_ROUTE, readyz)
