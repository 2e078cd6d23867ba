"""The console entry point (issue 13): ``console`` is ``main`` for a process that runs one command
and exits. It runs the command with the cyclic GC on, the objects the imports made frozen out of
its collections, and returns the command's exit code as ``main`` does. Checked in a fresh
interpreter (a subprocess): freezing this test process's objects would keep them for good.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from syncd import collector
from syncd.cli import main
from tests.process_kit import run_probe

# Runs console() on the given command line with a spy on dispatch; prints what the GC looked like
# while the command ran, and console's return value, as the last line of stderr.
_PROBE = """
import gc, json, sys
import syncd.cli as cli
seen = {}
real = cli.dispatch
def spy(args):
    seen.update(during_enabled=gc.isenabled(), during_frozen=gc.get_freeze_count(),
                during_thresholds=list(gc.get_threshold()))
    return real(args)
cli.dispatch = spy
sys.argv = ["syncd", *sys.argv[1:]]
rc = cli.console()
seen.update(rc=rc)
print(json.dumps(seen), file=sys.stderr)
"""


def _console(*argv: str) -> dict[str, object]:
    done = run_probe(_PROBE, *argv)
    return dict(orjson.loads(done.stderr.strip().splitlines()[-1]))


def test_the_command_runs_with_the_gc_on_and_the_imports_frozen(tmp_path: Path) -> None:
    seen = _console("sources", "list", "--database", str(tmp_path / "none.db"))
    assert seen["during_enabled"] is True
    assert isinstance(seen["during_frozen"], int)
    assert seen["during_frozen"] > 0


def test_the_command_runs_under_syncds_collector_thresholds(tmp_path: Path) -> None:
    seen = _console("sources", "list", "--database", str(tmp_path / "none.db"))
    assert seen["during_thresholds"] == list(collector.THRESHOLDS)


def test_console_returns_what_main_returns(tmp_path: Path) -> None:
    """The same exit code for success and for a mapped error (a missing database)."""
    ok = tmp_path / "syncd.toml"
    ok.write_text("", encoding="utf-8")
    for argv in (
        ("config", "check", "--config", str(ok)),
        ("status", "--database", str(tmp_path / "missing.db")),
    ):
        assert _console(*argv)["rc"] == main(list(argv))
