"""Upstream chaos against the daemon process: `syncd run` behind the fault-injecting proxy.

The driver serves the simulator and, in front of it, ``syncd.simulator.chaos`` with every fault kind
at once (500/502/503, 429 with and without Retry-After, resets, stalls past the client's timeout,
truncated and malformed JSON, invalid cursors, stale and duplicate rows), and starts
`python -m syncd run` against the proxy with webhooks configured. For ``duration`` seconds the
upstream changes (and loses counts) under a steady load of signed webhooks; then the faults stop and
so does the load. Checked: the daemon never exits on its own; no request is retried more often than
``square.max_retries`` allows (every ``upstream_retry`` log line, and the retry counter on
``/metrics`` agrees with them); after a full pass that started once everything was quiet, the
mirror equals the upstream and the change-log invariants hold; every accepted webhook was
processed; SIGTERM then stops it with exit 0.

Run it standalone: ``python -m tests.soak.daemon_chaos --duration 60 [--seed N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from syncd.simulator import SimulatorConfig, serve
from syncd.simulator.chaos import FAULT_KINDS, ChaosConfig, serve_chaos
from syncd.simulator.webhooks import SIGNATURE_HEADER, event_body, sign
from syncd.timeutil import format_ns, now_ns
from tests.process_kit import clean_env, syncd
from tests.soak.crash import KEY, NOTIFICATION_URL, _scalar
from tests.soak.invariants import Checker
from tests.soak.report import ScenarioResult

RETRY_METRIC = 'syncd_upstream_retries_total{op="square.batch_retrieve_counts",source="square"}'


def write_config(
    path: Path, *, database: Path, upstream: str, location_ids: list[str], max_retries: int
) -> Path:
    """Short client timeouts (a stall is longer), few retries, fast passes."""
    locations = ", ".join(f'"{loc}"' for loc in location_ids)
    path.write_text(
        f"""
database = "{database}"
shutdown_timeout = 5

[square]
base_url = "{upstream}"
access_token = "test-token"
location_ids = [{locations}]
page_limit = 50
poll_interval = 0.3
full_resync_interval = 2
overlap = 1
clock_margin = 0
request_timeout = 0.5
connect_timeout = 0.5
max_retries = {max_retries}
cursor_restarts = 5
retry_backoff_initial = 0.01
retry_backoff_max = 0.05
notification_url = "{NOTIFICATION_URL}"
webhook_signature_keys = ["{KEY}"]

[webhooks]
debounce = 0.1
max_delay = 0.3

