"""`syncd run`: the daemon. With `--simulate`, against the built-in simulator (no credentials needed).

With `--simulate` the simulator plays one Square app with a seller per source (three, ``seller-1``
.. ``seller-3``, when the config names none): each source syncs over OAuth with a grant of its
seller, and the app's signed webhooks (a key generated for this run) reach the daemon's one
``/webhooks`` URL after each change, routed by merchant; polling stays on as the safety net.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import structlog

from syncd.cli.common import EXIT_OK, add_common, settings_from, setup_logging
from syncd.config import DEFAULT_SOURCE, Settings, SourceSettings, require_upstream_credentials
from syncd.daemon import Daemon, install_signal_handlers
from syncd.simulator import (
    Marketplace,
    OAuthConfig,
    SimulatorConfig,
    WebhookTarget,
    serve_marketplace,
)
from syncd.web.webhooks import APP_WEBHOOK_ROUTE

log = structlog.get_logger("syncd.cli")

# Safety-net poll interval of simulated sources: the simulator's webhooks trigger the passes.
SIM_POLL_INTERVAL = 30.0


def register(sub: Any) -> None:
    parser = sub.add_parser("run", help="run the daemon until SIGINT/SIGTERM")
    add_common(parser)
    demo = parser.add_argument_group("built-in simulator (the embedded default of `make run`)")
    demo.add_argument(
        "--simulate",
        action="store_true",
        help="start the built-in upstream simulator on loopback and sync from it",
    )
    demo.add_argument("--sim-locations", type=int, default=3, metavar="N")
    demo.add_argument("--sim-items", type=int, default=200, metavar="N")
    demo.add_argument(
        "--sim-mutation-rate",
        type=float,
        default=2.0,
        metavar="PER_S",
        help="random count changes per second (default 2)",
    )
    demo.add_argument(
        "--sim-sellers",
        type=int,
        default=3,
        metavar="N",
        help="sellers of the simulated app when the config names no source (default 3)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings, to_stdout=True)
    if not args.simulate:
        require_upstream_credentials(settings)
        # SIGHUP re-reads every source with the same command-line overrides (syncd.reload).
        asyncio.run(_serve(settings, reload=lambda: settings_from(args)))
        return EXIT_OK
    asyncio.run(_simulate(args, settings))
    return EXIT_OK


async def _serve(settings: Settings, reload: Callable[[], Settings]) -> None:
    daemon = Daemon(settings, reload_settings=reload)
    install_signal_handlers(daemon)
    await daemon.serve()


def simulated_names(settings: Settings, sellers: int) -> list[str]:
    """The sources the simulation serves: the configured ones, or, when the config names none
    (the embedded default), ``seller-1`` .. ``seller-N``."""
    only = settings.sources.get(DEFAULT_SOURCE)
    if (
        list(settings.sources) == [DEFAULT_SOURCE]
        and only is not None
        and not has_credentials(only)
    ):
        return [f"seller-{i}" for i in range(1, sellers + 1)]
    return list(settings.sources)


def has_credentials(conf: SourceSettings) -> bool:
    return conf.access_token is not None or conf.oauth is not None


async def _simulate(args: argparse.Namespace, settings: Settings) -> None:
    """One simulated Square app with a seller per source, each source on OAuth with a grant of its
    seller, and the app's webhook subscription pointed at ``/webhooks`` of the daemon."""
    names = simulated_names(settings, args.sim_sellers)
    configs = [
        SimulatorConfig(
            locations=args.sim_locations,
            items=args.sim_items,
            mutation_rate=args.sim_mutation_rate / len(names),
            seed=seed,
        )
        for seed, _ in enumerate(names)
    ]
    oauth = OAuthConfig()
    async with serve_marketplace(configs, oauth) as (market, base_url):
        key = secrets.token_urlsafe(24)
        extra = _simulated_sources(settings, names, market, oauth, key)
        settings = settings_from(args, **extra)
        log.info(
            "simulator_started",
            url=base_url,
            sellers=len(names),
            locations=args.sim_locations,
            items=args.sim_items,
            mutation_rate=args.sim_mutation_rate,
        )
        daemon = Daemon(
            settings, base_url=base_url, reload_settings=lambda: settings_from(args, **extra)
        )
        install_signal_handlers(daemon)
        serving = asyncio.create_task(daemon.serve(), name="daemon")
        ready = asyncio.create_task(daemon.ready.wait(), name="daemon-ready")
        await asyncio.wait([serving, ready], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if daemon.ready.is_set() and daemon.public_url is not None:
            notification_url = extra["source_defaults"]["notification_url"]
            market.webhooks.target = WebhookTarget(
                url=f"{daemon.public_url}{APP_WEBHOOK_ROUTE}",
                signature_key=key,
                notification_url=notification_url,
            )
            log.info(
                "simulator_webhooks",
                url=market.webhooks.target.url,
                notification_url=notification_url,
            )
        await serving


def _simulated_sources(
    settings: Settings, names: list[str], market: Marketplace, oauth: OAuthConfig, key: str
) -> dict[str, Any]:
    """Overrides that give each simulated source its seller's grant and the app's webhook key."""
    notification_url = f"http://{settings.http.listen}{APP_WEBHOOK_ROUTE}"
    sellers = list(market.sellers)
    return {
        "source_defaults": {
            "webhook_signature_keys": [key],
            "notification_url": notification_url,
        },
        "sources": {
            name: {
                "poll_interval": SIM_POLL_INTERVAL,
                "access_token": None,
                "oauth": {
                    "client_id": oauth.client_id,
                    "client_secret": oauth.client_secret,
                    "refresh_token": market.grant(merchant_id),
                },
            }
            for name, merchant_id in zip(names, sellers, strict=True)
        },
    }
