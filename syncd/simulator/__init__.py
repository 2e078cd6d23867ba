"""The built-in fake Square upstream: ``POST /v2/inventory/counts/batch-retrieve``, generated data.

Used by ``make run`` (``syncd simulate``), the tests and the benchmarks. ``catalog`` owns the data
and its indexes, ``api`` the Square protocol (validation, cursors, errors), ``app`` the aiohttp
application; this module runs it on a real socket (``serve``, ``run_forever``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from aiohttp import web

from syncd.simulator.api import Query, SquareError, answer, parse_request
from syncd.simulator.app import BATCH_RETRIEVE_PATH, SIMULATOR_KEY, build_app
from syncd.simulator.catalog import (
    INVENTORY_STATES,
    TRACKED_STATES,
    Simulator,
    SimulatorConfig,
    format_calculated_at,
)
from syncd.simulator.webhooks import WebhookSender, WebhookTarget

__all__ = [
    "BATCH_RETRIEVE_PATH",
    "INVENTORY_STATES",
    "SIMULATOR_KEY",
    "TRACKED_STATES",
    "Query",
    "Simulator",
    "SimulatorConfig",
    "SquareError",
    "WebhookSender",
    "WebhookTarget",
    "answer",
    "build_app",
    "format_calculated_at",
    "parse_request",
    "run_forever",
    "serve",
]

log = structlog.get_logger("syncd.simulator")


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@asynccontextmanager
async def serve(
    config: SimulatorConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[tuple[Simulator, str]]:
    """Serve a new Simulator on a real socket; yields it and its base URL (``http://127.0.0.1:54321``).

    The mutation task (``mutation_rate > 0``) runs while the block does. On exit the server stops,
    in-flight requests get ``shutdown_timeout`` seconds, and the task is cancelled and reaped.
    """
    sim = Simulator(config)
    runner = web.AppRunner(build_app(sim), access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield sim, _url(str(bound_host), int(bound_port))
    finally:
        await runner.cleanup()


async def run_forever(config: SimulatorConfig, host: str, port: int, stop: asyncio.Event) -> None:
    """``syncd simulate``: serve until ``stop`` is set, logging the URL to point the daemon at."""
    async with serve(config, host, port) as (sim, url):
        log.info(
            "simulator_started",
            url=url,
            counts=sim.count_total(),
            location_ids=sim.location_ids,
            mutation_rate=config.mutation_rate,
            auth=config.access_token is not None,
        )
        await stop.wait()
        log.info("simulator_stopping", requests=sim.requests, mutations=sim.mutations)
    log.info("simulator_stopped")
