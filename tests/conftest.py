"""Shared fixtures: real SQLite files in tmp_path, factories with fast defaults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncd.store import Store


@pytest.fixture(name="db_path")
def fixture_db_path(tmp_path: Path) -> Path:
    """A fresh database path in the test's own directory."""
    return tmp_path / "syncd.db"


@pytest.fixture(name="store")
async def fixture_store(db_path: Path) -> AsyncIterator[Store]:
    """An open, migrated store on a real file; closed after the test."""
    store = await Store.open(db_path)
    try:
        yield store
    finally:
        await store.aclose()
