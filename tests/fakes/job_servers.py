"""Fake job APIs for the three dialects: one aiohttp app on 127.0.0.1 (port 0) walking each job
through a scripted sequence of answers, plus an in-process provider for scale tests.

A job's script is a list of ``Step``s answered in order, the last one repeating; an unscripted job
answers 404. The server records when each request arrived (to count requests per second), how many
were in flight at once, and the Authorization header, and serves export files under ``/exports/``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from syncd.jobs.ports import JobRef, NotFound, Observation
from syncd.jobs.states import JobState

INVENTORY_PATH = "/commerce/inventory/v1/queue/{job}"
BULK_PATH = "/business_units/{bu}/sales_orders/bulk/{job}"
COMMERCE_PATH = "/v2/jobs/{job}"


@dataclass(frozen=True)
class Step:
    """One scripted answer. ``body`` is JSON-encoded unless ``raw`` is given; ``delay`` holds the
    answer back (to keep requests in flight)."""

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


# --- bodies per dialect --------------------------------------------------------------------------


def inventory(
    status: str,
    *,
    success: bool | None = None,
    messages: tuple[str, ...] = (),
    item_count: int | None = None,
    type_: str = "REFRESH",
    job_id: int = 1,
) -> Step:
    """A seed-000 inventory job object."""
    body: dict[str, Any] = {
        "jobID": job_id,
        "tenantID": 100,
        "locationCode": "WH1",
        "type": type_,
        "status": status,
        "messages": list(messages),
        "added": "2026-01-01T00:00:00Z",
    }
    if success is not None:
        body["success"] = success
    if item_count is not None:
        body["itemCount"] = item_count
    return Step(body=body)


def bulk(
    status: str,
    *,
    failed: int = 0,
    processed: int | None = None,
    total: int | None = None,
    job_id: str = "J",
) -> Step:
    """A seed-001 bulk sales-order job (``failed`` failed orders with one failed line each)."""
    data: dict[str, Any] = {
        "jobId": job_id,
        "status": status,
        "failedOrders": [
            {
                "customerOrderNumber": f"SO-{i}",
                "message": "invalid SKU",
                "item": {"echo": "x" * 50},
                "lines": [{"customerLineNumber": "1", "message": "SKU not found"}],
            }
            for i in range(failed)
        ],
    }
    if processed is not None or total is not None:
        data["progress"] = {"processed": processed or 0, "total": total or 0}
    return Step(body={"data": data})


def commerce(
    status: str,
    *,
    error: str | None = None,
    href: str | None = None,
    job_type: str = "order_export",
    job_id: str = "00000000-0000",
) -> Step:
    """A seed-002 commerce job."""
    data: dict[str, Any] = {
        "id": job_id,
        "type": "job",
        "job_type": job_type,
        "status": status,
        "timestamps": {"created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:01Z"},
        "link": {"href": href or ""},
    }
    if error is not None:
        data["error"] = error
    return Step(body={"data": data})


def missing() -> Step:
    """404 in the commerce errors envelope (the other dialects' 404s parse the same way)."""
    return Step(
        404, {"errors": [{"status": 404, "title": "Resource Not Found", "detail": "Job Not Found"}]}
    )


def server_error() -> Step:
    return Step(500, {"errors": [{"status": 500, "title": "Internal server error"}]})


def rate_limited(retry_after: int = 1) -> Step:
    return Step(
        429,
        {"errors": [{"status": 429, "title": "Too Many Requests"}]},
        headers={"Retry-After": str(retry_after)},
    )


# --- the server ----------------------------------------------------------------------------------


@dataclass
class FakeJobServer:
    """The running fake: script jobs with ``script``; inspect ``requests`` and ``max_in_flight``."""

    url: str = ""
    scripts: dict[str, list[Step]] = field(default_factory=dict)
    requests: list[tuple[float, str]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    files: dict[str, bytes | int] = field(default_factory=dict)  # an int: answer that status
    in_flight: int = 0
    max_in_flight: int = 0

    def script(self, job_id: str, *steps: Step) -> None:
        self.scripts[job_id] = list(steps)

    def count(self, job_id: str) -> int:
        return sum(1 for _, j in self.requests if j == job_id)

    def max_in_window(self, window: float = 1.0) -> int:
        """Most requests that arrived within any ``window`` seconds (half-open)."""
        times = sorted(t for t, _ in self.requests)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    async def handle(self, request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["job"]
        self.requests.append((time.monotonic(), job_id))
        self.auth.append(request.headers.get("Authorization"))
        self.paths.append(request.path_qs)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            steps = self.scripts.get(job_id)
            step = missing() if not steps else (steps.pop(0) if len(steps) > 1 else steps[0])
            if step.delay:
                await asyncio.sleep(step.delay)
            raw = step.raw if step.raw is not None else orjson.dumps(step.body)
            return web.Response(
                status=step.status,
                body=raw,
                headers={"Content-Type": "application/json", **step.headers},
            )
        finally:
            self.in_flight -= 1

    async def export(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        content = self.files.get(name)
        if content is None or isinstance(content, int):
            return web.Response(status=content or 404)
        if request.query.get("chunked"):  # no Content-Length: the limit must hold while reading
            resp = web.StreamResponse(headers={"Content-Type": "text/csv"})
            await resp.prepare(request)
            for start in range(0, len(content), 1024):
                await resp.write(content[start : start + 1024])
            await resp.write_eof()
            return resp
        return web.Response(body=content, content_type="text/csv")


@asynccontextmanager
async def serve_jobs() -> AsyncIterator[FakeJobServer]:
    """Serve every dialect's status route (and ``/exports/{name}``) on 127.0.0.1, port 0."""
    fake = FakeJobServer()
    app = web.Application()
    for path in (INVENTORY_PATH, BULK_PATH, COMMERCE_PATH):
        app.router.add_get(path, fake.handle)
    app.router.add_get("/exports/{name}", fake.export)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        fake.url = f"http://{host}:{port}"
        yield fake
    finally:
        await runner.cleanup()


# --- an in-process provider (no HTTP), for scale tests and the benchmark -------------------------


class InstantProvider:
    """A JobProvider answering from memory: each job is ``running`` for ``polls_to_finish - 1``
    polls, then ``succeeded``. Counts polls and request starts (monotonic) like the fake server."""

    def __init__(
        self,
        name: str = "fast",
        *,
        polls_to_finish: int = 2,
        latency: float = 0.0,
        record: bool = False,
    ) -> None:
        self._name = name
        self.polls_to_finish = polls_to_finish
        self.latency = latency
        self.record = record
        self.polls: dict[str, int] = {}
        self.starts: list[float] = []
        self.total = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def base_url(self) -> str:
        return "http://127.0.0.1:9"

    @property
    def affects_inventory(self) -> bool:
        return False

    def check(self, job_id: str, params: Mapping[str, str]) -> None:
        return None

    async def fetch(self, job: JobRef) -> Observation | NotFound:
        if self.record:
            self.starts.append(time.monotonic())
        self.total += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        n = self.polls[job.job_id] = self.polls.get(job.job_id, 0) + 1
        if n >= self.polls_to_finish:
            return Observation(JobState.SUCCEEDED, "DONE")
        return Observation(JobState.RUNNING, "WORKING", progress={"polls": n})

    async def download(self, url: str, dest: Path, *, max_bytes: int) -> int:
        raise NotImplementedError
