"""`syncd config check`: validate the configuration and print the effective config, secrets
redacted; deprecated forms it used are named on stderr."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from syncd.cli.common import EXIT_OK, add_common, settings_from
from syncd.config import redacted


def register(sub: Any) -> None:
    parser = sub.add_parser("config", help="inspect configuration")
    inner = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = inner.add_parser(
        "check", help="validate config; print the effective config (secrets redacted)"
    )
    add_common(check)
    check.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    for line in settings.deprecations:
        sys.stderr.write(f"deprecated: {line}\n")
    sys.stdout.write(orjson.dumps(redacted(settings), option=orjson.OPT_INDENT_2).decode() + "\n")
    return EXIT_OK
