"""Publishing through crashes of the real daemon: `python -m syncd run` against the simulator and a
real redis-server, SIGKILLed while the relay is mid-stream, then restarted."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from redis.asyncio import Redis

from syncd.simulator import SimulatorConfig, serve
from tests.helpers import assert_log_invariants
from tests.process_kit import integrity, query, syncd, write_config
from tests.redis_kit import RedisServer, assert_stream_equals_log

pytestmark = pytest.mark.slow

STREAM = "syncd:changes:square"


def head(db: Path) -> int:
    return int(query(db, "SELECT COALESCE(MAX(seq), 0) FROM changes")[0][0])


async def test_sigkill_mid_publish_then_restart_stream_equals_the_log(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Scenario:
    1. The daemon syncs 8,000 counts (8,000 change-log entries) and publishes them 40 at a time.
    2. Three times, while the stream is still growing, it is SIGKILLed (between or inside a
       batch: anywhere), and started again.
    3. The last start runs until the relay has caught up, then stops with SIGTERM.
    The stream holds exactly the change log: every seq once, in order, with its record; the
    database is intact and the log consistent with the mirror."""
    db = tmp_path / "syncd.db"
    extra = f'[publish.redis]\nurl = "{redis_server.url}"\nbatch_size = 40\n'
    redis = Redis.from_url(redis_server.url)
    killed_mid_stream = 0
    reconciled: list[tuple[int, int]] = []  # (offset in SQLite, stream's last ID) at each start
    try:
        async with serve(SimulatorConfig(locations=4, items=2000)) as (_, url):
            config = write_config(tmp_path, url, extra=extra)
            for _ in range(3):
                async with syncd("run", "--config", str(config)) as daemon:
                    event = await daemon.event("publish_reconciled")
                    reconciled.append((event["offset"], event["stream_last"]))
                    floor = await redis.xlen(STREAM) + 150
                    async with asyncio.timeout(20):
                        while await redis.xlen(STREAM) < floor:
                            await asyncio.sleep(0.002)
                    daemon.signal(signal.SIGKILL)
                    assert await daemon.wait() == -signal.SIGKILL
                if await redis.xlen(STREAM) < head(db):
                    killed_mid_stream += 1
            async with syncd("run", "--config", str(config)) as daemon:
                event = await daemon.event("publish_reconciled")
                reconciled.append((event["offset"], event["stream_last"]))
                await daemon.event("sync_pass", outcome="ok")
                async with asyncio.timeout(20):
                    while await redis.xlen(STREAM) < head(db):
                        await asyncio.sleep(0.01)
                daemon.signal(signal.SIGTERM)
                assert await daemon.wait() == 0
    finally:
        await redis.aclose()
    assert killed_mid_stream >= 1, "no kill landed while the relay was behind"
    # The checkpoint trails the stream (it is written about once a second while busy), so a kill
    # leaves the stream ahead of it: restarts resume from the stream's last ID, sending nothing
    # twice (entries-added below).
    assert any(last > offset for offset, last in reconciled[1:]), reconciled
    assert integrity(db) == "ok"
    assert_log_invariants(db)
    assert await assert_stream_equals_log(redis_server.url, STREAM, db) == head(db) >= 8000
