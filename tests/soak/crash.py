"""Crash consistency with real processes: SIGKILL `syncd run` at chosen moments, restart, check.

The driver (this process) runs the simulator upstream and a fake job server, and starts
`python -m syncd run` as a separate process with signed webhooks and three job providers configured.
A background load mutates the upstream, sends a signed webhook per changed count (recording which
ones were answered 200), removes counts now and then, and registers jobs over the admin API, each
scripted to a known end state (succeeded, failed, partial, lost, an export with a download). Each
round picks a moment from the seeded RNG and SIGKILLs the daemon there:

- ``during_write_txn``: a large upstream change is being applied; the kill follows the moment the
  daemon is seen holding SQLite's WAL write lock (its fcntl lock on byte 120 of the ``-shm`` file,
  read from ``/proc/locks``: no probing transaction of our own), i.e. inside a page transaction;
- ``between_pages``: the upstream answers each page 50 ms late; the kill follows a page's commit
  (the change-log head moved to a ``count.*`` entry) while the write lock is free;
- ``after_webhook_ack``: right after a webhook was answered 200, before the debounced pass;
- ``during_job_poll``: while the fake job server holds a poll's answer;
- ``at_spawn``: at once (0 ms) after the process is spawned, before it has imported anything, so
  the database may not exist yet or have no schema (the checker's empty state);
- ``random``: at a random instant after the start (possibly during startup or migration).

After every kill the committed state is checked (``invariants.Checker.committed_state``). After the
last round the daemon starts once more, the load stops, and once every job has ended, every inbox row
is processed and a full pass has completed after the last upstream change, it gets SIGTERM (exit 0
expected) and the end state is checked too (``converged``). The daemon must never exit on its own.

Run it standalone: ``python -m tests.soak.crash --rounds 20 [--seed N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from syncd.simulator import Simulator, SimulatorConfig, serve
from syncd.simulator.webhooks import SIGNATURE_HEADER, event_body, sign
from syncd.timeutil import format_ns, now_ns
from tests.fakes.job_servers import FakeJobServer, Step, bulk, commerce, inventory, serve_jobs
from tests.process_kit import SyncdProcess, clean_env, syncd
from tests.soak.invariants import Checker, ExpectedJob
from tests.soak.report import ScenarioResult

KEY = "crash-signature-key-0123456789"
NOTIFICATION_URL = "https://syncd.example.com/webhooks/square"
MOMENTS = (
    "during_write_txn",
    "between_pages",
    "after_webhook_ack",
    "during_job_poll",
    "at_spawn",
    "random",
)
WAL_WRITE_LOCK = 120  # byte of the -shm file SQLite's WAL writer locks for a write transaction


@dataclass(frozen=True)
class CrashPlan:
    """How many rounds, the seed, and the size of the upstream."""

    rounds: int
    seed: int
    locations: int = 3
    items: int = 1000  # per location
    start_timeout: float = 20.0
    moment_timeout: float = 5.0
    final_timeout: float = 60.0
    moments: tuple[str, ...] = MOMENTS  # what the rounds pick from


def write_config(
    path: Path,
    *,
    database: Path,
    upstream: str,
    jobs_url: str,
    location_ids: list[str],
    download_dir: Path,
) -> Path:
    """The daemon's config: fast passes (full ones every 2 s, so removals reach the mirror), signed
    webhooks, three job providers with fast backoff and a 1 s not-found grace."""
    locations = ", ".join(f'"{loc}"' for loc in location_ids)
    path.write_text(
        f"""
database = "{database}"
shutdown_timeout = 5

[square]
base_url = "{upstream}"
access_token = "test-token"
location_ids = [{locations}]
page_limit = 100
poll_interval = 0.5
full_resync_interval = 2
overlap = 1
clock_margin = 0
retry_backoff_initial = 0.01
retry_backoff_max = 0.1
notification_url = "{NOTIFICATION_URL}"
webhook_signature_keys = ["{KEY}"]

[webhooks]
debounce = 0.2
max_delay = 0.5

