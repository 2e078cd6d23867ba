"""The three job dialects: status mapping, URL templates, registration checks, one GET per poll."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from syncd.errors import ConfigError, JobProviderError, UpstreamDataError, UpstreamError
from syncd.jobs.ports import JobProvider, JobRef, NotFound, Observation
from syncd.jobs.states import JobState
from syncd.upstream import bulk_sales_orders, commerce_jobs, inventory_jobs
from syncd.upstream.bulk_sales_orders import BulkSalesOrders
from syncd.upstream.commerce_jobs import CommerceJobs
from syncd.upstream.inventory_jobs import InventoryJobs
from syncd.upstream.job_api import JobApiOptions
from tests.fakes.job_servers import (
    Step,
    bulk,
    commerce,
    inventory,
    missing,
    rate_limited,
    serve_jobs,
    server_error,
)

S = JobState


def _conforms(api: InventoryJobs) -> JobProvider:
    """Static check (mypy): every dialect adapter is a JobProvider."""
    return api


def body(step: Step) -> Any:
    return step.body


@pytest.mark.parametrize(
    ("step", "state", "known"),
    [
        (inventory("PENDING"), S.PENDING, True),
        (inventory("WORKING", item_count=10), S.RUNNING, True),
        (inventory("SUCCESS", success=True), S.SUCCEEDED, True),
        (inventory("success"), S.SUCCEEDED, True),
        (inventory("SUCCESS", success=False), S.FAILED, True),
        (inventory("FAILED", messages=("bad file",)), S.FAILED, True),
        (inventory("REQUEUED"), S.RUNNING, False),
    ],
)
def test_inventory_statuses(step: Step, state: JobState, known: bool) -> None:
    """PENDING/WORKING/SUCCESS/FAILED map onto the lifecycle; an unknown status is running."""
    obs = inventory_jobs.parse(body(step))
    assert (obs.state, obs.known) == (state, known)
    assert obs.vendor_status == step.body["status"]
    assert obs.job_type == "REFRESH"


def test_inventory_fields() -> None:
    """Messages, item counts (as progress) and the vendor's facts are kept; data-wrapped works."""
    obs = inventory_jobs.parse(
        {"data": body(inventory("FAILED", messages=("a", "b"), item_count=5))}
    )
    assert obs.messages == ("a", "b")
    assert obs.progress == {"itemCount": 5}
    assert obs.result is not None
    assert obs.result["locationCode"] == "WH1"


@pytest.mark.parametrize(
    ("step", "state", "known"),
    [
        (bulk("CREATED"), S.PENDING, True),
        (bulk("INITIATED"), S.PENDING, True),
        (bulk("PROCESSING", processed=3, total=10), S.RUNNING, True),
        (bulk("COMPLETED", processed=10, total=10), S.SUCCEEDED, True),
        (bulk("COMPLETED", failed=2, processed=10, total=10), S.PARTIAL, True),
        (bulk("COMPLETED", failed=2), S.PARTIAL, True),
        (bulk("COMPLETED", failed=3, processed=3, total=3), S.FAILED, True),
        (bulk("PAUSED"), S.RUNNING, False),
    ],
)
def test_bulk_statuses(step: Step, state: JobState, known: bool) -> None:
    """COMPLETED is a success, partial or failure depending on failedOrders versus the total."""
    obs = bulk_sales_orders.parse(body(step))
    assert (obs.state, obs.known) == (state, known)


def test_bulk_failures_drop_the_echoed_request() -> None:
    """Failed orders keep their number, message and line messages, not the echoed ``item``."""
    obs = bulk_sales_orders.parse(body(bulk("COMPLETED", failed=1, processed=4, total=4)))
    assert obs.failures == (
        {
            "customerOrderNumber": "SO-0",
            "message": "invalid SKU",
            "lines": [{"customerLineNumber": "1", "message": "SKU not found"}],
        },
    )
    assert obs.progress == {"processed": 4, "total": 4}
    assert obs.result == {"failed_orders": 1, "jobId": "J", "processed": 4, "total": 4}


@pytest.mark.parametrize(
    ("step", "state", "known"),
    [
        (commerce("pending"), S.PENDING, True),
        (commerce("PENDING"), S.PENDING, True),
        (commerce("started"), S.RUNNING, True),
        (commerce("success", href="/exports/a.csv"), S.SUCCEEDED, True),
        (commerce("failed", error="No results matched the supplied filter"), S.FAILED, True),
        (commerce("archived"), S.RUNNING, False),
    ],
)
def test_commerce_statuses(step: Step, state: JobState, known: bool) -> None:
    """pending/started/success/failed in any case; the error becomes a message."""
    obs = commerce_jobs.parse(body(step))
    assert (obs.state, obs.known) == (state, known)


