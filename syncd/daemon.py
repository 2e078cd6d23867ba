"""The composition root: Settings -> components, their lifecycle, signals and ordered shutdown.

``main``-style callers (the CLI) use ``run_daemon``; tests call ``Daemon.serve`` with their own stop
event (no signal handlers), the way uvicorn separates ``main()`` from ``serve()``.
Startup order: instance lock -> store (migrated) -> upstream session -> engine -> webhook inbox
-> listeners -> READY=1 (sd_notify) -> trigger loop, pruning, watchdog. Shutdown runs in a fixed,
logged order, bounded by ``shutdown_timeout``: STOPPING=1 and the public listener answers 503 ->
inbox (queued commits land) -> trigger loop and other tasks (the page transaction in flight
commits) -> listeners -> upstream session -> store -> lock. SIGHUP re-reads the config and applies
what can change live (``syncd.reload``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web

from syncd import __version__
from syncd.config import Settings, TcpAddress, parse_listen
from syncd.daemon_jobs import JobTracking, open_job_tracking
from syncd.daemon_publish import Publisher, open_publisher
from syncd.errors import SyncdError
from syncd.model import PassSummary
from syncd.notify import Notifier
from syncd.reload import Reloader, engine_keys, logging_keys, pruner_keys, trigger_keys
from syncd.store import Store
from syncd.store.inbox import Inbox
from syncd.store.lock import InstanceLock
from syncd.store.retention import ChangelogPruner, RetentionPolicy
from syncd.sync.engine import EngineOptions, ProgressFn, SyncEngine
from syncd.sync.trigger import DoneFn, PassFn, SyncTrigger
from syncd.upstream.http import RetryPolicy, make_session
from syncd.upstream.square import SquareCounts, SquareOptions
from syncd.web.admin_changes import ChangeFeed, add_change_routes
from syncd.web.admin_jobs import add_job_routes
from syncd.web.admin_metrics import add_metrics_routes
from syncd.web.admin_snapshot import add_snapshot_routes
from syncd.web.app import Listener, build_admin_app, build_public_app, refuse_while, run_server
from syncd.web.health import Readiness, add_health_routes
from syncd.web.signatures import SignatureVerifier
from syncd.web.webhooks import WebhookIngress, WebhookSource, add_webhook_routes

log = structlog.get_logger("syncd.daemon")

# How often processed webhook events older than webhooks.retain_days are pruned.
INBOX_PRUNE_INTERVAL = 3600.0


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
        cursor_restarts=sq.cursor_restarts,
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


def webhook_verifier(settings: Settings) -> SignatureVerifier | None:
    """The source's signature verifier, or None (every webhook refused) when keys or URL are unset."""
    sq = settings.square
    keys = [k.get_secret_value() for k in sq.webhook_signature_keys if k.get_secret_value()]
    if not keys or not sq.notification_url:
        log.warning(
            "webhooks_not_configured",
            source=sq.name,
            keys=len(keys),
            notification_url=sq.notification_url,
            hint="set square.webhook_signature_keys and square.notification_url;"
            " until then every webhook is answered 401",
        )
        return None
    return SignatureVerifier(keys, sq.notification_url)


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
async def open_components(
    settings: Settings, *, base_url: str | None = None, on_page: ProgressFn | None = None
) -> AsyncIterator[Components]:
    """Open the store, the upstream session and the engine; close them in reverse order."""
    async with AsyncExitStack() as stack:
        lock = await InstanceLock.acquire(settings.database)  # one writer process per database
        stack.callback(lock.release)
        store = await Store.open(settings.database)
        stack.push_async_callback(_logged_close, "store", store.aclose)
        session = make_upstream_session(settings)
        stack.push_async_callback(_logged_close, "upstream_session", session.close)
        upstream = SquareCounts(session, square_options(settings, base_url))
        engine = SyncEngine(store, upstream, engine_options(settings), on_page=on_page)
        yield Components(store=store, session=session, engine=engine)


async def _logged_close(name: str, close: Callable[[], Awaitable[object]]) -> None:
    await close()
    log.info("component_closed", component=name)


