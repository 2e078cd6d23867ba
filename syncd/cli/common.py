"""What every subcommand shares: global options, loading settings, logging, opening the store.

Nothing heavy is imported with this module: the config models (pydantic) load in
``settings_from``, logging (structlog) in ``setup_logging``. The read-only commands (``status``,
``counts``, ``sources list``) write no log lines, so they set up no logging, and they load the
settings only when something configures syncd (``settings_if_configured``): their cold start is
Python, sqlite3 and their queries (issue 13; tests/test_cli_imports.py keeps it so).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd.cli.exits import (
    EXIT_FAILURE,
    EXIT_GAP,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_USAGE,
)
from syncd.config.inputs import defaults_database, only_defaults
from syncd.errors import AlreadyRunning, StoreError

if TYPE_CHECKING:
    from syncd.config import Settings
    from syncd.store import Store

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
    "database_of",
    "require_database",
    "settings_from",
    "settings_if_configured",
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
    from syncd.config import load_settings

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
    from syncd.logs import configure_logging

    configure_logging(
        settings.log.level, settings.log.format, stream=sys.stdout if to_stdout else sys.stderr
    )


def settings_if_configured(args: argparse.Namespace) -> Settings | None:
    """``settings_from(args)``, or None when nothing but built-in defaults and the command line
    configures syncd (no config file, no credentials directory, no ``SYNCD_*`` variable): the
    settings would be the defaults, so a read-only command skips loading them (pydantic and the
    config tree) and takes the database from ``database_of``. Anything that could configure syncd,
    even badly, is loaded and validated as for every other command, with the same errors."""
    if only_defaults(getattr(args, "config", None), os.environ):
        return None
    return settings_from(args)


def database_of(args: argparse.Namespace, settings: Settings | None) -> Path:
    """The database to read: the loaded settings', else (``settings_if_configured`` gave None)
    ``--database`` or the default, as loading the defaults would give it."""
    if settings is not None:
        return settings.database
    return defaults_database(getattr(args, "database", None), os.environ)


def require_database(path: Path) -> None:
    """Read-only commands need an existing database; say so plainly instead of creating one."""
    if not path.exists():
        raise StoreError(
            f"no database at {path}",
            op="store.open_ro",
            hint="run `syncd sync` or `syncd run` first, or pass --database / --config",
        )


@asynccontextmanager
async def offline_store(
    settings: Settings, *, op: str, daemon_does: str | None = None, create: bool = False
) -> AsyncIterator[Store]:
    """The database open for writing under the instance lock, for a command that found no daemon
    answering on ``admin.listen`` (made first with ``create``, else it must exist). A daemon that
    runs anyway holds the lock: the error then says to point ``admin.listen`` at it (which would
    do the work itself: ``daemon_does``)."""
    from syncd.store import Store
    from syncd.store.lock import InstanceLock

    if not create:
        require_database(settings.database)
    try:
        lock = await InstanceLock.acquire(settings.database)
    except AlreadyRunning as exc:  # a daemon runs, but not where admin.listen points
        hint = (
            f"nothing answered on admin.listen ({settings.admin.listen}); set it (and"
            " admin.token) to the running daemon's admin listener"
        )
        raise AlreadyRunning(
            exc.message, op=op, hint=hint + (f": the daemon {daemon_does}" if daemon_does else "")
        ) from exc
    try:
        store = await Store.open(settings.database)
        try:
            yield store
        finally:
            await store.aclose()
    finally:
        lock.release()
