"""Reading the database once, without an event loop: the one-shot read-only commands (issue 13).

``syncd status``, ``counts`` and ``sources list`` read the mirror once and exit. Through a
``Store`` they would pay, before the first query, for importing asyncio, aiosqlite and the metrics
and for a connection thread: most of a cold start that should stay within 200 ms. Here the store's
own query functions (``syncd.store.queries`` and the modules it calls: the one place their SQL
lives) run unchanged on a plain ``sqlite3`` connection opened ``mode=ro``, as any other tool on the
host would open it.

Those functions are coroutines that await nothing but their connection, so
:func:`syncd.store.inline.read` steps them to their end without a loop.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from syncd.errors import StoreError
from syncd.store import inline

if TYPE_CHECKING:
    import aiosqlite

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000


def readonly_uri(path: Path) -> str:
    """The ``file:...?mode=ro`` URI other tools should open the database with."""
    return f"{Path(os.path.abspath(path)).as_uri()}?mode=ro"


def readonly_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """What opening the database read-only failed with, for every reader."""
    return StoreError(
        f"cannot open database read-only: {exc}",
        op="store.open_ro",
        path=str(path),
        hint="is the path right, and has syncd created it yet?",
    )


class ReadOnly:
    """One read-only connection to the database (``mode=ro``), used without an event loop."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    @classmethod
    def open(cls, path: Path) -> ReadOnly:
        """Open ``path`` read-only; a missing or unreadable database is a StoreError."""
        try:
            conn = sqlite3.connect(readonly_uri(path), uri=True, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            raise readonly_error(path, exc) from exc
        return cls(path, conn)

    def read(self, query: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``query`` inside one read transaction (a consistent snapshot), as ``Store.read``."""
        return inline.read(query, self._conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ReadOnly:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
