"""Upstream chaos against the daemon process (issue 6): `syncd run` behind the fault proxy with every
fault kind at once (tests/test_chaos.py proves each kind alone, in process). It never exits on its
own, retries stay within square.max_retries, and once the faults stop it converges with every
invariant holding (tests/soak/daemon_chaos.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.soak.daemon_chaos import run_daemon_chaos
from tests.soak.report import record, scenario_seed

pytestmark = pytest.mark.slow


@pytest.mark.timeout(120)
async def test_daemon_survives_mixed_faults_and_converges(tmp_path: Path) -> None:
    """The CI version: six seconds of faults, on half or a fifth of the upstream requests."""
    result = await run_daemon_chaos(seed=scenario_seed(), duration=6.0, workdir=tmp_path)
    record(result)
    assert result.violations == [], result.describe()
    assert result.faults > 10


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_daemon_chaos_soak(tmp_path: Path) -> None:
    """The `make soak` version: SYNCD_SOAK_CHAOS_SECONDS (default 120) of faults."""
    duration = float(os.environ.get("SYNCD_SOAK_CHAOS_SECONDS", "120"))
    result = await run_daemon_chaos(
        seed=scenario_seed(),
        duration=duration,
        workdir=tmp_path,
        items=500,
        rates=(0.05, 0.15, 0.3, 0.5),
        phase=10.0,
    )
    record(result)
    assert result.violations == [], result.describe()
