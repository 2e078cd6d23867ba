"""SQLite connections: the single writer (WAL, synchronous=FULL) and read-only readers.

One writer connection serves the whole daemon. Units of work are async functions run inside
``BEGIN IMMEDIATE`` ... ``COMMIT`` under one asyncio lock, and shielded from cancellation so a commit is
never split: cancellation lands between units, never inside one. Readers open ``mode=ro`` connections and
never block the writer (WAL), and the writer never blocks them.

A unit runs either on the event loop (``run``: one trip to the connection's thread per statement) or,
when it awaits nothing but its connection, wholly on the connection's thread (``run_inline``: one
trip for the whole unit, ``BEGIN`` and ``COMMIT`` included). The second reaches that thread through
aiosqlite's ``Connection._execute`` and ``_conn`` (and ``queue`` through ``_running`` and ``_tx``),
which are private: pyproject pins aiosqlite below 0.23 and ``tests/test_store_sqlite.py`` fails if
they change.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import sqlite3
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from syncd.errors import StoreClosed, StoreError
from syncd.store import inline
from syncd.store.readonly import BUSY_TIMEOUT_MS, readonly_error, readonly_uri
from syncd.store.rows import fetch_dicts as fetch_dicts  # its former home; import it from rows

T = TypeVar("T")

WRITER_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    # FULL: a seq a consumer has read must survive power loss (docs/schema.md). Speed comes from
    # batching a whole page into one transaction instead.
    "PRAGMA synchronous = FULL",
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys = ON",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA cache_size = -16000",
    # Checkpoint the WAL every ~64 MB instead of every ~4 MB: fewer, larger checkpoints cost far less
    # fsync time per page applied (measured: ~48k -> ~70k counts/s applied). The WAL file is truncated
    # back to that size after a checkpoint.
    "PRAGMA wal_autocheckpoint = 16000",
    "PRAGMA journal_size_limit = 67108864",
)


DATABASE_MODE = 0o640
"""The mode a new database file is created with: it holds OAuth tokens (``source_credentials``).
SQLite gives the ``-wal`` and ``-shm`` files the database file's mode."""


