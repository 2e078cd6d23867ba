"""`syncd jobs add|list|show|forget`: through the running daemon's admin listener (a real
subprocess on a unix socket), or straight into the database when no daemon listens."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncd.cli import main
from syncd.config import Settings
from syncd.logs import reset_logging
from syncd.simulator import SimulatorConfig, serve
from tests.conftest import running_daemon
from tests.fakes.job_servers import inventory, serve_jobs
from tests.helpers import changes

CLI = [sys.executable, "-m", "syncd"]


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """In-process CLI runs configure logging globally; undo it for the tests that follow."""
    yield
    reset_logging()


@pytest.fixture(name="short_dir")
def fixture_short_dir() -> Iterator[Path]:
    """A short directory for unix sockets (sun_path holds about 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="syncd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_config(
    path: Path, *, database: Path, jobs_url: str, admin_listen: str, token: str | None = None
) -> Path:
    """A TOML config with the three test providers (fast backoff)."""
    token_line = f'token = "{token}"\n' if token else ""
    path.write_text(
        f"""
database = "{database}"

[admin]
listen = "{admin_listen}"
{token_line}
[jobs]
backoff_initial = 0.001
backoff_max = 0.02

[jobs.providers.inv]
dialect = "inventory_jobs"
base_url = "{jobs_url}"

[jobs.providers.bulk]
dialect = "bulk_sales_orders"
base_url = "{jobs_url}"
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(name="offline")
def fixture_offline(tmp_path: Path) -> Callable[..., tuple[int, str, str]]:
    """Run the CLI in-process with no daemon listening (a unix socket path nothing binds, so the
    refusal is certain, unlike a TCP port that was free a moment ago); returns
    (exit code, stdout, stderr)."""
    config = write_config(
        tmp_path / "syncd.toml",
        database=tmp_path / "syncd.db",
        jobs_url="http://127.0.0.1:9",
        admin_listen=f"unix:{tmp_path / 'no-daemon.sock'}",
    )

    def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        code = main([*argv, "--config", str(config), "--log-level", "error"])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_offline_add_list_show_forget(
    offline: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """With no daemon, the CLI registers (idempotently), lists, shows and forgets jobs in the
    database itself; each registration writes one job.pending entry."""
    code, out, _ = offline("jobs", "add", "inv", "123", "--label", "nightly", capsys=capsys)
    assert code == 0
    assert out == "registered: job 1 inv/123 (pending)\n"
    code, out, _ = offline("jobs", "add", "inv", "123", capsys=capsys)
    assert (code, out) == (0, "already registered: job 1 inv/123 (pending)\n")
    code, out, _ = offline(
        "jobs", "add", "bulk", "J1", "--param", "businessUnitId=BU1", "--json", capsys=capsys
    )
    assert code == 0
    assert orjson.loads(out)["job"]["params"] == {"businessUnitId": "BU1"}

    code, out, _ = offline("jobs", "list", capsys=capsys)
    assert code == 0
    assert [line.split()[1] for line in out.splitlines()] == ["bulk/J1", "inv/123"]
    code, out, _ = offline("jobs", "list", "--state", "running", capsys=capsys)
    assert (code, out) == (0, "no jobs\n")
    code, out, _ = offline("jobs", "list", "--json", "--provider", "inv", capsys=capsys)
    assert [j["job_id"] for j in orjson.loads(out)["jobs"]] == ["123"]

    for ref in ("1", "inv:123"):
        code, out, _ = offline("jobs", "show", ref, capsys=capsys)
        assert code == 0
        shown = orjson.loads(out)
        assert (shown["id"], shown["label"], shown["state"]) == (1, "nightly", "pending")

    code, out, _ = offline("jobs", "forget", "inv:123", capsys=capsys)
    assert (code, out) == (0, "forgot job 1 inv/123 (was pending)\n")
    code, _, err = offline("jobs", "show", "1", capsys=capsys)
    assert code == 1
    assert "no tracked job '1'" in err
    assert [e["kind"] for e in changes(tmp_path / "syncd.db")] == ["job.pending", "job.pending"]


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["jobs", "add", "nope", "1"], "unknown provider 'nope'"),
        (["jobs", "add", "bulk", "J1"], "businessUnitId"),
        (["jobs", "add", "inv", ""], "job id is empty"),
        (["jobs", "show", "x-y"], "bad job reference"),
    ],
)
def test_offline_bad_input_exits_2(
    offline: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    reason: str,
) -> None:
    """Bad input exits 2 with the reason (and a hint where there is one); nothing is stored."""
    code, out, err = offline(*argv, capsys=capsys)
    assert code == 2
    assert out == ""
    assert reason in err
    if "businessUnitId" in reason:
        assert "Try: pass --param businessUnitId=VALUE" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs", "add", "inv", "1", "--param", "novalue"],
        ["jobs", "list", "--state", "done"],
        ["jobs"],
    ],
)
def test_usage_errors_exit_2(
    offline: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    """Malformed arguments are argparse usage errors (exit 2)."""
    with pytest.raises(SystemExit) as exc:
        offline(*argv, capsys=capsys)
    assert exc.value.code == 2


async def test_jobs_added_offline_are_polled_when_the_daemon_starts(
    make_settings: Callable[..., Settings], tmp_path: Path, short_dir: Path
) -> None:
    """A job registered while the daemon is down is polled to its end once it runs."""
    async with serve_jobs() as fake, serve(SimulatorConfig(locations=1, items=3)) as (_, sim):
        fake.script("55", inventory("WORKING"), inventory("SUCCESS"))
        sock = short_dir / "admin.sock"
        config = write_config(
            tmp_path / "syncd.toml",
            database=tmp_path / "syncd.db",
            jobs_url=fake.url,
            admin_listen=str(sock),
        )
        code = await asyncio.to_thread(
            main, ["jobs", "add", "inv", "55", "--config", str(config), "--log-level", "error"]
        )
        assert code == 0
        settings = make_settings(admin={"listen": str(sock)}, jobs=_jobs(fake.url))
        async with running_daemon(settings, sim) as daemon:
            assert daemon.jobs is not None
            async with asyncio.timeout(5):
                while (await daemon.jobs.service.get("inv:55")).state != "succeeded":
                    await asyncio.sleep(0.01)


def _jobs(url: str) -> dict[str, Any]:
    return {
        "backoff_initial": 0.001,
        "backoff_max": 0.02,
        "providers": {
            "inv": {"dialect": "inventory_jobs", "base_url": url},
            "bulk": {"dialect": "bulk_sales_orders", "base_url": url},
        },
    }


async def _cli(*argv: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *argv,
        "--log-level",
        "error",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_cli_subprocess_talks_to_the_running_daemon(
    make_settings: Callable[..., Settings], tmp_path: Path, short_dir: Path
) -> None:
    """A real `syncd jobs ...` process reaches the daemon over its unix-socket admin listener
    with the token: the daemon polls what it registered; bad input exits 2 with the reason, and
    a wrong token exits 1."""
    async with serve_jobs() as fake, serve(SimulatorConfig(locations=1, items=3)) as (_, sim):
        fake.script("777", inventory("WORKING"), inventory("SUCCESS"))
        sock = short_dir / "admin.sock"
        settings = make_settings(admin={"listen": str(sock), "token": "tok"}, jobs=_jobs(fake.url))
        config = write_config(
            tmp_path / "cli.toml",
            database=settings.database,
            jobs_url=fake.url,
            admin_listen=str(sock),
            token="tok",
        )
        async with running_daemon(settings, sim) as daemon:
            assert daemon.admin_url == f"unix:{sock}"
            code, out, err = await _cli("jobs", "add", "inv", "777", "--config", str(config))
            assert (code, err) == (0, "")
            assert out.startswith("registered: job ")
            assert daemon.jobs is not None
            async with asyncio.timeout(5):
                while fake.count("777") < 2:  # polled by the daemon, not merely stored
                    await asyncio.sleep(0.01)

            code, out, err = await _cli("jobs", "add", "bulk", "B1", "--config", str(config))
            assert code == 2
            assert "businessUnitId" in err

            code, out, _ = await _cli("jobs", "list", "--json", "--config", str(config))
            assert code == 0
            assert [j["job_id"] for j in orjson.loads(out)["jobs"]] == ["777"]

            bad = write_config(
                tmp_path / "bad.toml",
                database=settings.database,
                jobs_url=fake.url,
                admin_listen=str(sock),
                token="wrong",
            )
            code, _, err = await _cli("jobs", "list", "--config", str(bad))
            assert code == 1
            assert "refused the token" in err


async def test_offline_write_refused_while_a_daemon_holds_the_database(
    make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """If the admin address is wrong (here: port 0) but a daemon runs on the database, the CLI
    does not write behind its back: exit 4, pointing at admin.listen."""
    async with serve_jobs() as fake, serve(SimulatorConfig(locations=1, items=3)) as (_, sim):
        settings = make_settings(jobs=_jobs(fake.url))
        config = write_config(
            tmp_path / "syncd.toml",
            database=settings.database,
            jobs_url=fake.url,
            admin_listen="127.0.0.1:0",
        )
        async with running_daemon(settings, sim):
            code = await asyncio.to_thread(
                main, ["jobs", "add", "inv", "1", "--config", str(config), "--log-level", "error"]
            )
    assert code == 4
    err = capsys.readouterr().err
    assert "in use by another syncd" in err
    assert "admin.listen (127.0.0.1:0)" in err
