"""syncd as a service, as real `python -m syncd` processes: the systemd notify protocol, one instance
per database, SIGTERM during a large sync, a second signal, SIGHUP reload. The simulator upstream
runs in the test process."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from syncd.simulator import SimulatorConfig, serve
from tests.helpers import assert_log_invariants, mirror
from tests.process_kit import (
    clean_env,
    integrity,
    query,
    run_cli,
    syncd,
    wal_exists,
    write_config,
)

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def notify_socket() -> AsyncIterator[tuple[str, list[str]]]:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET; yields its path and the list
    the messages it receives are appended to."""
    directory = tempfile.mkdtemp(prefix="sd-", dir="/tmp")  # unix socket paths must stay short
    path = str(Path(directory) / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    messages: list[str] = []

    async def receive() -> None:
        loop = asyncio.get_running_loop()
        while True:
            messages.append((await loop.sock_recv(sock, 4096)).decode())

    task = asyncio.create_task(receive())
    try:
        yield path, messages
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
        shutil.rmtree(directory)


async def test_notify_ready_watchdog_stopping_in_order(tmp_path: Path) -> None:
    """Under a fake service manager (NOTIFY_SOCKET, WATCHDOG_USEC=0.2 s): syncd sends READY=1 once
    it serves, then WATCHDOG=1 about every 0.1 s from its event loop, then STOPPING=1 on SIGTERM,
    and exits 0; every message is a valid KEY=VALUE datagram and STATUS= is one line."""
    async with (
        serve(SimulatorConfig(locations=1, items=20)) as (_, url),
        notify_socket() as (address, messages),
    ):
        config = write_config(tmp_path, url)
        env = clean_env(NOTIFY_SOCKET=address, WATCHDOG_USEC="200000")
        async with syncd("run", "--config", str(config), env=env) as daemon:
            await daemon.event("daemon_started")
            async with asyncio.timeout(5):
                while sum("WATCHDOG=1" in m for m in messages) < 3:
                    await asyncio.sleep(0.02)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
        async with asyncio.timeout(5):  # the last datagram was sent before the exit
            while not any("STOPPING=1" in m for m in messages):
                await asyncio.sleep(0.01)
    kinds = [
        next(k for k in ("READY=1", "WATCHDOG=1", "STOPPING=1") if k in m)
        for m in messages
        if any(k in m for k in ("READY=1", "WATCHDOG=1", "STOPPING=1"))
    ]
    assert kinds[0] == "READY=1"
    assert kinds[-1] == "STOPPING=1"
    assert set(kinds[1:-1]) == {"WATCHDOG=1"}
    assert kinds.count("READY=1") == 1
    for message in messages:
        lines = message.split("\n")
        assert all("=" in line for line in lines), message
        assert sum(line.startswith("STATUS=") for line in lines) <= 1


async def test_second_instance_is_refused_while_readers_work(tmp_path: Path) -> None:
    """A second `syncd run` on the same database exits 4 naming the running one's pid, and changes
    nothing; meanwhile `status` says up (with that pid), `changes` and `counts` read fine; after the
    first stops, `status` says down."""
    async with serve(SimulatorConfig(locations=1, items=30)) as (_, url):
        config = write_config(tmp_path, url)
        async with syncd("run", "--config", str(config)) as first:
            await first.event("sync_pass", outcome="ok")
            code, _, err = await run_cli("run", "--config", str(config))
            assert code == 4, err
            assert f"is in use by another syncd (pid {first.pid})" in err
            assert "Try:" in err

            code, out, err = await run_cli("status", "--config", str(config), "--json")
            assert code == 0, err
            status = orjson.loads(out)
            assert status["daemon"] == {"running": True, "pid": first.pid}
            assert status["last_pass"]["square"]["outcome"] == "ok"
            code, out, _ = await run_cli("changes", "--config", str(config), "--limit", "3")
            assert code == 0
            assert len(out.splitlines()) == 3
            code, out, _ = await run_cli("counts", "--config", str(config), "--json")
            assert code == 0
            assert len(out.splitlines()) == 30
            first.signal(signal.SIGTERM)
            assert await first.wait() == 0
        code, out, _ = await run_cli("status", "--config", str(config))
        assert code == 0
        assert "down" in out.splitlines()[0]


def _pass_running(db: Path) -> bool:
    """Whether a counts pass has started (and not ended) in ``db``."""
    try:
        return query(db, "SELECT outcome FROM passes") == [("running",)]
    except sqlite3.Error:  # not created or migrated yet
        return False


async def test_sigterm_during_large_sync_exits_cleanly_in_time(tmp_path: Path) -> None:
    """Scenario: a first full pass of 3,000 counts in pages of 100 with 0.1 s per page (about 3 s).
    1. SIGTERM once about ten pages are read (a full pass writes them in batches of 10,000
       counts: none of this one's is written yet).
    2. syncd exits 0 well within shutdown_timeout (5 s): the pass is interrupted between pages
       (the pages read and not written are dropped: the next pass reads them again).
    3. The database is intact and closed cleanly (no WAL left), the interrupted pass is recorded,
       the watermark has not moved, and replaying the log reproduces the mirror exactly."""
    sim = SimulatorConfig(locations=1, items=3000, page_delay=0.1)
    async with serve(sim) as (served, url):
        config = write_config(tmp_path, url, square="page_limit = 100")
        db = tmp_path / "syncd.db"
        async with syncd("run", "--config", str(config)) as daemon:
            await daemon.event("daemon_started")
            async with asyncio.timeout(10):
                while not _pass_running(db):
                    await asyncio.sleep(0.05)
                pages = served.requests + 10
                while served.requests < pages:  # about ten pages of the pass read
                    await asyncio.sleep(0.05)
            started = time.monotonic()
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
            elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"took {elapsed:.2f}s to stop"
    assert not wal_exists(db), "the database was not closed cleanly"
    assert integrity(db) == "ok"
    assert len(mirror(db)) < 3000
    assert query(db, "SELECT outcome FROM passes") == [("interrupted",)]
    assert query(db, "SELECT watermark FROM sync_state") in ([], [(None,)])
    assert_log_invariants(db)
    steps = [e["step"] for e in daemon.events if e.get("event") == "daemon_stopping"]
    drain = [s for s in steps if s in ("webhook_inbox", "background_tasks", "listeners")]
    assert drain == ["webhook_inbox", "background_tasks", "listeners"]  # listeners close last
    assert daemon.count("daemon_stopped") == 1


async def test_second_signal_exits_at_once_without_corruption(tmp_path: Path) -> None:
    """Scenario: another process holds the database's write lock, so the drain after SIGTERM waits
    for syncd's page transaction. Meanwhile the public listener answers 503 with Retry-After. A
    second SIGTERM exits at once (code 1); the database is intact and the log still replays to the
    mirror."""
    async with serve(SimulatorConfig(locations=1, items=3000, page_delay=0.05)) as (_, url):
        config = write_config(tmp_path, url, square="page_limit = 100")
        db = tmp_path / "syncd.db"
        async with syncd("run", "--config", str(config)) as daemon:
            started = await daemon.event("daemon_started")
            async with asyncio.timeout(10):
                while len(mirror(db)) < 200:
                    await asyncio.sleep(0.02)
            blocker = sqlite3.connect(db, timeout=10, isolation_level=None)
            try:
                blocker.execute("BEGIN IMMEDIATE")  # syncd's next page now waits for us
                daemon.signal(signal.SIGTERM)
                async with aiohttp.ClientSession() as http:
                    async with asyncio.timeout(5):
                        while True:
                            async with http.get(f"{started['public_url']}/healthz") as resp:
                                if resp.status == 503:
                                    assert resp.headers["Retry-After"]
                                    body = await resp.json()
                                    assert body["error"]["code"] == "unavailable"
                                    break
                            await asyncio.sleep(0.02)
                t0 = time.monotonic()
                daemon.signal(signal.SIGTERM)
                assert await daemon.wait() == 1
                assert time.monotonic() - t0 < 1.0
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
    assert any(e.get("event") == "forced_exit" for e in daemon.events)
    assert integrity(db) == "ok"
    assert_log_invariants(db)


async def test_sighup_reloads_log_level_and_poll_interval(tmp_path: Path) -> None:
    """Scenario: syncd runs at log level info with a 300 s poll interval. The config file changes
    to level debug and a 0.3 s interval, plus a listen address (which needs a restart), then SIGHUP.
    syncd logs config_reloaded with what changed, what it applied and what needs a restart; debug
    events appear from then on, and passes now come every 0.3 s."""
    async with serve(SimulatorConfig(locations=1, items=20)) as (_, url):
        config = write_config(tmp_path, url)
        async with syncd("run", "--config", str(config)) as daemon:
            await daemon.event("sync_pass", outcome="ok")
            await asyncio.sleep(0.3)  # the trigger now sleeps until the next pass, 300 s away
            assert not any(e.get("level") == "debug" for e in daemon.events)
            text = config.read_text()
            config.write_text(
                text.replace('level = "info"', 'level = "debug"')
                .replace("poll_interval = 300", "poll_interval = 0.3")
                .replace('listen = "127.0.0.1:0"\n\n[admin]', 'listen = "127.0.0.1:9"\n\n[admin]')
            )
            mark = len(daemon.events)
            daemon.signal(signal.SIGHUP)
            reloaded = await daemon.wait_for(
                lambda e: e.get("event") == "config_reloaded", after=mark
            )
            assert reloaded["changed"]["log.level"] == ["info", "debug"]
            assert reloaded["changed"]["sources.square.poll_interval"] == [300.0, 0.3]
            assert set(reloaded["applied"]) == {"log.level", "sources.square.poll_interval"}
            assert reloaded["restart_required"] == ["http.listen"]
            await daemon.wait_for(lambda e: e.get("level") == "debug", after=mark)
            t0 = time.monotonic()
            async with asyncio.timeout(5):
                while daemon.count("sync_pass", after=mark) < 4:
                    await asyncio.sleep(0.05)
            assert time.monotonic() - t0 < 3.0

            config.write_text("this is not TOML")
            mark = len(daemon.events)
            daemon.signal(signal.SIGHUP)
            failed = await daemon.wait_for(
                lambda e: e.get("event") == "config_reload_failed", after=mark
            )
            assert "TOML" in str(failed["problems"])
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
