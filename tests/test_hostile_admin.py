"""Hostile input on the admin API and the CLI (issue 6): malformed ids, SQL-ish strings, path
traversal in job ids and in export links. Refused with a 400/404 (exit 2/1), never a 500 or a
traceback, nothing written outside the download directory, no request to another host."""

from __future__ import annotations

import asyncio
import http.client
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncd.cli import main
from syncd.config import Settings
from syncd.errors import DownloadRefused
from syncd.jobs.reactions import download_target
from syncd.logs import reset_logging
from syncd.simulator import SimulatorConfig, serve
from tests.conftest import running_daemon
from tests.fakes.job_servers import commerce, serve_jobs
from tests.hostile_kit import ADMIN_TOKEN, Daemon, daemon_process
from tests.soak.report import PropertyRun

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SQLISH = [
    "1 OR 1=1",
    "1; DROP TABLE jobs; --",
    "' OR '1'='1",
    "inv:' OR 1=1 --",
    "%27%20OR%201%3D1",
    "1/**/UNION/**/SELECT/**/1",
    "0x41",
    "1e3",
    "-1",
    "+1",
    " 7 ",
]
BAD_IDS = [
    "\u00b2",
    "\u0661\u0662",
    "\U0001d7d9",  # superscript 2, Arabic-Indic 12, math 1
    "99999999999999999999",
    "9223372036854775808",
    "0" * 5000 + "1",
    "1" * 5000,
    "",
    ":",
    "inv:",
    ":5",
    "../../etc/passwd",
    "..%2F..%2Fetc",
    "\x00",
    "a\nb",
    "🙂",
    *SQLISH,
]


def envelope(status: int, raw: bytes, content_type: str = "application/json") -> dict[str, Any]:
    """A JSON body; an error one in the envelope; never a traceback. The one exception: a request
    that is not valid HTTP (e.g. a control character in a header value) is refused by aiohttp's
    parser with a plain-text 400 before syncd sees it."""
    assert b"Traceback" not in raw
    if status == 400 and content_type.startswith("text/plain"):
        return {}
    body: dict[str, Any] = orjson.loads(raw)
    if status >= 400:
        assert body["error"]["status"] == status
    return body


# --- regressions, in process ---------------------------------------------------------------------


