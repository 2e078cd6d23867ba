"""Readers under load (issue 6): read-only reader processes query the mirror and follow the change
log while `syncd run` syncs a large upstream: no "database is locked", no torn page (a page's rows
and its entries appear together, the log has no gap), latencies reported (tests/soak/readers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak.readers import run_readers
from tests.soak.report import record, scenario_seed

pytestmark = pytest.mark.slow


@pytest.mark.timeout(120)
async def test_readers_during_a_50k_sync(tmp_path: Path) -> None:
    """The CI version: 50,000 counts (a sync of several seconds, hundreds of pages), three
    readers; the million-count one is `make soak`'s."""
    result = await run_readers(
        counts=50_000, readers=3, workdir=tmp_path, seed=scenario_seed(), sync_timeout=50
    )
    record(result)
    assert result.violations == [], result.describe()


@pytest.mark.soak
@pytest.mark.timeout(1200)
async def test_readers_during_a_million_count_sync(tmp_path: Path) -> None:
    """The `make soak` version: 1,000,000 counts, three readers."""
    result = await run_readers(counts=1_000_000, readers=3, workdir=tmp_path, seed=scenario_seed())
    record(result)
    assert result.violations == [], result.describe()
