"""A real `syncd run` process for the hostile-input tests, driven synchronously (hypothesis examples
are plain functions): plain ``http.client`` requests and raw sockets, its memory read from
``/proc/<pid>/status``.

The daemon has webhooks configured (``KEY`` over ``NOTIFICATION_URL``), a small body limit and a 1 s
read timeout, three job providers, and an upstream that refuses connections (its passes fail and
are retried quietly; the ingress and the admin API do not care).
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from syncd.simulator.webhooks import SIGNATURE_HEADER, sign
from tests.process_kit import ROOT, clean_env

KEY = "hostile-signature-key-0123456789"
NOTIFICATION_URL = "https://syncd.example.com/webhooks/square"
MAX_BODY = 65536
READ_TIMEOUT = 1.0
ADMIN_TOKEN = "hostile-admin-token"


def signed(body: bytes, key: str = KEY, url: str = NOTIFICATION_URL) -> dict[str, str]:
    """The signature header Square would send with ``body``."""
    return {SIGNATURE_HEADER: sign(key, url, body)}


@dataclass
class Daemon:
    """The running process, its URLs, database and log file."""

    proc: subprocess.Popen[bytes]
    public_url: str
    admin_url: str
    db: Path
    log: Path
    download_dir: Path

    @property
    def public(self) -> tuple[str, int]:
        return _address(self.public_url)

    @property
    def admin(self) -> tuple[str, int]:
        return _address(self.admin_url)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self) -> int:
        """Resident memory now (VmRSS, KiB)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The daemon's JSON log lines so far (optionally only events called ``name``)."""
        out = []
        for line in self.log.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                event = orjson.loads(line)
                if isinstance(event, dict) and (name is None or event.get("event") == name):
                    out.append(event)
        return out

    def inbox(self) -> list[tuple[str, bytes]]:
        """(event_id, body) of every stored webhook."""
        conn = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return [
                (r[0], bytes(r[1]))
                for r in conn.execute("SELECT event_id, body FROM webhook_events")
            ]
        finally:
            conn.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        admin: bool = False,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: (status, headers, body). An event stream's body is
        not read (it does not end): b"" for it."""
        host, port = self.admin if admin else self.public
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            answer = {k.lower(): v for k, v in resp.getheaders()}
            if answer.get("content-type", "").startswith("text/event-stream"):
                return resp.status, answer, b""
            return resp.status, answer, resp.read()
        finally:
            conn.close()


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def write_config(tmp: Path, jobs_url: str) -> Path:
    path = tmp / "syncd.toml"
    path.write_text(
        f"""
database = "{tmp / "syncd.db"}"
shutdown_timeout = 5

[square]
base_url = "http://127.0.0.1:9"
access_token = "test-token"
poll_interval = 300
catalog_sync = false
max_retries = 0
retry_backoff_initial = 0.5
retry_backoff_max = 5
notification_url = "{NOTIFICATION_URL}"
webhook_signature_keys = ["{KEY}"]

[http]
listen = "127.0.0.1:0"
max_body_bytes = {MAX_BODY}
read_timeout = {READ_TIMEOUT}

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[jobs]
download_dir = "{tmp / "downloads"}"

[jobs.providers.inv]
dialect = "inventory_jobs"
base_url = "{jobs_url}"

[jobs.providers.bulk]
dialect = "bulk_sales_orders"
base_url = "{jobs_url}"

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


@contextlib.contextmanager
def daemon_process(tmp: Path, *, jobs_url: str = "http://127.0.0.1:9") -> Iterator[Daemon]:
    """Start `python -m syncd run`; yield once it serves; SIGTERM -> wait -> SIGKILL after."""
    config = write_config(tmp, jobs_url)
    log = tmp / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "--config", str(config)],
            cwd=ROOT,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        started: dict[str, Any] | None = None
        while started is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"syncd did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
            for line in log.read_bytes().splitlines():
                with contextlib.suppress(orjson.JSONDecodeError):
                    event = orjson.loads(line)
                    if isinstance(event, dict) and event.get("event") == "daemon_started":
                        started = event
        yield Daemon(
            proc,
            str(started["public_url"]),
            str(started["admin_url"]),
            tmp / "syncd.db",
            log,
            tmp / "downloads",
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def raw_exchange(
    address: tuple[str, int], chunks: list[bytes], *, pause: float = 0.0, timeout: float = 10.0
) -> bytes:
    """Send ``chunks`` on a raw socket (``pause`` seconds apart), then read until a whole answer
    (headers and its Content-Length of body) came back, the server closes, or ``timeout``; returns
    what came back (b"" if the server closed without answering)."""
    sock = socket.create_connection(address, timeout=timeout)
    received = b""
    try:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server gave up on us: read what it said
            if pause:
                time.sleep(pause)
        sock.settimeout(timeout)
        with contextlib.suppress(OSError):
            while not _complete(received) and (data := sock.recv(65536)):
                received += data
    finally:
        sock.close()
    return received


def _complete(raw: bytes) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def status_of(raw: bytes) -> int | None:
    """The status code of a raw HTTP answer, or None if there was none."""
    if not raw.startswith(b"HTTP/1."):
        return None
    return int(raw.split(b" ", 2)[1])


def json_body(raw: bytes) -> Any:
    """The JSON body of a raw HTTP answer."""
    return orjson.loads(raw.split(b"\r\n\r\n", 1)[1])
