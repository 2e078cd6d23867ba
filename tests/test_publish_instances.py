"""Several syncd instances sharing one Redis (issue 11, docs/scaling.md): each database publishes
to its own stream; two configured with the same stream key never interleave, because the stream
is claimed by the first database (KEY:owner) and the second refuses it while it goes on syncing."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.daemon_publish import stream_key
from syncd.simulator import SimulatorConfig, serve
from tests.conftest import running_daemon
from tests.helpers import assert_log_invariants
from tests.process_kit import query, run_cli, syncd
from tests.redis_kit import RedisServer, assert_stream_equals_log

pytestmark = pytest.mark.slow

TEMPLATE = "syncd:changes:{instance}"


def head(db: Path) -> int:
    return int(query(db, "SELECT COALESCE(MAX(seq), 0) FROM changes")[0][0])


def database_id(db: Path) -> str:
    return str(query(db, "SELECT database_id FROM database_info")[0][0])


async def caught_up(daemon: Daemon, db: Path, at_least: int) -> None:
    """Until the daemon's relay has published its whole log, which has ``at_least`` entries."""
    assert daemon.publisher is not None
    relay = daemon.publisher.relay
    async with asyncio.timeout(15):
        while head(db) < at_least or relay.position < head(db):
            await asyncio.sleep(0.02)


async def test_two_instances_publish_to_their_own_streams(
    make_settings: Callable[..., Settings], redis_server: RedisServer, tmp_path: Path
) -> None:
    """Instances east and west (one database each, other sellers) run at the same time against
    one Redis with publish.redis.stream = "syncd:changes:{instance}": each change log lands in its
    own stream, whole and alone (the same seqs 1.. are in both logs, never mixed), and each stream
    is claimed by its own database."""

    def instance(name: str) -> Settings:
        return make_settings(
            instance=name,
            database=str(tmp_path / f"{name}.db"),
            publish={
                "redis": {
                    "url": redis_server.url,
                    "stream": TEMPLATE,
                    "batch_size": 40,
                    "retry_backoff_initial": 0.01,
                    "retry_backoff_max": 0.05,
                }
            },
        )

    east, west = instance("east"), instance("west")
    keys = stream_key(east), stream_key(west)
    assert keys == ("syncd:changes:east", "syncd:changes:west")
    async with (
        serve(SimulatorConfig(locations=2, items=120, seed=1)) as (east_sim, east_url),
        serve(SimulatorConfig(locations=3, items=90, seed=2)) as (west_sim, west_url),
        running_daemon(east, east_url) as east_daemon,
        running_daemon(west, west_url) as west_daemon,
    ):
        await asyncio.gather(
            caught_up(east_daemon, east.database, 240), caught_up(west_daemon, west.database, 270)
        )
        for sim, daemon in ((east_sim, east_daemon), (west_sim, west_daemon)):
            sim.mutate(25)
            assert daemon.trigger is not None
            daemon.trigger.poke()
        await asyncio.gather(
            caught_up(east_daemon, east.database, 240 + 25),
            caught_up(west_daemon, west.database, 270 + 25),
        )
    for settings, key in ((east, keys[0]), (west, keys[1])):
        assert_log_invariants(settings.database)
        assert await assert_stream_equals_log(redis_server.url, key, settings.database) == head(
            settings.database
        )
    redis = Redis.from_url(redis_server.url)
    try:
        assert await redis.get(keys[0] + ":owner") == database_id(east.database).encode()
        assert await redis.get(keys[1] + ":owner") == database_id(west.database).encode()
        assert database_id(east.database) != database_id(west.database)
    finally:
        await redis.aclose()