def test_commerce_link_only_on_success() -> None:
    """link.href is a result link only when the job succeeded; an empty href is no link."""
    done = commerce_jobs.parse(body(commerce("success", href="/exports/a.csv")))
    assert done.result_link == "/exports/a.csv"
    assert done.result is not None
    assert done.result["link"] == "/exports/a.csv"
    assert commerce_jobs.parse(body(commerce("success"))).result_link is None
    assert commerce_jobs.parse(body(commerce("started", href="/x.csv"))).result_link is None
    failed = commerce_jobs.parse(body(commerce("failed", error="boom")))
    assert failed.messages == ("boom",)
    assert failed.failures == ({"detail": "boom"},)


@pytest.mark.parametrize(
    "parse", [inventory_jobs.parse, bulk_sales_orders.parse, commerce_jobs.parse]
)
@pytest.mark.parametrize(
    "payload", [None, [], "x", {"data": {}}, {"data": {"status": 5}}, {"data": []}]
)
def test_unreadable_bodies_are_data_errors(parse: Any, payload: Any) -> None:
    """A 2xx body without a readable status is an UpstreamDataError, never a crash."""
    with pytest.raises(UpstreamDataError):
        parse(payload)


def api(
    cls: Any, url: str = "http://h", session: aiohttp.ClientSession | None = None, **options: Any
) -> Any:
    return cls(JobApiOptions(name="p", base_url=url, **options), session)


def test_url_templates_and_params() -> None:
    """Default templates, provider params filling path placeholders, the rest as query."""
    inv = api(InventoryJobs)
    assert inv.url("12", {}) == ("http://h/commerce/inventory/v1/queue/12", {})
    bso = api(BulkSalesOrders, params={"businessUnitId": "BU 1", "tenant": "acme"})
    assert bso.url("J/1", {}) == (
        "http://h/business_units/BU%201/sales_orders/bulk/J%2F1",
        {"tenant": "acme"},
    )
    assert bso.url("J", {"businessUnitId": "BU2"})[0].startswith("http://h/business_units/BU2/")
    shop = api(CommerceJobs, url="http://h/api/", path="/v2/jobs/{id}")
    assert shop.url("abc", {}) == ("http://h/api/v2/jobs/abc", {})


def test_registration_checks() -> None:
    """A missing path param, an empty id and dot segments are refused with the reason."""
    bso = api(BulkSalesOrders)
    with pytest.raises(JobProviderError, match="businessUnitId") as exc:
        bso.check("J1", {})
    assert exc.value.hint is not None
    assert "--param businessUnitId=" in exc.value.hint
    bso.check("J1", {"businessUnitId": "BU1"})
    with pytest.raises(JobProviderError, match="empty"):
        api(InventoryJobs).check("  ", {})
    with pytest.raises(JobProviderError, match=r"'\.\.'"):
        api(InventoryJobs).check("..", {})


def test_a_template_without_the_job_id_is_a_config_error() -> None:
    """The configured path must say where the job id goes."""
    with pytest.raises(ConfigError) as exc:
        api(CommerceJobs, path="/v2/jobs")
    assert exc.value.problems[0][0] == "jobs.providers.p.path"


async def test_fetch_one_request_per_poll() -> None:
    """Each fetch is one GET with the bearer token: 200 -> Observation, 404 -> NotFound,
    500 and 429 -> a retryable UpstreamError (429 with its Retry-After), never retried inside."""
    async with serve_jobs() as fake, aiohttp.ClientSession() as session:
        shop = api(CommerceJobs, fake.url, session, token="tok")
        fake.script("j1", commerce("started"), server_error(), rate_limited(3), missing())
        ref = JobRef(1, "p", "j1")
        obs = await shop.fetch(ref)
        assert isinstance(obs, Observation)
        assert obs.state is S.RUNNING
        with pytest.raises(UpstreamError) as err:
            await shop.fetch(ref)
        assert err.value.retryable
        assert err.value.status == 500
        with pytest.raises(UpstreamError) as err:
            await shop.fetch(ref)
        assert err.value.status == 429
        assert err.value.retry_after == 3
        gone = await shop.fetch(ref)
        assert gone == NotFound("Job Not Found")
        assert fake.count("j1") == 4
        assert set(fake.auth) == {"Bearer tok"}


async def test_fetch_sends_unused_params_as_query() -> None:
    """Params the template does not use travel as query parameters."""
    async with serve_jobs() as fake, aiohttp.ClientSession() as session:
        bso = api(BulkSalesOrders, fake.url, session, params={"businessUnitId": "BU1"})
        fake.script("J9", bulk("PROCESSING"))
        obs = await bso.fetch(JobRef(1, "p", "J9", {"view": "full"}))
        assert isinstance(obs, Observation)
        assert obs.state is S.RUNNING
        assert fake.paths == ["/business_units/BU1/sales_orders/bulk/J9?view=full"]
        assert fake.auth == [None]