@pytest.fixture(name="jobs_settings")
def fixture_jobs_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Settings with an inventory and a commerce provider at ``url`` (fast backoff)."""

    def make(url: str, **jobs: Any) -> Settings:
        return make_settings(
            jobs={
                "backoff_initial": 0.01,
                "backoff_max": 0.05,
                **jobs,
                "providers": {
                    "inv": {"dialect": "inventory_jobs", "base_url": url},
                    "shop": {"dialect": "commerce_jobs", "base_url": url},
                },
            }
        )

    return make


async def test_odd_and_huge_job_ids_are_400_not_500(jobs_settings: Callable[..., Settings]) -> None:
    """Regression: GET/DELETE /jobs/{ref} with "²" (a digit to str.isdigit, not to int()) or a
    number beyond SQLite's 64-bit integers answered 500 (ValueError / OverflowError); now 400 in
    the envelope. A numeric id with leading zeros still finds the job."""
    async with (
        serve_jobs() as fake,
        serve(SimulatorConfig(locations=1, items=2)) as (_, sim),
        running_daemon(jobs_settings(fake.url), sim) as daemon,
        aiohttp.ClientSession() as http,
    ):
        admin = daemon.admin_url
        async with http.post(f"{admin}/jobs", json={"provider": "inv", "job_id": "J1"}) as resp:
            job = (await resp.json())["job"]
        for ref in ("%C2%B2", "99999999999999999999", "9223372036854775808", "1" * 5000):
            for method in ("GET", "DELETE"):
                async with http.request(method, f"{admin}/jobs/{ref}") as resp:
                    assert resp.status == 400, (method, ref[:30], resp.status)
                    envelope(resp.status, await resp.read())
        async with http.get(f"{admin}/jobs/{'0' * 30}{job['id']}") as resp:
            assert resp.status == 200
            assert (await resp.json())["job"]["job_id"] == "J1"


async def test_odd_and_huge_last_event_ids_are_400_not_500(
    jobs_settings: Callable[..., Settings],
) -> None:
    """Regression: GET /changes/stream with Last-Event-ID "²" or 99999999999999999999 answered 500;
    now 400 in the envelope (and ?after= the same)."""
    async with (
        serve(SimulatorConfig(locations=1, items=2)) as (_, sim),
        running_daemon(jobs_settings("http://127.0.0.1:9"), sim) as daemon,
        aiohttp.ClientSession() as http,
    ):
        admin = daemon.admin_url
        for value in ("²", "99999999999999999999", "1" * 5000, "-1", "1.5", "0x10"):
            async with http.get(
                f"{admin}/changes/stream", headers={"Last-Event-ID": value}
            ) as resp:
                assert resp.status == 400, (value[:30], resp.status)
                envelope(resp.status, await resp.read())
        for value in ("99999999999999999999", "1e400", "nan", "-0.5", "²"):
            async with http.get(f"{admin}/changes", params={"after": value}) as resp:
                assert resp.status == 400, (value, resp.status)
                envelope(resp.status, await resp.read())


# --- properties against a real process -----------------------------------------------------------


@pytest.fixture(name="daemon", scope="module")
def fixture_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with daemon_process(tmp_path_factory.mktemp("hostile-admin")) as daemon:
        yield daemon


def _header_text() -> st.SearchStrategy[str]:
    """What http.client can send as a header value (latin-1, no line breaks)."""
    return st.text(
        alphabet=st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=40
    )


@pytest.mark.property
def test_admin_api_answers_any_input_without_a_500(daemon: Daemon) -> None:
    """Property: any job reference, list filter, change-log parameter or Last-Event-ID (odd
    digits, huge numbers, SQL-ish text, traversal, control characters) gets one of the documented
    answers in the envelope, never a 500; registrations carrying such text store it verbatim; the
    database stays intact."""
    run = PropertyRun("admin API properties (hypothesis)")

    def call(
        method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        status, resp_headers, raw = daemon.request(
            method, path, body, {**AUTH, **(headers or {})}, admin=True
        )
        content_type = resp_headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            return status, {}
        return status, envelope(status, raw, content_type)

    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        ref=st.sampled_from(BAD_IDS) | st.text(max_size=60),
        text=st.text(max_size=60),
        number=st.sampled_from(
            [
                "",
                "0",
                "1",
                "-1",
                "1e999",
                "nan",
                "²",
                "99999999999999999999",
                "0.5",
                "1000",
                "1001",
                "abc",
            ]
        )
        | st.text(max_size=8),
        header=_header_text(),
    )
    @example(ref="²", text="' OR 1=1 --", number="99999999999999999999", header="²")
    def one(ref: str, text: str, number: str, header: str) -> None:
        run.count(checks=6)
        path_ref = quote(ref, safe="")
        if path_ref:
            for method in ("GET", "DELETE"):
                status, _ = call(method, f"/jobs/{path_ref}")
                assert status in (200, 400, 404), (method, ref, status)
        status, _ = call(
            "GET", f"/jobs?state={quote(text)}&provider={quote(text)}&limit={quote(number)}"
        )
        assert status in (200, 400), (text, number, status)
        status, _ = call("GET", f"/changes?after={quote(number)}&limit={quote(number)}&wait=0")
        assert status in (200, 400, 410), (number, status)
        status, _ = call(
            "GET", "/changes/stream", headers={"Last-Event-ID": header} if header.strip() else {}
        )
        assert status in (200, 400, 410), (header, status)
        body = orjson.dumps({"provider": "inv", "job_id": text or "x", "label": text[:200]})
        status, answer = call("POST", "/jobs", body)
        assert status in (200, 201, 400), (text, status)
        if status in (200, 201):
            assert answer["job"]["job_id"] == (text or "x")

    run.run(one)
    conn = sqlite3.connect(f"{daemon.db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"jobs", "changes", "inventory_counts", "webhook_events"} <= tables
    assert daemon.alive()
    assert daemon.events("http_handler_error") == []
    run.record(
        checks=4, notes="job refs, filters, change-log parameters, Last-Event-ID, registrations"
    )


def test_sqlish_and_traversal_job_ids_are_data_not_code(daemon: Daemon) -> None:
    """A job id full of SQL or path syntax is registered as the vendor's opaque id: stored and
    shown verbatim, and polled as one percent-encoded path segment (it cannot leave the status
    path); the provider filter with SQL in it just matches nothing."""
    for job_id in ("1; DROP TABLE jobs; --", "../../admin", "x/../../y", "' OR '1'='1"):
        status, _, raw = daemon.request(
            "POST", "/jobs", orjson.dumps({"provider": "shop", "job_id": job_id}), AUTH, admin=True
        )
        assert status in (200, 201), raw
        ref = quote(f"shop:{job_id}", safe="")
        status, _, raw = daemon.request("GET", f"/jobs/{ref}", None, AUTH, admin=True)
        assert status == 200
        assert orjson.loads(raw)["job"]["job_id"] == job_id
    status, _, raw = daemon.request(
        "GET", "/jobs?provider=%27%20OR%201%3D1--", None, AUTH, admin=True
    )
    assert (status, orjson.loads(raw)) == (200, {"jobs": []})


def test_admin_api_needs_the_token_whatever_the_path(daemon: Daemon) -> None:
    """Without the bearer token every admin path, odd or not, is a 401 (nothing leaks)."""
    for path in (
        "/jobs",
        "/jobs/1",
        "/jobs/%C2%B2",
        "/changes",
        "/metrics",
        "/../jobs",
        "/jobs/..%2F..%2Fetc",
    ):
        conn = http.client.HTTPConnection(*daemon.admin, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            status, raw = resp.status, resp.read()
        finally:
            conn.close()
        assert status in (401, 404), (path, status)
        assert b"Traceback" not in raw


# --- export links ---------------------------------------------------------------------------------

_segments = st.sampled_from(
    [
        "..",
        ".",
        "%2e%2e",
        "%2E%2e",
        "..%2F..",
        "%2F",
        "%5C",
        "\\",
        "a",
        "b.csv",
        "%00",
        "%0A",
        ".hidden",
        "",
        "~",
        "%252e%252e",
        "x;y",
        "a?b=../c",
        "#frag",
        "@evil.example",
        ":80",
        "%C0%AE%C0%AE",
    ]
)
_prefixes = st.sampled_from(
    [
        "",
        "/",
        "/exports/",
        "https://api.example.com/",
        "https://api.example.com:443/",
        "https://evil.example/",
        "//evil.example/",
        "http://api.example.com/",
        "file:///",
        "https://api.example.com@evil.example/",
        "HTTPS://API.EXAMPLE.COM/",
        "https:api.example.com/",
        "javascript:",
        "\\\\evil\\share\\",
    ]
)


@pytest.mark.property
def test_download_target_never_leaves_the_dir_or_the_host(tmp_path: Path) -> None:
    """Property: for any result link (traversal raw or encoded, other hosts, userinfo tricks,
    odd schemes), download_target either refuses it or picks a URL on the provider's own origin
    and a file directly inside the download directory, named ``<provider>-<id>-...``."""
    run = PropertyRun("export link properties (hypothesis)")
    refused = 0

    @given(prefix=_prefixes, parts=st.lists(_segments | st.text(max_size=8), max_size=6))
    def one(prefix: str, parts: list[str]) -> None:
        nonlocal refused
        run.count(checks=4)
        try:
            check_link(tmp_path, prefix + "/".join(parts))
        except DownloadRefused:
            refused += 1

    run.run(one)
    run.record(notes=f"{refused} links refused")


def check_link(tmp_path: Path, link: str) -> None:
    """Choose the download target for ``link``, or raise DownloadRefused; check the choice."""
    url, dest = download_target(
        link,
        base_url="https://api.example.com",
        download_dir=tmp_path / "dl",
        provider="shop",
        job=7,
    )
    parts_url = urlsplit(url)
    assert (parts_url.scheme, parts_url.hostname, parts_url.port) == (
        "https",
        "api.example.com",
        None,
    )
    assert dest.parent == (tmp_path / "dl").resolve()
    assert dest.name.startswith("shop-7-")
    assert "/" not in dest.name
    assert "\x00" not in dest.name


async def test_hostile_export_links_download_nothing_anywhere_else(
    jobs_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """End to end: commerce exports whose link points at another host, climbs out of the
    directory (raw or encoded), or redirects elsewhere all end ``succeeded`` with a
    ``download_error``; the other host never gets a request and nothing is written outside the
    download directory."""
    elsewhere: list[str] = []

    async def trap(request: web.Request) -> web.Response:
        elsewhere.append(request.path)
        return web.Response(text="secret")

    trap_app = web.Application()
    trap_app.router.add_route("*", "/{tail:.*}", trap)
    runner = web.AppRunner(trap_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    other = f"http://127.0.0.1:{runner.addresses[0][1]}"
    links = [
        f"{other}/exports/a.csv",
        "//127.0.0.2/exports/a.csv",
        "/exports/../../../etc/passwd",
        "/exports/..%2F..%2F..%2Fetc%2Fpasswd",
        "/exports/%2e%2e/%2e%2e/x.csv",
        "file:///etc/passwd",
        "/exports/redirect.csv",
    ]
    try:
        async with serve_jobs() as fake, serve(SimulatorConfig(locations=1, items=2)) as (_, sim):
            fake.files["redirect.csv"] = 302  # answered 302 (never followed)
            settings = jobs_settings(fake.url, download_dir=str(tmp_path / "dl"))
            async with running_daemon(settings, sim) as daemon:
                assert daemon.jobs is not None
                service = daemon.jobs.service
                ids = []
                for i, link in enumerate(links):
                    fake.script(f"X{i}", commerce("success", href=link, job_id=f"X{i}"))
                    row, _ = await service.register("shop", f"X{i}")
                    ids.append(row.id)
                async with asyncio.timeout(10):
                    while True:
                        rows = [await service.get(str(i)) for i in ids]
                        if all(row.finished_at for row in rows):
                            break
                        await asyncio.sleep(0.02)
    finally:
        await runner.cleanup()
    for link, row in zip(links, rows, strict=True):
        assert row.state == "succeeded", link
        assert row.result is not None
        assert "download_error" in row.result, (link, row.result)
        assert "download" not in row.result
    assert elsewhere == []
    written = files_under(tmp_path)
    assert all(p.name.startswith("syncd.db") for p in written), written


def files_under(root: Path) -> list[Path]:
    """Every file below ``root`` (relative)."""
    return [p.relative_to(root) for p in root.rglob("*") if p.is_file()]


# --- the CLI ---------------------------------------------------------------------------------------


@pytest.fixture(name="cli")
def fixture_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., tuple[int, str, str]]]:
    """Run the CLI in-process on a database with one job, no daemon listening: (code, out, err);
    an argparse usage error counts as exit 2."""
    config = tmp_path / "syncd.toml"
    config.write_text(
        f"""
