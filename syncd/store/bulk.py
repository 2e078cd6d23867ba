"""Many rows in few statements: multi-row ``INSERT ... VALUES (...), (...), ...``.

``sqlite3``'s ``executemany`` steps its statement once per row, and each step releases the GIL
and takes it back. On the writer's thread that is a hand-over per row to the event loop's thread
whenever that one is busy (parsing the next page), which then keeps the GIL for up to the switch
interval (5 ms): a first catalog sync of 80,000 rows spent more time waiting for the GIL than
writing (measured: 50,000 variations 0.8 s of CPU, 5.3 s of wall time beside a busy loop thread;
1,024 rows per statement: 2 s). One statement for many rows steps once for all of them, with the
GIL released throughout, and costs SQLite less besides (one VDBE program run, not one per row).

Chunks are powers of two up to a limit, so that a connection prepares (and ``sqlite3`` caches) at
most a dozen statement texts per table however many rows come: the remainder after the full chunks
goes in its binary decomposition (784 rows: 512 + 256 + 16).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiosqlite

MAX_ROWS = 1024
"""Rows per statement at most (a power of two); fewer when the columns would pass the limit."""
# SQLITE_MAX_VARIABLE_NUMBER's default: 32,766 since SQLite 3.32, 999 before.
MAX_VARIABLES = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999

_sql_cache: dict[tuple[str, str, str, int], str] = {}


def chunk_sizes(n: int, columns: int, max_rows: int = MAX_ROWS) -> list[int]:
    """The statement sizes, in order, for ``n`` rows of ``columns`` bound values each: full chunks
    of the largest power of two allowed, then the remainder's powers of two, largest first."""
    if columns < 1:
        raise ValueError("a row binds at least one value")
    largest = 1
    while largest * 2 <= max_rows and largest * 2 * columns <= MAX_VARIABLES:
        largest *= 2
    sizes = [largest] * (n // largest)
    rest = n % largest
    size = largest
    while rest:
        size //= 2
        if rest >= size:
            sizes.append(size)
            rest -= size
    return sizes


def values_sql(head: str, row: str, n: int, tail: str = "") -> str:
    """``{head} VALUES {row}, ... ({n} times) {tail}`` (memoised: a few shapes per table)."""
    key = (head, row, tail, n)
    sql = _sql_cache.get(key)
    if sql is None:
        sql = _sql_cache[key] = f"{head} VALUES {', '.join([row] * n)}{' ' if tail else ''}{tail}"
    return sql


async def insert_values(
    conn: aiosqlite.Connection,
    head: str,
    row: str,
    rows: Sequence[Sequence[Any]],
    tail: str = "",
    *,
    max_rows: int = MAX_ROWS,
) -> None:
    """Run ``{head} VALUES {row} {tail}`` for every row of ``rows``, in order, as few multi-row
    statements (inside the caller's transaction). ``row`` is the one row's parenthesised value
    list (``(?, ?, NULLIF(?, ''))``), binding as many values as each row of ``rows`` holds; ``tail``
    follows the values (an ``ON CONFLICT`` clause). The same rows as ``executemany`` of the one-row
    statement, in the same order: a later row of one statement sees the earlier ones."""
    if not rows:
        return
    columns = len(rows[0])
    at = 0
    for size in chunk_sizes(len(rows), columns, max_rows):
        part = rows[at : at + size]
        at += size
        await conn.execute(
            values_sql(head, row, size, tail), list(itertools.chain.from_iterable(part))
        )
