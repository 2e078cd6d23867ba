"""One runner per configured source (issue 11): its upstream parts (session, token keeper, engine;
built in ``syncd.source_parts``) under a trigger, and the set of them that the daemon, the webhook
router, readiness and SIGHUP share.

Edge code like ``daemon_jobs``: it reads ``SourceSettings`` and hands the core plain parameters.
Sources are independent: each has its own HTTP session (connection pool, timeouts), retry policy,
token keeper and trigger with its own backoff, so a source that fails or stalls only holds its own
connections. Passes run on slots: ``sync.max_concurrent_passes`` for healthy sources, and
``sync.max_failing_passes`` of their own for sources whose last pass failed, so failing sources
never hold a healthy one's slot. The slots are ``asyncio.Semaphore``s, which wake waiters in
arrival order: no source is starved.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import aiosqlite
import structlog

from syncd import metrics
from syncd.config import SourceSettings
from syncd.errors import SourceStillConfigured, SyncdError
from syncd.model import PassSummary
from syncd.source_parts import SourceParts, catalog_options, open_source, unauthorized_fn
from syncd.store import Store
from syncd.store import catalog as catalog_store
from syncd.store import sources as registry
from syncd.store.inbox import Inbox
from syncd.store.sources import Forgotten
from syncd.sync.catalog import CatalogEngine
from syncd.sync.fast_path import FastPath
from syncd.sync.lifecycle import SourceLifecycle
from syncd.sync.trigger import SyncTrigger
from syncd.timeutil import format_ns, now_ns
from syncd.upstream.http import REQUEST_SOURCE
from syncd.upstream.square import parse_count_event
from syncd.web.health import SourceHealth
from syncd.web.signatures import SignatureVerifier
from syncd.web.webhooks import WebhookSource

log = structlog.get_logger("syncd.daemon")

# Keys of a source that apply to its running engine and trigger; any other changed key of a source
# restarts that source's runner (credentials, URL, filters, locations decide what it talks to).
LIVE_SOURCE_KEYS = frozenset(
    {
        "poll_interval",
        "overlap",
        "clock_margin",
        "partition_concurrency",
        "full_resync_interval",
        "full_resync_after",
        "locations_interval",
        "notification_url",
        "webhook_signature_keys",
        "catalog_interval",
        "catalog_full_interval",
        "catalog_overlap",
    }
)
# How long a source's first counts pass waits for its first catalog pass when the catalog was never
# read: so that the first count entries carry their SKUs. A failing catalog never holds counts
# longer than this.
FIRST_CATALOG_WAIT = 60.0


def webhook_verifier(name: str, conf: SourceSettings) -> SignatureVerifier | None:
    """The source's signature verifier, or None (its webhooks refused) when keys or URL are unset."""
    keys = [k.get_secret_value() for k in conf.webhook_signature_keys if k.get_secret_value()]
    if not keys or not conf.notification_url:
        log.warning(
            "webhooks_not_configured",
            source=name,
            keys=len(keys),
            notification_url=conf.notification_url,
            hint="set webhook_signature_keys and notification_url (in [source_defaults] for one"
            " URL serving every source); until then its webhooks are answered 401",
        )
        return None
    return SignatureVerifier(keys, conf.notification_url)


@dataclass(slots=True)
class SourceRunner:
    """A running source: its parts, its trigger and the task that runs the trigger."""

    parts: SourceParts
    trigger: SyncTrigger
    verifier: SignatureVerifier | None
    catalog_trigger: SyncTrigger | None = None
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once the first catalog pass of this run ended (well or not); see FIRST_CATALOG_WAIT.
    catalog_tried: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.parts.name


