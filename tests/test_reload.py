"""SIGHUP reload in-process: what changed, what applies live, what waits for a restart, and a bad
config that changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from structlog.testing import capture_logs

from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.errors import ConfigError
from syncd.reload import Reloader, changed_keys, flatten
from syncd.simulator import SimulatorConfig, serve
from tests.conftest import running_daemon


def test_flatten_gives_dotted_keys() -> None:
    """Nested tables flatten to dotted names; lists and empty tables stay values."""
    assert flatten({"a": {"b": 1, "c": [1]}, "d": {}}) == {"a.b": 1, "a.c": [1], "d": {}}


def test_reloader_applies_live_keys_and_lists_the_rest(
    make_settings: Callable[..., Settings],
) -> None:
    """Only appliers whose keys changed run; other changes are logged as needing a restart (and
    stay listed on later reloads until then); secrets are masked in the log."""
    old = make_settings()
    sources: list[dict[str, Any]] = [
        {"log": {"level": "debug"}, "admin": {"token": "s3cret"}, "http": {"listen": "0.0.0.0:1"}},
        {
            "log": {"level": "debug"},
            "admin": {"token": "s3cret"},
            "http": {"listen": "0.0.0.0:1"},
            "changelog": {"retain_days": 7},
        },
    ]
    reloader = Reloader(lambda: make_settings(**sources.pop(0)), old)
    applied: list[tuple[str, object]] = []
    reloader.add({"log.level"}, lambda s: applied.append(("log", s.log.level)))
    reloader.add(
        {"changelog.retain_days"}, lambda s: applied.append(("retain", s.changelog.retain_days))
    )
    with capture_logs() as logs:
        first = reloader.reload()
        second = reloader.reload()
    assert first is not None
    assert second is not None
    assert applied == [("log", "debug"), ("retain", 7.0)]
    one, two = (e for e in logs if e["event"] == "config_reloaded")
    assert one["changed"]["admin.token"] == [None, "***"]
    assert one["applied"] == ["log.level"]
    assert one["restart_required"] == ["admin.token", "http.listen"]
    assert two["applied"] == ["changelog.retain_days"]
    assert two["restart_required"] == ["admin.token", "http.listen"]
    assert "s3cret" not in repr(logs)
    assert changed_keys(old, second) == [
        "admin.token",
        "changelog.retain_days",
        "http.listen",
        "log.level",
    ]


def test_a_bad_config_changes_nothing(make_settings: Callable[..., Settings]) -> None:
    """When the new config does not validate, every problem is logged and nothing is applied."""

    def broken() -> Settings:
        raise ConfigError([("square.page_limit", "0", "must be >= 1")])

    reloader = Reloader(broken, make_settings())
    reloader.add({"log.level"}, lambda s: None)
    with capture_logs() as logs:
        assert reloader.reload() is None
    assert logs[0]["event"] == "config_reload_failed"
    assert logs[0]["problems"] == [["square.page_limit", "0", "must be >= 1"]]


async def test_daemon_applies_intervals_limits_and_retention_live(
    make_settings: Callable[..., Settings],
) -> None:
    """A running daemon's reload reaches the trigger (interval, debounce), the engine (overlap,
    concurrency), the pruner (retention), the heartbeat (off, then on) and the shutdown timeout;
    a changed interval also starts a pass at once instead of waiting out the old one."""
    settings = make_settings(square={"poll_interval": 300}, changelog={"heartbeat_interval": 0})
    changed = {
        "square": {"poll_interval": 0.5, "overlap": 9, "partition_concurrency": 2},
        "webhooks": {"debounce": 0.5},
        "changelog": {"retain_max_rows": 10, "heartbeat_interval": 0.1},
        "shutdown_timeout": 2,
    }
    async with serve(SimulatorConfig(locations=1, items=5)) as (_, url):
        daemon = Daemon(settings, base_url=url, reload_settings=lambda: make_settings(**changed))
        task = asyncio.create_task(daemon.serve())
        try:
            async with asyncio.timeout(5):
                await daemon.ready.wait()
                assert daemon.trigger is not None
                while daemon.trigger.passes < 1 or daemon.trigger.last_success is None:
                    await asyncio.sleep(0.01)
            passes = daemon.trigger.passes
            with capture_logs() as logs:
                daemon.handle_reload()
            reloaded = next(e for e in logs if e["event"] == "config_reloaded")
            assert set(reloaded["applied"]) == {
                "sources.square.poll_interval",
                "sources.square.overlap",
                "sources.square.partition_concurrency",
                "webhooks.debounce",
                "changelog.retain_max_rows",
                "changelog.heartbeat_interval",
                "shutdown_timeout",
            }
            assert reloaded["restart_required"] == []
            assert daemon.trigger.interval == 0.5
            assert daemon.trigger.debounce == 0.5
            assert daemon.store is not None
            assert daemon.engine is not None
            assert daemon.engine.options.overlap == 9
            assert daemon.engine.options.partition_concurrency == 2
            assert daemon.settings.shutdown_timeout == 2
            async with asyncio.timeout(2):
                while daemon.trigger.passes == passes:
                    await asyncio.sleep(0.01)
            assert daemon.heartbeat is not None
            assert daemon.heartbeat.interval == 0.1
            async with asyncio.timeout(5):  # between the passes, every half second now
                while daemon.heartbeat.written == 0:
                    await asyncio.sleep(0.01)
        finally:
            daemon.handle_exit()
            async with asyncio.timeout(10):
                await task


async def test_reload_without_a_config_source_is_ignored(
    make_settings: Callable[..., Settings],
) -> None:
    """A daemon built without a way to re-read its config (tests, embedding) logs and ignores
    SIGHUP instead of failing."""
    async with (
        serve(SimulatorConfig(locations=1, items=5)) as (_, url),
        running_daemon(make_settings(), url) as daemon,
    ):
        with capture_logs() as logs:
            daemon.handle_reload()
    assert logs[0]["event"] == "config_reload_ignored"
