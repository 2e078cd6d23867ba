"""The sd_notify protocol, in-process: addresses (path and abstract), the watchdog interval, pings from
the event loop, and sends that fail without stalling or spamming."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from syncd.notify import Notifier, one_line, socket_address, watchdog_interval


@pytest.fixture(name="abstract_socket")
def fixture_abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket in the abstract namespace: ``@name`` as systemd would write it."""
    name = f"syncd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        yield "@" + name, sock
    finally:
        sock.close()


def test_messages_reach_an_abstract_socket(abstract_socket: tuple[str, socket.socket]) -> None:
    """READY=1 with STATUS, a plain STATUS, WATCHDOG=1 and STOPPING=1 each arrive as one datagram
    of KEY=VALUE lines; STATUS is flattened to one line."""
    address, sock = abstract_socket
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready("serving\nnow")
    assert notifier.status("pass ok")
    assert notifier.ping()
    assert notifier.stopping()
    received = [sock.recv(4096).decode() for _ in range(4)]
    assert received == [
        "READY=1\nSTATUS=serving now",
        "STATUS=pass ok",
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=stopping",
    ]


def test_without_notify_socket_everything_is_a_no_op() -> None:
    """Outside systemd nothing is sent and no watchdog runs."""
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.watchdog_interval is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    env: dict[str, str], expected: float | None
) -> None:
    """Pings go out every half WatchdogSec, and only from the process WATCHDOG_PID names."""
    assert watchdog_interval(env, 4242) == expected


def test_addresses() -> None:
    """A path is used as is, ``@name`` becomes the abstract ``\\0name``, anything else is refused
    (and the notifier then stays off instead of failing the start)."""
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == "\0abc"
    with pytest.raises(ValueError, match="unsupported"):
        socket_address("vsock:2:1234")
    with capture_logs() as logs:
        assert not Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
    assert logs[0]["event"] == "sd_notify_disabled"
    assert one_line("a" * 500).endswith("...")


async def test_watchdog_pings_from_the_loop_until_stopped(
    abstract_socket: tuple[str, socket.socket],
) -> None:
    """With WATCHDOG_USEC=40 ms the loop pings about every 20 ms, and stops pinging on stop."""
    address, sock = abstract_socket
    sock.setblocking(False)
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "40000"})
    assert notifier.watchdog_interval == 0.02
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(notifier.run_watchdog(stop))
    pings = 0
    async with asyncio.timeout(5):  # wait for the pings, however slow the machine is
        while pings < 3:
            try:
                assert sock.recv(64) == b"WATCHDOG=1"
                pings += 1
            except BlockingIOError:
                await asyncio.sleep(0.005)
    stop.set()
    async with asyncio.timeout(1):
        await task
    elapsed = loop.time() - started
    while True:
        try:
            assert sock.recv(64) == b"WATCHDOG=1"
        except BlockingIOError:
            break
        pings += 1
    # Never faster than every 20 ms (one at the start, plus one per interval elapsed).
    assert pings <= elapsed / 0.02 + 2, (pings, elapsed)


def test_a_vanished_socket_is_logged_once_then_recovers(
    abstract_socket: tuple[str, socket.socket],
) -> None:
    """Sends to a socket nobody listens on fail quietly (one warning for a run of failures), and a
    later success is logged as recovered."""
    address, sock = abstract_socket
    notifier = Notifier(address + "-gone")
    with capture_logs() as logs:
        assert not notifier.ping()
        assert not notifier.ping()
        notifier._address = "\0" + address[1:]  # the service manager is back
        assert notifier.ping()
    assert [e["event"] for e in logs] == ["sd_notify_failed", "sd_notify_recovered"]
    assert sock.recv(64) == b"WATCHDOG=1"


async def test_status_soon_sends_at_most_one_status_per_interval_the_newest(
    abstract_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first status goes at once; those within the interval after it collapse into one
    send of the newest at the interval's end; STOPPING drops one still waiting."""
    monkeypatch.setattr("syncd.notify.STATUS_MIN_INTERVAL", 0.2)
    address, sock = abstract_socket
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    notifier.status_soon("pass 1")
    for n in range(2, 6):
        notifier.status_soon(f"pass {n}")
    assert sock.recv(4096).decode() == "STATUS=pass 1"
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)  # nothing more yet: the rest wait for the interval's end
    sock.setblocking(True)
    sock.settimeout(2)
    received = await asyncio.to_thread(sock.recv, 4096)
    assert received.decode() == "STATUS=pass 5"
    notifier.status_soon("pass 6")  # within the interval after "pass 5": waits
    assert notifier.stopping()
    assert sock.recv(4096).decode() == "STOPPING=1\nSTATUS=stopping"
    await asyncio.sleep(0.3)  # past the interval: the dropped status must not follow
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)
