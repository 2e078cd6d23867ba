"""Settings -> the store and every source's upstream parts, opened and closed in order: what a
one-shot tool (``syncd sync``, the benches) runs passes on, and how the daemon opens its store.

Kept apart from ``syncd.daemon`` (the composition root of the long-running service) so that a
one-shot sync imports neither the web handlers nor the jobs poller, outbound deliverers or the
publish relay it never starts (issue 13; an import-linter contract and tests/test_cli_imports.py
keep it so).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import structlog

from syncd.config import Settings
from syncd.source_parts import SourceParts, open_source
from syncd.store import Store
from syncd.store.lock import InstanceLock
from syncd.sync.engine import ProgressFn, SyncEngine

log = structlog.get_logger("syncd.daemon")


def with_base_url(settings: Settings, base_url: str | None) -> Settings:
    """``settings`` with every source's base_url replaced (the simulator's, in tests and demos)."""
    if base_url is None:
        return settings
    sources = {
        name: conf.model_copy(update={"base_url": base_url.rstrip("/")})
        for name, conf in settings.sources.items()
    }
    return settings.model_copy(update={"sources": sources})


@dataclass(slots=True)
class Components:
    """The store and every source's upstream parts, for one-shot tools (``syncd sync``)."""

    store: Store
    sources: dict[str, SourceParts]

    @property
    def engine(self) -> SyncEngine:
        """The engine of the only source (one-source tools and tests)."""
        if len(self.sources) != 1:
            raise ValueError(f"{len(self.sources)} sources: name one")
        return next(iter(self.sources.values())).engine


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """The instance lock (one writer process per database), then the migrated store."""
    async with AsyncExitStack() as stack:
        lock = await InstanceLock.acquire(settings.database)
        stack.callback(lock.release)
        store = await Store.open(settings.database)
        stack.push_async_callback(_logged_close, "store", store.aclose)
        yield store


@asynccontextmanager
async def open_components(
    settings: Settings,
    *,
    base_url: str | None = None,
    on_page: ProgressFn | None = None,
    only: str | None = None,
) -> AsyncIterator[Components]:
    """Open the store and the upstream parts of every source (or ``only`` that one); close them
    in reverse order."""
    settings = with_base_url(settings, base_url)
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(settings))
        parts: dict[str, SourceParts] = {}
        for name, conf in settings.sources.items():
            if only is not None and name != only:
                continue
            parts[name] = open_source(store, name, conf, on_page=on_page)
            stack.push_async_callback(_logged_close, f"upstream_session:{name}", parts[name].aclose)
        yield Components(store=store, sources=parts)


async def _logged_close(name: str, close: Callable[[], Awaitable[object]]) -> None:
    """Close a component and say so (the shutdown order shows in the log)."""
    await close()
    log.info("component_closed", component=name)
