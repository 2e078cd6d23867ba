"""Reading the database once, without an event loop: the one-shot read-only commands (issue 13).

``syncd status``, ``counts`` and ``sources list`` read the mirror once and exit. Through a
``Store`` they would pay, before the first query, for importing asyncio, aiosqlite and the metrics
and for a connection thread: most of a cold start that should stay within 200 ms. Here the store's
own query functions (``syncd.store.queries`` and the modules it calls: the one place their SQL
lives) run unchanged on a plain ``sqlite3`` connection opened ``mode=ro``, as any other tool on the
host would open it.

Those functions are coroutines that await nothing but their connection. On
:class:`ReadOnlyConnection` every such await is already complete, so :func:`run` steps the
coroutine to its end without a loop; one that suspends (it awaited something else: a sleep, a
lock) is a bug, and raises :class:`QuerySuspended` instead of hanging.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from syncd.errors import StoreError

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


class QuerySuspended(RuntimeError):
    """A query function run by :func:`run` awaited something other than its connection."""


class _Cursor:
    """The part of an aiosqlite cursor the query functions use, over a sqlite3 cursor."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()


class _Executed:
    """What ``execute`` returns, like aiosqlite's: awaitable (the cursor) and an async context
    manager (the cursor, closed on exit). The statement has already run."""

    def __init__(self, cursor: _Cursor) -> None:
        self._cursor = cursor

    async def _result(self) -> _Cursor:
        return self._cursor

    def __await__(self) -> Any:
        return self._result().__await__()

    async def __aenter__(self) -> _Cursor:
        return self._cursor

    async def __aexit__(self, *exc: object) -> None:
        await self._cursor.close()


class ReadOnlyConnection:
    """The part of an aiosqlite connection the read queries use, over a sqlite3 connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Executed:
        return _Executed(_Cursor(self._conn.execute(sql, params)))

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()


def run(
    query: Callable[[aiosqlite.Connection], Coroutine[Any, Any, T]], conn: sqlite3.Connection
) -> T:
    """Run one of the store's query functions on ``conn`` to its end, without an event loop."""
    coro = query(cast("aiosqlite.Connection", ReadOnlyConnection(conn)))
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise QuerySuspended(f"{query!r} awaited something other than its connection")


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

    def read(self, query: Callable[[aiosqlite.Connection], Coroutine[Any, Any, T]]) -> T:
        """Run ``query`` inside one read transaction (a consistent snapshot), as ``Store.read``."""
        self._conn.execute("BEGIN")
        try:
            return run(query, self._conn)
        finally:
            self._conn.execute("COMMIT")

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
