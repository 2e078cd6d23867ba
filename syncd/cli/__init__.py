"""The command line: parse, dispatch to one module per subcommand, and turn errors into exit codes.

Exit codes: 0 success; 1 the operation failed (a pass failed, the upstream refused, the database is
unusable, an unknown source); 2 bad usage or invalid configuration (also: forgetting a source the
config still has); 3 a change-log gap (the entries asked for were pruned:
re-read the mirror); 4 another syncd holds the database; 130 interrupted. This is the one place that maps a
``SyncdError`` to a message, an optional ``Try:`` hint and an exit code.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from syncd import __version__, collector
from syncd.cli.exits import EXIT_FAILURE, EXIT_GAP, EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_USAGE
from syncd.errors import (
    AlreadyRunning,
    ChangelogGap,
    ConfigError,
    JobProviderError,
    ReplayRefused,
    SourceStillConfigured,
    SyncdError,
)

# Subcommand -> (module in syncd.cli, one-line help). Only the module of the command being run is
# imported (its own imports are the heavy ones: config, aiohttp, the store); `syncd --help` imports
# none. tests/test_cli_imports.py checks that each module registers the help written here.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run the daemon until SIGINT/SIGTERM"),
    "sync": ("sync", "run one sync pass and exit (0 = ok, 1 = failed)"),
    "status": ("status", "show sync state, last passes and change-log head"),
    "counts": ("counts", "list mirrored inventory counts"),
    "changes": ("changes", "print change-log entries as NDJSON"),
    "snapshot": ("snapshot", "print the mirror as NDJSON at one change-log seq"),
    "jobs": ("jobs", "track upstream jobs: add, list, show, forget"),
    "sources": ("sources", "list the sources (sellers), forget a removed one"),
    "consumers": ("consumers", "named consumers: resume or replay an outbound webhook endpoint"),
    "config": ("config_cmd", "inspect configuration"),
    "simulate": ("simulate", "serve a fake Square batch-retrieve upstream on loopback"),
}


def command_module(name: str) -> Any:
    """The module that implements subcommand ``name`` (imported on first use)."""
    return importlib.import_module(f"syncd.cli.{COMMANDS[name][0]}")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser. With ``argv``, only the subcommand it names is registered in full (the
    others are one-line entries, enough for ``--help``); without, every subcommand is (also used to
    generate the CLI reference in the README)."""
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Inventory sync daemon: a local SQLite mirror plus an append-only change log.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, (_, help_text) in COMMANDS.items():
        if chosen is None or name == chosen:
            command_module(name).register(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def console() -> int:
    """Entry point of the ``syncd`` console script and ``python -m syncd``: ``main`` as a process
    that runs one command and exits (issue 13).

    What the command's imports create (modules, classes, the config models) lives until exit, so
    the cyclic GC is off while they are made (collecting them again and again was ~7% of a
    one-shot sync's start-up) and then frozen out of every later collection (``gc.freeze``); the
    command runs with the GC on. At exit everything is frozen again: the interpreter's final
    collections then skip it (~70 ms of a one-shot sync's exit), and what is in a cycle is freed
    with the process. Commands close what they open themselves (the store checkpoints its WAL
    on close), never in a finalizer. The command runs under syncd's collector thresholds
    (``syncd.collector``). Tests call ``main``, which leaves the GC alone.
    """
    argv = sys.argv[1:]
    collector.tune()
    gc.disable()
    try:
        args = parse(argv)
    finally:
        gc.freeze()
        gc.enable()
    try:
        return dispatch(args)
    finally:
        gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments) and run the command."""
    return dispatch(parse(sys.argv[1:] if argv is None else list(argv)))


def parse(argv: list[str]) -> argparse.Namespace:
    """The parsed command line; this imports the command's module (``build_parser``)."""
    return build_parser(argv).parse_args(argv)


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; a ``SyncdError`` becomes its message and an exit code."""
    try:
        return int(args.handler(args))
    # Bad config, a bad job registration, or forgetting a source the config still has.
    except (ConfigError, JobProviderError, SourceStillConfigured, ReplayRefused) as exc:
        _report(exc)
        return EXIT_USAGE
    except ChangelogGap as exc:
        _report(exc)
        return EXIT_GAP
    except AlreadyRunning as exc:
        _report(exc)
        return EXIT_LOCKED
    except SyncdError as exc:
        _report(exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `syncd changes | head`
        sys.stderr.close()
        return 0


def _report(exc: SyncdError) -> None:
    print(f"syncd: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"Try: {exc.hint}", file=sys.stderr)