[http]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[jobs]
backoff_initial = 0.05
backoff_max = 0.3
not_found_grace = 1
download_dir = "{download_dir}"

[jobs.providers.inv]
dialect = "inventory_jobs"
base_url = "{jobs_url}"

[jobs.providers.bulk]
dialect = "bulk_sales_orders"
base_url = "{jobs_url}"
params = {{ businessUnitId = "BU1" }}

[jobs.providers.shop]
dialect = "commerce_jobs"
base_url = "{jobs_url}"

[log]
format = "json"
level = "info"
""",
        encoding="utf-8",
    )
    return path


def holds_write_lock(pid: int, shm: Path) -> bool:
    """Whether process ``pid`` holds SQLite's WAL write lock on ``shm`` (from ``/proc/locks``)."""
    try:
        inode = os.stat(shm).st_ino
        text = Path("/proc/locks").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        parts = line.split()
        # "1: POSIX  ADVISORY  WRITE 4238 fe:00:2146529 120 120"
        if (
            len(parts) >= 8
            and parts[3] == "WRITE"
            and parts[4] == str(pid)
            and parts[5].rsplit(":", 1)[-1] == str(inode)
            and parts[6] == str(WAL_WRITE_LOCK)
        ):
            return True
    return False


def _head(db: Path) -> tuple[int, str]:
    """(seq, kind) of the newest change entry, read-only; (0, "") when there is none yet."""
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0, ""
    try:
        row = conn.execute("SELECT seq, kind FROM changes ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return 0, ""
    finally:
        conn.close()
    return (int(row[0]), str(row[1])) if row else (0, "")


def _scalar(db: Path, sql: str) -> Any:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(sql).fetchone()
    finally:
        conn.close()
    return row[0] if row else None


@dataclass
class _Round:
    """The daemon process of the current round and its listeners."""

    proc: SyncdProcess
    public_url: str | None = None
    admin_url: str | None = None


@dataclass
class CrashDriver:
    """One run of the plan against one database."""

    plan: CrashPlan
    workdir: Path
    sim: Simulator
    sim_url: str
    jobs: FakeJobServer
    client: aiohttp.ClientSession
    rng: random.Random = field(init=False)
    load_rng: random.Random = field(init=False)
    checker: Checker = field(init=False)
    current: _Round | None = None
    accepted: set[str] = field(default_factory=set)
    webhooks_sent: int = 0
    expected_jobs: dict[tuple[str, str], ExpectedJob] = field(default_factory=dict)
    unconfirmed_jobs: dict[tuple[str, str], tuple[ExpectedJob, dict[str, Any]]] = field(
        default_factory=dict
    )
    last_change_ns: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    landed: Counter[str] = field(default_factory=Counter)
    job_serial: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.plan.seed)
        self.load_rng = random.Random(self.plan.seed + 1)
        self.db = self.workdir / "syncd.db"
        self.shm = Path(f"{self.db}-shm")
        self.download_dir = self.workdir / "downloads"
        self.checker = Checker(self.db)
        self.config = write_config(
            self.workdir / "syncd.toml",
            database=self.db,
            upstream=self.sim_url,
            jobs_url=self.jobs.url,
            location_ids=list(self.sim.location_ids),
            download_dir=self.download_dir,
        )

    # --- the run ---------------------------------------------------------------------------------

    async def run(self) -> ScenarioResult:
        started = time.monotonic()
        stop_load = asyncio.Event()
        load = asyncio.create_task(self._load(stop_load), name="crash-load")
        try:
            # Every kind of moment once (in seeded order), then seeded picks.
            moments = list(dict.fromkeys(self.plan.moments))
            schedule = self.rng.sample(moments, len(moments))[: self.plan.rounds]
            schedule += [self.rng.choice(moments) for _ in range(self.plan.rounds - len(schedule))]
            for number, moment in enumerate(schedule, 1):
                await self._round(number, moment)
                self.checker.context = f"round {number} ({moment})"
                self.checker.committed_state()
        finally:
            stop_load.set()
            await load
        await self._final()
        notes = ", ".join(
            f"{m} {self.kills[m]} ({self.landed[m]} landed)" for m in MOMENTS if self.kills[m]
        )
        notes += (
            f"; {len(self.accepted)}/{self.webhooks_sent} webhooks accepted,"
            f" {len(self.expected_jobs)} jobs"
        )
        return ScenarioResult(
            scenario="crash: SIGKILL + restart",
            seed=self.plan.seed,
            rounds=self.plan.rounds,
            faults=sum(self.kills.values()),
            checks=self.checker.checks,
            violations=self.checker.violations,
            seconds=time.monotonic() - started,
            notes=notes,
        )

    async def _round(self, number: int, moment: str) -> None:
        async with syncd("run", "--config", str(self.config), env=clean_env()) as proc:
            self.current = _Round(proc)
            try:
                if moment == "at_spawn":
                    landed = True
                elif moment == "random":
                    await asyncio.sleep(self.rng.uniform(0.0, 2.0))
                    await self._learn_urls(wait=False)
                    landed = True
                else:
                    await self._learn_urls(wait=True)
                    await asyncio.sleep(self.rng.uniform(0.0, 0.5))  # let it work a little
                    landed = await self._moment(moment)
                if proc.proc.returncode is not None:
                    self.checker.context = f"round {number} ({moment})"
                    self.checker.check(
                        False,
                        f"syncd exited on its own ({proc.proc.returncode}):"
                        f" {proc.stderr.decode(errors='replace')[-500:]}",
                    )
                    return
                proc.signal(signal.SIGKILL)
                code = await proc.wait(15)
            finally:
                self.current = None
                self.sim.config.page_delay = 0.0
        self.kills[moment] += 1
        self.landed[moment] += landed
        self.checker.context = f"round {number} ({moment})"
        self.checker.check(code == -signal.SIGKILL, f"exit code {code} after SIGKILL")

    async def _learn_urls(self, *, wait: bool) -> None:
        current = self.current
        assert current is not None
        if wait:
            await current.proc.wait_for(
                lambda e: e.get("event") == "daemon_started", timeout=self.plan.start_timeout
            )
        for event in current.proc.events:
            if event.get("event") == "daemon_started":
                current.public_url = str(event["public_url"])
                current.admin_url = str(event["admin_url"])

    async def _moment(self, moment: str) -> bool:
        """Get the daemon to ``moment``; True when it was observed there (else: killed at timeout)."""
        moments: dict[str, Callable[[], Awaitable[bool]]] = {
            "during_write_txn": self._during_write_txn,
            "between_pages": self._between_pages,
            "after_webhook_ack": self._after_webhook_ack,
            "during_job_poll": self._during_job_poll,
        }
        try:
            async with asyncio.timeout(self.plan.moment_timeout):
                return await moments[moment]()
        except TimeoutError:
            return False

    async def _big_change(self) -> None:
        """Change a third of the upstream and announce one of them (the poke for a pass)."""
        changed = self.sim.mutate(max(1, self.sim.count_total() // 3))
        self.last_change_ns = now_ns()
        await self._send_webhooks(changed[:1])

    async def _during_write_txn(self) -> bool:
        await self._big_change()
        assert self.current is not None
        pid = self.current.proc.pid
        while not holds_write_lock(pid, self.shm):
            await asyncio.sleep(0.0005)
        return True

    async def _between_pages(self) -> bool:
        self.sim.config.page_delay = 0.05
        start, _ = await asyncio.to_thread(_head, self.db)
        await self._big_change()
        assert self.current is not None
        pid = self.current.proc.pid
        while True:
            seq, kind = await asyncio.to_thread(_head, self.db)
            if seq > start and kind.startswith("count.") and not holds_write_lock(pid, self.shm):
                return True
            await asyncio.sleep(0.002)

    async def _after_webhook_ack(self) -> bool:
        changed = self.sim.mutate(self.rng.randint(1, 3))
        self.last_change_ns = now_ns()
        return await self._send_webhooks(changed, stop_at_first=True) > 0

    async def _during_job_poll(self) -> bool:
        job = self._new_job(self.rng, first_delay=3.0)
        polls = self.jobs.count(job[0].job_id)
        await self._register(*job)
        while self.jobs.count(job[0].job_id) <= polls:
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.02)  # the request is in the server's hands, its answer held back
        return True

    # --- the background load ---------------------------------------------------------------------

    async def _load(self, stop: asyncio.Event) -> None:
        rng = self.load_rng
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(0.02, 0.08))
            roll = rng.random()
            if roll < 0.04:
                self.sim.remove(1)
                self.last_change_ns = now_ns()
            elif roll < 0.10:
                await self._register(*self._new_job(rng))
            else:
                changed = self.sim.mutate(rng.randint(1, 4))
                self.last_change_ns = now_ns()
                await self._send_webhooks(changed)

    async def _send_webhooks(
        self, rows: list[dict[str, str]], *, stop_at_first: bool = False
    ) -> int:
        """One signed event per changed count to the current daemon; returns how many got 200."""
        ok = 0
        for row in rows:
            current = self.current
            if current is None or current.public_url is None:
                return ok
            event_id = str(uuid.uuid4())
            body = event_body(row, merchant_id="CRASHMERCHANT", event_id=event_id)
            headers = {
                SIGNATURE_HEADER: sign(KEY, NOTIFICATION_URL, body),
                "Content-Type": "application/json",
            }
            self.webhooks_sent += 1
            try:
                async with self.client.post(
                    f"{current.public_url}/webhooks/square", data=body, headers=headers
                ) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                continue
            if status == 200:
                self.accepted.add(event_id)
                ok += 1
                if stop_at_first:
                    return ok
        return ok

    def _new_job(
        self, rng: random.Random, first_delay: float = 0.0
    ) -> tuple[ExpectedJob, dict[str, Any]]:
        """Script a job on the fake server; return what it should end as and its registration.
        With ``first_delay`` the first poll's answer is held back that long (never a lost job)."""
        self.job_serial += 1
        kinds = ["inv_ok", "inv_failed", "bulk_partial", "export", "export_failed"]
        kind = rng.choice(kinds if first_delay else [*kinds, "lost"])
        job_id = f"{kind}-{self.plan.seed}-{self.job_serial}"
        delay = first_delay or (0.3 if rng.random() < 0.3 else 0.0)
        download = None
        steps: list[Step]
        if kind == "inv_ok":
            provider, state = "inv", "succeeded"
            steps = [
                inventory("WORKING"),
                inventory("WORKING", item_count=5),
                inventory("SUCCESS", success=True),
            ]
        elif kind == "inv_failed":
            provider, state = "inv", "failed"
            steps = [inventory("WORKING"), inventory("SUCCESS", success=False, messages=("no",))]
        elif kind == "bulk_partial":
            provider, state = "bulk", "partial"
            steps = [
                bulk("PROCESSING", processed=1, total=3, job_id=job_id),
                bulk("COMPLETED", failed=1, processed=3, total=3, job_id=job_id),
            ]
        elif kind in ("export", "export_failed"):
            provider = "shop"
            if kind == "export":
                state = "succeeded"
                download = os.urandom(rng.randint(1, 200_000))
                self.jobs.files[f"{job_id}.csv"] = download
                steps = [
                    commerce("started", job_id=job_id),
                    commerce(
                        "success", job_id=job_id, href=f"{self.jobs.url}/exports/{job_id}.csv"
                    ),
                ]
            else:
                state = "failed"
                steps = [
                    commerce("started", job_id=job_id),
                    commerce("failed", error="disk full", job_id=job_id),
                ]
        else:
            provider, state, steps = "inv", "lost", []  # never scripted: 404 until the grace ends
        if steps:
            first = steps[0]
            steps[0] = Step(first.status, first.body, first.raw, first.headers, delay)
            self.jobs.script(job_id, *steps)
        return (
            ExpectedJob(provider, job_id, state, download),
            {"provider": provider, "job_id": job_id, "label": f"crash {kind}"},
        )

    async def _register(self, job: ExpectedJob, body: dict[str, Any]) -> None:
        """POST /jobs to the current daemon; unanswered registrations are retried at the end."""
        key = (job.provider, job.job_id)
        current = self.current
        if current is None or current.admin_url is None:
            self.unconfirmed_jobs[key] = (job, body)
            return
        try:
            async with self.client.post(f"{current.admin_url}/jobs", data=orjson.dumps(body)) as r:
                await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        if status in (200, 201):
            self.expected_jobs[key] = job
            self.unconfirmed_jobs.pop(key, None)
        else:
            self.unconfirmed_jobs[key] = (job, body)

    # --- the end ---------------------------------------------------------------------------------

    async def _final(self) -> None:
        """Restart, let it converge, stop it with SIGTERM, check everything."""
        self.checker.context = "final"
        async with syncd("run", "--config", str(self.config), env=clean_env()) as proc:
            self.current = _Round(proc)
            await self._learn_urls(wait=True)
            for job, body in list(self.unconfirmed_jobs.values()):
                await self._register(job, body)
            self.checker.check(
                not self.unconfirmed_jobs,
                f"jobs could not be registered: {list(self.unconfirmed_jobs)}",
            )
            quiet_since = format_ns(self.last_change_ns)
            try:
                async with asyncio.timeout(self.plan.final_timeout):
                    while not await asyncio.to_thread(self._settled, quiet_since):
                        if proc.proc.returncode is not None:
                            break
                        await asyncio.sleep(0.1)
            except TimeoutError:
                self.checker.check(
                    False,
                    f"did not settle within {self.plan.final_timeout} s"
                    f" (jobs, inbox, or a full pass after {quiet_since})",
                )
            self.checker.check(
                proc.proc.returncode is None, f"syncd exited on its own ({proc.proc.returncode})"
            )
            proc.signal(signal.SIGTERM)
            code = await proc.wait(15)
            self.checker.check(code == 0, f"exit code {code} after SIGTERM")
            self.current = None
        self.checker.committed_state()
        self.checker.converged(
            self.sim.snapshot(),
            accepted_events=self.accepted,
            jobs=self.expected_jobs.values(),
            download_dir=self.download_dir,
        )

    def _settled(self, quiet_since: str) -> bool:
        unfinished = _scalar(self.db, "SELECT COUNT(*) FROM jobs WHERE finished_at IS NULL")
        unprocessed = _scalar(
            self.db, "SELECT COUNT(*) FROM webhook_events WHERE processed_at IS NULL"
        )
        last_full = _scalar(
            self.db, "SELECT MAX(started_at) FROM passes WHERE kind = 'full' AND outcome = 'ok'"
        )
        return (
            unfinished == 0
            and unprocessed == 0
            and last_full is not None
            and (last_full > quiet_since)
        )


async def run_crash(plan: CrashPlan, workdir: Path) -> ScenarioResult:
    """Serve the upstream and the job APIs, run the plan, return the summary row."""
    sim_config = SimulatorConfig(locations=plan.locations, items=plan.items, seed=plan.seed)
    async with (
        serve(sim_config) as (sim, sim_url),
        serve_jobs() as jobs,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client,
    ):
        driver = CrashDriver(plan, workdir, sim, sim_url, jobs, client)
        return await driver.run()


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.soak.crash --rounds N [--seed S] [--dir D]``: run and print the summary."""
    parser = argparse.ArgumentParser(prog="python -m tests.soak.crash")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1, 2**31))
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temporary one)")
    args = parser.parse_args(argv)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="syncd-crash-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"seed {args.seed}, work directory {workdir}", file=sys.stderr)
    result = asyncio.run(run_crash(CrashPlan(rounds=args.rounds, seed=args.seed), workdir))
    print(result.describe())
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
