"""Reactions to job outcomes: an inventory job's success pokes a sync; an export is downloaded
into jobs.download_dir, size-limited, only from the provider's own host, never outside the dir."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.config import Settings
from syncd.errors import DownloadRefused
from syncd.jobs.reactions import download_target
from tests.fakes.job_servers import commerce, inventory, serve_jobs
from tests.test_jobs_poller import job_entries, settle, tracking

BASE = "https://api.example.com"


@pytest.mark.parametrize(
    ("link", "name"),
    [
        ("https://api.example.com/exports/orders.csv", "orders.csv"),
        ("/exports/orders%20may.csv", "orders may.csv"),
        ("exports/a.csv?sig=1", "a.csv"),
        ("https://api.example.com/download", "download"),
        ("https://api.example.com/", "export"),
    ],
)
def test_download_target_accepts_own_host(tmp_path: Path, link: str, name: str) -> None:
    """Absolute or relative links on the provider's origin land in download_dir, prefixed by
    provider and job id."""
    url, dest = download_target(link, base_url=BASE, download_dir=tmp_path, provider="shop", job=7)
    assert url.startswith(BASE + "/")
    assert dest == tmp_path.resolve() / f"shop-7-{name}"


@pytest.mark.parametrize(
    "link",
    [
        "https://evil.example.net/exports/a.csv",
        "https://api.example.com.evil.net/a.csv",
        "http://api.example.com/exports/a.csv",  # scheme downgrade
        "https://api.example.com:8443/exports/a.csv",  # another port
        "//evil.example.net/a.csv",  # scheme-relative
        "ftp://api.example.com/a.csv",
        "file:///etc/passwd",
    ],
)
def test_download_target_refuses_other_hosts(tmp_path: Path, link: str) -> None:
    """Links to any other origin are refused."""
    with pytest.raises(DownloadRefused):
        download_target(link, base_url=BASE, download_dir=tmp_path, provider="shop", job=7)


@pytest.mark.parametrize(
    "link",
    [
        "/exports/../../etc/passwd",
        "/exports/%2e%2e/%2E%2E/etc/passwd",
        "/exports/..%2F..%2Fetc%2Fpasswd",
        "/exports/a%5C..%5Cb.csv",
        "/exports/.hidden",
        "/exports/a%00.csv",
        "/exports/%0Aevil.csv",
    ],
)
def test_download_target_refuses_traversal(tmp_path: Path, link: str) -> None:
    """Dot segments (raw or encoded), encoded separators and unsafe names are refused."""
    with pytest.raises(DownloadRefused):
        download_target(link, base_url=BASE, download_dir=tmp_path, provider="shop", job=7)


async def test_export_is_downloaded_before_success_is_recorded(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A succeeded export with link.href: the file is streamed into download_dir and the
    job.succeeded entry already names its path and size."""
    content = b"id,total\n" + b"".join(b"%d,9.99\n" % i for i in range(5000))
    async with (
        serve_jobs() as fake,
        tracking(make_settings, fake.url, jobs={"download_dir": str(tmp_path / "dl")}) as rig,
    ):
        fake.files["orders.csv"] = content
        fake.script("E1", commerce("started"), commerce("success", href="/exports/orders.csv"))
        row, _ = await rig.service.register("shop", "E1")
        done = await settle(rig.service, row.id, "succeeded")
    path = tmp_path / "dl" / f"shop-{row.id}-orders.csv"
    assert path.read_bytes() == content
    assert done.result is not None
    assert done.result["download"] == {
        "path": str(path),
        "size": len(content),
        "url": f"{fake.url}/exports/orders.csv",
    }
    assert done.result["link"] == "/exports/orders.csv"
    assert job_entries(rig.db)[-1]["new"]["result"]["download"]["size"] == len(content)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no .part left behind


@pytest.mark.parametrize("query", ["", "?chunked=1"])
async def test_download_size_limit(
    make_settings: Callable[..., Settings], tmp_path: Path, query: str
) -> None:
    """Over jobs.max_download_bytes (announced, or only found while streaming): no file is left,
    the refusal is recorded, and the job still succeeded upstream."""
    async with (
        serve_jobs() as fake,
        tracking(
            make_settings,
            fake.url,
            jobs={"download_dir": str(tmp_path / "dl"), "max_download_bytes": 4096},
        ) as rig,
    ):
        fake.files["big.csv"] = b"x" * 10_000
        fake.script("E2", commerce("success", href=f"/exports/big.csv{query}"))
        row, _ = await rig.service.register("shop", "E2")
        done = await settle(rig.service, row.id, "succeeded")
    assert done.result is not None
    assert "max_download_bytes" in done.result["download_error"]
    assert "download" not in done.result
    assert list((tmp_path / "dl").iterdir()) == []


async def test_foreign_link_is_not_fetched(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A link to another host is refused without a request; the refusal is in the result."""
    async with (
        serve_jobs() as fake,
        tracking(make_settings, fake.url, jobs={"download_dir": str(tmp_path / "dl")}) as rig,
    ):
        fake.script("E3", commerce("success", href="http://169.254.169.254/latest/meta-data"))
        fake.script("E4", commerce("success", href="/exports/..%2F..%2Fsecrets"))
        one, _ = await rig.service.register("shop", "E3")
        two, _ = await rig.service.register("shop", "E4")
        first = await settle(rig.service, one.id, "succeeded")
        second = await settle(rig.service, two.id, "succeeded")
    assert first.result is not None
    assert "not the provider's" in first.result["download_error"]
    assert second.result is not None
    assert "climbs" in second.result["download_error"]
    assert all(p.startswith("/v2/jobs/") for p in fake.paths)
    assert not (tmp_path / "dl").exists() or list((tmp_path / "dl").iterdir()) == []


async def test_failed_download_is_retried_on_a_later_poll(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A 503 while downloading keeps the job unfinished; a later poll downloads again."""
    async with (
        serve_jobs() as fake,
        tracking(make_settings, fake.url, jobs={"download_dir": str(tmp_path / "dl")}) as rig,
    ):
        fake.files["late.csv"] = 503
        fake.script("E5", commerce("success", href="/exports/late.csv"))
        row, _ = await rig.service.register("shop", "E5")
        async with asyncio.timeout(5):
            while (await rig.service.get(str(row.id))).polls < 2:
                await asyncio.sleep(0.005)
        pending = await rig.service.get(str(row.id))
        assert pending.finished_at is None
        assert pending.last_error is not None
        assert "HTTP 503" in pending.last_error
        fake.files["late.csv"] = b"a,b\n"
        done = await settle(rig.service, row.id, "succeeded")
    assert done.result is not None
    assert done.result["download"]["size"] == 4


async def test_inventory_success_pokes_a_sync_pass(make_settings: Callable[..., Settings]) -> None:
    """Only a succeeded inventory job pokes; a failed one and a commerce success do not."""
    pokes: list[int] = []
    async with (
        serve_jobs() as fake,
        tracking(make_settings, fake.url, poke=lambda: pokes.append(1)) as rig,
    ):
        fake.script("I1", inventory("WORKING"), inventory("SUCCESS"))
        fake.script("I2", inventory("FAILED"))
        fake.script("S1", commerce("success"))
        failed, _ = await rig.service.register("inv", "I2")
        other, _ = await rig.service.register("shop", "S1")
        await settle(rig.service, failed.id, "failed")
        await settle(rig.service, other.id, "succeeded")
        assert pokes == []
        done, _ = await rig.service.register("inv", "I1")
        await settle(rig.service, done.id, "succeeded")
        assert pokes == [1]
