"""One source's upstream parts, built from its config: HTTP session, token keeper, counts and
catalog engines, fast path. What every tool that syncs a source needs, the daemon
(``syncd.daemon_sources`` runs them under triggers) and a one-shot ``syncd sync``
(``syncd.components``) alike.

Edge code like ``daemon_sources``: it reads ``SourceSettings`` and hands the core plain parameters.
It imports nothing of the web handlers, the jobs poller, outbound or publish: a one-shot sync's
start-up pays only for what it runs (issue 13; the import-linter contract and
tests/test_cli_imports.py keep it so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from syncd import __version__
from syncd.config import SourceSettings
from syncd.store import Store
from syncd.sync.catalog import CatalogEngine, CatalogOptions
from syncd.sync.credentials import TokenKeeper
from syncd.sync.engine import EngineOptions, ProgressFn, SyncEngine
from syncd.sync.fast_path import FastPath, FastPathOptions
from syncd.sync.lifecycle import SourceLifecycle
from syncd.upstream.catalog import SquareCatalog
from syncd.upstream.http import RetryPolicy, make_session
from syncd.upstream.locations import SquareLocations
from syncd.upstream.oauth import TokenGrant, refresh_access_token
from syncd.upstream.square import SquareCounts, SquareOptions

# Seconds the fast path gathers webhook counts before it writes them (one transaction per burst;
# see FastPath): small against the 50 ms a webhook's change may take to reach the log.
FAST_PATH_WINDOW = 0.005


def engine_options(name: str, conf: SourceSettings) -> EngineOptions:
    """Map one source's config onto the engine's plain parameters."""
    return EngineOptions(
        source=name,
        location_ids=tuple(conf.location_ids),
        overlap=conf.overlap,
        clock_margin=conf.clock_margin,
        partition_concurrency=conf.partition_concurrency,
        full_resync_interval=conf.full_resync_interval,
        full_resync_after=conf.full_resync_after,
        cursor_restarts=conf.cursor_restarts,
        locations_interval=conf.locations_interval,
    )


def catalog_options(name: str, conf: SourceSettings) -> CatalogOptions:
    """Map one source's config onto the catalog engine's plain parameters."""
    return CatalogOptions(
        source=name,
        overlap=conf.catalog_overlap,
        full_interval=conf.catalog_full_interval,
        cursor_restarts=conf.cursor_restarts,
    )


def retry_policy(conf: SourceSettings) -> RetryPolicy:
    return RetryPolicy(
        max_retries=conf.max_retries,
        backoff_initial=conf.retry_backoff_initial,
        backoff_factor=conf.retry_backoff_factor,
        backoff_max=conf.retry_backoff_max,
    )


def square_options(conf: SourceSettings) -> SquareOptions:
    """Map one source's config onto the Square adapter's options."""
    return SquareOptions(
        base_url=conf.base_url,
        access_token=conf.access_token.get_secret_value() if conf.access_token else None,
        api_version=conf.api_version,
        states=tuple(conf.states),
        catalog_object_ids=tuple(conf.catalog_object_ids),
        location_ids=tuple(conf.location_ids),
        page_limit=conf.page_limit,
        policy=retry_policy(conf),
    )


def make_upstream_session(conf: SourceSettings) -> aiohttp.ClientSession:
    """One source's HTTP client session: its own pool, so a stalled source stalls only itself."""
    return make_session(
        request_timeout=conf.request_timeout,
        connect_timeout=conf.connect_timeout,
        user_agent=f"syncd/{__version__}",
        limit_per_host=max(4, conf.partition_concurrency),
        # Past the poll interval (capped): an idle source's next poll reuses its connections
        # (against Square, TLS handshakes) instead of opening new ones.
        keepalive_timeout=min(conf.poll_interval + 15.0, KEEPALIVE_MAX),
    )


KEEPALIVE_MAX = 330.0  # seconds an idle upstream connection is kept at most

MerchantFn = Callable[[str, str], None]  # (source, merchant_id)


@dataclass(slots=True)
class SourceParts:
    """The upstream side of one source: session, optional token keeper, and its engine."""

    name: str
    conf: SourceSettings
    session: aiohttp.ClientSession
    engine: SyncEngine
    keeper: TokenKeeper | None
    catalog: CatalogEngine | None = None
    fast_path: FastPath | None = None
    learned_merchant: str | None = None

    @property
    def merchant_id(self) -> str | None:
        """The configured merchant id, else the one the token endpoint or locations reported."""
        return self.conf.merchant_id or self.learned_merchant

    @property
    def lifecycle(self) -> SourceLifecycle:
        """The source's status and pass entries in the change log (issue 14)."""
        return self.engine.lifecycle

    async def aclose(self) -> None:
        if self.fast_path is not None:
            await self.fast_path.aclose()
        await self.session.close()


def _keeper(
    store: Store,
    name: str,
    conf: SourceSettings,
    session: aiohttp.ClientSession,
    on_merchant: Callable[[str], None],
) -> TokenKeeper | None:
    oauth = conf.oauth
    if oauth is None:
        return None
    client_id = oauth.client_id or ""
    secret = oauth.client_secret.get_secret_value() if oauth.client_secret else None
    policy = retry_policy(conf)

    async def refresh(refresh_token: str) -> TokenGrant:
        return await refresh_access_token(
            session,
            base_url=conf.base_url,
            client_id=client_id,
            client_secret=secret,
            refresh_token=refresh_token,
            policy=policy,
        )

    return TokenKeeper(
        store,
        name,
        refresh,
        configured_refresh_token=(
            oauth.refresh_token.get_secret_value() if oauth.refresh_token else ""
        ),
        refresh_after=oauth.refresh_after,
        alert_after=oauth.alert_after,
        on_merchant=on_merchant,
    )


def open_source(
    store: Store,
    name: str,
    conf: SourceSettings,
    *,
    on_page: ProgressFn | None = None,
    on_merchant: MerchantFn | None = None,
) -> SourceParts:
    """Build one source's upstream parts (the caller closes them with ``aclose``)."""
    session = make_upstream_session(conf)
    parts: SourceParts

    def learned(merchant_id: str) -> None:
        if parts.learned_merchant != merchant_id:
            parts.learned_merchant = merchant_id
            if on_merchant is not None:
                on_merchant(name, merchant_id)

    keeper = _keeper(store, name, conf, session, learned)
    lifecycle = SourceLifecycle(name, unauthorized=unauthorized_fn(keeper))
    options = square_options(conf)
    counts = SquareCounts(session, options, tokens=keeper)
    locations = SquareLocations(session, options, tokens=keeper, on_merchant=learned)
    engine = SyncEngine(
        store,
        counts,
        engine_options(name, conf),
        on_page=on_page,
        locations=locations,
        lifecycle=lifecycle,
    )
    catalog = None
    if conf.catalog_sync:
        catalog = CatalogEngine(
            store,
            SquareCatalog(session, options, page_limit=conf.page_limit, tokens=keeper),
            catalog_options(name, conf),
            locations=locations,
        )
    fast_path = FastPath(
        store,
        FastPathOptions(name, tuple(conf.states), tuple(conf.catalog_object_ids)),
        locations=lambda: engine.location_scope,
        full_pass=lambda: engine.full_pass_id,
        window=FAST_PATH_WINDOW,
    )
    parts = SourceParts(name, conf, session, engine, keeper, catalog, fast_path)
    return parts


def unauthorized_fn(keeper: TokenKeeper | None) -> Callable[[], bool]:
    """Whether the source's credentials were refused: a source without OAuth never says so."""
    if keeper is None:
        return lambda: False
    return lambda: keeper.unauthorized
