"""Named change-log consumers (table ``consumers``): the last seq each one acknowledged.

Like a consumer group's committed offset: ``syncd changes --consumer NAME`` resumes after
``acked_seq``. Acknowledging is explicit (``--ack`` or ``--ack-seq``, docs/changelog.md); reading
alone never moves an offset. Retention does not wait for consumers: one that falls behind what is
kept gets a ChangelogGap on its next read.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd.errors import StoreError
from syncd.timeutil import now_rfc3339

if TYPE_CHECKING:
    import aiosqlite

    from syncd.store.sqlite import Writer

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def valid_name(name: str) -> bool:
    """Consumer names: 1-64 letters, digits, ``_``, ``.`` or ``-``, led by a letter or digit."""
    return NAME_PATTERN.fullmatch(name) is not None


async def acked(conn: aiosqlite.Connection, name: str) -> int | None:
    """The consumer's acknowledged seq, or None for a consumer never seen."""
    async with conn.execute("SELECT acked_seq FROM consumers WHERE name = ?", (name,)) as cur:
        row = await cur.fetchone()
    return None if row is None else int(row[0])


async def ack(conn: aiosqlite.Connection, name: str, seq: int, at: str) -> None:
    """Set the consumer's acknowledged seq (creating the consumer); moving it back is allowed."""
    await conn.execute(
        "INSERT INTO consumers (name, acked_seq, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET acked_seq = excluded.acked_seq,"
        " updated_at = excluded.updated_at",
        (name, seq, at),
    )


async def all_consumers(conn: aiosqlite.Connection) -> list[dict[str, Any]]:
    """Every consumer with its offset and when it last acknowledged, by name."""
    async with conn.execute(
        "SELECT name, acked_seq, updated_at FROM consumers ORDER BY name"
    ) as cur:
        rows = await cur.fetchall()
    return [{"name": r[0], "acked_seq": int(r[1]), "updated_at": r[2]} for r in rows]


async def require_table(conn: aiosqlite.Connection) -> None:
    """Raise StoreError when the database predates named consumers (schema version 4)."""
    async with conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'consumers'"
    ) as cur:
        if await cur.fetchone() is None:
            raise StoreError(
                "this database has no consumers table yet",
                op="consumers.read",
                hint="start this version of syncd (run or sync) once to migrate it",
            )


class OffsetWriter:
    """Acknowledges for one consumer from a process other than the daemon (``syncd changes --ack``).

    It opens its own small write connection: no migrations and no instance lock, since SQLite
    serialises its one-row transactions with the daemon's writer (busy_timeout). It needs write
    access to the database and its directory, i.e. to run as the ``syncd`` user.
    """

    def __init__(self, writer: Writer, name: str) -> None:
        self._writer = writer
        self.name = name

    @classmethod
    async def open(cls, path: Path, name: str) -> OffsetWriter:
        # Imported here: the read-only commands import this module for its queries alone, without
        # asyncio and aiosqlite (syncd.store.readonly).
        from syncd.store.sqlite import Writer, connect_writer

        return cls(Writer(await connect_writer(path)), name)

    async def ack(self, seq: int) -> None:
        """Record ``seq`` as the consumer's acknowledged position (one committed transaction)."""
        at = now_rfc3339()
        try:
            await self._writer.run(lambda conn: ack(conn, self.name, seq, at))
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot record consumer {self.name}'s offset: {exc}",
                op="consumers.ack",
                hint="acknowledging writes to the database: run as the syncd user"
                " (sudo -u syncd ...), or read without --ack",
            ) from exc

    async def aclose(self) -> None:
        await self._writer.aclose()
