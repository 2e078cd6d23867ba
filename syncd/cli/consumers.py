"""`syncd consumers replay NAME [--from SEQ]`: resume or replay an outbound webhook endpoint.

An outbound endpoint (``[outbound.NAME]``, issue 14) is a named consumer that syncd delivers to
itself. ``replay NAME`` re-enables it where it stood (after a 410 or a failure window disabled
it: its batch in flight goes again under the same ``webhook-id``); ``--from SEQ`` also moves it
to deliver again from SEQ on, back or forward, under new ``webhook-id``s (a new epoch). While the
daemon runs, the daemon does it (``POST /outbound/NAME/replay`` on its admin listener: it
interrupts the endpoint's attempt in flight and answers once the new position is stored);
otherwise the CLI writes it to the database, holding the instance lock like ``syncd sync``, and
the daemon starts from there. The endpoint must be in the config (the daemon's, while it runs).
Named consumers of ``syncd changes`` move with ``--consumer NAME --ack-seq SEQ`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any
from urllib.parse import quote

import orjson
import structlog

from syncd.cli.common import (
    EXIT_OK,
    add_common,
    offline_store,
    settings_from,
    setup_logging,
    sqlite_int,
)
from syncd.config import Settings
from syncd.errors import UnknownEndpoint
from syncd.store import outbound as endpoints
from syncd.timeutil import now_rfc3339

log = structlog.get_logger("syncd.cli")

HELP = "named consumers: resume or replay an outbound webhook endpoint"


def register(sub: Any) -> None:
    parser = sub.add_parser("consumers", help=HELP)
    actions = parser.add_subparsers(dest="consumers_action", metavar="ACTION", required=True)
    replay = actions.add_parser(
        "replay",
        help="re-enable an outbound endpoint ([outbound.NAME]); --from SEQ: deliver again from SEQ",
    )
    add_common(replay)
    replay.add_argument("name", metavar="NAME", help="the endpoint's name ([outbound.NAME])")
    replay.add_argument(
        "--from",
        dest="from_seq",
        type=_positive_seq,
        metavar="SEQ",
        help="deliver again from this seq on (new webhook-ids); default: resume where it stood",
    )
    replay.add_argument("--json", action="store_true", help="machine-readable output")
    replay.set_defaults(handler=handle_replay)


def _positive_seq(text: str) -> int:
    value = sqlite_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"a seq is 1 or more (got {value})")
    return value


def handle_replay(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings)
    row = asyncio.run(_replay(settings, args.name, args.from_seq))
    if args.json:
        sys.stdout.write(orjson.dumps({"replayed": row}).decode() + "\n")
    else:
        sys.stdout.write(render(row, args.from_seq))
    return EXIT_OK


async def _replay(settings: Settings, name: str, from_seq: int | None) -> dict[str, Any]:
    """Through the running daemon when it answers, else on the database under the lock."""
    from syncd.cli.control import AdminClient, AdminUnavailable  # aiohttp: only here

    client = AdminClient.from_settings(settings)
    body = {} if from_seq is None else {"from": from_seq}
    try:
        answer = await client.request("POST", f"/outbound/{quote(name, safe='')}/replay", body=body)
        return dict(answer["replayed"])
    except AdminUnavailable as exc:
        log.info("daemon_not_running", admin=settings.admin.listen, reason=str(exc))
    if name not in settings.outbound:
        raise UnknownEndpoint(
            f"no outbound endpoint {name!r} in the config",
            op="outbound.replay",
            hint="endpoints are [outbound.NAME] tables; named consumers of `syncd changes` move"
            " with --consumer NAME --ack-seq SEQ",
            endpoint=name,
        )
    from_head = settings.outbound[name].start == "head"
    daemon_does = "replays the endpoint itself (POST /outbound/NAME/replay)"
    async with offline_store(settings, op="outbound.replay", daemon_does=daemon_does) as store:
        at = now_rfc3339()
        row = await store.write(
            lambda conn: endpoints.replay(conn, name, from_seq, from_head=from_head, at=at)
        )
    log.info("outbound_replayed", endpoint=name, from_seq=from_seq, acked_seq=row.acked_seq)
    return row.to_record()


def render(row: dict[str, Any], from_seq: int | None) -> str:
    what = "resumed" if from_seq is None else f"replaying from seq {from_seq}"
    return (
        f"outbound endpoint {row['name']}: {what}; acknowledged up to seq {row['acked_seq']},"
        f" epoch {row['epoch']}\n"
    )
