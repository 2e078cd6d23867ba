"""The composition root: Settings -> components, their lifecycle, signals and ordered shutdown.

``main``-style callers (the CLI) use ``run_daemon``; tests call ``Daemon.serve`` with their own stop
event (no signal handlers), the way uvicorn separates ``main()`` from ``serve()``.
Startup order: store (migrated) -> upstream session -> engine -> trigger loop. Shutdown is the reverse, in a
fixed, logged order, bounded by ``shutdown_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web

from syncd import __version__
from syncd.config import Settings, TcpAddress, parse_listen
from syncd.model import PassSummary
from syncd.store import Store
from syncd.sync.engine import EngineOptions, ProgressFn, SyncEngine
from syncd.sync.trigger import PassFn, SyncTrigger
from syncd.upstream.http import RetryPolicy, make_session
from syncd.upstream.square import SquareCounts, SquareOptions
from syncd.web.app import Listener, build_admin_app, build_public_app, run_server

log = structlog.get_logger("syncd.daemon")


def engine_options(settings: Settings) -> EngineOptions:
    """Map config onto the engine's plain parameters."""
    sq = settings.square
    return EngineOptions(
        source=sq.name,
        location_ids=tuple(sq.location_ids),
        overlap=sq.overlap,
        clock_margin=sq.clock_margin,
        partition_concurrency=sq.partition_concurrency,
        full_resync_interval=sq.full_resync_interval,
        full_resync_after=sq.full_resync_after,
    )


def square_options(settings: Settings, base_url: str | None = None) -> SquareOptions:
    """Map config onto the Square adapter's options (``base_url`` overrides, e.g. the simulator's)."""
    sq = settings.square
    return SquareOptions(
        base_url=base_url or sq.base_url,
        access_token=sq.access_token.get_secret_value() if sq.access_token else None,
        api_version=sq.api_version,
        states=tuple(sq.states),
        catalog_object_ids=tuple(sq.catalog_object_ids),
        location_ids=tuple(sq.location_ids),
        page_limit=sq.page_limit,
        policy=RetryPolicy(
            max_retries=sq.max_retries,
            backoff_initial=sq.retry_backoff_initial,
            backoff_factor=sq.retry_backoff_factor,
            backoff_max=sq.retry_backoff_max,
        ),
    )


def make_upstream_session(settings: Settings) -> aiohttp.ClientSession:
    """The HTTP client session for the Square upstream."""
    return make_session(
        request_timeout=settings.square.request_timeout,
        connect_timeout=settings.square.connect_timeout,
        user_agent=f"syncd/{__version__}",
        limit_per_host=max(4, settings.square.partition_concurrency),
    )


@dataclass(slots=True)
class Components:
    """What a running syncd is made of; built by ``open_components``."""

    store: Store
    session: aiohttp.ClientSession
    engine: SyncEngine


@asynccontextmanager
async def open_components(settings: Settings, *, base_url: str | None = None,
                          on_page: ProgressFn | None = None) -> AsyncIterator[Components]:
    """Open the store, the upstream session and the engine; close them in reverse order."""
    async with AsyncExitStack() as stack:
        store = await Store.open(settings.database)
        stack.push_async_callback(_logged_close, "store", store.aclose)
        session = make_upstream_session(settings)
        stack.push_async_callback(_logged_close, "upstream_session", session.close)
        upstream = SquareCounts(session, square_options(settings, base_url))
        engine = SyncEngine(store, upstream, engine_options(settings), on_page=on_page)
        yield Components(store=store, session=session, engine=engine)


async def _logged_close(name: str, close: object) -> None:
    assert callable(close)
    await close()
    log.info("component_closed", component=name)


class Daemon:
    """A running syncd: periodic and poked passes until stopped."""

    def __init__(self, settings: Settings, *, base_url: str | None = None) -> None:
        self.settings = settings
        self._base_url = base_url
        self.stop_event = asyncio.Event()
        self.components: Components | None = None
        self.trigger: SyncTrigger | None = None
        self.ready = asyncio.Event()
        self.public_url: str | None = None
        self.admin_url: str | None = None

    def handle_exit(self) -> None:
        """What the first SIGTERM/SIGINT calls; tests call it directly."""
        self.stop_event.set()

    async def serve(self) -> None:
        """Run until ``handle_exit``; then shut down in order."""
        settings = self.settings
        async with open_components(settings, base_url=self._base_url) as components:
            self.components = components
            trigger = SyncTrigger(
                self._run_pass(components.engine),
                interval=settings.square.poll_interval,
                debounce=settings.webhooks.debounce,
                max_delay=settings.webhooks.max_delay,
                retry_initial=settings.square.retry_backoff_initial,
                retry_max=settings.square.poll_interval,
            )
            self.trigger = trigger
            public, admin = self._build_apps(components)
            async with AsyncExitStack() as servers:
                self.public_url = await servers.enter_async_context(run_server(
                    public, listener_for(settings.http.listen), shutdown_timeout=1.0))
                self.admin_url = await servers.enter_async_context(run_server(
                    admin, listener_for(settings.admin.listen), shutdown_timeout=1.0))
                log.info("daemon_started", version=__version__, database=str(settings.database),
                         source=settings.square.name,
                         upstream=self._base_url or settings.square.base_url,
                         public_url=self.public_url, admin_url=self.admin_url)
                self.ready.set()
                loop_task = asyncio.create_task(trigger.run(self.stop_event), name="sync-trigger")
                try:
                    await self.stop_event.wait()
                    log.info("daemon_stopping", step="sync_trigger")
                    await _bounded(loop_task, settings.shutdown_timeout)
                finally:
                    if not loop_task.done():
                        loop_task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await loop_task
                log.info("daemon_stopping", step="listeners")
        log.info("daemon_stopped")

    def _build_apps(self, components: Components) -> tuple[web.Application, web.Application]:
        """The public (webhooks, health) and admin (control plane) applications with their routes."""
        settings = self.settings
        public = build_public_app(client_max_size=settings.http.max_body_bytes)
        token = settings.admin.token.get_secret_value() if settings.admin.token else None
        admin = build_admin_app(token=token)
        return public, admin

    @staticmethod
    def _run_pass(engine: SyncEngine) -> PassFn:
        async def run() -> PassSummary:
            return await engine.run_pass()

        return run


def listener_for(value: str) -> Listener:
    """A config listen address (already validated) as a server Listener."""
    address = parse_listen(value, allow_unix=True)
    if isinstance(address, TcpAddress):
        return Listener(host=address.host, port=address.port)
    return Listener(path=address.path)


async def _bounded(task: asyncio.Task[None], timeout: float) -> None:
    """Wait for ``task`` up to ``timeout`` seconds, then cancel it (its unit of work still commits)."""
    done, _ = await asyncio.wait([task], timeout=timeout)
    if not done:
        log.warning("shutdown_timeout", task=task.get_name(), timeout_s=timeout)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    else:
        task.result()  # surface the loop's own error, if it had one


def install_signal_handlers(daemon: Daemon) -> None:
    """First SIGTERM/SIGINT: graceful stop. Second: exit at once (SQLite's journal keeps the file safe)."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if daemon.stop_event.is_set():
            log.warning("forced_exit", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("signal_received", signal=signal.Signals(signum).name)
        daemon.handle_exit()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