def _create_private(path: Path) -> bool:
    """Create ``path`` as an empty file of mode 0640 (owner, group syncd's readers) unless it exists; True if it was created.

    O_EXCL makes this atomic (an existing file is never touched, its mode left alone), and the
    mode is set on the file itself instead of through the process-wide umask. An empty file is
    an empty SQLite database, which the connection then fills.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, DATABASE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, DATABASE_MODE)  # exactly 0640 whatever the umask
    finally:
        os.close(fd)
    return True


def database_mode_problem(path: Path) -> str | None:
    """A warning for the log when others can read the database (or its -wal/-shm), else None.

    syncd never changes an existing file's mode; group read (0640) is fine, "other" read is not,
    since the file holds OAuth tokens. A file that does not exist is no problem.
    """
    readable: list[str] = []
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = file.stat().st_mode
        except FileNotFoundError:
            continue
        if mode & 0o004:
            readable.append(f"{file} (mode {mode & 0o777:04o})")
    if not readable:
        return None
    return (
        "the database holds OAuth tokens but is readable by any user: "
        + ", ".join(readable)
        + "; run chmod o-r on them (0640 keeps group syncd's readers, 0600 is syncd alone)"
    )


async def connect_writer(path: Path) -> aiosqlite.Connection:
    """Open the read-write connection with the durability settings syncd promises; a database
    file that does not exist yet is created with mode 0640 (``DATABASE_MODE``)."""
    await asyncio.to_thread(_create_private, path)
    try:
        conn = await aiosqlite.connect(str(path), isolation_level=None)
        for pragma in WRITER_PRAGMAS:
            await conn.execute(pragma)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database: {exc}", op="store.open", path=str(path)) from exc
    return conn


async def connect_reader(path: Path) -> aiosqlite.Connection:
    """Open a read-only connection (``mode=ro``), as any other tool on the host would."""
    uri = readonly_uri(path)
    try:
        conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        raise readonly_error(path, exc) from exc
    return conn


@dataclass(slots=True)
class Unit:
    """What one unit of work did that others hear about once it has committed (never on rollback):
    the change-log head it moved to and the entries it appended, by (source, kind)."""

    changelog_head: int | None = None
    changes_by_kind: dict[tuple[str, str], int] = field(default_factory=dict)


_UNIT: ContextVar[Unit | None] = ContextVar("syncd_store_unit", default=None)


def current_unit() -> Unit | None:
    """The unit of work running in this task, or None outside ``Writer.run``."""
    return _UNIT.get()


class Writer:
    """The single writer: serialises units of work, each in one IMMEDIATE transaction.

    ``on_commit`` runs after each COMMIT with the unit's :class:`Unit` record, inside the shielded
    transaction task, so a caller cancelled mid-unit cannot make it miss a commit.
    """

    def __init__(
        self, conn: aiosqlite.Connection, *, on_commit: Callable[[Unit], None] | None = None
    ) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self._closed = False
        self._on_commit = on_commit

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._closed:
            raise StoreClosed("store is closed", op="store.write")
        return self._conn

    async def run(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction; commit, or roll back and re-raise. Cancellation-proof.

        If the caller is cancelled while the unit runs, the unit still finishes (commit or rollback),
        and then the cancellation propagates.
        """
        return await _unsplit(self._transaction(self.conn, work))

    async def run_inline(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """``run`` for a unit that awaits nothing but its connection, in one trip to its thread.

        ``work`` is stepped to its end there (``syncd.store.inline``), in a copy of the caller's
        context (as ``asyncio.to_thread`` does: structlog's bound keys and the unit record reach
        it); one that suspends raises ``QuerySuspended`` and rolls back. It runs while its caller
        waits, so whatever Python state it changes is changed while the caller's locks are held,
        as in ``run``. ``on_commit`` is scheduled from the thread before the result, so the caller
        resumes after it, as in ``run``. The writer's lock is held only while the unit is queued
        (the thread runs it whole, and what is queued after it runs after it): the next unit, or a
        webhook batch (``queue``), is queued while this one runs instead of once the loop has seen
        it end (issue 13).
        """
        conn = self.conn
        done = await self._queue_inline(work)
        try:
            return await done
        except asyncio.CancelledError:
            # Queued, the unit runs to its end on the thread whatever happens here (no task of
            # its own to shield, issue 11): wait for that end, then give up. The thread runs
            # in order, so a no-op queued now ends after it.
            with contextlib.suppress(Exception):
                await on_thread(conn, _nothing)
            raise

    async def _queue_inline(
        self, work: Callable[[aiosqlite.Connection], Awaitable[T]]
    ) -> asyncio.Future[T]:
        """Queue ``work`` as one unit on the connection's thread (``queue``: the lock orders the
        queueing only; the thread runs the whole unit in one operation); the future it answers."""
        loop = asyncio.get_running_loop()
        job = _InlineJob(work, contextvars.copy_context(), loop, self._on_commit)
        done: asyncio.Future[T] = loop.create_future()
        await self.queue(partial(_answer, job, done))
        return done

    async def _transaction(
        self, conn: aiosqlite.Connection, work: Callable[[aiosqlite.Connection], Awaitable[T]]
    ) -> T:
        async with self._lock:
            if self._closed:
                raise StoreClosed("store is closed", op="store.write")
            await conn.execute("BEGIN IMMEDIATE")
            # This runs in its own task (see run), so the unit record is this transaction's alone.
            unit = Unit()
            _UNIT.set(unit)
            try:
                result = await work(conn)
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
            if self._on_commit is not None:
                self._on_commit(unit)
            return result

    async def run_statement(self, sql: str, params: tuple[object, ...]) -> int:
        """One data-changing statement as a unit of work of its own; returns how many rows it
        changed.

        SQLite runs a lone statement in its own implicit transaction (the connection is in
        autocommit mode), so this commits exactly like ``run`` (same fsync) but costs one round
        trip to the connection's thread instead of three, and no extra task. Under load each round
        trip and each task hop waits for the GIL or a turn of the event loop, which is what
        dominated the webhook inbox's commit latency (issue 3); for the same reason there is no
        ``RETURNING`` here: each returned row is one more wait.

        Cancellation cannot split it: once handed to the connection's thread the statement runs to
        its commit even if the caller stops waiting, and the thread runs operations in order, so
        the next unit's ``BEGIN`` comes after it.
        """
        conn = self.conn
        async with self._lock:
            if self._closed:
                raise StoreClosed("store is closed", op="store.write")
            cursor = await conn.execute(sql, params)
            return int(cursor.rowcount)

    async def queue(self, job: Callable[[sqlite3.Connection], object]) -> None:
        """Queue ``job(db)`` on the connection's thread, after every unit queued before it and
        before every unit queued after it, and return once it is queued, not done (issue 13: the
        webhook inbox's next batch fills while this one commits).

        ``db`` is in autocommit mode, so each statement ``job`` runs is its own transaction,
        committed (fsync) before the statement returns, as in ``run_statement``. ``job`` runs to
        its end whatever happens to the caller, and reports its own outcome (from the thread,
        e.g. with ``loop.call_soon_threadsafe``): nothing waits for it here. The lock is held only
        while queueing: the thread runs operations in order, so a unit that takes the lock next
        begins after ``job`` has ended.
        """
        conn = self.conn
        async with self._lock:
            if self._closed:
                raise StoreClosed("store is closed", op="store.write")
            queue_on_thread(conn, job)

    async def aclose(self) -> None:
        """Wait for the unit in progress, then close. Idempotent."""
        if self._closed:
            return
        async with self._lock:
            self._closed = True
            await self._conn.close()


async def on_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(db)`` on ``conn``'s own thread, ``db`` its sqlite3 connection, queued after (and run
    before) whatever is queued there already: one trip, however much ``fn`` does.

    Through aiosqlite's private ``_execute`` and ``_conn`` (see the module's docstring). Once
    queued, ``fn`` runs to its end even if the caller stops waiting.
    """
    result: T = await conn._execute(fn, conn._conn)  # type: ignore[no-untyped-call]
    return result


def queue_on_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], object]) -> None:
    """Queue ``fn(db)`` on ``conn``'s thread as ``on_thread`` does, without waiting for it (and
    without a future: its result and any exception are dropped there; ``fn`` reports its own).

    Through aiosqlite's private ``_running``, ``_tx`` and ``_conn`` (see the module's docstring)."""
    if not conn._running:  # as aiosqlite's _execute refuses a closed connection
        raise ValueError("Connection closed")
    db = conn._conn
    conn._tx.put_nowait((None, lambda: fn(db)))


def _answer(
    job: Callable[[sqlite3.Connection], T], done: asyncio.Future[T], db: sqlite3.Connection
) -> None:
    """On the connection's thread: run ``job`` and hand its result (or exception) to ``done``."""
    loop = done.get_loop()
    try:
        result = job(db)
    except BaseException as exc:
        loop.call_soon_threadsafe(_set_exception, done, exc)
    else:
        loop.call_soon_threadsafe(_set_result, done, result)


