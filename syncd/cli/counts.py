"""`syncd counts`: list mirrored counts (table, or JSON lines with --json)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from syncd.cli.common import EXIT_OK, add_common, require_database, settings_from, setup_logging
from syncd.store import Store, queries


def register(sub: Any) -> None:
    parser = sub.add_parser("counts", help="list mirrored inventory counts")
    add_common(parser)
    parser.add_argument("--location", metavar="ID", help="only this location_id")
    parser.add_argument("--item", metavar="ID", help="only this catalog_object_id")
    parser.add_argument("--limit", type=int, metavar="N")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings)
    require_database(settings.database)
    rows = asyncio.run(_read(settings.database, args))
    out = sys.stdout
    if args.json:
        for row in rows:
            out.write(orjson.dumps(row).decode() + "\n")
        return EXIT_OK
    out.write(f"{'LOCATION':<16} {'ITEM':<28} {'STATE':<20} {'QUANTITY':>14}  CALCULATED_AT\n")
    for r in rows:
        out.write(
            f"{r['location_id']:<16} {r['catalog_object_id']:<28} {r['state']:<20}"
            f" {r['quantity']:>14}  {r['calculated_at']}\n"
        )
    return EXIT_OK


async def _read(path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    store = await Store.open(path, readonly=True)
    try:
        return await store.read(
            lambda conn: queries.list_counts(
                conn, location_id=args.location, catalog_object_id=args.item, limit=args.limit
            )
        )
    finally:
        await store.aclose()
