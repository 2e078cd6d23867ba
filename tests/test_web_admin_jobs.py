"""The admin API's job routes on a running daemon: register, list, show, forget, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from syncd.config import Settings
from syncd.daemon import Daemon
from syncd.simulator import SimulatorConfig, serve
from tests.conftest import running_daemon
from tests.fakes.job_servers import FakeJobServer, inventory, serve_jobs
from tests.test_jobs_poller import FAST, providers


@asynccontextmanager
async def daemon_with_jobs(
    make_settings: Callable[..., Settings],
    *,
    admin: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[Daemon, FakeJobServer, aiohttp.ClientSession]]:
    """A daemon (simulated Square upstream) whose job providers point at a fake job server."""
    async with serve_jobs() as fake, serve(SimulatorConfig(locations=1, items=5)) as (_, sim_url):
        settings = make_settings(
            jobs={**FAST, "providers": providers(fake.url)},
            square={"poll_interval": 30},
            admin=admin or {},
        )
        async with (
            running_daemon(settings, sim_url) as daemon,
            aiohttp.ClientSession(base_url=daemon.admin_url) as http,
        ):
            yield daemon, fake, http


async def call(http: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, path, **kw) as resp:
        return resp.status, await resp.json()


async def test_register_is_idempotent_and_polled(make_settings: Callable[..., Settings]) -> None:
    """POST /jobs creates (201) then finds (200) the same job; the daemon polls it to its end, and
    an inventory job's success pokes a sync pass."""
    async with daemon_with_jobs(make_settings) as (daemon, fake, http):
        assert daemon.trigger is not None
        fake.script("100", inventory("WORKING"), inventory("SUCCESS"))
        async with asyncio.timeout(5):
            while daemon.trigger.passes < 1:  # the start-up pass
                await asyncio.sleep(0.01)
        passes = daemon.trigger.passes
        status, first = await call(
            http, "POST", "/jobs", json={"provider": "inv", "job_id": 100, "label": "refresh"}
        )
        assert status == 201
        assert first["created"] is True
        assert first["job"]["job_id"] == "100"
        assert first["job"]["state"] == "pending"
        status, again = await call(http, "POST", "/jobs", json={"provider": "inv", "job_id": "100"})
        assert status == 200
        assert again["created"] is False
        assert again["job"]["id"] == first["job"]["id"]
        job_id = first["job"]["id"]
        async with asyncio.timeout(5):
            while (await call(http, "GET", f"/jobs/{job_id}"))[1]["job"]["state"] != "succeeded":
                await asyncio.sleep(0.01)
            while daemon.trigger.passes <= passes:
                await asyncio.sleep(0.01)
        status, shown = await call(http, "GET", "/jobs/inv:100")
        assert status == 200
        assert shown["job"]["label"] == "refresh"
        assert shown["job"]["next_poll_at"] is None


async def test_list_show_forget(make_settings: Callable[..., Settings]) -> None:
    """GET /jobs filters by state; DELETE forgets (then 404); unknown ids are 404."""
    async with daemon_with_jobs(make_settings) as (_, fake, http):
        fake.script("A", inventory("SUCCESS"))
        fake.script("B", inventory("WORKING"))
        for job in ("A", "B"):
            assert (await call(http, "POST", "/jobs", json={"provider": "inv", "job_id": job}))[
                0
            ] == 201
        async with asyncio.timeout(5):
            while True:
                _, done = await call(http, "GET", "/jobs", params={"state": "succeeded"})
                _, running = await call(http, "GET", "/jobs", params={"state": "running"})
                if done["jobs"] and running["jobs"]:
                    break
                await asyncio.sleep(0.01)
        assert [j["job_id"] for j in done["jobs"]] == ["A"]
        assert [j["job_id"] for j in running["jobs"]] == ["B"]
        _, everything = await call(http, "GET", "/jobs")
        assert [j["job_id"] for j in everything["jobs"]] == ["B", "A"]
        b_id = running["jobs"][0]["id"]
        status, gone = await call(http, "DELETE", f"/jobs/{b_id}")
        assert status == 200
        assert gone["forgotten"] is True
        assert (await call(http, "DELETE", f"/jobs/{b_id}"))[0] == 404
        assert (await call(http, "GET", f"/jobs/{b_id}"))[0] == 404
        assert (await call(http, "GET", "/jobs/9999"))[0] == 404


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"provider": "nope", "job_id": "1"}, "unknown provider 'nope'"),
        ({"provider": "bulk", "job_id": "1", "params": {"businessUnitId": ""}}, "businessUnitId"),
        ({"provider": "inv", "job_id": ""}, "job id is empty"),
        ({"provider": "inv", "job_id": "   "}, "job id is empty"),
        ({"provider": "inv"}, "job id is empty"),
        ({"job_id": "1"}, "provider is required"),
        ({"provider": "inv", "job_id": "1", "params": ["x"]}, "params must be an object"),
        ({"provider": "inv", "job_id": "1", "params": {"a": True}}, "params must be an object"),
        ({"provider": "inv", "job_id": "1", "label": 5}, "label must be a string"),
        ({"provider": "inv", "job_id": "1", "extra": 1}, "unknown field(s): extra"),
        ([1, 2], "JSON object"),
    ],
)
async def test_bad_registrations_are_400_with_the_reason(
    make_settings: Callable[..., Settings], body: Any, reason: str
) -> None:
    """Each kind of bad input gets a 400 in the error envelope, its message naming the reason;
    nothing is registered."""
    async with daemon_with_jobs(make_settings) as (_, _fake, http):
        status, payload = await call(http, "POST", "/jobs", json=body)
        assert status == 400
        assert payload["error"]["code"] == "bad_request"
        assert reason in payload["error"]["message"]
        assert (await call(http, "GET", "/jobs"))[1] == {"jobs": []}


async def test_other_bad_requests(make_settings: Callable[..., Settings]) -> None:
    """Malformed JSON, a bad state filter or limit, and a bad job reference are 400s."""
    async with daemon_with_jobs(make_settings) as (_, _fake, http):
        status, payload = await call(http, "POST", "/jobs", data=b"{nope")
        assert status == 400
        assert "JSON" in payload["error"]["message"]
        status, payload = await call(http, "GET", "/jobs", params={"state": "done"})
        assert status == 400
        assert "unknown job state" in payload["error"]["message"]
        assert (await call(http, "GET", "/jobs", params={"limit": "x"}))[0] == 400
        assert (await call(http, "GET", "/jobs/not-a-ref"))[0] == 400


async def test_admin_token_is_required(make_settings: Callable[..., Settings]) -> None:
    """With admin.token set, the job routes need the bearer token."""
    async with daemon_with_jobs(make_settings, admin={"token": "s3cret"}) as (_, _fake, http):
        status, payload = await call(http, "GET", "/jobs")
        assert status == 401
        assert payload["error"]["code"] == "unauthorized"
        status, _ = await call(http, "GET", "/jobs", headers={"Authorization": "Bearer s3cret"})
        assert status == 200


async def test_jobs_are_not_on_the_public_listener(make_settings: Callable[..., Settings]) -> None:
    """The public (webhook) listener has no job routes."""
    async with (
        daemon_with_jobs(make_settings) as (daemon, _fake, _http),
        aiohttp.ClientSession() as public,
        public.get(f"{daemon.public_url}/jobs") as resp,
    ):
        assert resp.status == 404
