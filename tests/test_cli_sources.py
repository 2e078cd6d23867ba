"""`syncd sources list|forget` and the per-source `status` as a user runs them (real
subprocesses, real SQLite files): with no daemon, and through a running daemon's admin listener."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncd.cli.sources import annotate_sources, configured_sources, describe_sources, render_list
from syncd.config import load_settings
from syncd.simulator import SimulatorConfig, serve
from syncd.store import Store, credentials
from syncd.timeutil import parse_ns
from tests.helpers import (
    assert_log_invariants,
    catalog_tables,
    changes,
    mirror,
    replay_catalog,
)
from tests.process_kit import clean_env, run_cli, syncd

SECRETS = ("s3cr3t-north", "s3cr3t-south", "AT-s3cr3t", "RT-s3cr3t")
LOCATIONS, ITEMS = 2, 30
ROWS = LOCATIONS * ITEMS


@pytest.fixture(name="short_dir")
def fixture_short_dir() -> Iterator[Path]:
    """A short directory for the admin unix socket (sun_path holds about 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="syncd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_config(
    tmp_path: Path, name: str, sources: list[str], *, upstream: str, admin: str | None = None
) -> Path:
    """A config with the named sources (static tokens), one database, JSON logs."""
    tables = "".join(
        f'[sources.{s}]\nbase_url = "{upstream}"\naccess_token = "s3cr3t-{s}"\n'
        "poll_interval = 300\noverlap = 1\nclock_margin = 0\n\n"
        for s in sources
    )
    admin_listen = admin or f"unix:{tmp_path / 'nobody.sock'}"  # certain refusal: no daemon
    path = tmp_path / name
    path.write_text(
        f'database = "{tmp_path / "syncd.db"}"\nshutdown_timeout = 5\n\n{tables}'
        f'[http]\nlisten = "127.0.0.1:0"\n\n[admin]\nlisten = "{admin_listen}"\n\n'
        '[log]\nformat = "json"\nlevel = "info"\n'
    )
    return path


async def cli(*args: str) -> tuple[int, str, str]:
    code, out, err = await run_cli(*args, env=clean_env())
    for secret in SECRETS:
        assert secret not in out + err, (args, secret)
    return code, out, err


def by_name(out: str) -> dict[str, dict[str, Any]]:
    return {row["source"]: row for row in orjson.loads(out)["sources"]}


async def two_synced_sources(tmp_path: Path, url: str) -> tuple[Path, Path]:
    """north and south synced into one database (config `both`), then a config without north
    (`south`); north also has stored OAuth state (as a token refresh would have left it)."""
    both = write_config(tmp_path, "both.toml", ["north", "south"], upstream=url)
    code, out, err = await cli("sync", "--config", str(both))
    assert code == 0, err
    assert out.count("ok: full pass") == 2
    store = await Store.open(tmp_path / "syncd.db")
    try:
        await store.write(
            lambda conn: credentials.save_grant(
                conn,
                "north",
                access_token="AT-s3cr3t",
                expires_at="2099-01-01T00:00:00Z",
                refresh_token="RT-s3cr3t",
                merchant_id="M-NORTH",
                refreshed_at="2026-01-01T00:00:00Z",
            )
        )
    finally:
        await store.aclose()
    return both, write_config(tmp_path, "south.toml", ["south"], upstream=url)


