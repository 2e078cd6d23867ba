"""`syncd counts`: list mirrored counts with their SKU, item, variation and location names (table,
or JSON lines with --json), read through the ``inventory`` view.

Filters combine (all must match): ``--source``, ``--location ID``, ``--item ID``, ``--sku SKU`` and
``--location-name NAME`` (exact, as Square spells it). A count whose variation the catalog mirror
does not know (yet) is listed all the same, its catalog columns shown as ``?`` (JSON: null, with
``"unknown_variation": true``).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import orjson

from syncd.cli.common import (
    EXIT_OK,
    add_common,
    database_of,
    require_database,
    settings_if_configured,
    sqlite_int,
)
from syncd.errors import StoreError
from syncd.store import inventory, queries
from syncd.store.inventory import InventoryFilter
from syncd.store.readonly import ReadOnly

PAGE = 1000
UNKNOWN = "?"  # the catalog does not know the variation (or the location) yet
NONE = "-"  # known, and without one (a variation without SKU)


def _nonempty(text: str) -> str:
    """argparse type: a SKU, name or source is never empty (an empty SKU is stored as none)."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def register(sub: Any) -> None:
    parser = sub.add_parser("counts", help="list mirrored inventory counts")
    add_common(parser)
    parser.add_argument("--source", type=_nonempty, metavar="NAME", help="only this source")
    parser.add_argument("--location", metavar="ID", help="only this location_id")
    parser.add_argument(
        "--location-name", type=_nonempty, metavar="NAME", help="only locations named exactly NAME"
    )
    parser.add_argument("--item", metavar="ID", help="only this catalog_object_id")
    parser.add_argument(
        "--sku", type=_nonempty, metavar="SKU", help="only variations with this SKU"
    )
    parser.add_argument("--limit", type=sqlite_int, metavar="N")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    database = database_of(args, settings_if_configured(args))
    require_database(database)
    _print(database, args)
    return EXIT_OK


def filter_of(args: argparse.Namespace) -> InventoryFilter:
    return InventoryFilter(
        source=args.source,
        location_id=args.location,
        catalog_object_id=args.item,
        sku=args.sku,
        location_name=args.location_name,
    )


def _print(path: Path, args: argparse.Namespace) -> None:
    """Print page by page (keyset pagination), so a million counts never sit in memory at once."""
    out = sys.stdout
    if not args.json:
        out.write(HEADER)
    remaining = args.limit
    with ReadOnly.open(path) as db:
        if not db.read(inventory.has_view):
            raise StoreError(
                f"the database at {path} predates the catalog (schema 7)",
                op="counts.read",
                hint="start syncd on it once (`syncd sync` or `syncd run` migrate it)",
            )
        segments = db.read(partial(inventory.segments, filt=filter_of(args)))
        for segment in segments:
            remaining = _print_segment(db, segment, remaining, out, as_json=args.json)
            if remaining == 0:
                return


def _print_segment(
    db: ReadOnly, filt: InventoryFilter, remaining: int | None, out: TextIO, *, as_json: bool
) -> int | None:
    """Print one segment's rows (at most ``remaining``); return how many may still be printed."""
    after: queries.CountKey | None = None
    while remaining is None or remaining > 0:
        size = PAGE if remaining is None else min(PAGE, remaining)
        rows = db.read(partial(inventory.list_inventory, filt=filt, after=after, limit=size))
        for r in rows:
            out.write(orjson.dumps(r).decode() + "\n" if as_json else text_row(r))
        if remaining is not None:
            remaining -= len(rows)
        if len(rows) < size:
            break
        after = queries.count_key(rows[-1])
    return remaining


HEADER = (
    f"{'SOURCE':<12} {'LOCATION':<16} {'LOCATION_NAME':<20} {'ITEM':<28} {'SKU':<16}"
    f" {'NAME':<32} {'STATE':<20} {'QUANTITY':>14}  CALCULATED_AT\n"
)


def _name(row: dict[str, Any]) -> str:
    """``Item / Variation`` (either alone when the other has no name), marked when deleted."""
    if row["unknown_variation"]:
        return UNKNOWN
    parts = [p for p in (row["item_name"], row["variation_name"]) if p]
    name = " / ".join(parts) or NONE
    return name + (" (deleted)" if row["catalog_deleted"] else "")


def text_row(row: dict[str, Any]) -> str:
    """One line of the table: unknown catalog values as ``?``, absent ones as ``-``."""
    sku = UNKNOWN if row["unknown_variation"] else (row["sku"] or NONE)
    location_name = row["location_name"] if row["location_name"] is not None else UNKNOWN
    return (
        f"{row['source']:<12} {row['location_id']:<16} {location_name:<20}"
        f" {row['catalog_object_id']:<28} {sku:<16} {_name(row):<32} {row['state']:<20}"
        f" {row['quantity']:>14}  {row['calculated_at']}\n"
    )
