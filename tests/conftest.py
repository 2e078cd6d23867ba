"""Shared fixtures: real SQLite files in tmp_path, factories with fast defaults."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from syncd.config import Settings, load_settings
from syncd.daemon import Daemon
from syncd.store import Store
from tests.redis_kit import RedisServer
from tests.soak import report as soak_report

# Hypothesis profiles (issue 6): small and quick in CI, large under `make soak`
# (SYNCD_HYPOTHESIS_PROFILE=soak). Tests doing I/O per example set deadline=None themselves.
hypothesis_settings.register_profile(
    "ci", max_examples=60, deadline=timedelta(milliseconds=500), print_blob=True
)
hypothesis_settings.register_profile("soak", max_examples=2000, deadline=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("SYNCD_HYPOTHESIS_PROFILE", "ci"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Under `make soak` ($SYNCD_SOAK_REPORT set): the summary table of the scenario runs."""
    path = os.environ.get(soak_report.REPORT_ENV)
    if path:
        terminalreporter.write_sep("=", "soak summary")
        terminalreporter.write_line(soak_report.render(soak_report.load(Path(path))))


@pytest.fixture(name="redis_server")
async def fixture_redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real redis-server on 127.0.0.1 (free port, AOF on, in tmp_path); always stopped after."""
    server = RedisServer(tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


@pytest.fixture(name="db_path")
def fixture_db_path(tmp_path: Path) -> Path:
    """A fresh database path in the test's own directory."""
    return tmp_path / "syncd.db"


@pytest.fixture(name="store")
async def fixture_store(db_path: Path) -> AsyncIterator[Store]:
    """An open, migrated store on a real file; closed after the test."""
    store = await Store.open(db_path)
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture(name="make_settings")
def fixture_make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings with fast defaults for tests; keyword groups override sections, e.g.
    ``make_settings(square={"base_url": url})`` (the one source, named square) or
    ``make_settings(sources={"a": {...}, "b": {...}})`` (these sources instead; the fast defaults
    are in ``source_defaults``). Never reads the real environment."""

    def make(**sections: Any) -> Settings:
        sources = sections.pop("sources", None) or {"square": sections.pop("square", {})}
        base: dict[str, Any] = {
            "database": str(tmp_path / "syncd.db"),
            "shutdown_timeout": 5,
            "sources": sources,
            "source_defaults": {
                "poll_interval": 30,
                "catalog_sync": False,  # on where a test is about the catalog
                "overlap": 1,
                "clock_margin": 0,
                "retry_backoff_initial": 0.001,
                "retry_backoff_max": 0.01,
                "max_retries": 3,
                "request_timeout": 5,
            },
            "webhooks": {"debounce": 0.02, "max_delay": 0.1},
            "http": {"listen": "127.0.0.1:0"},
            "admin": {"listen": "127.0.0.1:0"},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        return load_settings(None, env={}, overrides=base)

    return make


@asynccontextmanager
async def running_daemon(
    settings: Settings,
    base_url: str | None,
    *,
    reload: Callable[[], Settings] | None = None,
) -> AsyncIterator[Daemon]:
    """A Daemon serving in this event loop until the block ends (stopped the way SIGTERM would).
    ``base_url`` replaces every source's (None: each keeps its own); ``reload`` is what SIGHUP
    (``handle_reload``) reads."""
    daemon = Daemon(settings, base_url=base_url, reload_settings=reload)
    task = asyncio.create_task(daemon.serve())
    try:
        async with asyncio.timeout(10):
            ready = asyncio.create_task(daemon.ready.wait())
            done, _ = await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                ready.cancel()
                task.result()
        yield daemon
    finally:
        daemon.handle_exit()
        async with asyncio.timeout(15):
            await task
