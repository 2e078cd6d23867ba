"""Real `python -m syncd ...` processes for the service tests: a config writer, a process handle
that collects the daemon's JSON log lines, a `syncd simulate` upstream with its control routes, and
terminate -> wait -> kill teardown."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
Event = dict[str, Any]


def write_config(
    tmp_path: Path,
    upstream: str,
    *,
    name: str = "syncd.toml",
    square: str = "",
    extra: str = "",
    level: str = "info",
    catalog: bool = False,
) -> Path:
    """A config for a daemon against ``upstream`` on free ports, logging JSON lines; the catalog
    is mirrored only with ``catalog``."""
    path = tmp_path / name
    path.write_text(f"""
database = "{tmp_path / "syncd.db"}"
shutdown_timeout = 5

[sources.square]
base_url = "{upstream}"
access_token = "test-token"
poll_interval = 300
catalog_sync = {"true" if catalog else "false"}
overlap = 1
clock_margin = 0
retry_backoff_initial = 0.01
retry_backoff_max = 0.05
{square}

[http]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[log]
format = "json"
level = "{level}"

{extra}
""")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without anything that would configure syncd or systemd behind its
    back (SYNCD_*, NOTIFY_SOCKET, WATCHDOG_*, CREDENTIALS_DIRECTORY, STATE_DIRECTORY)."""
    drop = ("SYNCD_", "NOTIFY_SOCKET", "WATCHDOG_", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


class SyncdProcess:
    """A running `syncd` process; its stdout JSON lines are collected in ``events``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[Event] = []
        self.stderr = b""
        self._grew = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            with suppress(orjson.JSONDecodeError):
                event = orjson.loads(line)
                if isinstance(event, dict):
                    self.events.append(event)
                    self._grew.set()
        self._grew.set()

    async def wait_for(
        self, match: Callable[[Event], bool], *, after: int = 0, timeout: float = 10.0
    ) -> Event:
        """The first event (index >= ``after``) that ``match`` accepts; fails on timeout or exit."""
        async with asyncio.timeout(timeout):
            seen = after
            while True:
                for event in self.events[seen:]:
                    if match(event):
                        return event
                seen = max(seen, len(self.events))
                if self._reader.done():
                    raise AssertionError(
                        f"syncd exited ({self.proc.returncode}) before the event;"
                        f" stderr: {self.stderr.decode(errors='replace')}"
                    )
                self._grew.clear()
                await self._grew.wait()

    async def event(self, name: str, **fields: Any) -> Event:
        """The first event called ``name`` whose fields include ``fields``."""
        return await self.wait_for(
            lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
        )

    def count(self, name: str, *, after: int = 0) -> int:
        return sum(1 for e in self.events[after:] if e.get("event") == name)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 10.0) -> int:
        """Wait for the exit; return the exit code (stderr and the log reader are drained)."""
        async with asyncio.timeout(timeout):
            assert self.proc.stderr is not None
            self.stderr += await self.proc.stderr.read()
            code = await self.proc.wait()
            await self._reader
        return code


@asynccontextmanager
async def syncd(
    *args: str, env: Mapping[str, str] | None = None, wrapper: Sequence[str] = ()
) -> AsyncIterator[SyncdProcess]:
    """Run `[WRAPPER...] python -m syncd ARGS...`; on exit terminate -> wait -> kill, whatever
    happened."""
    proc = await asyncio.create_subprocess_exec(
        *wrapper,
        sys.executable,
        "-m",
        "syncd",
        *args,
        cwd=ROOT,
        env=dict(env or clean_env()),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    handle = SyncdProcess(proc)
    try:
        yield handle
    finally:
        if proc.returncode is None:
            with suppress(ProcessLookupError):
                proc.terminate()
            try:
                await handle.wait(10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        handle._reader.cancel()
        with suppress(asyncio.CancelledError):
            await handle._reader


async def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 20.0
) -> tuple[int, str, str]:
    """Run a short `python -m syncd ARGS...` to completion: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        *args,
        cwd=ROOT,
        env=dict(env or clean_env()),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` through a read-write connection (it recovers a hot WAL first)."""
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read through a read-only connection, like another tool would."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def wal_exists(db: Path) -> bool:
    """Whether the database's -wal file is still there (a clean close removes it)."""
    return Path(f"{db}-wal").exists()


class Upstream:
    """A `syncd simulate` process's URL and its control routes."""

    def __init__(self, url: str, client: aiohttp.ClientSession) -> None:
        self.url = url
        self._client = client

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        async with self._client.post(f"{self.url}{path}", json=body) as resp:
            assert resp.status == 200, await resp.text()
            return orjson.loads(await resp.read())

    async def get(self, path: str) -> Any:
        async with self._client.get(f"{self.url}{path}") as resp:
            assert resp.status == 200, await resp.text()
            return orjson.loads(await resp.read())


async def _drain(stream: asyncio.StreamReader) -> None:
    async for _ in stream:
        pass


@asynccontextmanager
async def simulate(*args: str) -> AsyncIterator[Upstream]:
    """`syncd simulate --port 0 ARGS...` until the block ends; its JSON log (on stderr) names
    the URL it serves."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        "simulate",
        "--port",
        "0",
        "--log-level",
        "info",
        *args,
        cwd=ROOT,
        env=clean_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    drain: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(20):
            url = None
            while url is None:
                line = await proc.stderr.readline()
                assert line, f"syncd simulate exited ({await proc.wait()}) before serving"
                with suppress(orjson.JSONDecodeError):
                    event = orjson.loads(line)
                    if isinstance(event, dict) and event.get("event") == "simulator_started":
                        url = str(event["url"])
        drain = asyncio.create_task(_drain(proc.stderr))
        async with aiohttp.ClientSession() as client:
            yield Upstream(url, client)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            await drain


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds (polled every 20 ms), failing after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def run_probe(
    code: str, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -c code argv...`` to its end (60 s at most), output captured, in ``clean_env()``
    unless ``env`` is given: for probes that print what they saw as their last stderr line."""
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env() if env is None else env,
    )
