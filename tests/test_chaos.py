"""Upstream chaos: under each fault the proxy injects, sync still converges to the upstream's state,
retries stay within bounds, and the change-log invariants hold."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from syncd.simulator import SimulatorConfig, serve
from syncd.simulator.chaos import FAULT_KINDS, ChaosConfig, serve_chaos
from syncd.store import Store
from syncd.sync.engine import EngineOptions, SyncEngine
from syncd.upstream.http import RetryInfo, RetryPolicy
from syncd.upstream.square import SquareCounts, SquareOptions
from tests.helpers import assert_log_invariants, mirror

MAX_PASSES = 40
RETRIES = 2


@pytest.mark.parametrize("fault", FAULT_KINDS)
async def test_sync_converges_under_fault(db_path: Path, fault: str) -> None:
    """With one fault kind injected into ~25% of calls, passes (incremental after mutations, then a
    full one for removals) eventually leave the mirror equal to the upstream; no pass retries a call
    more than the policy allows; replaying the log reproduces the mirror."""
    retries: list[RetryInfo] = []
    chaos_config = ChaosConfig(rates={fault: 0.25}, seed=7, stall=0.6, retry_after=0)
    async with (
        serve(SimulatorConfig(locations=2, items=60, seed=3)) as (sim, sim_url),
        serve_chaos(chaos_config, sim_url) as (chaos, url),
    ):
        store = await Store.open(db_path)
        timeout = aiohttp.ClientTimeout(total=0.3)
        session = aiohttp.ClientSession(timeout=timeout)
        try:
            policy = RetryPolicy(max_retries=RETRIES, backoff_initial=0.001, backoff_max=0.005)
            upstream = SquareCounts(
                session,
                SquareOptions(
                    base_url=url,
                    access_token=None,
                    api_version="2025-08-20",
                    page_limit=20,
                    policy=policy,
                ),
                on_retry=retries.append,
            )
            engine = SyncEngine(
                store,
                upstream,
                EngineOptions(
                    source="square",
                    location_ids=tuple(sim.location_ids),
                    overlap=1.0,
                    clock_margin=0.0,
                    cursor_restarts=5,
                ),
            )
            for round_ in range(3):
                sim.mutate(15)
                if round_ == 2:
                    sim.remove(4)
                for _ in range(MAX_PASSES):
                    summary = await engine.run_pass(full=round_ == 2 or None)
                    if summary.ok:
                        break
                else:
                    pytest.fail(f"no successful pass in {MAX_PASSES} tries under {fault}")
            want = {
                (r["catalog_object_id"], r["location_id"], r["state"]): r["quantity"]
                for r in sim.snapshot()
            }
            got = {k: v["quantity"] for k, v in mirror(db_path).items()}
            assert got == want
            assert_log_invariants(db_path)
            assert chaos.injected[fault] > 0, "the fault was never injected"
            assert all(r.attempt <= RETRIES for r in retries)
        finally:
            await session.close()
            await store.aclose()
