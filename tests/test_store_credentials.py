"""Per-source OAuth state in ``source_credentials``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

from syncd.store import Store, credentials
from syncd.store.credentials import STATUS_OK, STATUS_UNAUTHORIZED, StoredCredentials

ACCESS_1 = "EAAA-access-1"
REFRESH_1 = "EQAA-refresh-1"


async def grant(
    store: Store,
    source: str = "north",
    *,
    access_token: str = ACCESS_1,
    refresh_token: str | None = REFRESH_1,
    merchant_id: str | None = "MERCHANT_N",
    at: str = "2026-01-01T00:00:00Z",
) -> None:
    async def work(conn: aiosqlite.Connection) -> None:
        await credentials.save_grant(
            conn,
            source,
            access_token=access_token,
            expires_at="2026-01-31T00:00:00Z",
            refresh_token=refresh_token,
            merchant_id=merchant_id,
            refreshed_at=at,
        )

    await store.write(work)


def updated_at(path: Path, source: str) -> str:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT updated_at FROM source_credentials WHERE source = ?", (source,)
        ).fetchone()
    finally:
        conn.close()
    return str(row[0])


async def test_save_grant_then_load_round_trips(store: Store, db_path: Path) -> None:
    """A saved grant loads back field for field, status ok; an unknown source loads as None."""
    await grant(store)
    loaded = await store.read(lambda c: credentials.load(c, "north"))
    assert loaded == StoredCredentials(
        source="north",
        merchant_id="MERCHANT_N",
        access_token="EAAA-access-1",
        expires_at="2026-01-31T00:00:00Z",
        refresh_token="EQAA-refresh-1",
        refreshed_at="2026-01-01T00:00:00Z",
        status=STATUS_OK,
        error=None,
    )
    assert updated_at(db_path, "north") == "2026-01-01T00:00:00Z"
    assert await store.read(lambda c: credentials.load(c, "south")) is None


async def test_tokens_are_kept_out_of_repr(store: Store) -> None:
    """A logged record shows the source and status but neither token."""
    await grant(store)
    loaded = await store.read(lambda c: credentials.load(c, "north"))
    text = repr(loaded)
    assert "north" in text
    assert "status='ok'" in text
    assert "EAAA-access-1" not in text
    assert "EQAA-refresh-1" not in text


async def test_refresh_without_new_refresh_token_keeps_the_stored_one(store: Store) -> None:
    """A refresh answer without a refresh token (or merchant) replaces only what it carries."""
    await grant(store)
    await grant(
        store,
        access_token="EAAA-access-2",
        refresh_token=None,
        merchant_id=None,
        at="2026-01-02T00:00:00Z",
    )
    loaded = await store.read(lambda c: credentials.load(c, "north"))
    assert loaded is not None
    assert (loaded.access_token, loaded.refresh_token, loaded.merchant_id) == (
        "EAAA-access-2",
        "EQAA-refresh-1",
        "MERCHANT_N",
    )
    assert loaded.refreshed_at == "2026-01-02T00:00:00Z"
    await grant(store, access_token="EAAA-access-3", refresh_token="EQAA-refresh-2")
    loaded = await store.read(lambda c: credentials.load(c, "north"))
    assert loaded is not None
    assert loaded.refresh_token == "EQAA-refresh-2"


async def test_unauthorized_then_new_grant_is_ok_again(store: Store, db_path: Path) -> None:
    """mark_unauthorized keeps the tokens and records why; the next grant clears status and error."""
    await grant(store)
    await store.write(
        lambda c: credentials.mark_unauthorized(
            c, "north", "401 UNAUTHORIZED: token revoked", "2026-01-03T00:00:00Z"
        )
    )
    loaded = await store.read(lambda c: credentials.load(c, "north"))
    assert loaded is not None
    assert (loaded.status, loaded.error) == (STATUS_UNAUTHORIZED, "401 UNAUTHORIZED: token revoked")
    assert loaded.access_token == "EAAA-access-1"
    assert updated_at(db_path, "north") == "2026-01-03T00:00:00Z"
    await grant(store, access_token="EAAA-access-4", at="2026-01-04T00:00:00Z")
    loaded = await store.read(lambda c: credentials.load(c, "north"))
    assert loaded is not None
    assert (loaded.status, loaded.error, loaded.access_token) == (STATUS_OK, None, "EAAA-access-4")


async def test_unauthorized_source_without_a_row_gets_one_without_tokens(store: Store) -> None:
    """A source authorized by a configured token has no row until it fails: then it gets one."""
    await store.write(
        lambda c: credentials.mark_unauthorized(c, "south", "401", "2026-01-03T00:00:00Z")
    )
    loaded = await store.read(lambda c: credentials.load(c, "south"))
    assert loaded is not None
    assert loaded.status == STATUS_UNAUTHORIZED
    assert (loaded.access_token, loaded.refresh_token, loaded.merchant_id) == (None, None, None)


async def test_load_all_and_delete(store: Store) -> None:
    """load_all maps every source to its state; delete drops one and says whether it had any."""
    await grant(store, "north")
    await grant(store, "south", access_token="EAAA-south", merchant_id="MERCHANT_S")
    everything = await store.read(credentials.load_all)
    assert sorted(everything) == ["north", "south"]
    assert everything["south"].access_token == "EAAA-south"
    assert await store.write(lambda c: credentials.delete(c, "north")) is True
    assert await store.write(lambda c: credentials.delete(c, "north")) is False
    assert sorted(await store.read(credentials.load_all)) == ["south"]
