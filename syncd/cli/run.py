"""`syncd run`: the daemon. With `--simulate`, against the built-in simulator (no credentials needed).

With `--simulate` the simulator also sends signed webhooks to the daemon after each change, with the
configured signature key or, when none is configured, a key generated for this run, so the demo
shows webhook-driven sync; polling stays on as the safety net.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import structlog

from syncd.cli.common import EXIT_OK, add_common, settings_from, setup_logging
from syncd.config import Settings, require_upstream_credentials
from syncd.daemon import Daemon, install_signal_handlers
from syncd.simulator import SimulatorConfig, WebhookTarget, serve

log = structlog.get_logger("syncd.cli")


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
        "--sim-poll-interval",
        type=float,
        default=30.0,
        metavar="S",
        help="safety-net poll interval used with --simulate (default 30 s; the"
        " simulator's webhooks trigger the passes in between)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    extra: dict[str, Any] = {}
    if args.simulate:
        extra["square"] = {"poll_interval": args.sim_poll_interval}
    settings = settings_from(args, **extra)
    if args.simulate and not settings.square.webhook_signature_keys:
        sq = settings.square
        extra["square"] |= {
            "webhook_signature_keys": [secrets.token_urlsafe(24)],
            "notification_url": sq.notification_url
            or f"http://{settings.http.listen}/webhooks/{sq.name}",
        }
        settings = settings_from(args, **extra)
    setup_logging(settings, to_stdout=True)
    if not args.simulate:
        require_upstream_credentials(settings)
    sim = (
        SimulatorConfig(
            locations=args.sim_locations, items=args.sim_items, mutation_rate=args.sim_mutation_rate
        )
        if args.simulate
        else None
    )
    # SIGHUP re-reads every source with the same command-line overrides (syncd.reload).
    asyncio.run(_main(settings, sim, reload=lambda: settings_from(args, **extra)))
    return EXIT_OK


async def _main(
    settings: Settings,
    sim_config: SimulatorConfig | None,
    reload: Callable[[], Settings] | None = None,
) -> None:
    async with AsyncExitStack() as stack:
        sim, base_url = None, None
        if sim_config is not None:
            sim, base_url = await stack.enter_async_context(serve(sim_config))
            log.info(
                "simulator_started",
                url=base_url,
                locations=sim_config.locations,
                items=sim_config.items,
                mutation_rate=sim_config.mutation_rate,
            )
        daemon = Daemon(settings, base_url=base_url, reload_settings=reload)
        install_signal_handlers(daemon)
        if sim is None:
            await daemon.serve()
            return
        serving = asyncio.create_task(daemon.serve(), name="daemon")
        ready = asyncio.create_task(daemon.ready.wait(), name="daemon-ready")
        await asyncio.wait([serving, ready], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if daemon.ready.is_set() and daemon.public_url is not None:
            sq = settings.square
            sim.webhooks.target = WebhookTarget(
                url=f"{daemon.public_url}/webhooks/{sq.name}",
                signature_key=sq.webhook_signature_keys[0].get_secret_value(),
                notification_url=sq.notification_url,
            )
            log.info(
                "simulator_webhooks",
                url=sim.webhooks.target.url,
                notification_url=sq.notification_url,
            )
        await serving
