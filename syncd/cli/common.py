"""What every subcommand shares: global options, loading settings, logging, opening the store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from syncd.cli.exits import (
    EXIT_FAILURE,
    EXIT_GAP,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_USAGE,
)
from syncd.config import Settings, load_settings
from syncd.errors import StoreError
from syncd.logs import configure_logging

# The exit codes are re-exported: the subcommand modules import them from here.
__all__ = [
    "EXIT_FAILURE",
    "EXIT_GAP",
    "EXIT_INTERRUPTED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_USAGE",
    "SQLITE_INT_MAX",
    "add_common",
    "require_database",
    "settings_from",
    "setup_logging",
    "sqlite_int",
]

SQLITE_INT_MAX = 2**63 - 1


def sqlite_int(text: str) -> int:
    """argparse type: an integer SQLite can store. A larger seq, id or limit is a usage error here,
    not an OverflowError from deep inside a query (issue 6)."""
    try:
        value = int(text)
    except ValueError:  # also for 4,300+ digits, which int() refuses
        raise argparse.ArgumentTypeError(f"invalid integer: {text[:40]!r}") from None
    if not -SQLITE_INT_MAX - 1 <= value <= SQLITE_INT_MAX:
        raise argparse.ArgumentTypeError(f"{text[:40]} is out of range (at most {SQLITE_INT_MAX})")
    return value


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every subcommand takes."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="TOML config file (default: $SYNCD_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--database",
        type=Path,
        metavar="PATH",
        help="SQLite database path (overrides config `database`)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="override config `log.level`",
    )
    parser.add_argument(
        "--log-format", choices=["auto", "json", "console"], help="override config `log.format`"
    )


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    """Load settings with the command line's overrides on top of every other source."""
    overrides: dict[str, Any] = dict(extra)
    if getattr(args, "database", None) is not None:
        overrides["database"] = str(args.database)
    log: dict[str, str] = {}
    if getattr(args, "log_level", None):
        log["level"] = args.log_level
    if getattr(args, "log_format", None):
        log["format"] = args.log_format
    if log:
        overrides["log"] = log
    return load_settings(getattr(args, "config", None), overrides=overrides or None)


def setup_logging(settings: Settings, *, to_stdout: bool = False) -> None:
    """Logs go to stderr so stdout stays clean for data, except for the daemon (journald reads stdout)."""
    configure_logging(
        settings.log.level, settings.log.format, stream=sys.stdout if to_stdout else sys.stderr
    )


def require_database(path: Path) -> None:
    """Read-only commands need an existing database; say so plainly instead of creating one."""
    if not path.exists():
        raise StoreError(
            f"no database at {path}",
            op="store.open_ro",
            hint="run `syncd sync` or `syncd run` first, or pass --database / --config",
        )
