"""A fault-injecting proxy in front of the simulator (or any batch-retrieve upstream).

It forwards ``POST /v2/inventory/counts/batch-retrieve`` to the real upstream and, with configured
probabilities drawn from a seeded RNG, answers instead with: 500/502/503, 429 with or without
``Retry-After``, a connection reset, a stall longer than the client's timeout, a truncated or malformed
JSON body, ``INVALID_CURSOR`` for a request that carries a cursor, and — on real answers — stale copies
of rows it has passed before (older ``calculated_at``, other quantity) and rows repeated from the
previous page. Used by the chaos tests and ``make soak``; never by the daemon itself.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from syncd.timeutil import format_ns, parse_ns

BATCH_RETRIEVE_PATH = "/v2/inventory/counts/batch-retrieve"
FAULT_KINDS = (
    "http_500",
    "http_502",
    "http_503",
    "http_429_retry_after",
    "http_429",
    "reset",
    "stall",
    "truncated",
    "malformed",
    "invalid_cursor",
    "stale_rows",
    "duplicate_rows",
)


@dataclass
class ChaosConfig:
    """Probability (0..1) of each fault per request; ``stall`` seconds; ``seed`` for reproducibility."""

    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    stall: float = 2.0
    retry_after: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        if sum(self.rates.values()) > 1.0:
            raise ValueError("fault rates must add up to at most 1")


@dataclass
class Chaos:
    """The proxy's state: its RNG, the faults injected so far, rows seen (for stale/duplicate copies)."""

    config: ChaosConfig
    upstream: str
    injected: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    rng: random.Random = field(init=False)
    _seen: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5000))
    _last_page: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)

    def draw(self, has_cursor: bool) -> str | None:
        """Pick this request's fault (or None) by the configured rates."""
        x = self.rng.random()
        for kind in FAULT_KINDS:
            rate = self.config.rates.get(kind, 0.0)
            if x < rate:
                if kind == "invalid_cursor" and not has_cursor:
                    return None
                return kind
            x -= rate
        return None

    def stale_copies(self, n: int) -> list[dict[str, Any]]:
        """Rows seen earlier, one second older than they were, with another quantity."""
        if not self._seen:
            return []
        picks = [self.rng.choice(self._seen) for _ in range(n)]
        return [
            {
                **row,
                "quantity": str(self.rng.randint(0, 999)),
                "calculated_at": format_ns(parse_ns(row["calculated_at"]) - 1_000_000_000),
            }
            for row in picks
        ]


CHAOS_KEY = web.AppKey("chaos", Chaos)
SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)


def _square_error(status: int, code: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"errors": [{"category": "API_ERROR", "code": code, "detail": f"chaos: {code}"}]}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _reset(request: web.Request) -> None:
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _proxy(request: web.Request) -> web.StreamResponse:
    chaos = request.app[CHAOS_KEY]
    chaos.requests += 1
    raw = await request.read()
    try:
        has_cursor = bool(orjson.loads(raw).get("cursor"))
    except (orjson.JSONDecodeError, AttributeError):
        has_cursor = False
    fault = chaos.draw(has_cursor)
    if fault is not None:
        chaos.injected[fault] += 1
    early = await _early_fault(request, chaos, fault)
    if early is not None:
        return early
    headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
    async with request.app[SESSION_KEY].post(
        chaos.upstream + BATCH_RETRIEVE_PATH, data=raw, headers=headers
    ) as upstream:
        body = await upstream.read()
        status = upstream.status
    if status != 200:
        return web.Response(status=status, body=body, content_type="application/json")
    return _late_fault(chaos, fault, body)


_FORWARDED = {"authorization", "square-version", "content-type", "accept"}


async def _early_fault(
    request: web.Request, chaos: Chaos, fault: str | None
) -> web.StreamResponse | None:
    """Faults that replace the upstream's answer entirely."""
    if fault in ("http_500", "http_502", "http_503"):
        status = int(fault[-3:])
        return _square_error(
            status, "INTERNAL_SERVER_ERROR" if status == 500 else "SERVICE_UNAVAILABLE"
        )
    if fault == "http_429_retry_after":
        return _square_error(429, "RATE_LIMITED", {"Retry-After": f"{chaos.config.retry_after:g}"})
    if fault == "http_429":
        return _square_error(429, "RATE_LIMITED")
    if fault == "invalid_cursor":
        body = {
            "errors": [
                {
                    "category": "INVALID_REQUEST_ERROR",
                    "code": "INVALID_CURSOR",
                    "detail": "chaos: cursor expired",
                    "field": "cursor",
                }
            ]
        }
        return web.Response(status=400, body=orjson.dumps(body), content_type="application/json")
    if fault == "reset":
        _reset(request)
        return web.Response(status=500)
    if fault == "stall":
        await asyncio.sleep(chaos.config.stall)
    return None


def _late_fault(chaos: Chaos, fault: str | None, body: bytes) -> web.Response:
    """Faults applied to a real 200 answer."""
    if fault == "truncated":
        return web.Response(body=body[: max(1, len(body) // 2)], content_type="application/json")
    if fault == "malformed":
        return web.Response(body=b"<html>upstream hiccup</html>", content_type="application/json")
    page = orjson.loads(body)
    counts: list[dict[str, Any]] = page.get("counts") or []
    if fault == "stale_rows":
        counts = counts + chaos.stale_copies(max(1, len(counts) // 10))
    elif fault == "duplicate_rows" and chaos._last_page:
        counts = chaos._last_page[: max(1, len(chaos._last_page) // 10)] + counts
    chaos._seen.extend(counts)
    chaos._last_page = list(page.get("counts") or [])
    if counts:
        page["counts"] = counts
    return web.Response(body=orjson.dumps(page), content_type="application/json")


async def _stats(request: web.Request) -> web.Response:
    chaos = request.app[CHAOS_KEY]
    data = {"requests": chaos.requests, "injected": dict(chaos.injected)}
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def build_chaos_app(chaos: Chaos) -> web.Application:
    """The proxy application; ``GET /_chaos/stats`` reports what was injected."""
    app = web.Application()
    app[CHAOS_KEY] = chaos

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[SESSION_KEY] = session
            yield

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post(BATCH_RETRIEVE_PATH, _proxy)
    app.router.add_get("/_chaos/stats", _stats)
    return app


@asynccontextmanager
async def serve_chaos(
    config: ChaosConfig, upstream: str, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[tuple[Chaos, str]]:
    """Run the proxy in front of ``upstream``; yields its state and base URL; always stops."""
    chaos = Chaos(config, upstream.rstrip("/"))
    runner = web.AppRunner(
        build_chaos_app(chaos), access_log=None, shutdown_timeout=0.5, handler_cancellation=True
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield chaos, f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()
