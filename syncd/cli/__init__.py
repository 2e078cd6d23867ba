"""The command line: parse, dispatch to one module per subcommand, and turn errors into exit codes.

Exit codes: 0 success; 1 the operation failed (a pass failed, the upstream refused, the database is
unusable); 2 bad usage or invalid configuration; 3 a change-log gap (the entries asked for were pruned:
re-read the mirror); 4 another syncd holds the database; 130 interrupted. This is the one place that maps a
``SyncdError`` to a message, an optional ``Try:`` hint and an exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from syncd import __version__
from syncd.cli import changes, config_cmd, counts, jobs, run, simulate, snapshot, status, sync
from syncd.cli.common import EXIT_FAILURE, EXIT_GAP, EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_USAGE
from syncd.errors import AlreadyRunning, ChangelogGap, ConfigError, JobProviderError, SyncdError

COMMANDS = (run, sync, status, counts, changes, snapshot, jobs, config_cmd, simulate)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to generate the CLI reference in the README)."""
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Inventory sync daemon: a local SQLite mirror plus an append-only change log.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``syncd`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (ConfigError, JobProviderError) as exc:  # bad config, or a bad job registration
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
