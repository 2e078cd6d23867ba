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
import weakref
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import structlog
from aiohttp import web

from syncd import __version__
from syncd.components import open_store, with_base_url
from syncd.config import Settings, SourceSettings, TcpAddress, parse_listen
from syncd.daemon_jobs import JobTracking, open_job_tracking
from syncd.daemon_outbound import Outbound, open_outbound
from syncd.daemon_publish import Publisher, open_publisher
from syncd.daemon_sources import LIVE_SOURCE_KEYS, SourceRunner, SourceSet
from syncd.errors import SyncdError
from syncd.model import PassSummary
from syncd.notify import Notifier
from syncd.reload import (
    SOURCE_PREFIXES,
    Reloader,
    heartbeat_keys,
    logging_keys,
    pruner_keys,
    schedule_keys,
)
from syncd.store import Store
from syncd.store.inbox import Inbox
from syncd.store.retention import ChangelogPruner, RetentionPolicy
from syncd.store.sqlite import database_mode_problem
from syncd.sync.engine import SyncEngine
from syncd.sync.heartbeat import Heartbeat
from syncd.sync.lifecycle import LifecycleMonitor
from syncd.sync.trigger import SyncTrigger
from syncd.web.admin_changes import ChangeFeed, add_change_routes
from syncd.web.admin_jobs import add_job_routes
from syncd.web.admin_metrics import add_metrics_routes
from syncd.web.admin_outbound import add_outbound_routes
from syncd.web.admin_snapshot import add_snapshot_routes
from syncd.web.admin_sources import add_source_routes
from syncd.web.app import Listener, build_admin_app, build_public_app, refuse_while, run_server
from syncd.web.health import Readiness, add_health_routes
from syncd.web.webhooks import WebhookIngress, add_webhook_routes

log = structlog.get_logger("syncd.daemon")

# How often processed webhook events older than webhooks.retain_days are pruned.
INBOX_PRUNE_INTERVAL = 3600.0


