"""The core commands as a user runs them (real subprocesses): config check, sync, status, counts,
changes, and their exit codes for bad input."""

from __future__ import annotations

from pathlib import Path

import orjson

from syncd.simulator import SimulatorConfig, serve
from tests.process_kit import clean_env, run_cli, write_config


async def test_config_check_prints_effective_config_with_secrets_redacted(tmp_path: Path) -> None:
    """`config check` exits 0 and prints the merged config; the token from the environment shows
    as *** and never in clear."""
    config = write_config(tmp_path, "http://127.0.0.1:9")
    env = clean_env(SYNCD_SQUARE__ACCESS_TOKEN="s3cr3t-token", SYNCD_SQUARE__PAGE_LIMIT="250")
    code, out, err = await run_cli("config", "check", "--config", str(config), env=env)
    assert code == 0, err
    effective = orjson.loads(out)
    assert effective["sources"]["square"]["page_limit"] == 250
    assert effective["sources"]["square"]["access_token"] == "***"
    assert "s3cr3t-token" not in out + err


async def test_config_check_names_the_legacy_square_table(tmp_path: Path) -> None:
    """A config written for one seller (`[square]`) still loads, as the source it names, and
    `config check` says on stderr what to write instead."""
    config = tmp_path / "old.toml"
    config.write_text('[square]\nname = "shop"\npage_limit = 70\n')
    code, out, err = await run_cli("config", "check", "--config", str(config), env=clean_env())
    assert code == 0, err
    effective = orjson.loads(out)
    assert list(effective["sources"]) == ["shop"]
    assert effective["sources"]["shop"]["page_limit"] == 70
    assert "square" not in effective
    assert "deprecated: [square] is deprecated: write it as [sources.shop]" in err


async def test_bad_config_names_every_bad_key_and_exits_2(tmp_path: Path) -> None:
    """Several bad keys at once: exit 2, one line per key with its value and why, no traceback."""
    config = tmp_path / "bad.toml"
    config.write_text('[square]\npage_limit = 0\npoll_interval = -1\n[log]\nlevel = "loud"\n')
    code, _out, err = await run_cli("config", "check", "--config", str(config))
    assert code == 2
    assert "Traceback" not in err
    for key in ("square.page_limit", "square.poll_interval", "log.level"):
        assert key in err
    assert "loud" in err


async def test_run_without_credentials_is_refused_with_exit_2(tmp_path: Path) -> None:
    """`syncd run` against the real upstream without a token refuses to start (exit 2) and says
    which key is missing; nothing is listening afterwards."""
    code, _, err = await run_cli("run", "--database", str(tmp_path / "x.db"))
    assert code == 2
    assert "square.access_token" in err
    assert "Traceback" not in err


async def test_sync_status_counts_changes_round_trip(tmp_path: Path) -> None:
    """`sync` mirrors the upstream (exit 0, summary line), `status --json` reports it, `counts`
    pages through every row, and `changes` prints the log as NDJSON from any seq."""
    db = str(tmp_path / "syncd.db")
    async with serve(SimulatorConfig(locations=3, items=700)) as (sim, url):
        code, out, err = await run_cli("sync", "--no-catalog", "--base-url", url, "--database", db)
        assert code == 0, err
        assert out.startswith("ok: full pass")
        assert "2100 counts" in out
        sim.mutate(5)
        code, out, _ = await run_cli("sync", "--no-catalog", "--base-url", url, "--database", db)
        assert code == 0
        assert "incremental pass" in out
        assert "5 changes" in out
    code, out, _ = await run_cli("status", "--json", "--database", db)
    assert code == 0
    status = orjson.loads(out)
    assert status["counts"] == 2100
    # 2100 + 5 counts, and each pass's entries: pass.completed (+ pass.full_completed, the first)
    assert status["changes"]["head_seq"] == 2108
    code, out, _ = await run_cli("counts", "--json", "--database", db)
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert len(rows) == 2100
    assert len({(r["location_id"], r["catalog_object_id"], r["state"]) for r in rows}) == 2100
    code, out, _ = await run_cli("counts", "--limit", "1500", "--json", "--database", db)
    assert len(out.splitlines()) == 1500
    code, out, _ = await run_cli("changes", "--after", "2100", "--database", db)
    assert [(e["seq"], e["kind"]) for e in map(orjson.loads, out.splitlines())] == [
        (2101, "pass.completed"),
        (2102, "pass.full_completed"),
        *((seq, "count.updated") for seq in range(2103, 2108)),
        (2108, "pass.completed"),
    ]
    code, out, _ = await run_cli(
        "changes", "--after", "2100", "--kind", "count.*", "--database", db
    )
    assert [orjson.loads(line)["seq"] for line in out.splitlines()] == list(range(2103, 2108))
    code, out, _ = await run_cli("snapshot", "--database", db)
    assert code == 0
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert lines[0]["type"] == "snapshot"
    assert lines[0]["seq"] == 2108
    assert lines[-1] == {"type": "end", "seq": 2108, "counts": 2100, "locations": 0, "catalog": 0}
    assert {(r["location_id"], r["catalog_object_id"], r["state"]) for r in lines[1:-1]} == {
        (r["location_id"], r["catalog_object_id"], r["state"]) for r in rows
    }
    code, out, _ = await run_cli("snapshot", "--source", "nope", "--database", db)
    assert out.splitlines()[-1] == (
        '{"type":"end","seq":2108,"counts":0,"locations":0,"catalog":0}'
    )


async def test_sync_against_a_refusing_upstream_exits_1_with_a_hint(tmp_path: Path) -> None:
    """A 401 from the upstream fails the pass: exit 1, the summary names the problem and the hint
    points at the token; nothing is retried forever."""
    db = str(tmp_path / "syncd.db")
    async with serve(SimulatorConfig(locations=1, items=5, access_token="right")) as (_, url):
        env = clean_env(SYNCD_SQUARE__ACCESS_TOKEN="wrong")
        code, out, err = await run_cli("sync", "--base-url", url, "--database", db, env=env)
    assert code == 1
    assert out.startswith("FAILED")
    assert "401" in out + err
    assert "square.access_token" in err


async def test_reading_commands_without_a_database_exit_1_with_a_hint(tmp_path: Path) -> None:
    """status/counts/changes on a missing database say so (exit 1) and never create one."""
    db = tmp_path / "missing.db"
    for command in (["status"], ["counts"], ["changes", "--after", "0"], ["snapshot"]):
        code, _, err = await run_cli(*command, "--database", str(db))
        assert code == 1, command
        assert "no database" in err
        assert "Try:" in err
    assert not db.exists()