class DaemonCrashed(SyncdError):
    """A background task of the daemon ended on its own; the daemon stopped (and exits non-zero)."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        super().__init__(
            f"background task {task.get_name()} stopped unexpectedly; see the log",
            op="daemon",
            hint="the service manager restarts syncd (Restart=on-failure)",
        )


class Daemon:
    """A running syncd: periodic and poked passes until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        base_url: str | None = None,
        reload_settings: Callable[[], Settings] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self._base_url = base_url
        self._reload_settings = reload_settings
        self.reloader: Reloader | None = None
        self.notifier = notifier or Notifier.from_environ()
        self.stop_event = asyncio.Event()
        self.components: Components | None = None
        self.trigger: SyncTrigger | None = None
        self.inbox: Inbox | None = None
        self.jobs: JobTracking | None = None
        self.publisher: Publisher | None = None
        self.ready = asyncio.Event()
        self.public_url: str | None = None
        self.admin_url: str | None = None

    def handle_exit(self) -> None:
        """What the first SIGTERM/SIGINT calls; tests call it directly."""
        self.stop_event.set()

    def handle_reload(self) -> None:
        """What SIGHUP calls: re-read the config, apply what can change live (``syncd.reload``)."""
        if self.reloader is None:
            log.warning("config_reload_ignored", reason="no config source to re-read, or not ready")
            return
        new = self.reloader.reload()
        if new is not None:
            self.settings = new

    async def serve(self) -> None:
        """Run until ``handle_exit``; then shut down in order."""
        settings = self.settings
        async with open_components(settings, base_url=self._base_url) as components:
            self.components = components
            source = settings.square.name
            inbox = Inbox(components.store, window=settings.webhooks.group_commit_window)
            self.inbox = inbox
            trigger = SyncTrigger(
                self._run_pass(components.engine),
                interval=settings.square.poll_interval,
                debounce=settings.webhooks.debounce,
                max_delay=settings.webhooks.max_delay,
                retry_initial=settings.square.retry_backoff_initial,
                retry_max=settings.square.poll_interval,
                on_pass_done=self._mark_inbox(inbox, source),
            )
            self.trigger = trigger
            # Job tracking (issue 4): an inventory job's success pokes the trigger.
            self.jobs = jobs = open_job_tracking(settings, components.store, trigger.poke)
            # Redis Streams relay (issue 7), when publish.redis.url is set.
            self.publisher = publisher = open_publisher(settings, components.store)
            public, admin = self._build_apps(components)
            await inbox.start()
            tasks: list[asyncio.Task[None]] = []
            crashed: asyncio.Task[None] | None = None
            try:
                async with AsyncExitStack() as servers:
                    self.public_url = await servers.enter_async_context(
                        run_server(
                            public,
                            listener_for(settings.http.listen),
                            shutdown_timeout=1.0,
                            read_timeout=settings.http.read_timeout,  # slow-loris clients
                        )
                    )
                    self.admin_url = await servers.enter_async_context(
                        run_server(admin, listener_for(settings.admin.listen), shutdown_timeout=1.0)
                    )
                    log.info(
                        "daemon_started",
                        version=__version__,
                        database=str(settings.database),
                        source=source,
                        upstream=self._base_url or settings.square.base_url,
                        public_url=self.public_url,
                        admin_url=self.admin_url,
                    )
                    pending = await inbox.count_unprocessed(source)
                    if pending:
                        # Acknowledged before a crash or stop, not yet covered by a pass.
                        log.info("webhook_inbox_pending", source=source, events=pending)
                        trigger.run_soon()
                    self.ready.set()
                    self.notifier.ready(f"serving; admin {self.admin_url}")
                    tasks.extend(self._service_tasks(components, trigger))
                    tasks.append(
                        asyncio.create_task(trigger.run(self.stop_event), name="sync-trigger")
                    )
                    tasks.append(
                        asyncio.create_task(
                            inbox.prune_forever(
                                self.stop_event,
                                retain_days=settings.webhooks.retain_days,
                                interval=INBOX_PRUNE_INTERVAL,
                            ),
                            name="webhook-prune",
                        )
                    )
                    tasks.append(
                        asyncio.create_task(jobs.poller.run(self.stop_event), name="job-poller")
                    )
                    if publisher is not None:
                        tasks.append(
                            asyncio.create_task(
                                publisher.run(self.stop_event), name="publish-relay"
                            )
                        )
                    crashed = await _until_stop_or_crash(self.stop_event, tasks)
                    # From here the public listener answers 503 (refuse_while) while we drain.
                    self.notifier.stopping("stopping: draining")
                    log.info("daemon_stopping", step="webhook_inbox")
                    await inbox.aclose()
                    log.info("daemon_stopping", step="background_tasks")
                    await _bounded(tasks, self.settings.shutdown_timeout)
                    log.info("daemon_stopping", step="listeners")
            finally:
                await _cancel(tasks)
                await inbox.aclose()
                await jobs.aclose()
                if publisher is not None:
                    await publisher.aclose()
        log.info("daemon_stopped")
        if crashed is not None:
            raise DaemonCrashed(crashed)

    def _build_apps(self, components: Components) -> tuple[web.Application, web.Application]:
        """The public (webhooks, health) and admin (control plane) applications with their routes."""
        settings = self.settings
        public = build_public_app(client_max_size=settings.http.max_body_bytes)
        public.middlewares.append(refuse_while(self.stop_event))  # 503 while draining
        assert self.trigger is not None
        assert self.inbox is not None
        name = settings.square.name
        sources = {name: WebhookSource(name, webhook_verifier(settings), self.trigger.poke)}
        add_webhook_routes(
            public,
            WebhookIngress(
                sources,
                self.inbox,
                max_body_bytes=settings.http.max_body_bytes,
                read_timeout=settings.http.read_timeout,
            ),
        )
        add_health_routes(
            public, Readiness(components.store, self.trigger, settings.http.ready_max_staleness)
        )
        token = settings.admin.token.get_secret_value() if settings.admin.token else None
        admin = build_admin_app(token=token)
        if self.jobs is not None:
            add_job_routes(admin, self.jobs.service)
        add_change_routes(admin, ChangeFeed(components.store, self.stop_event))
        add_metrics_routes(admin, components.store)
        add_snapshot_routes(admin, settings.database)
        return public, admin

    def _service_tasks(
        self, components: Components, trigger: SyncTrigger
    ) -> list[asyncio.Task[None]]:
        """Change-log retention, the systemd watchdog, and SIGHUP's appliers (issue 5)."""
        settings = self.settings
        retain = settings.changelog
        pruner = ChangelogPruner(
            components.store,
            RetentionPolicy(days=retain.retain_days, max_rows=retain.retain_max_rows),
            interval=retain.prune_interval,
        )
        if self._reload_settings is not None:
            self.reloader = reloader = Reloader(self._reload_settings, settings)
            for keys, apply in (
                logging_keys(),
                trigger_keys(trigger),
                engine_keys(components.engine),
                pruner_keys(pruner),
            ):
                reloader.add(keys, apply)
            reloader.add({"shutdown_timeout"}, lambda s: None)  # read from self.settings at stop
        return [
            asyncio.create_task(pruner.run(self.stop_event), name="changelog-prune"),
            asyncio.create_task(self.notifier.run_watchdog(self.stop_event), name="watchdog"),
        ]

    @staticmethod
    def _mark_inbox(inbox: Inbox, source: str) -> DoneFn:
        """After a successful pass: the webhook events received before it started are covered."""

        async def done(started_ns: int, summary: PassSummary) -> None:
            marked = await inbox.mark_processed(source, started_ns)
            if marked:
                log.info(
                    "webhook_events_processed",
                    source=source,
                    events=marked,
                    pass_id=summary.pass_id,
                )

        return done

    def _run_pass(self, engine: SyncEngine) -> PassFn:
        async def run() -> PassSummary:
            summary = await engine.run_pass()
            self.notifier.status(pass_status(summary))
            return summary

        return run


