"""The daemon with `publish.redis` set: the relay runs as one of its tasks, the sync never waits on
Redis, and `syncd status` shows the publishing lag."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson

from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.daemon_publish import stream_key
from syncd.simulator import SimulatorConfig, serve
from tests.conftest import running_daemon
from tests.helpers import assert_log_invariants
from tests.process_kit import query, run_cli
from tests.redis_kit import RedisServer, assert_stream_equals_log


def publishing(make_settings: Callable[..., Settings], url: str) -> Settings:
    return make_settings(
        publish={
            "redis": {
                "url": url,
                "batch_size": 50,
                "retry_backoff_initial": 0.01,
                "retry_backoff_max": 0.05,
                "timeout": 1,
            }
        }
    )


def head(db: Path) -> int:
    return int(query(db, "SELECT COALESCE(MAX(seq), 0) FROM changes")[0][0])


async def first_pass(daemon: Daemon) -> None:
    assert daemon.trigger is not None
    async with asyncio.timeout(10):
        while daemon.trigger.last_success is None:
            await asyncio.sleep(0.01)


async def test_the_daemon_publishes_its_change_log(
    make_settings: Callable[..., Settings], redis_server: RedisServer
) -> None:
    """A daemon with publish.redis.url publishes the first pass and later passes to
    syncd:changes:square; the stream equals the change log; `syncd status` reports the stream with
    0 behind."""
    settings = publishing(make_settings, redis_server.url)
    key = stream_key(settings)
    assert key == "syncd:changes:square"
    db = settings.database
    async with (
        serve(SimulatorConfig(locations=2, items=150)) as (sim, url),
        running_daemon(settings, url) as daemon,
    ):
        await first_pass(daemon)
        assert daemon.publisher is not None
        assert daemon.trigger is not None
        relay = daemon.publisher.relay
        sim.mutate(20)
        passes = daemon.trigger.passes
        daemon.trigger.poke()
        async with asyncio.timeout(10):
            while daemon.trigger.passes == passes or relay.position < head(db) or head(db) < 320:
                await asyncio.sleep(0.01)
    assert_log_invariants(db)
    assert await assert_stream_equals_log(redis_server.url, key, db) == head(db) >= 320
    code, out, err = await run_cli("status", "--database", str(db), "--json")
    assert code == 0, err
    [published] = orjson.loads(out)["publish"]
    assert published["target"] == "redis"
    assert published["stream"] == key
    assert published["published_seq"] == head(db)
    assert published["behind"] == 0
    code, out, err = await run_cli("status", "--database", str(db))
    assert code == 0, err
    assert f"publish    redis {key}: published seq {head(db)} (0 behind)" in out


async def test_the_sync_goes_on_while_redis_is_unreachable(
    make_settings: Callable[..., Settings], redis_server: RedisServer
) -> None:
    """Redis down from the start: the daemon starts, its passes complete, the relay retries in the
    background with the lag equal to the whole log (status shows it); once Redis is there, the
    relay catches up on its own."""
    port = redis_server.port
    await redis_server.stop()
    settings = publishing(make_settings, f"redis://127.0.0.1:{port}/0")
    db = settings.database
    async with (
        serve(SimulatorConfig(locations=1, items=80)) as (_, url),
        running_daemon(settings, url) as daemon,
    ):
        await first_pass(daemon)
        assert daemon.publisher is not None
        relay = daemon.publisher.relay
        async with asyncio.timeout(5):
            while relay.failures < 2:
                await asyncio.sleep(0.01)
        # 80 counts, then the pass's pass.completed and pass.full_completed
        assert relay.lag() == head(db) == 82
        code, out, err = await run_cli("status", "--database", str(db), "--json")
        assert code == 0, err
        assert orjson.loads(out)["publish"][0]["behind"] == 82
        await redis_server.start()
        async with asyncio.timeout(10):
            while relay.position < 82:
                await asyncio.sleep(0.01)
    assert await assert_stream_equals_log(redis_server.url, stream_key(settings), db) == 82


async def test_publishing_is_off_without_a_url(make_settings: Callable[..., Settings]) -> None:
    """Without publish.redis.url the daemon has no relay and never touches Redis."""
    settings = make_settings(publish={"redis": {"url": None}})
    async with (
        serve(SimulatorConfig(locations=1, items=5)) as (_, url),
        running_daemon(settings, url) as daemon,
    ):
        await first_pass(daemon)
        assert daemon.publisher is None