async def test_list_forget_and_status_without_a_daemon(tmp_path: Path) -> None:
    """list shows the configured source and the one the config dropped; forget refuses the
    configured one (exit 2) and an unknown one (exit 1), and forgets the dropped one with one
    count.removed entry per row, seqs following the head, the log still replaying to the mirror;
    a second forget is "unknown source". No token ever appears in any output."""
    db = tmp_path / "syncd.db"
    async with serve(SimulatorConfig(locations=LOCATIONS, items=ITEMS)) as (_, url):
        both, south = await two_synced_sources(tmp_path, url)

    code, out, err = await cli("sources", "list", "--json", "--config", str(south))
    assert code == 0, err
    rows = by_name(out)
    assert list(rows) == ["north", "south"]
    assert rows["south"]["configured"] is True
    assert rows["south"]["status"] == "active"
    assert rows["south"]["counts"] == ROWS
    assert rows["south"]["last_pass"]["outcome"] == "ok"
    assert rows["south"]["credentials"]["kind"] == "access_token"
    assert rows["south"]["credentials"]["access_token"] == "***"
    assert rows["north"]["configured"] is False
    assert rows["north"]["status"] == "unconfigured"  # no daemon has seen the new config yet
    assert rows["north"]["merchant_id"] == "M-NORTH"
    assert rows["north"]["credentials"] | {"expires_in_s": None} == {
        "kind": "oauth",
        "status": "ok",
        "error": None,
        "expires_at": "2099-01-01T00:00:00Z",
        "expires_in_s": None,
        "refreshed_at": "2026-01-01T00:00:00Z",
        "access_token": "***",
        "refresh_token": "***",
    }
    code, out, _ = await cli("sources", "list", "--config", str(south))
    assert code == 0
    header, north_line, south_line = out.splitlines()
    assert header.split()[:3] == ["SOURCE", "CONFIGURED", "STATUS"]
    assert north_line.split()[:5] == ["north", "no", "unconfigured", "M-NORTH", str(ROWS)]
    assert "oauth, token expires 2099-01-01T00:00:00Z" in north_line
    assert south_line.split()[:3] == ["south", "yes", "active"]

    code, out, err = await cli("status", "--json", "--config", str(south))
    assert code == 0, err
    status = orjson.loads(out)
    assert set(status["last_pass"]) == {"north", "south"}
    assert {s["source"]: s["status"] for s in status["sources"]} == {
        "north": "unconfigured",
        "south": "active",
    }
    code, out, _ = await cli("status", "--config", str(south))
    assert "  north: unconfigured" in out
    assert "token expires 2099-01-01T00:00:00Z" in out

    before = changes(db)
    north_rows = mirror(db, "north")
    catalog_tables_before = catalog_tables(db, "north")
    assert catalog_tables_before == replay_catalog(db, "north")
    assert len(north_rows) == ROWS
    code, _, err = await cli("sources", "forget", "south", "--config", str(south))
    assert code == 2
    assert "still in the config" in err
    code, _, err = await cli("sources", "forget", "north", "--config", str(both))
    assert code == 2
    code, _, err = await cli("sources", "forget", "ghost", "--config", str(south))
    assert code == 1
    assert "unknown source 'ghost'" in err
    assert changes(db) == before

    code, out, err = await cli("sources", "forget", "north", "--config", str(south))
    assert code == 0, err
    head = before[-1]["seq"]
    written = changes(db)[len(before) :]
    catalog = len(written) - ROWS
    assert catalog == len(catalog_tables_before)
    assert out == (
        f"forgot source north: {ROWS} count.removed entries and {catalog}"
        f" catalog.removed/location.removed entries written (seq {head + 1}..{head + ROWS + catalog});"
        f" removed {LOCATIONS} partition states, 0 webhook events, its OAuth state\n"
    )
    assert [e["seq"] for e in written] == list(range(head + 1, head + ROWS + catalog + 1))
    assert {(e["kind"], e["source"]) for e in written[:ROWS]} == {("count.removed", "north")}
    assert sorted(e["key"] for e in written[:ROWS]) == sorted(north_rows)  # exactly one per row
    assert {e["kind"] for e in written[ROWS:]} == {"catalog.removed", "location.removed"}
    assert catalog_tables(db, "north") == {} == replay_catalog(db, "north")
    assert mirror(db, "north") == {}
    assert len(mirror(db, "south")) == ROWS
    assert_log_invariants(db, "north")
    assert_log_invariants(db, "south")

    code, _, err = await cli("sources", "forget", "north", "--json", "--config", str(south))
    assert code == 1
    assert "unknown source 'north'" in err
    assert "already forgotten" in err
    assert len(changes(db)) == len(before) + ROWS + catalog
    code, out, _ = await cli("sources", "list", "--json", "--config", str(south))
    assert list(by_name(out)) == ["south"]


async def test_forget_needs_a_database(tmp_path: Path) -> None:
    """forget on a missing database says so (exit 1) and creates nothing."""
    config = write_config(tmp_path, "c.toml", ["south"], upstream="http://127.0.0.1:9")
    code, _, err = await cli("sources", "forget", "north", "--config", str(config))
    assert code == 1
    assert "no database" in err
    assert not (tmp_path / "syncd.db").exists()


