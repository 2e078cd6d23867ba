"""`syncd counts`: list mirrored counts (table, or JSON lines with --json)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from syncd.cli.common import (
    EXIT_OK,
    add_common,
    require_database,
    settings_from,
    setup_logging,
    sqlite_int,
)
from syncd.store import Store, queries

PAGE = 1000


def register(sub: Any) -> None:
    parser = sub.add_parser("counts", help="list mirrored inventory counts")
    add_common(parser)
    parser.add_argument("--location", metavar="ID", help="only this location_id")
    parser.add_argument("--item", metavar="ID", help="only this catalog_object_id")
    parser.add_argument("--limit", type=sqlite_int, metavar="N")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings)
    require_database(settings.database)
    asyncio.run(_print(settings.database, args))
    return EXIT_OK


async def _print(path: Path, args: argparse.Namespace) -> None:
    """Print page by page (keyset pagination), so a million counts never sit in memory at once."""
    out = sys.stdout
    if not args.json:
        out.write(f"{'LOCATION':<16} {'ITEM':<28} {'STATE':<20} {'QUANTITY':>14}  CALCULATED_AT\n")
    remaining = args.limit
    after: queries.CountKey | None = None
    store = await Store.open(path, readonly=True)
    try:
        while remaining is None or remaining > 0:
            size = PAGE if remaining is None else min(PAGE, remaining)
            rows = await store.read(
                partial(
                    queries.list_counts,
                    location_id=args.location,
                    catalog_object_id=args.item,
                    after=after,
                    limit=size,
                )
            )
            for r in rows:
                if args.json:
                    out.write(orjson.dumps(r).decode() + "\n")
                else:
                    out.write(
                        f"{r['location_id']:<16} {r['catalog_object_id']:<28} {r['state']:<20}"
                        f" {r['quantity']:>14}  {r['calculated_at']}\n"
                    )
            if len(rows) < size:
                return
            after = queries.count_key(rows[-1])
            if remaining is not None:
                remaining -= len(rows)
    finally:
        await store.aclose()
