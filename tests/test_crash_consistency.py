"""Crash consistency (issue 6): `syncd run` as a real process, SIGKILLed during a page transaction,
between pages, after a webhook's 200 and during a job poll, restarted every time; the committed
state is checked after every kill and the end state after the last restart (see tests/soak/crash.py
for the moments and tests/soak/invariants.py for the checks). Reproduce a run with
SYNCD_SOAK_SEED=<the printed seed>."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from syncd.store import Store
from tests.soak.crash import CrashPlan, run_crash
from tests.soak.invariants import Checker
from tests.soak.report import record, scenario_seed

pytestmark = pytest.mark.slow


@pytest.mark.timeout(120)
async def test_sigkill_at_every_kind_of_moment_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """The CI version: six rounds (each kind of moment once, in seeded order), then the
    final restart and quiet pass. Violations: none; the mirror equals the upstream, the log replays
    to it, no entry is duplicated or reused, every accepted webhook and every job is accounted
    for, and the daemon never exited on its own."""
    seed = scenario_seed()
    result = await run_crash(CrashPlan(rounds=6, seed=seed), tmp_path)
    record(result)
    assert result.violations == [], result.describe()
    assert result.faults == 6


@pytest.mark.soak
@pytest.mark.timeout(1200)
async def test_sigkill_soak(tmp_path: Path) -> None:
    """The `make soak` version: SYNCD_SOAK_ROUNDS rounds (default 100) at seeded moments."""
    rounds = int(os.environ.get("SYNCD_SOAK_ROUNDS", "100"))
    result = await run_crash(CrashPlan(rounds=rounds, seed=scenario_seed()), tmp_path)
    record(result)
    assert result.violations == [], result.describe()


@pytest.mark.timeout(60)
async def test_sigkill_at_spawn_leaves_an_empty_state_the_checker_accepts(tmp_path: Path) -> None:
    """Regression (issue 10): a kill 0 ms after spawn, before the first migration committed, leaves
    no database or one with no schema. That is a legitimate committed state: the checker accepts
    it as empty (and never creates the file), and the restarts after it converge as usual."""
    seed = scenario_seed()
    plan = CrashPlan(rounds=3, seed=seed, moments=("at_spawn",))
    result = await run_crash(plan, tmp_path)
    assert result.violations == [], result.describe()
    assert result.faults == 3, result.describe()


def test_checker_empty_state_is_no_file_or_no_schema_and_never_created(
    tmp_path: Path,
) -> None:
    db = tmp_path / "syncd.db"
    checker = Checker(db)
    checker.committed_state()
    assert not db.exists(), "the checker created the database it inspects"
    db.touch()  # created by sqlite3.connect but nothing written yet
    checker.committed_state()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")  # a header, still user_version 0 and no tables
    conn.close()
    checker.committed_state()
    assert checker.violations == []
    assert checker.checks == 3  # one "still empty" check each


async def _migrated(db: Path) -> None:
    store = await Store.open(db)
    await store.aclose()


def test_checker_flags_a_database_that_loses_its_schema_after_entries_were_read(
    tmp_path: Path,
) -> None:
    """The empty state is accepted only before anything was read: losing a log is a violation."""
    db = tmp_path / "syncd.db"
    asyncio.run(_migrated(db))
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO changes (recorded_at, kind, source, catalog_object_id, location_id, state,"
        " old, new) VALUES ('2026-01-01T00:00:00Z', 'count.updated', 'square', 'o', 'l',"
        " 'IN_STOCK', NULL, ?)",
        (
            '{"quantity": "1", "calculated_at": "2026-01-01T00:00:00Z",'
            ' "catalog_object_type": "ITEM_VARIATION"}',
        ),
    )
    conn.execute(
        "INSERT INTO inventory_counts (source, catalog_object_id, location_id, state,"
        " catalog_object_type, quantity, calculated_at, seq) VALUES ('square', 'o', 'l',"
        " 'IN_STOCK', 'ITEM_VARIATION', '1', '2026-01-01T00:00:00Z', 1)"
    )
    conn.commit()
    conn.close()
    checker = Checker(db)
    checker.committed_state()
    assert checker.violations == [], checker.violations
    for path in tmp_path.glob("syncd.db*"):
        path.unlink()
    checker.committed_state()
    assert any("empty again" in v for v in checker.violations), checker.violations
