"""Crash consistency (issue 6): `syncd run` as a real process, SIGKILLed during a page transaction,
between pages, after a webhook's 200 and during a job poll, restarted every time; the committed
state is checked after every kill and the end state after the last restart (see tests/soak/crash.py
for the moments and tests/soak/invariants.py for the checks). Reproduce a run with
SYNCD_SOAK_SEED=<the printed seed>."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.soak.crash import CrashPlan, run_crash
from tests.soak.report import record, scenario_seed

pytestmark = pytest.mark.slow


@pytest.mark.timeout(120)
async def test_sigkill_at_every_kind_of_moment_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """The CI version: six rounds (each kind of moment at least once, in seeded order), then the
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