def pass_status(summary: PassSummary) -> str:
    """The one-line STATUS= systemd shows after a pass."""
    outcome = "ok" if summary.ok else f"FAILED ({summary.error})"
    return (
        f"last pass #{summary.pass_id} {summary.kind} {outcome}: {summary.pages} pages,"
        f" {summary.changes} changes"
    )


def listener_for(value: str) -> Listener:
    """A config listen address (already validated) as a server Listener."""
    address = parse_listen(value, allow_unix=True)
    if isinstance(address, TcpAddress):
        return Listener(host=address.host, port=address.port)
    return Listener(path=address.path)


async def _until_stop_or_crash(
    stop: asyncio.Event, tasks: list[asyncio.Task[None]]
) -> asyncio.Task[None] | None:
    """Wait for the stop signal while watching the background tasks. A task may finish early when it
    has nothing to do (e.g. the watchdog without WatchdogSec); one that raises has crashed: log it,
    start the drain, and return it so the daemon exits non-zero (and systemd restarts it)."""
    stop_wait = asyncio.create_task(stop.wait(), name="stop-wait")
    watched = set(tasks)
    try:
        while not stop.is_set():
            done, _ = await asyncio.wait([stop_wait, *watched], return_when=asyncio.FIRST_COMPLETED)
            for task in [t for t in tasks if t in done and t in watched]:
                watched.discard(task)
                exc = None if task.cancelled() else task.exception()
                if exc is not None:
                    log.error("task_crashed", task=task.get_name(), error=repr(exc))
                    stop.set()
                    return task
    finally:
        stop_wait.cancel()
    return None


async def _bounded(tasks: list[asyncio.Task[None]], grace: float) -> None:
    """Give every task one shared ``grace`` period to finish, then cancel the rest (a unit of work in
    progress still commits); a task's own error is logged, never lost."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        log.warning("shutdown_timeout", task=task.get_name(), timeout_s=grace)
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await task
            except Exception as exc:  # reaped so it surfaces in the log, not as "never retrieved"
                log.error("task_failed", task=task.get_name(), error=repr(exc))


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and reap whatever is still running (after an error, or a bounded wait ran out)."""
    running = [t for t in tasks if not t.done()]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if running:
        log.warning("tasks_cancelled", count=len(running), tasks=[t.get_name() for t in running])


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
    loop.add_signal_handler(signal.SIGHUP, daemon.handle_reload)
