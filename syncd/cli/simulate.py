"""`syncd simulate`: run the built-in fake Square upstream on loopback until interrupted.

One seller by default (today's behaviour); ``--sellers N`` serves N sellers of one Square app and
``--oauth`` has each authorise the app, logging the credentials to paste into the daemon's config.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from syncd.cli.common import EXIT_OK
from syncd.errors import ConfigError
from syncd.logs import configure_logging
from syncd.simulator import (
    OAuthConfig,
    SimulatorConfig,
    WebhookTarget,
    run_forever,
    run_marketplace_forever,
)


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
    app = parser.add_argument_group("sellers", "many sellers of one Square app, OAuth tokens")
    app.add_argument(
        "--sellers", type=int, default=1, metavar="N", help="sellers of the app (seeds SEED..)"
    )
    app.add_argument(
        "--oauth",
        action="store_true",
        help="grant each seller at start; log its merchant_id, refresh token and the client "
        "id/secret (throwaway simulator credentials)",
    )
    app.add_argument(
        "--rotate-refresh-tokens",
        action="store_true",
        help="PKCE flow: each refresh answers a new refresh token and the old one stops working",
    )
    app.add_argument(
        "--token-ttl",
        type=float,
        default=30 * 86400.0,
        metavar="S",
        help="seconds an OAuth access token lives (default 30 days)",
    )
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


def _oauth(args: argparse.Namespace) -> OAuthConfig | None:
    if not args.oauth:
        if args.rotate_refresh_tokens:
            raise ConfigError([("--rotate-refresh-tokens", "set", "needs --oauth")])
        return None
    if args.token_ttl <= 0:
        raise ConfigError([("--token-ttl", str(args.token_ttl), "must be > 0")])
    return OAuthConfig(
        access_token_ttl=args.token_ttl, rotate_refresh_tokens=args.rotate_refresh_tokens
    )


def handle(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, "auto")
    if args.sellers < 1:
        raise ConfigError([("--sellers", str(args.sellers), "must be >= 1")])
    if args.sellers > 1 and args.token is not None:
        raise ConfigError([("--token", "set", "one static token cannot serve --sellers > 1")])
    oauth = _oauth(args)
    webhook = _webhook_target(args)
    configs = [
        SimulatorConfig(
            locations=args.locations,
            items=args.items,
            seed=args.seed + i,  # other seeds: other merchant and location ids
            mutation_rate=args.mutation_rate,
            page_delay=args.page_delay,
            access_token=args.token if args.sellers == 1 else None,
            webhook=webhook if args.sellers == 1 else None,
        )
        for i in range(args.sellers)
    ]
    asyncio.run(_serve(configs, oauth, webhook, args.host, args.port))
    return EXIT_OK


async def _serve(
    configs: list[SimulatorConfig],
    oauth: OAuthConfig | None,
    webhook: WebhookTarget | None,
    host: str,
    port: int,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if len(configs) == 1 and oauth is None:
        await run_forever(configs[0], host, port, stop=stop)
    else:
        await run_marketplace_forever(configs, oauth, host, port, stop, webhook=webhook)
