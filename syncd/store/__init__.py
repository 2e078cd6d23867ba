"""The store: the database, and everything that touches SQLite.

``Store`` (``syncd.store.facade``) opens the database for the daemon and the commands that write:
open -> migrate -> one writer + one reader; close is idempotent. The rest of syncd calls the
functions in the store's modules (counts, changelog, sync_state, ...) through ``Store.write`` and
``Store.read``; one-shot read-only commands run the same functions through
``syncd.store.readonly`` instead, without an event loop.

``Store`` is imported on first use (PEP 562), not with the package: it needs asyncio, aiosqlite and
the metrics (prometheus_client), which importing a query module for ``syncd status`` or ``syncd
counts`` must not cost (issue 13; tests/test_cli_imports.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.store.facade import Store

__all__ = ["Store"]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from syncd.store.facade import Store

        globals()["Store"] = Store  # the next lookup is a plain attribute
        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