@pytest.mark.slow
async def test_forget_through_the_running_daemon(tmp_path: Path, short_dir: Path) -> None:
    """A daemon started without north marks it removed; `sources forget` goes through its admin
    listener (the database is locked), which refuses a source its running config has even when
    the CLI's file lacks it, and forgets north with one count.removed entry per row."""
    db = tmp_path / "syncd.db"
    sock = short_dir / "admin.sock"
    async with serve(SimulatorConfig(locations=LOCATIONS, items=ITEMS)) as (_, url):
        _, _ = await two_synced_sources(tmp_path, url)
        south = write_config(tmp_path, "run.toml", ["south"], upstream=url, admin=f"unix:{sock}")
        neither = write_config(tmp_path, "none.toml", ["other"], upstream=url, admin=f"unix:{sock}")
        async with syncd("run", "--config", str(south)) as daemon:
            await daemon.event("source_removed", source="north")
            await daemon.event("daemon_started")
            code, out, err = await cli("sources", "list", "--json", "--config", str(south))
            assert code == 0, err
            north = by_name(out)["north"]
            assert north["status"] == "removed"
            assert north["removed_at"] is not None
            code, out, _ = await cli("sources", "list", "--config", str(south))
            assert f"removed at {north['removed_at']}" in out

            code, _, err = await cli("sources", "forget", "south", "--config", str(neither))
            assert code == 2
            assert "running daemon's config" in err
            before = changes(db)
            north_rows = mirror(db, "north")
            catalog = len(catalog_tables(db, "north"))
            assert catalog > 0
            code, out, err = await cli(
                "sources", "forget", "north", "--json", "--config", str(south)
            )
            assert code == 0, err
            forgotten = orjson.loads(out)["forgotten"]
            head = before[-1]["seq"]
            assert forgotten == {
                "source": "north",
                "entries": ROWS,
                "catalog_entries": catalog,
                "first_seq": head + 1,
                "last_seq": head + ROWS + catalog,
                "partitions": LOCATIONS,
                "webhook_events": 0,
                "credentials": True,
            }
            event = await daemon.event("source_forgotten", source="north")
            assert event["entries"] == ROWS
            code, _, err = await cli("sources", "forget", "north", "--config", str(south))
            assert code == 1
            assert "unknown source 'north'" in err
    written = [e for e in changes(db) if e["seq"] > head and e["source"] == "north"]
    assert [e["kind"] for e in written[:ROWS]] == ["count.removed"] * ROWS
    assert sorted(e["key"] for e in written[:ROWS]) == sorted(north_rows)
    assert {e["kind"] for e in written[ROWS:]} == {"catalog.removed", "location.removed"}
    assert len(written) == ROWS + catalog
    assert catalog_tables(db, "north") == {} == replay_catalog(db, "north")
    seqs = [e["seq"] for e in changes(db)]
    assert seqs == sorted(set(seqs))
    assert mirror(db, "north") == {}
    assert_log_invariants(db, "north")
    assert_log_invariants(db, "south")
    for line in daemon.events:
        assert not any(secret in orjson.dumps(line).decode() for secret in SECRETS)


def test_statuses_and_redaction_from_database_and_config() -> None:
    """Each status from what the database and the config say; a configured OAuth source whose
    grant was refused is unauthorized; the error shows, the tokens never do."""
    settings = load_settings(
        None,
        env={},
        overrides={
            "sources": {
                "acme": {"oauth": {"client_id": "c", "refresh_token": "RT-s3cr3t"}},
                "fresh": {"access_token": "s3cr3t-north"},
                "gone": {"access_token": "s3cr3t-south"},
            }
        },
    )

    def db(**values: Any) -> dict[str, Any]:
        base = {
            "registered": True,
            "merchant_id": None,
            "added_at": "2026-01-01T00:00:00Z",
            "removed_at": None,
            "counts": 3,
            "partitions": 1,
            "backlog": 0,
            "credentials": None,
        }
        return base | values

    refused = {
        "status": "unauthorized",
        "error": "refresh refused: invalid_grant",
        "expires_at": "2026-01-01T01:00:00Z",
        "refreshed_at": "2026-01-01T00:00:00Z",
        "has_access_token": True,
        "has_refresh_token": True,
    }
    overview = {
        "acme": db(source="acme", credentials=refused),
        "gone": db(source="gone", removed_at="2026-01-02T00:00:00Z"),
        "old": db(source="old"),
    }
    rows = {r["source"]: r for r in describe_sources(overview, {}, configured_sources(settings))}
    annotate_sources(list(rows.values()), parse_ns("2026-01-01T02:00:00Z"))
    assert {name: r["status"] for name, r in rows.items()} == {
        "acme": "unauthorized",
        "fresh": "pending",
        "gone": "removed",
        "old": "unconfigured",
    }
    assert rows["acme"]["credentials"]["kind"] == "oauth"
    assert rows["acme"]["credentials"]["expires_in_s"] == -3600
    assert rows["fresh"]["credentials"]["access_token"] == "***"
    assert rows["old"]["credentials"]["kind"] is None
    text = render_list(list(rows.values()))
    assert "unauthorized" in text
    assert "token expires 2026-01-01T01:00:00Z (expired)" in text
    assert "removed at 2026-01-02T00:00:00Z" in text
    dumped = orjson.dumps(rows).decode() + text
    assert not any(secret in dumped for secret in SECRETS)
