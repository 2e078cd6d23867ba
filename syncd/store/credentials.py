"""Per-source OAuth state (table ``source_credentials``, private: it holds secrets).

One row per source: the access token in use and when it expires, the refresh token, when the pair
was last obtained, and whether the seller's authorization still holds (``status``). The tokens are
kept out of ``repr`` so a logged record never carries them. Timestamps are RFC 3339 text, as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiosqlite


STATUS_OK = "ok"
STATUS_UNAUTHORIZED = "unauthorized"
STATUSES = (STATUS_OK, STATUS_UNAUTHORIZED)


@dataclass(frozen=True, slots=True)
class StoredCredentials:
    """One source's OAuth state as stored."""

    source: str
    merchant_id: str | None
    access_token: str | None = field(repr=False)
    expires_at: str | None
    refresh_token: str | None = field(repr=False)
    refreshed_at: str | None
    status: str
    error: str | None


_COLUMNS = (
    "source, merchant_id, access_token, expires_at, refresh_token, refreshed_at, status, error"
)


def _record(row: Any) -> StoredCredentials:
    return StoredCredentials(*row)


async def load(conn: aiosqlite.Connection, source: str) -> StoredCredentials | None:
    """The stored state of ``source``, or None if it has none."""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM source_credentials WHERE source = ?", (source,)
    ) as cur:
        row = await cur.fetchone()
    return None if row is None else _record(row)


async def load_all(conn: aiosqlite.Connection) -> dict[str, StoredCredentials]:
    """Every source's stored state, by source."""
    async with conn.execute(f"SELECT {_COLUMNS} FROM source_credentials ORDER BY source") as cur:
        rows = await cur.fetchall()
    return {row[0]: _record(row) for row in rows}


async def save_grant(
    conn: aiosqlite.Connection,
    source: str,
    *,
    access_token: str,
    expires_at: str | None,
    refresh_token: str | None,
    merchant_id: str | None,
    refreshed_at: str,
) -> None:
    """Store a newly obtained (or refreshed) token pair for ``source``; the source is authorized
    again (status 'ok', error cleared).

    ``refresh_token`` None keeps the stored one (a refresh answer need not carry a new one), and so
    does ``merchant_id`` None. ``refreshed_at`` is also the row's ``updated_at``.
    """
    await conn.execute(
        "INSERT INTO source_credentials (source, merchant_id, access_token, expires_at,"
        " refresh_token, refreshed_at, status, error, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)"
        " ON CONFLICT (source) DO UPDATE SET"
        " merchant_id = COALESCE(excluded.merchant_id, source_credentials.merchant_id),"
        " access_token = excluded.access_token, expires_at = excluded.expires_at,"
        " refresh_token = COALESCE(excluded.refresh_token, source_credentials.refresh_token),"
        " refreshed_at = excluded.refreshed_at, status = excluded.status, error = NULL,"
        " updated_at = excluded.updated_at",
        (
            source,
            merchant_id,
            access_token,
            expires_at,
            refresh_token,
            refreshed_at,
            STATUS_OK,
            refreshed_at,
        ),
    )


async def mark_unauthorized(conn: aiosqlite.Connection, source: str, error: str, at: str) -> None:
    """Record that ``source``'s authorization failed (e.g. a 401, or a refresh refused) with why.

    The tokens stay as they are (``save_grant`` replaces them once the seller authorizes again); a
    source with no row yet (a token from the config) gets one with no tokens.
    """
    await conn.execute(
        "INSERT INTO source_credentials (source, status, error, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (source) DO UPDATE SET status = excluded.status, error = excluded.error,"
        " updated_at = excluded.updated_at",
        (source, STATUS_UNAUTHORIZED, error, at),
    )


async def delete(conn: aiosqlite.Connection, source: str) -> bool:
    """Drop ``source``'s OAuth state; True if it had any."""
    cursor = await conn.execute("DELETE FROM source_credentials WHERE source = ?", (source,))
    return cursor.rowcount > 0
