"""The shipped systemd files: the unit verifies and scores 2.0 or better on `systemd-analyze
security`, says what the service contract needs, the sysusers file creates the user, and the daemon
runs under MemoryDenyWriteExecute's kernel equivalent."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from syncd.config import Settings
from syncd.simulator import SimulatorConfig, serve
from tests.process_kit import ROOT, syncd, write_config

UNIT = ROOT / "systemd" / "syncd.service"
SYSUSERS = ROOT / "systemd" / "syncd.sysusers"
INSTALLED_AT = "/opt/syncd/bin/syncd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze missing (make test installs Debian's systemd package)"
)


def unit_settings() -> dict[str, list[str]]:
    """Every Key=value of the unit, values in order (keys may repeat)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def as_installed(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's syncd instead of /opt/syncd, since
    `verify` checks that the binary exists; nothing else changes."""
    syncd_bin = Path(sys.executable).parent / "syncd"
    assert syncd_bin.exists()
    text = UNIT.read_text()
    assert INSTALLED_AT in text
    path = tmp_path / "syncd.service"
    path.write_text(text.replace(INSTALLED_AT, str(syncd_bin)))
    return path


@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit without a single warning."""
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", str(as_installed(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@needs_analyze
def test_unit_exposure_is_2_or_lower(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true --threshold=20` passes: exposure 2.0 or lower."""
    assert ANALYZE is not None
    result = subprocess.run(
        [
            ANALYZE,
            "security",
            "--offline=true",
            "--threshold=20",
            "--no-pager",
            str(as_installed(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    level = re.search(r"Overall exposure level for syncd\.service: (\d+\.\d+)", result.stdout)
    assert level is not None, result.stdout
    assert float(level.group(1)) <= 2.0


def test_unit_states_the_service_contract() -> None:
    """The settings the service contract depends on (issue 5): notify with a watchdog, a static
    syncd user whose group may read the state directory, credentials, restart on failure, a stop
    timeout longer than syncd's own shutdown_timeout, and the hardening list."""
    unit = unit_settings()

    def one(key: str) -> str:
        assert len(unit.get(key, [])) == 1, key
        return unit[key][0]

    assert one("Type") == "notify"
    assert int(one("WatchdogSec")) > 0
    assert one("User") == one("Group") == "syncd"
    assert "DynamicUser" not in unit
    assert (one("StateDirectory"), one("StateDirectoryMode")) == ("syncd", "0750")
    assert one("ConfigurationDirectory") == "syncd"
    assert one("UMask") == "0027"
    assert one("Restart") == "on-failure"
    assert one("ExecStart").startswith(INSTALLED_AT + " run")
    assert int(one("TimeoutStopSec")) > Settings().shutdown_timeout
    assert set(unit["LoadCredential"]) >= {
        "square.access_token",
        "square.webhook_signature_keys",
        "admin.token",
    }
    for key, value in (
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("CapabilityBoundingSet", ""),
        ("MemoryDenyWriteExecute", "yes"),
    ):
        assert one(key) == value, key
    assert "@system-service" in unit["SystemCallFilter"]


SYSUSERS_BIN = shutil.which("systemd-sysusers")


@pytest.mark.skipif(SYSUSERS_BIN is None, reason="systemd-sysusers missing")
def test_sysusers_creates_the_syncd_user_and_group(tmp_path: Path) -> None:
    """systemd-sysusers, run on an empty root, creates a system user and group named syncd with
    home /var/lib/syncd and no login shell."""
    assert SYSUSERS_BIN is not None
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [SYSUSERS_BIN, f"--root={tmp_path}", str(SYSUSERS)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    passwd = (tmp_path / "etc" / "passwd").read_text()
    group = (tmp_path / "etc" / "group").read_text()
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("syncd:"))
    assert user[5] == "/var/lib/syncd"
    assert "nologin" in user[6]
    assert int(user[2]) < 1000  # a system user
    assert any(line.startswith("syncd:") for line in group.splitlines())


# Turn on the kernel's memory-deny-write-execute (PR_SET_MDWE, what systemd's
# MemoryDenyWriteExecute= amounts to), then exec the command; it carries over fork and exec.
MDWE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""
PROBE = "import ctypes; print(ctypes.CDLL(None).prctl(66, 0, 0, 0, 0))"  # PR_GET_MDWE


def mdwe_probe(wrapper: list[str]) -> subprocess.CompletedProcess[str]:
    """PR_GET_MDWE as seen by a program the wrapper execs."""
    return subprocess.run(
        [*wrapper, "-c", PROBE], capture_output=True, text=True, timeout=30, check=False
    )


async def test_daemon_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """Smoke test for MemoryDenyWriteExecute=yes: under PR_SET_MDWE the daemon starts, syncs,
    serves /metrics and the change stream, and stops cleanly, so nothing it loads needs W+X memory.
    Skipped on kernels without PR_SET_MDWE (before Linux 6.3)."""
    wrapper = [sys.executable, "-c", MDWE, sys.executable]
    probe = mdwe_probe(wrapper)
    if probe.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE")
    assert probe.stdout.strip() == "1", probe.stderr  # the setting survives exec
    async with serve(SimulatorConfig(locations=2, items=50)) as (_, url):
        config = write_config(tmp_path, url)
        async with syncd("run", "--config", str(config), wrapper=wrapper[:-1]) as daemon:
            started = await daemon.event("daemon_started")
            await daemon.event("sync_pass", outcome="ok")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{started['admin_url']}/metrics") as resp:
                    assert resp.status == 200
                    assert "syncd_sync_passes_total" in await resp.text()
                async with http.get(f"{started['admin_url']}/changes/stream?after=0") as resp:
                    assert resp.status == 200
                    async with asyncio.timeout(5):
                        assert (await resp.content.readline()).startswith(b"id: 1")
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
