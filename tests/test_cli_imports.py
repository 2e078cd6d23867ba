"""The CLI's cold start (issue 13): each command imports only what it needs, checked in a fresh
interpreter (a subprocess: this test process has everything imported already).

`syncd --help` imports no subcommand. The read-only commands (`status`, `counts`, `sources list`)
read the database without asyncio, aiosqlite, aiohttp, prometheus_client or structlog, and
without pydantic when nothing configures syncd; with a config file, an environment variable or a
credentials directory they load and validate it like every other command, with the same errors.
And skipping the load changes nothing they print. `syncd sync`, a one-shot pass, imports the store,
the engines and the upstream client, never the daemon's machinery (its web handlers, jobs poller,
outbound deliverers, publish relay, SIGHUP reloader).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncd.cli import COMMANDS, build_parser
from syncd.cli.sources import configured_sources
from syncd.config import load_settings
from syncd.config.inputs import defaults_database, only_defaults
from syncd.store import Store
from syncd.store import counts as counts_store
from tests.helpers import count
from tests.process_kit import clean_env, run_probe

HEAVY = ("aiohttp", "pydantic_settings", "pydantic", "prometheus_client", "structlog", "aiosqlite")
# What a read-only command never imports, whatever the config says; and, when nothing configures
# syncd, also not pydantic and asyncio (which pydantic-settings imports).
NEVER_FOR_READS = ("aiohttp", "prometheus_client", "structlog", "aiosqlite", "rich")
NOT_FOR_DEFAULTS = (*NEVER_FOR_READS, "pydantic", "pydantic_settings", "asyncio")
# What a one-shot `syncd sync` never imports: the long-running daemon's parts (issue 13). Stricter
# than the import-linter contract, which allows syncd.outbound.signing: the config validates an
# outbound secret with it, and nothing here configures one.
DAEMON_ONLY = (
    "syncd.daemon",
    "syncd.daemon_sources",
    "syncd.daemon_jobs",
    "syncd.daemon_outbound",
    "syncd.daemon_publish",
    "syncd.reload",
    "syncd.notify",
    "syncd.web",
    "syncd.jobs",
    "syncd.outbound",
    "syncd.publish",
    "aiohttp.web",
    "redis",
)
DAEMON_ONLY_PACKAGES = tuple(f"{name}." for name in DAEMON_ONLY)

# Runs the command line in this interpreter, then prints what it returned and every module it
# imported as the last line of stderr.
_PROBE = """
import sys, json
from syncd.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
print(json.dumps({"rc": rc, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, set[str], str, str]:
    """(exit code, modules imported, stdout, stderr without the probe's line). A package counts
    as imported when any module of it is."""
    done = run_probe(_PROBE, *argv, env=env)
    *errors, last = done.stderr.strip().splitlines()
    probe = orjson.loads(last)
    modules = {*probe["modules"], *(m.split(".")[0] for m in probe["modules"])}
    return int(probe["rc"]), modules, done.stdout, "\n".join(errors)


def _modules_after(*argv: str) -> set[str]:
    return _run(*argv)[1]


@pytest.fixture(name="database", scope="module")
def fixture_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database written by the real store: three counts and their change-log entries."""
    path = tmp_path_factory.mktemp("cold") / "syncd.db"

    async def write() -> None:
        store = await Store.open(path)
        try:
            rows = [count("ITEM1", "L1", "3"), count("ITEM2", "L1", "4"), count("ITEM1", "L2", "5")]
            await store.write(
                lambda conn: counts_store.apply_page(
                    conn, "square", rows, pass_id=1, recorded_at="2026-01-01T00:00:00Z"
                )
            )
        finally:
            await store.aclose()

    asyncio.run(write())
    return path


def test_help_imports_no_heavy_module() -> None:
    loaded = _modules_after("--help")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_a_subcommand_registers_its_own_module_and_no_other() -> None:
    """`syncd counts --help` registers counts in full (its options are there), not the daemon."""
    rc, modules, out, _ = _run("counts", "--help")
    assert rc == 0
    assert "--location" in out
    assert "syncd.cli.counts" in modules
    assert not modules & {"syncd.cli.run", "syncd.daemon", "syncd.cli.sync"}


def _daemon_modules(loaded: set[str]) -> list[str]:
    """The modules of ``loaded`` that are (or are under) one of DAEMON_ONLY."""
    return sorted(m for m in loaded if m in DAEMON_ONLY or m.startswith(DAEMON_ONLY_PACKAGES))


def test_sync_imports_nothing_of_the_daemon(tmp_path: Path) -> None:
    """`syncd sync` registered in full, then a whole (failing) pass against a closed port: from
    its imports to the store's close, nothing of the daemon's web, jobs, outbound or publish
    machinery comes in."""
    rc, loaded, out, _ = _run("sync", "--help")
    assert rc == 0
    assert "--no-catalog" in out
    assert "syncd.cli.sync" in loaded
    assert not _daemon_modules(loaded), _daemon_modules(loaded)

    env = clean_env(SYNCD_SOURCES__SQUARE__MAX_RETRIES="0")
    argv = ("sync", "--base-url", "http://127.0.0.1:9", "--database", str(tmp_path / "s.db"))
    rc, loaded, out, _ = _run(*argv, env=env)
    assert rc == 1
    assert "FAILED: full pass" in out
    assert {"syncd.components", "syncd.sync.engine", "aiohttp"} <= loaded
    assert not _daemon_modules(loaded), _daemon_modules(loaded)


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (("status",), "counts     3"),
        (("status", "--json"), '"entries": 3'),
        (("counts", "--limit", "10"), "ITEM2"),
        (("sources", "list"), "square"),
    ],
)
def test_read_only_commands_import_nothing_heavy(
    database: Path, argv: tuple[str, ...], expect: str
) -> None:
    """With nothing configuring syncd, a read-only command is Python, sqlite3 and its queries."""
    rc, loaded, out, err = _run(*argv, "--database", str(database))
    assert (rc, err) == (0, "")
    assert expect in out
    heavy = loaded & set(NOT_FOR_DEFAULTS)
    assert not heavy, sorted(heavy)


def test_a_config_is_loaded_and_validated_still(database: Path, tmp_path: Path) -> None:
    """A config file, a SYNCD_* variable or a credentials directory is read and validated: the
    probe sees pydantic come in, a bad key fails as in `syncd config check`, and still nothing of
    the daemon is imported."""
    good = tmp_path / "good.toml"
    good.write_text('[sources.square]\nbase_url = "http://127.0.0.1:9"\n', encoding="utf-8")
    rc, loaded, out, _ = _run("status", "--config", str(good), "--database", str(database))
    assert rc == 0
    assert "square: active" in out
    assert "pydantic_settings" in loaded
    assert not loaded & set(NEVER_FOR_READS), sorted(loaded & set(NEVER_FOR_READS))

    bad = tmp_path / "bad.toml"
    bad.write_text("[sources.square]\npage_limt = 5\n", encoding="utf-8")
    check_rc, _, _, check_err = _run("config", "check", "--config", str(bad))
    for command in ("status", "counts"):
        rc, _, out, err = _run(command, "--config", str(bad), "--database", str(database))
        assert (rc, out, err) == (check_rc, "", check_err)
    assert check_rc == 2
    assert "did you mean 'page_limit'" in check_err

    for env in (
        clean_env(SYNCD_SOURCES__SQUARE__PAGE_LIMIT="5000"),
        clean_env(SYNCD_CONFIG=str(bad)),
        clean_env(CREDENTIALS_DIRECTORY=str(tmp_path / "missing")),
    ):
        rc, loaded, out, err = _run("counts", "--database", str(database), env=env)
        assert (rc, out) == (2, "")
        assert err.startswith("syncd: invalid configuration:")
        assert "pydantic_settings" in loaded


def _without_clock(data: Any) -> Any:
    """``data`` without what depends on the time of asking."""
    if isinstance(data, dict):
        return {
            k: _without_clock(v)
            for k, v in data.items()
            if k not in ("now", "age_s", "lag_s", "expires_in_s")
        }
    if isinstance(data, list):
        return [_without_clock(v) for v in data]
    return data


@pytest.mark.parametrize(
    "argv", [("status", "--json"), ("sources", "list", "--json"), ("counts", "--json")]
)
def test_skipping_the_load_of_the_defaults_changes_nothing(
    database: Path, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    """The same command with an empty config file (so the defaults are loaded and validated)
    prints the same records."""
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    outputs = []
    for extra in ((), ("--config", str(empty))):
        rc, _, out, err = _run(*argv, *extra, "--database", str(database))
        assert (rc, err) == (0, "")
        lines = [out] if argv[0] == "status" else out.splitlines()  # status --json is indented
        outputs.append([_without_clock(orjson.loads(line)) for line in lines])
    assert outputs[0] == outputs[1]
    assert outputs[0]


@pytest.mark.parametrize(
    ("override", "env"),
    [
        (None, {}),
        (None, {"STATE_DIRECTORY": "/var/lib/syncd:/var/lib/other"}),
        (Path("~/mirror.db"), {"STATE_DIRECTORY": "/var/lib/syncd"}),
        (Path("relative/x.db"), {}),
    ],
)
def test_the_defaults_are_what_loading_gives(override: Path | None, env: dict[str, str]) -> None:
    """What the read-only commands take for the settings when nothing configures syncd is what
    load_settings returns then: the database, the one default source at its defaults, and no
    outbound endpoint."""
    assert only_defaults(None, env)
    overrides = {} if override is None else {"database": str(override)}
    loaded = load_settings(None, env=env, overrides=overrides)
    assert defaults_database(override, env) == loaded.database
    assert configured_sources(None) == configured_sources(loaded)
    assert loaded.outbound == {}  # `syncd status` takes no endpoint as configured then


@pytest.mark.parametrize(
    ("config", "env"),
    [
        (Path("syncd.toml"), {}),
        (None, {"SYNCD_CONFIG": "/etc/syncd/syncd.toml"}),
        (None, {"CREDENTIALS_DIRECTORY": "/run/credentials/syncd.service"}),
        (None, {"syncd_log__level": "debug"}),
        (None, {"SYNCD_NOT_A_KEY": "1"}),  # ignored by load_settings, but never assumed so
    ],
)
def test_anything_that_may_configure_syncd_is_loaded(
    config: Path | None, env: dict[str, str]
) -> None:
    assert not only_defaults(config, env)


def test_empty_variables_configure_nothing() -> None:
    """An empty SYNCD_* variable counts as unset for load_settings, and so here."""
    assert only_defaults(None, {"SYNCD_LOG__LEVEL": "", "SYNCD_CONFIG": "", "PATH": "/bin"})


def test_the_one_line_help_of_every_command_is_what_its_module_registers() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    registered = {a.dest: a.help for a in sub._choices_actions}
    assert registered == {name: help_text for name, (_, help_text) in COMMANDS.items()}
