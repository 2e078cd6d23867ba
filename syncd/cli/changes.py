"""`syncd changes --after SEQ [--limit N] [--follow]`: the change log as NDJSON, one entry per line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from syncd.cli.common import EXIT_OK, add_common, require_database, settings_from, setup_logging
from syncd.store import Store, changelog

FOLLOW_CHECK_S = 0.05  # how often --follow looks at PRAGMA data_version (a cheap read, no busy loop)
BATCH = 1000


def register(sub: Any) -> None:
    parser = sub.add_parser("changes", help="print change-log entries as NDJSON")
    add_common(parser)
    parser.add_argument("--after", type=int, default=0, metavar="SEQ",
                        help="print entries with seq > SEQ (default 0: from the start)")
    parser.add_argument("--limit", type=int, metavar="N", help="stop after N entries")
    parser.add_argument("--follow", action="store_true",
                        help="keep printing new entries as they are committed")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings)
    require_database(settings.database)
    if args.after < 0 or (args.limit is not None and args.limit < 1):
        print("syncd: --after must be >= 0 and --limit >= 1", file=sys.stderr)
        return 2
    asyncio.run(_stream(settings.database, args.after, args.limit, args.follow))
    return EXIT_OK


async def _stream(path: Path, after: int, limit: int | None, follow: bool) -> None:
    store = await Store.open(path, readonly=True)
    remaining = limit
    try:
        while True:
            want = BATCH if remaining is None else min(BATCH, remaining)
            # Read the version before the entries, so a commit between the two is never missed.
            version = await store.read(_data_version)
            batch = await store.read(lambda conn: changelog.read_after(conn, after, want))
            for entry in batch:
                sys.stdout.write(orjson.dumps(entry.to_record()).decode() + "\n")
            sys.stdout.flush()
            if batch:
                after = batch[-1].seq
                if remaining is not None:
                    remaining -= len(batch)
                    if remaining <= 0:
                        return
                continue
            if not follow:
                return
            await _wait_for_commit(store, version)
    finally:
        await store.aclose()


async def _wait_for_commit(store: Store, seen: int) -> None:
    """Return once another connection has committed since ``seen`` (PRAGMA data_version moved)."""
    while await store.read(_data_version) == seen:
        await asyncio.sleep(FOLLOW_CHECK_S)


async def _data_version(conn: Any) -> int:
    async with conn.execute("PRAGMA data_version") as cur:
        row = await cur.fetchone()
    return int(row[0])
