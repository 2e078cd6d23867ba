"""A real ``redis-server`` for the publishing tests (issue 7): loopback, a free port, AOF on
(``appendonly yes``) in the test's own directory, no RDB snapshots. It can be stopped, killed and
started again on the same port and directory, which is how the tests make outages and restarts
from the AOF. The binary comes from Debian's ``redis-server`` package, which
``scripts/ensure-system-packages.sh`` (run by ``make test``) installs."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from syncd.model import Change

READY_TIMEOUT = 10.0
PING = b"*1\r\n$4\r\nPING\r\n"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortTaken(AssertionError):
    """redis-server could not bind its port: another process took it after ``free_port``."""


class RedisServer:
    """One ``redis-server`` process; ``start`` waits for PING, ``stop``/``kill`` wait for the exit."""

    def __init__(self, directory: Path, *, appendfsync: str = "everysec") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: run scripts/ensure-system-packages.sh"
                " (make test does), or apt-get install redis-server"
            )
        self.binary = binary
        self.directory = directory
        self.appendfsync = appendfsync
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Start (again, on the same port and directory: the AOF is loaded) and wait for PING.

        The port was free when it was picked, but another process may take it before redis-server
        binds it: on the first start, such a lost race is retried on a new port (bounded)."""
        for attempt in range(5):
            try:
                await self._start_once()
                return
            except PortTaken:
                if self.starts > 1 or attempt == 4:
                    raise
                self.starts -= 1
                self.port = free_port()

    async def _start_once(self) -> None:
        assert not self.running
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *[
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.directory),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    self.appendfsync,
                    "--save",
                    "",
                    "--daemonize",
                    "no",
                    "--protected-mode",
                    "yes",
                    "--logfile",
                    "",
                ],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            log.close()
        self.starts += 1
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                while not await self._pong():
                    if self.proc.returncode is not None:
                        tail = self.log_tail()
                        if "Address already in use" in tail:
                            raise PortTaken(tail)
                        raise AssertionError(
                            f"redis-server exited ({self.proc.returncode}): {tail}"
                        )
                    await asyncio.sleep(0.01)
        except BaseException:
            await self.kill()
            raise

    async def _pong(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(PING)
            return await reader.readline() == b"+PONG\r\n"
        except OSError:
            return False
        finally:
            writer.close()

    async def stop(self) -> None:
        """SIGTERM: Redis shuts down cleanly (the AOF is flushed and fsynced)."""
        await self._end(kill=False)

    async def kill(self) -> None:
        """SIGKILL: a crash; what reached the AOF file survives."""
        await self._end(kill=True)

    async def _end(self, *, kill: bool) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        path = self.directory / "redis.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class BlackHole:
    """A TCP listener that accepts connections and never answers: a hung Redis."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> BlackHole:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)
            while await reader.read(65536):
                pass

        self.server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.close()
        await self.server.wait_closed()


# --- comparing a stream with the change log ------------------------------------------------------


def log_messages(db: Path) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """What the stream must hold for the database's change log: (ID, fields) per entry, in seq
    order, built independently of syncd.publish (the payload as `syncd changes` prints it)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT seq, recorded_at, kind, source, catalog_object_id, location_id, state, job_id,"
            " old, new FROM changes ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    out = []
    for seq, at, kind, source, item, location, state, job_id, old, new in rows:
        record = Change(
            seq,
            at,
            kind,
            source,
            item,
            location,
            state,
            job_id,
            orjson.loads(old) if old else None,
            orjson.loads(new) if new else None,
        )
        key = (
            str(job_id)
            if job_id is not None
            else (f"{item}|{location}|{state}" if item is not None else "")
        )
        out.append(
            (
                f"{seq}-0".encode(),
                {
                    b"seq": str(seq).encode(),
                    b"kind": kind.encode(),
                    b"source": source.encode(),
                    b"key": key.encode(),
                    b"recorded_at": at.encode(),
                    b"payload": orjson.dumps(record.to_record()),
                },
            )
        )
    return out


async def stream_messages(url: str, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of the stream, in ID order."""
    client = Redis.from_url(url)
    try:
        entries = await client.xrange(key)
    finally:
        await client.aclose()
    return [(entry_id, dict(fields)) for entry_id, fields in entries]


async def stream_info(url: str, key: str) -> dict[str, Any]:
    """XINFO STREAM (length, last-generated-id, entries-added ...)."""
    client = Redis.from_url(url)
    try:
        info: dict[str, Any] = await client.xinfo_stream(key)
        return info
    finally:
        await client.aclose()


async def assert_stream_equals_log(url: str, key: str, db: Path) -> int:
    """The stream holds exactly the change log: same IDs (seq-0), same fields, in order; no entry
    was ever added twice (entries-added == length). Returns the number of entries."""
    expected = log_messages(db)
    got = await stream_messages(url, key)
    assert [i for i, _ in got] == [i for i, _ in expected], "stream IDs differ from the log's seqs"
    for (entry_id, fields), (_, want) in zip(got, expected, strict=True):
        assert fields == want, f"entry {entry_id!r} differs"
    info = await stream_info(url, key)
    assert info["length"] == len(expected)
    assert info["entries-added"] == len(expected), "some entry was added more than once"
    return len(expected)
