"""SIGKILL between a webhook's 200 and the pass it triggers: a real `python -m syncd run` process,
the simulator upstream in the test process; after a restart the change reaches the mirror."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest

from syncd.simulator import SimulatorConfig, serve
from tests.helpers import mirror
from tests.process_kit import write_config
from tests.webhook_kit import KEY, NOTIFICATION_URL, event, inbox_rows, signed

ROOT = Path(__file__).resolve().parent.parent


def webhook_config(tmp_path: Path, upstream: str) -> Path:
    """A config whose debounce (30 s) and poll interval (300 s) keep any pass from starting between
    the webhook's answer and the kill."""
    return write_config(
        tmp_path,
        upstream,
        square=f'notification_url = "{NOTIFICATION_URL}"\nwebhook_signature_keys = ["{KEY}"]',
        extra="[webhooks]\ndebounce = 30\nmax_delay = 30",
    )


@contextmanager
def daemon_process(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m syncd run --config ...`, logging JSON to ``log``; terminate -> wait -> kill."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def public_url(log: Path, started: int) -> str:
    """The public listener's URL from the `started`-th daemon_started line (port 0 was asked
    for)."""
    async with asyncio.timeout(20):
        while True:
            raw = await asyncio.to_thread(log.read_bytes)
            lines = [orjson.loads(line) for line in raw.splitlines() if line.startswith(b"{")]
            urls = [e["public_url"] for e in lines if e.get("event") == "daemon_started"]
            if len(urls) >= started:
                return str(urls[started - 1])
            await asyncio.sleep(0.05)


async def wait_ready(client: aiohttp.ClientSession, url: str) -> None:
    """Until /readyz answers 200: the first pass has completed."""
    async with asyncio.timeout(20):
        while True:
            async with client.get(url + "/readyz") as resp:
                if resp.status == 200:
                    return
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_sigkill_after_ack_before_pass_loses_nothing(tmp_path: Path) -> None:
    """Scenario:
    1. The daemon runs and has completed its first pass (/readyz 200).
    2. A count changes upstream and its signed webhook is answered 200 (committed to the inbox).
    3. SIGKILL before any pass starts: the mirror still has the old value, the row is unprocessed.
    4. Restart: the pending row triggers a pass at once; the change reaches the mirror and the row
       ends processed. SIGTERM then stops the daemon cleanly (exit 0)."""
    db = tmp_path / "syncd.db"
    log = tmp_path / "daemon.log"
    async with (
        serve(SimulatorConfig(locations=2, items=20)) as (sim, upstream),
        aiohttp.ClientSession() as client,
    ):
        config = webhook_config(tmp_path, upstream)
        with daemon_process(config, log) as first:
            url = await public_url(log, 1)
            await wait_ready(client, url)
            [changed] = sim.mutate(1)
            body = event("EV-KILL", counts=[changed])
            async with client.post(
                url + "/webhooks/square", data=body, headers=signed(body)
            ) as resp:
                assert resp.status == 200
            first.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(first.wait, 10) == -signal.SIGKILL
        key = (changed["catalog_object_id"], changed["location_id"], changed["state"])
        assert mirror(db)[key]["quantity"] != changed["quantity"]
        [row] = inbox_rows(db)
        assert row["event_id"] == "EV-KILL"
        assert row["processed_at"] is None

        with daemon_process(config, log) as second:
            await public_url(log, 2)
            async with asyncio.timeout(20):
                while inbox_rows(db)[0]["processed_at"] is None:
                    await asyncio.sleep(0.05)
            assert mirror(db)[key]["quantity"] == changed["quantity"]
            second.terminate()
            assert await asyncio.to_thread(second.wait, 15) == 0
