"""The simulator's webhooks from the command line: `syncd simulate --webhook-url ...` signs what it
sends, and `syncd run --simulate` (what `make run` starts) syncs on webhooks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from syncd.errors import SignatureError
from syncd.web.app import Listener, run_server
from syncd.web.signatures import SIGNATURE_HEADER, SignatureVerifier
from tests.webhook_kit import KEY, NOTIFICATION_URL

ROOT = Path(__file__).resolve().parent.parent


def start(args: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "syncd", *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean, **env},
        )


async def stop(proc: subprocess.Popen[bytes]) -> int:
    """terminate -> wait -> kill; the exit code of the terminate."""
    proc.terminate()
    try:
        return await asyncio.to_thread(proc.wait, 15)
    except subprocess.TimeoutExpired:
        proc.kill()
        await asyncio.to_thread(proc.wait, 5)
        raise


def events(log: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in log.read_bytes().splitlines() if line.startswith(b"{")]


@pytest.mark.slow
async def test_simulate_command_sends_signed_webhooks(tmp_path: Path) -> None:
    """`syncd simulate --mutation-rate ... --webhook-url ... --webhook-key-file ...
    --notification-url ...` POSTs inventory.count.updated events, one count each, whose signature
    syncd's own verifier accepts for that notification URL and key."""
    verifier = SignatureVerifier([KEY], NOTIFICATION_URL)
    received: list[dict[str, object]] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verifier.verify(request.headers.get(SIGNATURE_HEADER), body)
        except SignatureError:
            return web.Response(status=401)
        received.append(orjson.loads(body))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/webhooks/square", receive)
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    async with run_server(app, Listener(host="127.0.0.1")) as url:
        proc = start(
            [
                "simulate",
                "--port",
                "0",
                "--items",
                "20",
                "--mutation-rate",
                "20",
                "--webhook-url",
                f"{url}/webhooks/square",
                "--webhook-key-file",
                str(key_file),
                "--notification-url",
                NOTIFICATION_URL,
                "--log-level",
                "warning",
            ],
            tmp_path / "sim.log",
        )
        try:
            async with asyncio.timeout(20):
                while len(received) < 5:
                    await asyncio.sleep(0.05)
        finally:
            await stop(proc)
    first = received[0]
    assert first["type"] == "inventory.count.updated"
    assert isinstance(first["event_id"], str)
    data = first["data"]
    assert isinstance(data, dict)
    assert data["type"] == "inventory_counts"
    assert len(data["object"]["inventory_counts"]) == 1
    assert len({e["event_id"] for e in received}) == len(received)


@pytest.mark.slow
async def test_run_simulate_syncs_on_webhooks(tmp_path: Path) -> None:
    """`syncd run --simulate` (the daemon of `make run`) generates a signature key, points the
    simulator's webhooks at itself, accepts them (no rejection) and marks them processed after
    the passes they poke; SIGTERM stops it cleanly."""
    log = tmp_path / "run.log"
    proc = start(
        [
            "run",
            "--simulate",
            "--database",
            str(tmp_path / "demo.db"),
            "--sim-mutation-rate",
            "10",
            "--log-format",
            "json",
        ],
        log,
        SYNCD_HTTP__LISTEN="127.0.0.1:0",
        SYNCD_ADMIN__LISTEN="127.0.0.1:0",
    )
    try:
        async with asyncio.timeout(30):
            while True:
                seen = events(log)
                if any(e["event"] == "webhook_events_processed" for e in seen):
                    break
                assert proc.poll() is None, log.read_text()
                await asyncio.sleep(0.1)
    finally:
        code = await stop(proc)
    seen = events(log)
    assert code == 0
    assert any(e["event"] == "simulator_webhooks" for e in seen)
    accepted = [e for e in seen if e["event"] == "webhook"]
    assert accepted
    assert all(e["outcome"] == "new" for e in accepted)
    assert not [e for e in seen if e["event"] == "webhook_rejected"]
