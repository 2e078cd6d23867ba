"""The built-in fake Square upstream: ``POST /v2/inventory/counts/batch-retrieve``, generated data,
``POST /v2/catalog/search`` (the items and variations the counts are of), ``GET /v2/locations``
and the OAuth token routes, for one seller or many sellers of one app.

Used by ``make run`` (``syncd simulate``), the tests and the benchmarks. ``catalog`` owns one
seller's data and its indexes, ``library`` its item library, ``sellers`` the app (its sellers, OAuth tokens, webhook
subscription), ``api`` the Square protocol (validation, cursors, errors), ``app`` the aiohttp
application; this module runs it on a real socket (``serve``, ``serve_marketplace``,
``run_forever``, ``run_marketplace_forever``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import structlog
from aiohttp import web

from syncd.simulator.api import (
    CatalogQuery,
    Query,
    SquareError,
    answer,
    answer_catalog,
    parse_catalog_request,
    parse_request,
)
from syncd.simulator.app import (
    BATCH_RETRIEVE_PATH,
    LOCATIONS_PATH,
    MARKETPLACE_KEY,
    REVOKE_PATH,
    SEARCH_CATALOG_PATH,
    SIMULATOR_KEY,
    TOKEN_PATH,
    build_app,
)
from syncd.simulator.catalog import (
    INVENTORY_STATES,
    TRACKED_STATES,
    Simulator,
    SimulatorConfig,
    format_calculated_at,
)
from syncd.simulator.sellers import Marketplace, OAuthConfig
from syncd.simulator.webhooks import WebhookSender, WebhookTarget

__all__ = [
    "BATCH_RETRIEVE_PATH",
    "INVENTORY_STATES",
    "LOCATIONS_PATH",
    "MARKETPLACE_KEY",
    "REVOKE_PATH",
    "SEARCH_CATALOG_PATH",
    "SIMULATOR_KEY",
    "TOKEN_PATH",
    "TRACKED_STATES",
    "CatalogQuery",
    "Marketplace",
    "OAuthConfig",
    "Query",
    "Simulator",
    "SimulatorConfig",
    "SquareError",
    "WebhookSender",
    "WebhookTarget",
    "answer",
    "answer_catalog",
    "build_app",
    "format_calculated_at",
    "parse_catalog_request",
    "parse_request",
    "run_forever",
    "run_marketplace_forever",
    "serve",
    "serve_marketplace",
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
    async with _serving(build_app(sim), host, port, shutdown_timeout) as url:
        yield sim, url


@asynccontextmanager
async def serve_marketplace(
    configs: Sequence[SimulatorConfig],
    oauth: OAuthConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    webhook: WebhookTarget | None = None,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[tuple[Marketplace, str]]:
    """Serve one Square app whose sellers are one Simulator per config; yields the Marketplace and
    its base URL. Seeds (or merchant ids) must differ, so the sellers' ids do. ``webhook`` is the
    app's subscription: every seller's events go there. Stops like ``serve``."""
    market = Marketplace([Simulator(c) for c in configs], oauth, webhook=webhook)
    async with _serving(build_app(market), host, port, shutdown_timeout) as url:
        yield market, url


@asynccontextmanager
async def _serving(
    app: web.Application, host: str, port: int, shutdown_timeout: float
) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield _url(str(bound_host), int(bound_port))
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


async def run_marketplace_forever(
    configs: Sequence[SimulatorConfig],
    oauth: OAuthConfig | None,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    webhook: WebhookTarget | None = None,
) -> None:
    """``syncd simulate --sellers N [--oauth]``: serve the app until ``stop`` is set.

    With ``oauth`` each seller authorises the app at start, and its merchant id and refresh token
    are logged with the client credentials, for an operator to paste into the daemon's config.
    These are throwaway simulator credentials; nothing real is logged.
    """
    async with serve_marketplace(configs, oauth, host, port, webhook=webhook) as (market, url):
        log.info(
            "simulator_started",
            url=url,
            sellers=len(market.sellers),
            counts=sum(sim.count_total() for sim in market.sellers.values()),
            auth="oauth" if oauth is not None else "static_or_none",
            webhook=None if market.webhooks.target is None else market.webhooks.target.url,
        )
        for merchant_id, sim in market.sellers.items():
            fields: dict[str, object] = {
                "merchant_id": merchant_id,
                "location_ids": sim.location_ids,
            }
            if oauth is not None:
                fields.update(
                    client_id=oauth.client_id,
                    client_secret=oauth.client_secret,
                    refresh_token=market.grant(merchant_id),
                    token_url=url + TOKEN_PATH,
                )
            log.info("simulator_seller", **fields)
        await stop.wait()
        log.info("simulator_stopping", requests=market.requests)
    log.info("simulator_stopped")
