"""The systemd notify protocol (``sd_notify``) over ``$NOTIFY_SOCKET``, without libsystemd.

``READY=1`` once the daemon can serve, ``WATCHDOG=1`` from the event loop every half ``WatchdogSec``
(so a wedged loop stops pinging and systemd restarts the service), ``STOPPING=1`` when shutdown
begins and ``STATUS=<one line>`` for ``systemctl status``. A message is one datagram of
``KEY=VALUE`` lines sent to the socket systemd names in ``$NOTIFY_SOCKET``: a path, or ``@name`` for
the abstract namespace. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op. Sends never
block: a full or vanished socket costs one logged warning (then silence until a send works again),
never a stalled loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("syncd.notify")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
STATUS_MAX = 200  # STATUS= is shown on one line of `systemctl status`
# ``status_soon`` sends at most one STATUS= per this many seconds (200 sources end a pass several
# times a second: the service manager need not wake for each, nor syncd open a socket for each).
STATUS_MIN_INTERVAL = 1.0


def socket_address(value: str) -> str:
    """``$NOTIFY_SOCKET`` as a ``sendto`` address: ``@name`` becomes the abstract ``\\0name``."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if not value.startswith("/"):
        raise ValueError(f"unsupported {NOTIFY_SOCKET_ENV} address {value!r} (need /path or @name)")
    return value


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, or None when the watchdog
    is off or meant for another process (``$WATCHDOG_PID``)."""
    owner = environ.get(WATCHDOG_PID_ENV)
    if owner and owner.strip() != str(pid):
        return None
    try:
        usec = int(environ.get(WATCHDOG_USEC_ENV, ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class Notifier:
    """Sends notify messages to the service manager; a no-op without an address."""

    def __init__(self, address: str | None, *, watchdog: float | None = None) -> None:
        self._address = socket_address(address) if address else None
        self.watchdog_interval = watchdog if self._address else None
        self._failing = False
        self._status_pending: str | None = None
        self._status_timer: asyncio.TimerHandle | None = None
        self._status_sent_at = float("-inf")  # time.monotonic() of the last status_soon send

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, pid: int | None = None
    ) -> Notifier:
        """The notifier systemd's environment describes (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        address = env.get(NOTIFY_SOCKET_ENV) or None
        try:
            interval = watchdog_interval(env, os.getpid() if pid is None else pid)
            return cls(address, watchdog=interval)
        except ValueError as exc:
            log.warning("sd_notify_disabled", error=str(exc))
            return cls(None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str) -> bool:
        """Send one message (``send(READY="1", STATUS="...")``); True when it was delivered."""
        if self._address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            # A socket per message, like sd_notify(3): nothing to keep open or close at shutdown.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError as exc:
            if not self._failing:
                log.warning("sd_notify_failed", error=str(exc), fields=sorted(fields))
            self._failing = True
            return False
        if self._failing:
            log.info("sd_notify_recovered")
            self._failing = False
        return True

    def ready(self, status: str) -> bool:
        """``READY=1``: startup is complete (store open and migrated, listeners bound)."""
        return self.send(READY="1", STATUS=one_line(status))

    def stopping(self, status: str = "stopping") -> bool:
        """``STOPPING=1``: shutdown has begun (a status still waiting in ``status_soon`` is
        dropped, so it cannot overwrite this one)."""
        self._status_pending = None
        if self._status_timer is not None:
            self._status_timer.cancel()
            self._status_timer = None
        return self.send(STOPPING="1", STATUS=one_line(status))

    def status(self, text: str) -> bool:
        """``STATUS=``: the one-line summary ``systemctl status`` shows."""
        return self.send(STATUS=one_line(text))

    def status_soon(self, text: str) -> None:
        """``status(text)`` now, or, within ``STATUS_MIN_INTERVAL`` of the last one, at its end
        with the newest text given by then. Call from the event loop."""
        if self._address is None:
            return
        self._status_pending = text
        if self._status_timer is not None:
            return  # the scheduled send takes this text
        wait = self._status_sent_at + STATUS_MIN_INTERVAL - time.monotonic()
        if wait <= 0:
            self._send_pending_status()
        else:
            self._status_timer = asyncio.get_running_loop().call_later(
                wait, self._send_pending_status
            )

    def _send_pending_status(self) -> None:
        self._status_timer = None
        text, self._status_pending = self._status_pending, None
        if text is not None:
            self._status_sent_at = time.monotonic()
            self.status(text)

    def ping(self) -> bool:
        """``WATCHDOG=1``: the event loop is alive."""
        return self.send(WATCHDOG="1")

    async def run_watchdog(self, stop: asyncio.Event) -> None:
        """Ping every ``watchdog_interval`` seconds until ``stop``. The pings come from the event
        loop itself: a loop wedged by blocking code misses them, so systemd restarts syncd."""
        interval = self.watchdog_interval
        if interval is None:
            return
        log.info("watchdog_started", interval_s=interval)
        while not stop.is_set():
            self.ping()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


def one_line(text: str) -> str:
    """A STATUS value: no newlines (they would end the field), bounded length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= STATUS_MAX else flat[: STATUS_MAX - 3] + "..."