class SourceSet:
    """Every running source, by name and by merchant; started, changed and stopped as the config
    says (at start and on SIGHUP)."""

    def __init__(
        self,
        store: Store,
        inbox: Inbox,
        *,
        max_concurrent_passes: int,
        max_failing_passes: int = 1,
        debounce: float,
        max_delay: float,
        on_pass: Callable[[PassSummary], object] | None = None,
        apply_counts: bool = True,
    ) -> None:
        self._store = store
        self._apply_counts = apply_counts
        self._inbox = inbox
        self._slots = asyncio.Semaphore(max_concurrent_passes)
        self._failing_slots = asyncio.Semaphore(max_failing_passes)
        self._failing: set[str] = set()  # sources whose last pass failed
        self._catalog_failing: set[str] = set()  # sources whose last catalog pass failed
        self.debounce = debounce
        self.max_delay = max_delay
        self._on_pass = on_pass
        self.runners: dict[str, SourceRunner] = {}
        self._merchants: dict[str, str] = {}  # merchant_id -> source
        self._background: set[asyncio.Task[None]] = set()
        self._verifiers: dict[tuple[tuple[str, ...], str], SignatureVerifier] = {}
        # name -> its WebhookSource, built on the first webhook, not per request (issue 13);
        # dropped whenever what it is made of changes: the runner (start, stop), its verifier
        # (apply_live) or apply_counts.
        self._hooks: dict[str, WebhookSource] = {}
        self._stopping: set[str] = set()  # popped from runners, their pass not reaped yet
        # Held while a source starts or is forgotten: a source started by a reload never has its
        # rows forgotten under it, and a forget never sees a half-started source.
        self._lifecycle = asyncio.Lock()

    @property
    def apply_counts(self) -> bool:
        """``webhooks.apply_counts``: whether webhooks feed the sources' fast paths."""
        return self._apply_counts

    @apply_counts.setter
    def apply_counts(self, value: bool) -> None:
        self._apply_counts = value
        self._hooks.clear()

    # --- lookups (webhook routing, readiness, status) ------------------------------------------

    def __iter__(self) -> Iterator[SourceRunner]:
        return iter(list(self.runners.values()))

    def get(self, name: str) -> SourceRunner | None:
        return self.runners.get(name)

    def for_merchant(self, merchant_id: str) -> SourceRunner | None:
        name = self._merchants.get(merchant_id)
        return None if name is None else self.runners.get(name)

    def webhook_source(self, name: str) -> WebhookSource | None:
        hook = self._hooks.get(name)
        if hook is not None:
            return hook
        runner = self.runners.get(name)
        return None if runner is None else self._webhook(runner)

    def webhook_for_merchant(self, merchant_id: str) -> WebhookSource | None:
        name = self._merchants.get(merchant_id)
        return None if name is None else self.webhook_source(name)

    def _webhook(self, runner: SourceRunner) -> WebhookSource:
        """Build and keep the runner's ``WebhookSource`` (see ``_hooks``)."""
        hook = self._hooks[runner.name] = self._build_webhook(runner)
        return hook

    def _build_webhook(self, runner: SourceRunner) -> WebhookSource:
        keeper = runner.parts.keeper
        on_revoked = None if keeper is None else (lambda: self._check_grant(runner))
        on_catalog = None if runner.catalog_trigger is None else runner.catalog_trigger.poke
        fast_path = runner.parts.fast_path if self.apply_counts else None
        on_counts = None if fast_path is None else _fast(runner, fast_path)
        return WebhookSource(
            runner.name, runner.verifier, runner.trigger.poke, on_revoked, on_catalog, on_counts
        )

    def _check_grant(self, runner: SourceRunner) -> None:
        """``oauth.authorization.revoked``: refresh now, so a revoked grant is found (and the
        source marked unauthorized) before the next pass meets a 401."""
        keeper = runner.parts.keeper
        if keeper is None:
            return
        log.warning("oauth_revocation_announced", source=runner.name)
        self._spawn(keeper.check_now(), runner.name)

    def _spawn(self, work: Awaitable[None], source: str) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run(), context=_source_context(source))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def health(self) -> dict[str, SourceHealth]:
        """What ``/readyz`` reads of each running source."""
        return {
            runner.name: SourceHealth(runner.trigger, unauthorized_fn(runner.parts.keeper))
            for runner in self
        }

    def lifecycles(self) -> list[SourceLifecycle]:
        """Each running source's lifecycle (the stale monitor's and the heartbeat's view)."""
        return [runner.parts.lifecycle for runner in self]

    def verifiers(self) -> list[SignatureVerifier]:
        """The distinct verifiers of the running sources (one per app key set and URL)."""
        seen: dict[int, SignatureVerifier] = {}
        for runner in self:
            if runner.verifier is not None:
                seen.setdefault(id(runner.verifier), runner.verifier)
        return list(seen.values())

    def _verifier(self, name: str, conf: SourceSettings) -> SignatureVerifier | None:
        """The source's verifier; sources with the same keys and URL (one app) share one."""
        keys = tuple(k.get_secret_value() for k in conf.webhook_signature_keys)
        cache_key = (keys, conf.notification_url or "")
        if cache_key not in self._verifiers:
            verifier = webhook_verifier(name, conf)
            if verifier is None:
                return None
            self._verifiers[cache_key] = verifier
        return self._verifiers[cache_key]

    # --- lifecycle ----------------------------------------------------------------------------

    async def load_merchants(self, names: set[str]) -> None:
        """Route by the merchants stored at earlier runs (before any source answered this run)."""
        stored = await self._store.read(registry.merchant_map)
        for merchant_id, source in stored.items():
            if source in names:
                self._merchants.setdefault(merchant_id, source)

    async def start(self, name: str, conf: SourceSettings, stop: asyncio.Event) -> SourceRunner:
        """Build, register and start one source's runner."""
        async with self._lifecycle:
            return await self._start(name, conf, stop)

    async def _start(self, name: str, conf: SourceSettings, stop: asyncio.Event) -> SourceRunner:
        parts = open_source(self._store, name, conf, on_merchant=self._merchant_learned)
        runner = SourceRunner(
            parts,
            SyncTrigger(
                self._guarded_pass(parts),
                interval=conf.poll_interval,
                debounce=self.debounce,
                max_delay=self.max_delay,
                retry_initial=conf.retry_backoff_initial,
                retry_max=conf.poll_interval,
                on_pass_done=inbox_marker(self._inbox, name),
                source=name,
            ),
            self._verifier(name, conf),
        )
        if parts.catalog is not None:
            runner.catalog_trigger = SyncTrigger(
                self._catalog_pass(runner, parts.catalog),
                interval=conf.catalog_interval,
                debounce=self.debounce,
                max_delay=self.max_delay,
                retry_initial=conf.retry_backoff_initial,
                retry_max=conf.catalog_interval,
                source=name,
            )
            state = await self._store.read(lambda conn: catalog_store.load_state(conn, name))
            if state.latest_time is not None:
                runner.catalog_tried.set()  # read before: counts need not wait for it
        else:
            runner.catalog_tried.set()
        await parts.lifecycle.load(self._store)
        self.runners[name] = runner
        self._hooks.pop(name, None)
        if conf.merchant_id:
            self._merchants[conf.merchant_id] = name
        await self._store.write(
            lambda conn: registry.register(conn, name, conf.merchant_id, format_ns(now_ns()))
        )
        pending = await self._inbox.count_unprocessed(name)
        if pending:
            # Acknowledged before a crash or stop, not yet covered by a pass.
            log.info("webhook_inbox_pending", source=name, events=pending)
            runner.trigger.run_soon()
        runner.task = asyncio.create_task(
            _run_trigger(runner, stop), name=f"sync-trigger:{name}", context=_source_context(name)
        )
        log.info(
            "source_started",
            source=name,
            upstream=conf.base_url,
            credentials="oauth" if conf.oauth else "access_token",
            merchant_id=conf.merchant_id,
            locations=list(conf.location_ids) or "discovered",
        )
        return runner

    async def stop_source(self, name: str, grace: float) -> None:
        """Stop one source's runner (its pass in progress commits its page), close its session."""
        runner = self.runners.pop(name, None)
        self._hooks.pop(name, None)
        if runner is None:
            return
        self._stopping.add(name)
        try:
            self._merchants = {m: s for m, s in self._merchants.items() if s != name}
            self._failing.discard(name)
            self._catalog_failing.discard(name)
            runner.stop.set()
            if runner.task is not None:
                await _reap(runner.task, grace)
            await runner.parts.aclose()
        finally:
            self._stopping.discard(name)
        log.info("source_stopped", source=name)

    async def remove(self, name: str, grace: float) -> None:
        """The config no longer has ``name``: stop it and mark it removed (its rows stay until
        ``syncd sources forget``)."""
        await self.stop_source(name, grace)
        at = format_ns(now_ns())
        await self._store.write(lambda conn: registry.mark_removed(conn, name, at))
        log.warning(
            "source_removed",
            source=name,
            hint=f"its mirrored rows stay; `syncd sources forget {name}` removes them",
        )

    async def mark_unconfigured(self, names: Collection[str]) -> list[str]:
        """At start: mark removed the registered sources the config no longer has (a source
        dropped from the config while the daemon was down); returns their names."""
        at = format_ns(now_ns())

        async def work(conn: aiosqlite.Connection) -> list[str]:
            marked = []
            for record in await registry.list_sources(conn):
                if record.source not in names and await registry.mark_removed(
                    conn, record.source, at
                ):
                    marked.append(record.source)
            return marked

        marked = await self._store.write(work)
        for name in marked:
            log.warning(
                "source_removed",
                source=name,
                hint=f"its mirrored rows stay; `syncd sources forget {name}` removes them",
            )
        return marked

    async def forget(self, name: str, configured: Collection[str]) -> Forgotten:
        """``syncd sources forget NAME`` through the admin API: remove a source that is no longer
        configured, in one transaction (``store.sources.forget``: one ``count.removed`` entry per
        mirror row, its state, OAuth state, inbox rows and registry row).

        Refused (:class:`SourceStillConfigured`) while the running config has the source, or
        while its runner is still stopping (a reload that removed it is in progress); an unknown
        source is :class:`~syncd.errors.UnknownSource`.
        """
        async with self._lifecycle:
            if name in configured:
                raise SourceStillConfigured(
                    f"source {name!r} is in the running daemon's config: it would come back",
                    op="sources.forget",
                    hint=f"remove [sources.{name}] from the config file, reload the daemon"
                    " (systemctl reload syncd), then forget it",
                    source=name,
                )
            if name in self.runners or name in self._stopping:
                raise SourceStillConfigured(
                    f"source {name!r} is still stopping after the reload that removed it",
                    op="sources.forget",
                    hint="retry in a moment",
                    source=name,
                )
            at = format_ns(now_ns())
            forgotten = await self._store.write(
                lambda conn: registry.forget(conn, name, recorded_at=at)
            )
        for gauge in (metrics.SOURCE_UNAUTHORIZED, metrics.OAUTH_TOKEN_AGE):
            with contextlib.suppress(KeyError):  # a series of a source that is gone
                gauge.remove(name)
        log.warning("source_forgotten", **forgotten.to_record())
        return forgotten

    def changes(self, name: str, conf: SourceSettings) -> set[str]:
        """The keys of a running source that ``conf`` changes."""
        old = self.runners[name].parts.conf
        return {k for k in SourceSettings.model_fields if getattr(old, k) != getattr(conf, k)}

    def apply_live(self, name: str, conf: SourceSettings) -> None:
        """Take a source's new intervals, limits and webhook keys in place (``LIVE_SOURCE_KEYS``);
        the next pass uses them, and a new poll interval starts a pass at once."""
        runner = self.runners[name]
        runner.parts.conf = conf
        engine = runner.parts.engine
        engine.options = replace(
            engine.options,
            overlap=conf.overlap,
            clock_margin=conf.clock_margin,
            partition_concurrency=conf.partition_concurrency,
            full_resync_interval=conf.full_resync_interval,
            full_resync_after=conf.full_resync_after,
            locations_interval=conf.locations_interval,
        )
        if runner.trigger.interval != conf.poll_interval:
            runner.trigger.interval = conf.poll_interval
            runner.trigger.run_soon()
        catalog, trigger = runner.parts.catalog, runner.catalog_trigger
        if catalog is not None and trigger is not None:
            catalog.options = catalog_options(name, conf)
            if trigger.interval != conf.catalog_interval:
                trigger.interval = conf.catalog_interval
                trigger.run_soon()
        runner.verifier = self._verifier(name, conf)
        self._hooks.pop(name, None)

    async def restart(self, name: str, conf: SourceSettings, stop: asyncio.Event) -> None:
        """Stop a source's runner and start it again on ``conf`` (credentials, URL, filters or
        locations changed: they decide what it talks to)."""
        await self.stop_source(name, grace=5.0)
        await self.start(name, conf, stop)

    def set_schedule(self, debounce: float, max_delay: float) -> None:
        self.debounce, self.max_delay = debounce, max_delay
        for runner in self:
            for trigger in (runner.trigger, runner.catalog_trigger):
                if trigger is not None:
                    trigger.debounce = debounce
                    trigger.max_delay = max_delay

    async def aclose(self, grace: float) -> None:
        """Stop every runner, sharing one grace period."""
        await asyncio.gather(*(self.stop_source(name, grace) for name in list(self.runners)))
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- internals ----------------------------------------------------------------------------

    def _guarded_pass(self, parts: SourceParts) -> Callable[[], Awaitable[PassSummary]]:
        """A pass of ``parts`` on a slot: a healthy source's on the shared slots, one whose last
        pass failed on the failing slots (a source answering 5xx or stalling for an hour, with
        its retries and timeouts, holds one of those, never a healthy source's)."""
        name = parts.name

        async def run() -> PassSummary:
            slots = self._failing_slots if name in self._failing else self._slots
            ok = False
            try:
                async with slots:
                    summary = await parts.engine.run_pass()
                ok = summary.ok
            finally:
                (self._failing.discard if ok else self._failing.add)(name)
            if self._on_pass is not None:
                self._on_pass(summary)
            return summary

        return run

    def _catalog_pass(
        self, runner: SourceRunner, catalog: CatalogEngine
    ) -> Callable[[], Awaitable[PassSummary]]:
        """A catalog pass on a slot: the shared slots while the source and its catalog are
        healthy, the failing slots otherwise (a catalog endpoint that stalls holds no healthy
        source's slot)."""
        name = runner.name

        async def run() -> PassSummary:
            failing = name in self._failing or name in self._catalog_failing
            ok = False
            try:
                async with self._failing_slots if failing else self._slots:
                    summary = await catalog.run_pass()
                ok = summary.ok
            finally:
                (self._catalog_failing.discard if ok else self._catalog_failing.add)(name)
                runner.catalog_tried.set()
            return summary

        return run

    def _merchant_learned(self, source: str, merchant_id: str) -> None:
        """A source's merchant became known: route its webhooks here, remember it, and hand it the
        events that arrived before (stored under ``_unknown``)."""
        owner = self._merchants.get(merchant_id)
        if owner is not None and owner != source:
            log.error(
                "merchant_claimed_twice",
                merchant_id=merchant_id,
                source=source,
                routed_to=owner,
                hint="two sources hold grants of one seller; remove one of them",
            )
            return
        self._merchants[merchant_id] = source
        self._spawn(self._record_merchant(source, merchant_id), source)

    async def _record_merchant(self, source: str, merchant_id: str) -> None:
        at = format_ns(now_ns())
        try:
            await self._store.write(lambda conn: registry.register(conn, source, merchant_id, at))
            moved = await self._inbox.adopt_unknown(merchant_id, source)
        except SyncdError as exc:
            log.error(
                "merchant_not_recorded", source=source, merchant_id=merchant_id, error=str(exc)
            )
            return
        log.info("source_merchant", source=source, merchant_id=merchant_id, adopted_events=moved)
        runner = self.runners.get(source)
        if moved and runner is not None:
            runner.trigger.poke()


