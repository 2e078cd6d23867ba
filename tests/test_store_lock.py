"""The instance lock: one writer process per database, seen by readers without disturbing it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.components import open_components
from syncd.config import Settings
from syncd.errors import AlreadyRunning
from syncd.store.lock import InstanceLock, lock_path, probe


async def test_second_holder_is_refused_with_the_first_ones_pid(db_path: Path) -> None:
    """While one holder has the lock, another acquire fails (after its short wait) with
    AlreadyRunning naming the holder's pid and what to do; once released, it succeeds."""
    first = await InstanceLock.acquire(db_path)
    try:
        assert lock_path(db_path).read_text().strip() == str(os.getpid())
        with pytest.raises(AlreadyRunning) as info:
            await InstanceLock.acquire(db_path, wait=0.05)
        assert f"in use by another syncd (pid {os.getpid()})" in info.value.message
        assert "systemctl stop syncd" in (info.value.hint or "")
    finally:
        first.release()
        first.release()  # idempotent
    again = await InstanceLock.acquire(db_path, wait=0.05)
    again.release()


async def test_probe_sees_the_holder_without_taking_the_lock(db_path: Path) -> None:
    """probe() reports down before the first start, up with the pid while held, down after; a
    probe never makes a starting daemon fail."""
    assert probe(db_path).running is False
    lock = await InstanceLock.acquire(db_path)
    try:
        state = probe(db_path)
        assert (state.running, state.pid) == (True, os.getpid())
    finally:
        lock.release()
    assert probe(db_path).running is False
    lock = await InstanceLock.acquire(db_path)  # a probe just now left nothing behind
    lock.release()


async def test_writers_share_the_lock_through_open_components(
    make_settings: Callable[..., Settings],
) -> None:
    """`syncd run` and `syncd sync` both open the database through open_components, so a second
    writer is refused while the first is open, and the lock goes with it."""
    settings = make_settings()
    async with open_components(settings, base_url="http://127.0.0.1:9"):
        assert probe(settings.database).running is True
        with pytest.raises(AlreadyRunning):
            async with open_components(settings, base_url="http://127.0.0.1:9"):
                pass
    assert probe(settings.database).running is False
