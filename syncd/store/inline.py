"""The store's async functions, run to their end on a plain ``sqlite3`` connection, without a loop.

The store's functions (counts, changelog, sync_state, queries, ...) are coroutines of an aiosqlite
connection, and most await nothing but that connection. Over :class:`InlineConnection` every such
await is already complete, so :func:`run` steps the coroutine to its end in one go. Two callers do:

- the one-shot read-only commands (``syncd.store.readonly``), which then need no event loop,
  aiosqlite or connection thread at all (issue 13's cold start);
- the writer's ``run_inline`` (``syncd.store.sqlite``), which runs a whole unit of work on the
  aiosqlite connection's own thread in one trip, instead of one trip per statement: each trip is a
  thread wake-up, a future and a loop wake-up, which is most of what an idle pass costs (issue 11).

A function that suspends (it awaited something else: a sleep, a lock) cannot run here: it raises
:class:`QuerySuspended` instead of hanging. Nothing here imports asyncio or aiosqlite.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    import aiosqlite

T = TypeVar("T")


class QuerySuspended(RuntimeError):
    """A function run by :func:`run` awaited something other than its connection."""


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


class InlineConnection:
    """The part of an aiosqlite connection the store's functions use, over a sqlite3 connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Executed:
        return _Executed(_Cursor(self._conn.execute(sql, params)))

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    async def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> _Cursor:
        return _Cursor(self._conn.executemany(sql, params))


def run(query: Callable[[aiosqlite.Connection], Awaitable[T]], conn: sqlite3.Connection) -> T:
    """Run one of the store's functions on ``conn`` to its end, without an event loop."""
    steps = query(cast("aiosqlite.Connection", InlineConnection(conn))).__await__()
    try:
        next(steps)
    except StopIteration as done:
        return cast(T, done.value)
    close = getattr(steps, "close", None)  # a coroutine's: run its finally blocks
    if close is not None:
        close()
    raise QuerySuspended(f"{query!r} awaited something other than its connection")


def read(query: Callable[[aiosqlite.Connection], Awaitable[T]], conn: sqlite3.Connection) -> T:
    """:func:`run` inside one read transaction on ``conn``: one consistent snapshot."""
    conn.execute("BEGIN")
    try:
        return run(query, conn)
    finally:
        conn.execute("COMMIT")
