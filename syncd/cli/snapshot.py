"""`syncd snapshot`: the mirror as NDJSON at one change-log seq, on stdout (docs/changelog.md).

Reads the database directly (read-only, one read transaction), so it works with or without a running
daemon; the first line carries the seq, the last line the number of counts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    from syncd.cli.common import add_common

    parser = sub.add_parser("snapshot", help="print the mirror as NDJSON at one change-log seq")
    add_common(parser)
    parser.add_argument("--source", metavar="NAME", help="only this source's counts")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from syncd.cli.common import EXIT_OK, require_database, settings_from, setup_logging
    from syncd.store.snapshot import iter_snapshot

    settings = settings_from(args)
    setup_logging(settings)
    require_database(settings.database)
    out = sys.stdout.buffer
    for chunk in iter_snapshot(settings.database, source=args.source):
        out.write(chunk)
    out.flush()
    return EXIT_OK
