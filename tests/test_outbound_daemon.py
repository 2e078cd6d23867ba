"""Outbound webhooks in a running daemon (issue 14): the log reaches each configured endpoint,
the admin API's ``/outbound`` routes answer every input, and ``syncd status`` and ``syncd
consumers replay`` (real subprocesses) show and move an endpoint, with or without the daemon."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.config import Settings, load_settings
from syncd.errors import ConfigError
from syncd.outbound import signing
from syncd.simulator import SimulatorConfig, serve
from syncd.store.retention import prune_batch
from syncd.web.admin_outbound import SEQ_MAX, _from_seq
from tests.conftest import running_daemon
from tests.helpers import changes
from tests.outbound_kit import Reply, always, receiving
from tests.process_kit import clean_env, run_cli

SECRET = signing.new_secret()


def endpoint(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "secret": SECRET, "backoff_initial": 0.01, "max_backoff": 0.05, **extra}


async def call(
    http: aiohttp.ClientSession, method: str, path: str, **kw: Any
) -> tuple[int, dict[str, Any]]:
    async with http.request(method, path, **kw) as resp:
        return resp.status, await resp.json()


async def test_the_daemon_delivers_its_log_to_each_endpoint(
    make_settings: Callable[..., Settings], db_path: Path
) -> None:
    """Two endpoints, one taking count.removed only: the other gets every entry the first pass
    wrote (40 counts, then its pass.completed and pass.full_completed), in order; GET /outbound
    shows both caught up; POST .../replay answers every input."""
    async with (
        serve(SimulatorConfig(locations=2, items=20)) as (_, sim_url),
        receiving(SECRET) as everything,
        receiving(SECRET) as removals,
    ):
        settings = make_settings(
            outbound={
                "all": endpoint(everything.url, batch_size=7),
                "removed": endpoint(removals.url, kinds=["count.removed"]),
            }
        )
        async with (
            running_daemon(settings, sim_url) as daemon,
            aiohttp.ClientSession(base_url=daemon.admin_url) as http,
        ):
            assert daemon.store is not None
            assert daemon.outbound is not None
            deliverers = daemon.outbound.deliverers
            async with asyncio.timeout(10):
                while min(d.position for d in deliverers.values()) < 42:
                    await asyncio.sleep(0.01)
            assert daemon.store.changelog_head.head == 42
            assert everything.accepted_seqs() == list(range(1, 43))
            assert removals.deliveries == []
            status, body = await call(http, "GET", "/outbound")
            assert status == 200
            states = {e["endpoint"]: e for e in body["endpoints"]}
            assert states["all"]["acked_seq"] == states["removed"]["acked_seq"] == 42
            assert states["all"]["state"] == "active"
            assert states["all"]["lag"] == 0

            for body_bytes, why in (
                (b"[1]", "JSON object"),
                (b"{not json", "JSON object"),
                (b'{"from": 0}', "from must be a seq"),
                (b'{"from": "3"}', "from must be a seq"),
                (b'{"from": true}', "from must be a seq"),
                (b'{"from": 1, "to": 2}', "unknown field"),
                (b'{"from": 99999999999999999999}', "from must be a seq"),
                (b'{"from": 44}', "seqs are 1..42"),
            ):
                status, answer = await call(http, "POST", "/outbound/all/replay", data=body_bytes)
                assert status == 400, body_bytes
                assert why in answer["error"]["message"], (body_bytes, answer)
            status, answer = await call(http, "POST", "/outbound/nobody/replay", data=b"{}")
            assert status == 404
            assert answer["error"]["code"] == "unknown_endpoint"
            await daemon.store.write(
                lambda conn: prune_batch(conn, cutoff=None, max_rows=32, batch=10)
            )
            status, answer = await call(http, "POST", "/outbound/all/replay", json={"from": 5})
            assert status == 410
            assert answer["error"]["code"] == "changelog_gap"
            status, answer = await call(http, "POST", "/outbound/all/replay", json={"from": 31})
            assert status == 200
            assert answer["replayed"]["acked_seq"] == 30
            assert answer["replayed"]["epoch"] == 1
            await everything.wait_for(lambda r: r.accepted_seqs().count(42) == 2)
            status, answer = await call(http, "POST", "/outbound/all/replay")  # no body: resume
            assert status == 200
            assert answer["replayed"]["epoch"] == 1
    assert everything.accepted_seqs() == [*range(1, 43), *range(31, 43)]
    assert [e["seq"] for e in changes(db_path)] == list(range(11, 43))


@pytest.mark.slow
async def test_status_and_replay_from_the_command_line(
    make_settings: Callable[..., Settings], tmp_path: Path, db_path: Path
) -> None:
    """An endpoint that answers 410 is disabled; with the daemon stopped, `syncd status` shows
    it DISABLED with the reason, `syncd consumers replay` refuses bad input with the documented
    exit codes and re-enables it (--from moves it), and `status --json` shows the new position."""
    async with (
        serve(SimulatorConfig(locations=1, items=12)) as (_, sim_url),
        receiving(SECRET, always(Reply(410, body="no such hook"))) as gone,
    ):
        settings = make_settings(outbound={"erp": endpoint(gone.url)})
        async with running_daemon(settings, sim_url) as daemon:
            assert daemon.outbound is not None
            deliverer = daemon.outbound.deliverers["erp"]
            async with asyncio.timeout(10):
                while deliverer.disabled is None:
                    await asyncio.sleep(0.01)
    config = tmp_path / "cli.toml"
    config.write_text(
        f'database = "{db_path}"\n[admin]\nlisten = "unix:{tmp_path / "nobody.sock"}"\n'
        f'[outbound.erp]\nurl = "{gone.url}"\nsecret = "{SECRET}"\n'
    )
    env = clean_env()

    code, out, err = await run_cli("status", "--config", str(config), env=env)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("outbound"))
    assert "erp: DISABLED, acked seq 0 (14 behind)" in line  # 12 counts, 2 pass entries
    assert "410 Gone: no such hook" in line

    for args, expected in (
        (("nobody",), 1),
        (("erp", "--from", "0"), 2),
        (("erp", "--from", "x"), 2),
        (("erp", "--from", "16"), 2),
    ):
        code, _, err = await run_cli("consumers", "replay", *args, "--config", str(config), env=env)
        assert code == expected, (args, err)
    code, out, err = await run_cli("consumers", "replay", "erp", "--config", str(config), env=env)
    assert code == 0, err
    assert "erp: resumed; acknowledged up to seq 0, epoch 0" in out
    code, out, err = await run_cli(
        "consumers", "replay", "erp", "--from", "5", "--json", "--config", str(config), env=env
    )
    assert code == 0, err
    assert orjson.loads(out)["replayed"]["acked_seq"] == 4
    code, out, err = await run_cli("status", "--json", "--config", str(config), env=env)
    assert code == 0, err
    [row] = orjson.loads(out)["outbound"]
    assert (row["name"], row["state"], row["acked_seq"], row["epoch"]) == ("erp", "active", 4, 1)
    assert row["behind"] == 10


def test_bad_outbound_configuration_is_a_clear_config_error(tmp_path: Path) -> None:
    """A non-http URL, a missing or malformed secret, a bad filter or name: one line each,
    naming the key, secrets masked; a secret from a credential file is fine."""
    cases = {
        "SYNCD_OUTBOUND__erp__URL": "ftp://erp.example.com/hook",
        "SYNCD_OUTBOUND__ok__URL": "https://ok.example.com/hook",
        "SYNCD_OUTBOUND__ok__SECRET": "not-a-whsec-secret",
        "SYNCD_OUTBOUND__short__URL": "https://short.example.com/hook",
        "SYNCD_OUTBOUND__short__SECRET": "whsec_c2hvcnQ=",
        "SYNCD_OUTBOUND__kinds__URL": "http://127.0.0.1:9/hook",
        "SYNCD_OUTBOUND__kinds__SECRET": SECRET,
        "SYNCD_OUTBOUND__kinds__KINDS": '["count updated"]',
        "SYNCD_OUTBOUND__kinds__BATCH_SIZE": "0",
    }
    with pytest.raises(ConfigError) as exc:
        load_settings(env=cases)
    problems = {key: (value, why) for key, value, why in exc.value.problems}
    assert problems["outbound.erp.url"][1] == "must be an http:// or https:// URL"
    assert problems["outbound.erp.secret"][1].startswith("required (a secret")
    assert problems["outbound.ok.secret"] == (
        "***",
        "must start with whsec_ (a Standard Webhooks secret: whsec_ + base64 of 24..64 random"
        " bytes)",
    )
    assert "must decode to 24..64 bytes (got 5)" in problems["outbound.short.secret"][1]
    assert "kind pattern" in problems["outbound.kinds.kinds[0]"][1]
    assert "greater than or equal to 1" in problems["outbound.kinds.batch_size"][1]
    assert "not-a-whsec-secret" not in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_settings(env={"SYNCD_OUTBOUND__e.r__URL": "https://x.example/h"})
    assert any("endpoint names" in why for _, _, why in exc.value.problems)

    secrets = tmp_path / "credentials"
    secrets.mkdir()
    (secrets / "outbound.erp.secret").write_text(SECRET + "\n")
    settings = load_settings(
        env={"SYNCD_OUTBOUND__erp__URL": "https://erp.example.com/hook"}, secrets_dir=secrets
    )
    assert settings.outbound["erp"].secret.get_secret_value() == SECRET


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@pytest.mark.property
@given(
    body=st.binary(max_size=64)
    | JSON.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(st.just("from"), JSON).map(lambda v: json.dumps(v).encode())
)
def test_any_replay_body_is_a_seq_none_or_a_reason(body: bytes) -> None:
    """Property: whatever the body of POST /outbound/NAME/replay, it reads as no seq, a seq in
    1..2**63-1, or a reason for a 400; it never raises (a 500)."""
    found = _from_seq(body)
    assert found is None or isinstance(found, str) or 1 <= found <= SEQ_MAX