def write_instance_config(directory: Path, upstream: str, redis_url: str) -> Path:
    """One instance's config: its own database, no `instance` set (the host name is taken), the
    {instance} stream template, polling every half second."""
    directory.mkdir()
    path = directory / "syncd.toml"
    path.write_text(f"""
database = "{directory / "syncd.db"}"
shutdown_timeout = 5

[sources.square]
base_url = "{upstream}"
access_token = "test-token"
poll_interval = 0.5
catalog_sync = false
overlap = 1
clock_margin = 0
retry_backoff_initial = 0.01
retry_backoff_max = 0.05

[http]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[log]
format = "json"
level = "info"

[publish.redis]
url = "{redis_url}"
stream = "{TEMPLATE}"
batch_size = 40
retry_backoff_initial = 0.05
retry_backoff_max = 0.2
""")
    return path


async def test_a_second_instance_on_the_same_stream_key_refuses_it(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two `syncd run` processes on one host, neither with `instance` set: the template
    "syncd:changes:{instance}" gives both the host name, so one stream key. Scenario:
    1. A syncs 200 counts, claims the stream and publishes them; its seller keeps changing.
    2. B starts, syncs 3,000 counts: its log is longer than A's stream (which grows with A's
       changes and pass entries, however slow the machine), so only the claim stops it.
       B logs `publish_stream_owned` (A's id, B's id, the DEL hint), keeps syncing, writes nothing;
       `syncd status` on B's database shows the refusal.
    3. A goes on publishing; both stop.
    The stream holds exactly A's change log, every entry once, and is still A's."""
    key = "syncd:changes:" + socket.gethostname()
    redis = Redis.from_url(redis_server.url)
    try:
        async with (
            serve(SimulatorConfig(locations=2, items=100, seed=1, mutation_rate=20)) as (_, a_url),
            serve(SimulatorConfig(locations=3, items=1000, seed=2)) as (_, b_url),
        ):
            a_config = write_instance_config(tmp_path / "a", a_url, redis_server.url)
            b_config = write_instance_config(tmp_path / "b", b_url, redis_server.url)
            a_db, b_db = tmp_path / "a" / "syncd.db", tmp_path / "b" / "syncd.db"
            async with syncd("run", "--config", str(a_config)) as a:
                claimed = await a.event("publish_stream_claimed")
                assert claimed["stream"] == key
                assert claimed["database_id"] == database_id(a_db)
                async with asyncio.timeout(15):
                    while await redis.xlen(key) < 200:
                        await asyncio.sleep(0.02)
                async with syncd("run", "--config", str(b_config)) as b:
                    owned = await b.event("publish_stream_owned")
                    assert owned["stream"] == key
                    assert owned["owner"] == database_id(a_db)
                    assert owned["database_id"] == database_id(b_db)
                    assert owned["owner"] != owned["database_id"]
                    assert f"redis-cli DEL {key} {key}:owner" in owned["hint"]
                    await b.event("sync_pass", outcome="ok")  # B's sync goes on
                    assert head(b_db) >= 3000 > await redis.xlen(key)
                    grown = await redis.xlen(key) + 20
                    async with asyncio.timeout(15):  # and A's publishing
                        while await redis.xlen(key) < grown:
                            await asyncio.sleep(0.02)
                    code, out, err = await run_cli("status", "--database", str(b_db), "--json")
                    assert code == 0, err
                    [published] = orjson.loads(out)["publish"]
                    assert published["stream"] == key
                    assert database_id(a_db) in published["refused"]
                    code, out, err = await run_cli("status", "--database", str(b_db))
                    assert code == 0, err
                    assert f"REFUSED: stream {key} belongs to database {database_id(a_db)}" in out
                    assert f"(id {database_id(b_db)})" in out
                    b.signal(signal.SIGTERM)
                    assert await b.wait() == 0
                    assert b.count("publish_stream_owned") == 1
                    assert b.count("publish_stream_claimed") == 0
                a.signal(signal.SIGTERM)
                assert await a.wait() == 0
                assert a.count("publish_stream_owned") == 0
        assert await redis.get(key + ":owner") == database_id(a_db).encode()
    finally:
        await redis.aclose()
    assert_log_invariants(a_db)
    assert_log_invariants(b_db)
    assert await assert_stream_equals_log(redis_server.url, key, a_db) == head(a_db) > 220