[http]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[log]
format = "json"
level = "info"
""",
        encoding="utf-8",
    )
    return path


async def run_daemon_chaos(
    *,
    seed: int,
    duration: float,
    workdir: Path,
    rates: tuple[float, ...] = (0.5, 0.2),
    phase: float = 3.0,
    locations: int = 3,
    items: int = 200,
    max_retries: int = 2,
    settle_timeout: float = 60.0,
) -> ScenarioResult:
    """One chaos run. Every ``phase`` seconds the share of upstream requests that get a fault
    (spread over all kinds) changes to one of ``rates`` (seeded), so passes run under anything
    from an occasional fault to one request in two failing."""
    started = time.monotonic()
    rng = random.Random(seed)
    db = workdir / "syncd.db"
    checker = Checker(db)
    chaos_config = ChaosConfig(rates={}, seed=seed, stall=1.0, retry_after=0.05)
    phases: list[float] = []
    accepted: set[str] = set()
    sent = 0
    async with (
        serve(SimulatorConfig(locations=locations, items=items, seed=seed)) as (sim, sim_url),
        serve_chaos(chaos_config, sim_url) as (chaos, chaos_url),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client,
    ):
        config = write_config(
            workdir / "syncd.toml",
            database=db,
            upstream=chaos_url,
            location_ids=list(sim.location_ids),
            max_retries=max_retries,
        )
        async with syncd("run", "--config", str(config), env=clean_env()) as proc:
            first = await proc.event("daemon_started")
            public, admin = str(first["public_url"]), str(first["admin_url"])
            deadline = time.monotonic() + duration
            last_change = now_ns()
            next_phase = 0.0
            while time.monotonic() < deadline:
                if time.monotonic() >= next_phase:
                    phases.append(rng.choice(rates))
                    chaos.config.rates.update(
                        dict.fromkeys(FAULT_KINDS, phases[-1] / len(FAULT_KINDS))
                    )
                    next_phase = time.monotonic() + phase
                checker.check(
                    proc.proc.returncode is None,
                    f"syncd exited on its own during the faults ({proc.proc.returncode})",
                )
                if proc.proc.returncode is not None:
                    break
                await asyncio.sleep(rng.uniform(0.02, 0.1))
                if rng.random() < 0.05:
                    sim.remove(1)
                    last_change = now_ns()
                    continue
                for row in sim.mutate(rng.randint(1, 4)):
                    last_change = now_ns()
                    event_id = str(uuid.uuid4())
                    body = event_body(row, merchant_id="CHAOS", event_id=event_id)
                    headers = {SIGNATURE_HEADER: sign(KEY, NOTIFICATION_URL, body)}
                    sent += 1
                    async with client.post(
                        f"{public}/webhooks/square", data=body, headers=headers
                    ) as resp:
                        await resp.read()
                        if resp.status == 200:
                            accepted.add(event_id)
            faults_stopped = now_ns()
            chaos.config.rates.clear()  # the upstream recovers
            quiet_since = format_ns(max(last_change, faults_stopped))
            try:
                async with asyncio.timeout(settle_timeout):
                    while proc.proc.returncode is None:
                        last_full = await asyncio.to_thread(
                            _scalar,
                            db,
                            "SELECT MAX(started_at) FROM passes"
                            " WHERE kind = 'full' AND outcome = 'ok'",
                        )
                        if last_full is not None and last_full > quiet_since:
                            break
                        await asyncio.sleep(0.1)
            except TimeoutError:
                checker.check(
                    False,
                    f"no full pass succeeded within {settle_timeout} s after the faults stopped",
                )
            checker.check(
                proc.proc.returncode is None,
                f"syncd exited on its own ({proc.proc.returncode}):"
                f" {proc.stderr.decode(errors='replace')[-500:]}",
            )
            async with client.get(f"{admin}/metrics") as resp:
                metrics = await resp.text()
            proc.signal(signal.SIGTERM)
            code = await proc.wait(15)
            checker.check(code == 0, f"exit code {code} after SIGTERM")
        retries = [e for e in proc.events if e.get("event") == "upstream_retry"]
        over = [e for e in retries if int(e.get("attempt", 0)) > max_retries]
        checker.check(not over, f"retries beyond square.max_retries={max_retries}: {over[:3]}")
        attempts = [
            int(e["attempts"])
            for e in proc.events
            if e.get("event") == "sync_partition_failed" and "attempts" in e
        ]
        checker.check(
            all(a <= max_retries + 1 for a in attempts),
            f"a request was tried {max(attempts, default=0)} times",
        )
        counted = _metric(metrics, RETRY_METRIC) or 0.0
        checker.check(
            counted == len(retries),
            f"{RETRY_METRIC} = {counted}, but {len(retries)} upstream_retry lines",
        )
        checker.check(chaos.injected.total() > 0, "no fault was injected")
        checker.committed_state()
        checker.converged(sim.snapshot(), accepted_events=accepted)
        failed_passes = sum(
            1 for e in proc.events if e.get("event") == "sync_pass" and e.get("outcome") == "failed"
        )
        ok_passes = sum(
            1 for e in proc.events if e.get("event") == "sync_pass" and e.get("outcome") == "ok"
        )
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(chaos.injected.items()))
        notes = (
            f"fault rate phases {', '.join(f'{r:.0%}' for r in phases)};"
            f" {chaos.requests} upstream requests; {kinds}; {len(retries)} retries;"
            f" passes {ok_passes} ok / {failed_passes} failed;"
            f" {len(accepted)}/{sent} webhooks accepted"
        )
        return ScenarioResult(
            scenario="chaos: syncd run behind the fault proxy",
            seed=seed,
            rounds=chaos.requests,
            faults=chaos.injected.total(),
            checks=checker.checks,
            violations=checker.violations,
            seconds=time.monotonic() - started,
            notes=notes,
        )


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.soak.daemon_chaos --duration S [--seed N]``."""
    parser = argparse.ArgumentParser(prog="python -m tests.soak.daemon_chaos")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1, 2**31))
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="syncd-chaos-"))
    print(f"seed {args.seed}, work directory {workdir}", file=sys.stderr)
    result = asyncio.run(run_daemon_chaos(seed=args.seed, duration=args.duration, workdir=workdir))
    print(result.describe())
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
