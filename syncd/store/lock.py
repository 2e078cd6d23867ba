"""The instance lock: one syncd writer process per database, held as an ``flock`` on ``<db>.lock``.

``syncd run`` and ``syncd sync`` take the lock exclusively before they open the database for
writing; a second one on the same database is refused with the holder's pid instead of racing the
first. The kernel drops the lock when its holder exits, however it exits, so a crash never leaves a
stale lock behind (the file itself stays; it only carries the holder's pid). Readers (``status``,
``changes``, ``counts``, other tools) never take it, except :func:`probe`, which holds a shared lock
for the instant it takes to see whether a daemon is running; ``acquire`` retries for a moment to
ride over such a probe.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

from syncd.errors import AlreadyRunning, StoreError

LOCK_SUFFIX = ".lock"


def lock_path(database: Path) -> Path:
    """``/var/lib/syncd/syncd.db`` -> ``/var/lib/syncd/syncd.db.lock``."""
    return database.with_name(database.name + LOCK_SUFFIX)


def _busy(exc: OSError) -> bool:
    return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class InstanceLock:
    """The held lock; ``release`` (idempotent) or process exit gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    async def acquire(
        cls, database: Path, *, wait: float = 1.0, retry: float = 0.02
    ) -> InstanceLock:
        """Take the lock for ``database``, retrying for up to ``wait`` seconds; raise AlreadyRunning
        when another process keeps holding it."""
        path = lock_path(database)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise StoreError(
                f"cannot open lock file {path}: {exc.strerror}", op="store.lock", path=str(path)
            ) from exc
        import asyncio  # only acquire waits; probe (syncd status) runs without an event loop

        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if not _busy(exc):
                        raise StoreError(
                            f"cannot lock {path}: {exc.strerror}", op="store.lock", path=str(path)
                        ) from exc
                    if time.monotonic() >= deadline:
                        raise _already_running(database, _read_pid(fd)) from None
                    await asyncio.sleep(retry)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        """Give the lock up (the pid stays in the file; only the lock itself says "running")."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _already_running(database: Path, pid: int | None) -> AlreadyRunning:
    holder = f" (pid {pid})" if pid else ""
    return AlreadyRunning(
        f"database {database} is in use by another syncd{holder}",
        op="store.lock",
        hint="stop that syncd first (systemctl stop syncd), or give this one another --database;"
        " readers (syncd status, changes, counts) work while it runs",
        path=str(database),
        pid=pid,
    )


@dataclass(frozen=True, slots=True)
class LockState:
    """What :func:`probe` saw: ``running`` is None when it could not tell (no permission)."""

    running: bool | None
    pid: int | None = None


def probe(database: Path) -> LockState:
    """Whether a syncd process holds ``database``'s lock right now, and its pid."""
    path = lock_path(database)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return LockState(False)
    except OSError:
        return LockState(None)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if _busy(exc):
                return LockState(True, _read_pid(fd))
            return LockState(None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return LockState(False)
    finally:
        os.close(fd)