async def _reap(task: asyncio.Task[None], grace: float) -> None:
    """Let a source's trigger task finish within ``grace``, else cancel it; an error it ended
    with is logged here (the daemon's watcher has seen it too), never raised into a shutdown."""
    await asyncio.wait([task], timeout=grace)
    if not task.done():
        task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as exc:
        log.error("source_task_failed", task=task.get_name(), error=repr(exc))


def _fast(runner: SourceRunner, fast_path: FastPath) -> Callable[[dict[str, Any]], None]:
    """The source's fast-path hook: an ``inventory.count.updated`` event was stored; queue it, its
    counts parsed in the fast path's batch. Counts that fail validation are left to the pass the
    same event triggers; a source whose grant was revoked takes no data of its seller's until it
    is authorized again."""
    keeper = runner.parts.keeper
    submit = fast_path.submit_event
    if keeper is None:
        return lambda event: submit(event, parse_count_event)
    unauthorized = metrics.FAST_PATH_EVENTS.labels(source=runner.name, outcome="unauthorized")

    def on_counts(event: dict[str, Any]) -> None:
        if keeper.unauthorized:
            unauthorized.inc()
            return
        submit(event, parse_count_event)

    return on_counts


def inbox_marker(inbox: Inbox, source: str) -> Callable[[int, PassSummary], Awaitable[None]]:
    """After a successful pass of ``source``: the webhook events received before it started are
    covered (a row received during the pass waits for the next one)."""

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


