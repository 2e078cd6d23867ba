"""`syncd run`: the daemon. With `--simulate`, against the built-in simulator (no credentials needed)."""

from __future__ import annotations

import argparse
import asyncio
from contextlib import AsyncExitStack
from typing import Any

import structlog

from syncd.cli.common import EXIT_OK, add_common, settings_from, setup_logging
from syncd.config import Settings, require_upstream_credentials
from syncd.daemon import Daemon, install_signal_handlers
from syncd.simulator import SimulatorConfig, serve

log = structlog.get_logger("syncd.cli")


def register(sub: Any) -> None:
    parser = sub.add_parser("run", help="run the daemon until SIGINT/SIGTERM")
    add_common(parser)
    demo = parser.add_argument_group("built-in simulator (the embedded default of `make run`)")
    demo.add_argument("--simulate", action="store_true",
                      help="start the built-in upstream simulator on loopback and sync from it")
    demo.add_argument("--sim-locations", type=int, default=3, metavar="N")
    demo.add_argument("--sim-items", type=int, default=200, metavar="N")
    demo.add_argument("--sim-mutation-rate", type=float, default=2.0, metavar="PER_S",
                      help="random count changes per second (default 2)")
    demo.add_argument("--sim-poll-interval", type=float, default=5.0, metavar="S",
                      help="poll interval used with --simulate (default 5 s)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    extra: dict[str, Any] = {}
    if args.simulate:
        extra["square"] = {"poll_interval": args.sim_poll_interval}
    settings = settings_from(args, **extra)
    setup_logging(settings, to_stdout=True)
    if not args.simulate:
        require_upstream_credentials(settings)
    sim = SimulatorConfig(locations=args.sim_locations, items=args.sim_items,
                          mutation_rate=args.sim_mutation_rate) if args.simulate else None
    asyncio.run(_main(settings, sim))
    return EXIT_OK


async def _main(settings: Settings, sim: SimulatorConfig | None) -> None:
    async with AsyncExitStack() as stack:
        base_url = None
        if sim is not None:
            _, base_url = await stack.enter_async_context(serve(sim))
            log.info("simulator_started", url=base_url, locations=sim.locations, items=sim.items,
                     mutation_rate=sim.mutation_rate)
        daemon = Daemon(settings, base_url=base_url)
        install_signal_handlers(daemon)
        await daemon.serve()