class DaemonCrashed(SyncdError):
    """A background task of the daemon ended on its own; the daemon stopped (and exits non-zero)."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        super().__init__(
            f"background task {task.get_name()} stopped unexpectedly; see the log",
            op="daemon",
            hint="the service manager restarts syncd (Restart=on-failure)",
        )


class Daemon:
    """A running syncd: periodic and poked passes of every source until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        base_url: str | None = None,
        reload_settings: Callable[[], Settings] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self._base_url = base_url
        self.settings = with_base_url(settings, base_url)
        self._reload_settings = reload_settings
        self.reloader: Reloader | None = None
        self.notifier = notifier or Notifier.from_environ()
        self.stop_event = asyncio.Event()
        self.store: Store | None = None
        self.sources: SourceSet | None = None
        self.inbox: Inbox | None = None
        self.jobs: JobTracking | None = None
        self.publisher: Publisher | None = None
        self.outbound: Outbound | None = None
        self.heartbeat: Heartbeat | None = None
        self.ready = asyncio.Event()
        self.public_url: str | None = None
        self.admin_url: str | None = None
        self._reloads: set[asyncio.Task[None]] = set()

    def runner(self, name: str | None = None) -> SourceRunner | None:
        """A running source by name; with no name, the only one (one-source tests and tools)."""
        if self.sources is None:
            return None
        if name is not None:
            return self.sources.get(name)
        runners = list(self.sources)
        return runners[0] if len(runners) == 1 else None

    @property
    def trigger(self) -> SyncTrigger | None:
        """The only source's trigger (None before start, or with several sources)."""
        runner = self.runner()
        return None if runner is None else runner.trigger

    @property
    def engine(self) -> SyncEngine | None:
        """The only source's engine (None before start, or with several sources)."""
        runner = self.runner()
        return None if runner is None else runner.parts.engine

    def handle_exit(self) -> None:
        """What the first SIGTERM/SIGINT calls; tests call it directly."""
        self.stop_event.set()

    def handle_reload(self) -> None:
        """What SIGHUP calls: re-read the config, apply what can change live (``syncd.reload``);
        sources added, removed or changed are started, stopped or restarted in the background."""
        if self.reloader is None:
            log.warning("config_reload_ignored", reason="no config source to re-read, or not ready")
            return
        new = self.reloader.reload()
        if new is not None:
            self.settings = new

    async def serve(self) -> None:
        """Run until ``handle_exit``; then shut down in order."""
        settings = self.settings
        async with open_store(settings) as store:
            self.store = store
            _log_startup_warnings(settings)
            inbox = Inbox(store, window=settings.webhooks.group_commit_window)
            self.inbox = inbox
            sources = SourceSet(
                store,
                inbox,
                max_concurrent_passes=settings.sync.max_concurrent_passes,
                max_failing_passes=settings.sync.max_failing_passes,
                debounce=settings.webhooks.debounce,
                max_delay=settings.webhooks.max_delay,
                on_pass=lambda summary: self.notifier.status_soon(pass_status(summary)),
                apply_counts=settings.webhooks.apply_counts,
            )
            self.sources = sources
            # Job tracking (issue 4): an inventory job's success pokes every source's trigger.
            self.jobs = jobs = open_job_tracking(settings, store, self._poke_all)
            # Redis Streams relay (issue 7), when publish.redis.url is set.
            self.publisher = publisher = open_publisher(settings, store)
            # Outbound webhooks (issue 14): one deliverer per [outbound.NAME].
            self.outbound = outbound = open_outbound(settings, store)
            public, admin = self._build_apps(store)
            await inbox.start()
            tasks: list[asyncio.Task[None]] = []
            crashed: asyncio.Task[None] | None = None
            # The relay stops after the sources: their last commits (a page, a pass's end and
            # its entries) land during the drain, and its final round publishes them too.
            publish_stop = asyncio.Event()
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
                    await sources.load_merchants(set(settings.sources))
                    await sources.mark_unconfigured(set(settings.sources))
                    for name, conf in settings.sources.items():
                        await sources.start(name, conf, self.stop_event)
                    log.info(
                        "daemon_started",
                        version=__version__,
                        database=str(settings.database),
                        sources=sorted(settings.sources),
                        public_url=self.public_url,
                        admin_url=self.admin_url,
                    )
                    self.ready.set()
                    self.notifier.ready(
                        f"serving {len(settings.sources)} sources; admin {self.admin_url}"
                    )
                    tasks.extend(self._service_tasks(store, sources))
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
                            asyncio.create_task(publisher.run(publish_stop), name="publish-relay")
                        )
                    tasks.extend(outbound.tasks(self.stop_event))
                    crashed = await _until_stop_or_crash(
                        self.stop_event, tasks, extra=lambda: [r.task for r in sources if r.task]
                    )
                    # From here the public listener answers 503 (refuse_while) while we drain.
                    self.notifier.stopping("stopping: draining")
                    log.info("daemon_stopping", step="webhook_inbox")
                    await inbox.aclose()
                    log.info("daemon_stopping", step="sources")
                    await sources.aclose(self.settings.shutdown_timeout)
                    log.info("daemon_stopping", step="background_tasks")
                    publish_stop.set()
                    await _bounded(tasks, self.settings.shutdown_timeout)
                    log.info("daemon_stopping", step="listeners")
            finally:
                await _cancel(tasks)
                await sources.aclose(0.0)
                await inbox.aclose()
                await jobs.aclose()
                if publisher is not None:
                    await publisher.aclose()
                await outbound.aclose()
        log.info("daemon_stopped")
        if crashed is not None:
            raise DaemonCrashed(crashed)

    def _poke_all(self) -> None:
        for runner in self.sources or ():
            runner.trigger.poke()

    def _build_apps(self, store: Store) -> tuple[web.Application, web.Application]:
        """The public (webhooks, health) and admin (control plane) applications with their routes."""
        settings = self.settings
        sources = self.sources
        assert sources is not None
        assert self.inbox is not None
        public = build_public_app(client_max_size=settings.http.max_body_bytes)
        public.middlewares.append(refuse_while(self.stop_event))  # 503 while draining
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
            public, Readiness(store, sources.health, settings.http.ready_max_staleness)
        )
        token = settings.admin.token.get_secret_value() if settings.admin.token else None
        admin = build_admin_app(token=token)
        if self.jobs is not None:
            add_job_routes(admin, self.jobs.service)
        add_change_routes(admin, ChangeFeed(store, self.stop_event))
        add_metrics_routes(admin, store)
        add_snapshot_routes(admin, settings.database)
        if self.outbound is not None:
            add_outbound_routes(admin, self.outbound.replay, self.outbound.states)
        # The running config decides (the file may have changed since the last reload).
        add_source_routes(admin, lambda name: sources.forget(name, self.settings.sources))
        return public, admin

    def _service_tasks(self, store: Store, sources: SourceSet) -> list[asyncio.Task[None]]:
        """Change-log retention, heartbeats and source statuses (issue 14), the systemd
        watchdog, and SIGHUP's appliers (issue 5)."""
        settings = self.settings
        retain = settings.changelog
        pruner = ChangelogPruner(
            store,
            RetentionPolicy(days=retain.retain_days, max_rows=retain.retain_max_rows),
            interval=retain.prune_interval,
        )
        self.heartbeat = heartbeat = Heartbeat(store, retain.heartbeat_interval, sources.lifecycles)
        monitor = LifecycleMonitor(store, sources.lifecycles, settings.http.ready_max_staleness)
        if self._reload_settings is not None:
            load = self._reload_settings
            base_url = self._base_url
            self.reloader = reloader = Reloader(lambda: with_base_url(load(), base_url), settings)
            for keys, apply in (
                logging_keys(),
                schedule_keys(sources),
                pruner_keys(pruner),
                heartbeat_keys(heartbeat),
            ):
                reloader.add(keys, apply)
            reloader.add_prefix(SOURCE_PREFIXES, self._apply_sources)
            reloader.add({"shutdown_timeout"}, lambda s: None)  # read from self.settings at stop
        return [
            asyncio.create_task(pruner.run(self.stop_event), name="changelog-prune"),
            asyncio.create_task(heartbeat.run(self.stop_event), name="changelog-heartbeat"),
            asyncio.create_task(monitor.run(self.stop_event), name="source-status"),
            asyncio.create_task(self.notifier.run_watchdog(self.stop_event), name="watchdog"),
        ]

    def _apply_sources(self, new: Settings) -> None:
        """SIGHUP changed the sources: live keys now; sources to start, stop or restart in the
        background, in order (a restart waits for the pass in flight)."""
        sources = self.sources
        if sources is None or self.stop_event.is_set():
            return
        restart: dict[str, SourceSettings] = {}
        for name, conf in new.sources.items():
            runner = sources.get(name)
            if runner is None:
                continue
            changed = sources.changes(name, conf)
            if changed - LIVE_SOURCE_KEYS:
                restart[name] = conf
            elif changed:
                sources.apply_live(name, conf)
                log.info(
                    "source_reconfigured", source=name, outcome="applied", keys=sorted(changed)
                )
        task = asyncio.create_task(self._reconcile(new, restart), name="sources-reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reconcile(self, new: Settings, restart: dict[str, SourceSettings]) -> None:
        sources = self.sources
        if sources is None:
            return
        running = {runner.name for runner in sources}
        for name in sorted(running - set(new.sources)):
            await sources.remove(name, new.shutdown_timeout)
        for name, conf in restart.items():
            await sources.restart(name, conf, self.stop_event)
            log.info("source_reconfigured", source=name, outcome="restarted")
        for name, conf in new.sources.items():
            if name not in running and not self.stop_event.is_set():
                await sources.start(name, conf, self.stop_event)
                log.info("source_added", source=name)


def _log_startup_warnings(settings: Settings) -> None:
    """What an operator should fix but syncd can run with: deprecated config, a readable database."""
    for line in settings.deprecations:
        log.warning("config_deprecated", detail=line)
    problem = database_mode_problem(settings.database)
    if problem is not None:
        log.warning("database_permissions", database=str(settings.database), problem=problem)


def pass_status(summary: PassSummary) -> str:
    """The one-line STATUS= systemd shows after a pass."""
    outcome = "ok" if summary.ok else f"FAILED ({summary.error})"
    return (
        f"last pass #{summary.pass_id} ({summary.source}) {summary.kind} {outcome}:"
        f" {summary.pages} pages, {summary.changes} changes"
    )


def listener_for(value: str) -> Listener:
    """A config listen address (already validated) as a server Listener."""
    address = parse_listen(value, allow_unix=True)
    if isinstance(address, TcpAddress):
        return Listener(host=address.host, port=address.port)
    return Listener(path=address.path)


async def _until_stop_or_crash(
    stop: asyncio.Event,
    tasks: list[asyncio.Task[None]],
    *,
    extra: Callable[[], list[asyncio.Task[None]]] = list,
    recheck: float = 5.0,
) -> asyncio.Task[None] | None:
    """Wait for the stop signal while watching the background tasks. A task may finish early when it
    has nothing to do (e.g. the watchdog without WatchdogSec); one that raises has crashed: log it,
    start the drain, and return it so the daemon exits non-zero (and systemd restarts it).
    ``extra`` names tasks that come and go (the sources' triggers, on SIGHUP): re-read every
    ``recheck`` seconds.

    Each task is watched by a done callback, added once: a wake-up costs two futures whatever
    the number of tasks (200 sources' triggers were 200 callbacks added and removed every
    ``recheck``: issue 11's idle CPU)."""
    crashed: asyncio.Future[asyncio.Task[None]] = asyncio.get_running_loop().create_future()
    seen: weakref.WeakSet[asyncio.Task[None]] = weakref.WeakSet()
    watched: set[asyncio.Task[None]] = set()

    def on_done(task: asyncio.Task[None]) -> None:
        watched.discard(task)
        if crashed.done() or task.cancelled() or task.exception() is None:
            return
        crashed.set_result(task)

    def watch(current: list[asyncio.Task[None]]) -> None:
        for task in current:
            if task not in seen:
                seen.add(task)
                watched.add(task)
                task.add_done_callback(on_done)

    stop_wait = asyncio.create_task(stop.wait(), name="stop-wait")
    wakes: list[asyncio.Future[Any]] = [stop_wait, crashed]
    try:
        watch(tasks)
        while not stop.is_set() and not crashed.done():
            watch(extra())
            await asyncio.wait(wakes, timeout=recheck, return_when=asyncio.FIRST_COMPLETED)
        if crashed.done():
            task = crashed.result()
            log.error("task_crashed", task=task.get_name(), error=repr(task.exception()))
            stop.set()
            return task
    finally:
        stop_wait.cancel()
        for task in watched:
            task.remove_done_callback(on_done)
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