def _source_context(name: str) -> contextvars.Context:
    """A copy of the current context in which upstream requests are labelled as ``name``'s."""
    context = contextvars.copy_context()
    context.run(REQUEST_SOURCE.set, name)
    return context


async def _run_trigger(runner: SourceRunner, daemon_stop: asyncio.Event) -> None:
    """A source's trigger loop until the daemon stops or the source is stopped."""
    relay = asyncio.create_task(daemon_stop.wait())
    relay.add_done_callback(lambda _: runner.stop.set())
    try:
        async with asyncio.TaskGroup() as group:
            if runner.catalog_trigger is not None:
                group.create_task(runner.catalog_trigger.run(runner.stop))
            group.create_task(_run_counts(runner))
    finally:
        relay.cancel()


async def _run_counts(runner: SourceRunner) -> None:
    """The counts trigger; its first pass waits (bounded) for a never-read catalog's first pass,
    so that the first count entries carry SKUs."""
    if not runner.catalog_tried.is_set():
        waiters = [
            asyncio.ensure_future(runner.catalog_tried.wait()),
            asyncio.ensure_future(runner.stop.wait()),
        ]
        try:
            await asyncio.wait(
                waiters, timeout=FIRST_CATALOG_WAIT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
    await runner.trigger.run(runner.stop)
