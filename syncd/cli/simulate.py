"""`syncd simulate`: run the built-in fake Square upstream on loopback until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from syncd.cli.common import EXIT_OK
from syncd.errors import ConfigError
from syncd.logs import configure_logging
from syncd.simulator import SimulatorConfig, WebhookTarget, run_forever


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "simulate", help="serve a fake Square batch-retrieve upstream on loopback"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--locations", type=int, default=3)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mutation-rate", type=float, default=0.0, metavar="PER_S")
    parser.add_argument("--page-delay", type=float, default=0.0, metavar="S")
    parser.add_argument("--token", default=None, help="require this bearer token")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    hooks = parser.add_argument_group(
        "webhooks", "after each change, POST a signed inventory.count.updated event per count"
    )
    hooks.add_argument(
        "--webhook-url",
        metavar="URL",
        help="where to POST, e.g. http://127.0.0.1:8787/webhooks/square",
    )
    hooks.add_argument(
        "--webhook-key-file",
        type=Path,
        metavar="PATH",
        help="file holding the signature key (square.webhook_signature_keys)",
    )
    hooks.add_argument(
        "--webhook-key",
        metavar="KEY",
        help="the signature key itself (visible in `ps`: prefer a key file)",
    )
    hooks.add_argument(
        "--notification-url",
        metavar="URL",
        help="URL that is signed (square.notification_url); default --webhook-url",
    )
    parser.set_defaults(handler=handle)


def _webhook_target(args: argparse.Namespace) -> WebhookTarget | None:
    if args.webhook_url is None:
        return None
    key = args.webhook_key
    if args.webhook_key_file is not None:
        try:
            key = args.webhook_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                [("--webhook-key-file", str(args.webhook_key_file), f"cannot read: {exc}")]
            ) from None
    if not key:
        raise ConfigError(
            [("--webhook-key", "unset", "--webhook-url needs --webhook-key-file or --webhook-key")]
        )
    return WebhookTarget(
        url=args.webhook_url, signature_key=key, notification_url=args.notification_url
    )


def handle(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, "auto")
    config = SimulatorConfig(
        locations=args.locations,
        items=args.items,
        seed=args.seed,
        mutation_rate=args.mutation_rate,
        page_delay=args.page_delay,
        access_token=args.token,
        webhook=_webhook_target(args),
    )
    asyncio.run(_serve(config, args.host, args.port))
    return EXIT_OK


async def _serve(config: SimulatorConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_forever(config, host, port, stop=stop)
