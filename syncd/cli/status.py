"""`syncd status [--json]`: watermarks, last passes, row and change counts, read from the database."""

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
    parser = sub.add_parser("status", help="show sync state, last passes and change-log head")
    add_common(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings)
    require_database(settings.database)
    data = asyncio.run(_read(settings.database))
    data["database"] = str(settings.database)
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(data))
    return EXIT_OK


async def _read(path: Path) -> dict[str, Any]:
    store = await Store.open(path, readonly=True)
    try:
        return await store.read(queries.status)
    finally:
        await store.aclose()


def render(data: dict[str, Any]) -> str:
    """Human-readable status."""
    ch = data["changes"]
    lines = [
        f"database   {data['database']}",
        f"counts     {data['counts']}",
        f"changes    {ch['entries']} entries, head seq {ch['head_seq']}, oldest {ch['oldest_seq']}",
        "partitions",
    ]
    for p in data["partitions"]:
        lines.append(f"  {p['source']}/{p['partition']}: {p['last_outcome'] or '-'}"
                     f"  watermark {p['watermark'] or '-'}  last success {p['last_success_at'] or '-'}"
                     + (f"  error: {p['error']}" if p["error"] else ""))
    lines.append("recent passes")
    for p in data["recent_passes"]:
        lines.append(f"  #{p['pass_id']} {p['kind']:<11} {p['outcome']:<11} {p['started_at']}"
                     f"  pages {p['pages']} counts {p['counts']} changes {p['changes']}"
                     f" removed {p['removed']}" + (f"  error: {p['error']}" if p["error"] else ""))
    return "\n".join(lines) + "\n"
