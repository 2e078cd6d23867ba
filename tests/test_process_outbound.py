"""Outbound webhooks through crashes (issue 14): a real `python -m syncd run` against the simulator
POSTs its change log to a real receiver process (tests/outbound_kit.py, verifying every request
with the standardwebhooks package). The receiver fails first, then both are SIGKILLed while a batch
is in flight (recorded by the receiver, never answered), twice; after the restarts every seq has
arrived, in order, at least once, and deduplicating by webhook-id leaves each exactly once. Then
the endpoint answers 410 and is disabled (`syncd status`), and `syncd consumers replay` through the
running daemon's admin socket brings it back."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncd.outbound import signing
from syncd.simulator import SimulatorConfig, serve
from tests.helpers import assert_log_invariants
from tests.process_kit import ROOT, clean_env, integrity, query, run_cli, syncd, write_config

pytestmark = pytest.mark.slow

BATCH = 40


@pytest.fixture(name="short_dir")
def fixture_short_dir() -> Iterator[Path]:
    """A short directory for the admin unix socket (sun_path holds about 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="syncd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class ReceiverProcess:
    """`python -m tests.outbound_kit` with its record file; ``records`` reads what it got."""

    def __init__(self, directory: Path, secret: str) -> None:
        self.directory = directory
        self.secret_file = directory / "secret"
        self.secret_file.write_text(secret)
        self.record = directory / "deliveries.jsonl"
        self.port_file = directory / "port"
        self.port = 0

    def records(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [orjson.loads(line) for line in self.record.read_bytes().splitlines() if line]

    @asynccontextmanager
    async def running(self, *flags: str) -> AsyncIterator[asyncio.subprocess.Process]:
        """The receiver on its port (a free one the first time, the same one after), until the
        block ends or the test kills it."""
        self.port_file.unlink(missing_ok=True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.outbound_kit",
            "--secret-file",
            str(self.secret_file),
            "--record",
            str(self.record),
            "--port-file",
            str(self.port_file),
            "--port",
            str(self.port),
            *flags,
            cwd=ROOT,
            env=clean_env(),
        )
        try:
            async with asyncio.timeout(15):
                while not self.port_file.exists():
                    assert proc.returncode is None, "the receiver exited"
                    await asyncio.sleep(0.02)
            self.port = int(self.port_file.read_text())
            yield proc
        finally:
            if proc.returncode is None:
                with suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()

    async def wait_records(self, n: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.records()) < n:
                await asyncio.sleep(0.01)


def head(db: Path) -> int:
    return int(query(db, "SELECT COALESCE(MAX(seq), 0) FROM changes")[0][0])


def endpoint_row(db: Path) -> tuple[int, str, int]:
    [row] = query(db, "SELECT acked_seq, state, epoch FROM outbound_endpoints")
    return int(row[0]), str(row[1]), int(row[2])


async def caught_up(db: Path, timeout: float = 30.0) -> None:
    """Until the endpoint has acknowledged everything committed (and the log stopped growing)."""
    async with asyncio.timeout(timeout):
        while True:
            rows = query(db, "SELECT acked_seq FROM outbound_endpoints")
            if rows and rows[0][0] == head(db) > 0:
                return
            await asyncio.sleep(0.02)


def assert_delivered_in_order(records: list[dict[str, Any]], last: int) -> set[str]:
    """Every record verified; each one either a new batch starting right after the newest seq
    seen so far, or a batch sent before, again, with the same seqs under the same webhook-id.
    Deduplicated by webhook-id, the batches hold 1..last exactly once. Returns the ids sent more
    than once."""
    seen: dict[str, list[int]] = {}
    again: set[str] = set()
    newest = 0
    for record in records:
        assert record["verified"], record
        wid, seqs = record["webhook_id"], record["seqs"]
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), record
        if wid in seen:
            assert seen[wid] == seqs, (wid, seen[wid], seqs)
            again.add(wid)
            continue
        assert seqs[0] == newest + 1, (wid, newest)
        seen[wid] = seqs
        newest = seqs[-1]
    assert [s for seqs in seen.values() for s in seqs] == list(range(1, last + 1))
    return again


async def test_sigkill_mid_batch_then_410_and_replay(tmp_path: Path, short_dir: Path) -> None:
    """Scenario:
    1. The receiver answers 503 (Retry-After: 0) to its first 5 POSTs, then 200s; the daemon
       syncs 1,200 counts (1,200 entries) and delivers them 40 at a time.
    2. At the receiver's 12th POST, and again at its 20th, it records the batch but never
       answers; syncd and the receiver are both SIGKILLed then, and both started again (the
       simulator changes counts meanwhile: new entries at each start).
    3. The third start runs until the endpoint has acknowledged the whole log.
    4. The receiver answers 410 to everything; `syncd consumers replay rx --from 1` (through the
       daemon's admin socket) sends batch 1 again: 410, the endpoint is disabled, `syncd status`
       says so. The receiver comes back; `syncd consumers replay rx` resumes it, and the whole
       log arrives again, under the replay's new webhook-ids."""
    db = tmp_path / "syncd.db"
    secret = signing.new_secret()
    receiver = ReceiverProcess(tmp_path, secret)
    sock = short_dir / "admin.sock"
    env = clean_env()
    async with serve(SimulatorConfig(locations=3, items=400, mutation_rate=40)) as (_, url):
        async with receiver.running("--fail-first", "5", "--hold-at", "11") as rx:
            extra = (
                f'[outbound.rx]\nurl = "http://127.0.0.1:{receiver.port}/hook"\n'
                f'secret = "{secret}"\nbatch_size = {BATCH}\nbackoff_initial = 0.05\n'
                "max_backoff = 0.2\n"
            )
            config = write_config(tmp_path, url, extra=extra)
            text = config.read_text()
            admin = '[admin]\nlisten = "127.0.0.1:0"'
            assert admin in text
            config.write_text(text.replace(admin, f'[admin]\nlisten = "unix:{sock}"'))
            async with syncd("run", "--config", str(config)) as daemon:
                await daemon.event("outbound_started", endpoint="rx")
                await receiver.wait_records(12)
                daemon.signal(signal.SIGKILL)
                rx.kill()
                assert await daemon.wait() == -signal.SIGKILL
        first_round = receiver.records()
        assert [r["status"] for r in first_round[:5]] == [503] * 5
        async with (
            receiver.running("--hold-at", "19") as rx,
            syncd("run", "--config", str(config)) as daemon,
        ):
            await daemon.event("outbound_started", endpoint="rx")
            await receiver.wait_records(20)
            daemon.signal(signal.SIGKILL)
            rx.kill()
            assert await daemon.wait() == -signal.SIGKILL
        async with receiver.running(), syncd("run", "--config", str(config)) as daemon:
            await daemon.event("sync_pass", outcome="ok")
            await caught_up(db)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
        last = head(db)
        records = receiver.records()
        again = assert_delivered_in_order(records, last)
        assert {first_round[11]["webhook_id"], records[19]["webhook_id"]} <= again
        assert last >= 1200
        assert endpoint_row(db) == (last, "active", 0)

        # 4. 410 -> disabled; replay through the running daemon.
        async with syncd("run", "--config", str(config)) as daemon:
            async with receiver.running():  # what this start's pass wrote, first
                await daemon.event("sync_pass", outcome="ok")
                await caught_up(db)
            before = len(receiver.records())
            async with receiver.running("--gone"):
                code, out, err = await run_cli(
                    "consumers", "replay", "rx", "--from", "1", "--config", str(config), env=env
                )
                assert code == 0, err
                assert "replaying from seq 1" in out
                event = await daemon.event("outbound_disabled", endpoint="rx")
                assert "410 Gone" in event["reason"]
                code, out, err = await run_cli("status", "--config", str(config), env=env)
                assert code == 0, err
                assert "outbound   rx: DISABLED, acked seq 0" in out
            async with receiver.running():
                code, out, err = await run_cli(
                    "consumers", "replay", "rx", "--config", str(config), env=env
                )
                assert code == 0, err
                assert "rx: resumed" in out
                await caught_up(db)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    replayed = receiver.records()[before:]
    assert replayed[0]["status"] == 410
    assert replayed[1]["webhook_id"] == replayed[0]["webhook_id"]
    assert assert_delivered_in_order(replayed[1:], head(db)) == set()
    assert all(r["webhook_id"].split("-")[2] == "1" for r in replayed)
    assert endpoint_row(db) == (head(db), "active", 1)
    assert integrity(db) == "ok"
    assert_log_invariants(db)
