"""The CLI's cold start (issue 13): `syncd --help` and the dispatcher import only what the chosen
subcommand needs, checked in a fresh interpreter (a subprocess: this test process has everything
imported already)."""

from __future__ import annotations

import subprocess
import sys

import orjson

from syncd.cli import COMMANDS, build_parser

HEAVY = ("aiohttp", "pydantic_settings", "pydantic", "prometheus_client", "structlog", "aiosqlite")

_PROBE = """
import sys, json
from syncd.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _modules_after(*argv: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    last = done.stderr.strip().splitlines()[-1]
    return {name.split(".")[0] for name in orjson.loads(last)}


def test_help_imports_no_heavy_module() -> None:
    loaded = _modules_after("--help")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_a_subcommand_imports_what_it_needs_and_no_other_subcommand() -> None:
    """`syncd counts --help` registers counts in full (its options are there), not the daemon."""
    loaded = _modules_after("counts", "--help")
    assert "pydantic_settings" in loaded  # counts loads settings: the probe sees real imports
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "counts", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--location" in done.stdout


def test_the_one_line_help_of_every_command_is_what_its_module_registers() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    registered = {a.dest: a.help for a in sub._choices_actions}
    assert registered == {name: help_text for name, (_, help_text) in COMMANDS.items()}