def _nothing(db: sqlite3.Connection) -> None:
    """A job that does nothing: queued, it ends once everything queued before it has."""


def _set_result(done: asyncio.Future[T], result: T) -> None:
    if not done.done():
        done.set_result(result)


def _set_exception(done: asyncio.Future[Any], exc: BaseException) -> None:
    if not done.done():
        done.set_exception(exc)


async def _unsplit(transaction: Awaitable[T]) -> T:
    """Await ``transaction`` in a task of its own; a cancelled caller waits for it to end (commit
    or rollback) before the cancellation propagates, so a commit is never split."""
    task = asyncio.ensure_future(transaction)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait([task])
        raise


@dataclass(frozen=True, slots=True)
class _InlineJob:
    """One unit of work as the connection's thread runs it: BEGIN, the unit, COMMIT (or ROLLBACK)."""

    work: Callable[[aiosqlite.Connection], Awaitable[Any]]
    context: contextvars.Context
    loop: asyncio.AbstractEventLoop
    on_commit: Callable[[Unit], None] | None

    def __call__(self, db: sqlite3.Connection) -> Any:
        unit = Unit()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = self.context.run(self._in_unit, unit, db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # also when COMMIT itself failed: never leave it open
                db.execute("ROLLBACK")
            raise
        if self.on_commit is not None:
            self.loop.call_soon_threadsafe(self.on_commit, unit)
        return result

    def _in_unit(self, unit: Unit, db: sqlite3.Connection) -> Any:
        _UNIT.set(unit)  # in this job's copy of the caller's context only
        return inline.run(self.work, db)