database = "{tmp_path / "syncd.db"}"
[admin]
listen = "127.0.0.1:9"
[jobs.providers.inv]
dialect = "inventory_jobs"
base_url = "http://127.0.0.1:9"
""",
        encoding="utf-8",
    )

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main([*argv, "--config", str(config), "--log-level", "error"])
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    assert run("jobs", "add", "inv", "J1")[0] == 0
    yield run
    reset_logging()


@pytest.mark.parametrize(
    "ref", [*[r for r in BAD_IDS if r.strip("0") != "1"][:14], "inv:../../etc", "inv:' OR 1=1 --"]
)
def test_cli_job_refs_exit_cleanly(cli: Callable[..., tuple[int, str, str]], ref: str) -> None:
    """Regression: `syncd jobs show|forget` with "²" or a huge id died with a traceback
    (ValueError / OverflowError); now every odd reference exits 2 (bad reference) or 1 (no such
    job) with a one-line reason, and the job stays."""
    for command in ("show", "forget"):
        code, _, err = cli("jobs", command, ref)
        assert code in (1, 2), (command, ref[:30], code, err)
        assert "Traceback" not in err
        assert err.startswith("syncd") or "usage:" in err
    assert cli("jobs", "show", "1")[0] == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["changes", "--after", "99999999999999999999"],
        ["changes", "--limit", "99999999999999999999"],
        ["changes", "--consumer", "c1", "--ack-seq", "99999999999999999999"],
        ["changes", "--after", "1" * 5000],
        ["counts", "--limit", "99999999999999999999"],
        ["jobs", "list", "--limit", "99999999999999999999"],
        ["changes", "--consumer", "../../etc/passwd"],
        ["changes", "--consumer", "x'; DROP TABLE consumers; --", "--ack-seq", "1"],
    ],
)
def test_cli_out_of_range_and_odd_arguments_are_usage_errors(
    cli: Callable[..., tuple[int, str, str]], argv: list[str]
) -> None:
    """Regression: integers beyond SQLite's range reached a query and died with OverflowError and
    a traceback; now they, and odd consumer names, are usage errors (exit 2) with the reason."""
    code, _, err = cli(*argv)
    assert code == 2, (argv, code, err)
    assert "Traceback" not in err
