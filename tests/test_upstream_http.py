"""syncd.upstream.http: the retrying JSON request, against real servers on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from syncd.errors import UpstreamDataError, UpstreamError
from syncd.upstream.http import (
    JsonResponse,
    RetryInfo,
    RetryPolicy,
    make_session,
    parse_vendor_errors,
    request_json,
)
from tests.fakes.square_scripted import Reply, run_scripted, square_error

PATH = "/v2/inventory/counts/batch-retrieve"
SECRET = "EAAA-secret-token-do-not-log"


class Sleeps:
    """Records the requested backoff delays instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture(name="session")
async def fixture_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A session with production-like timeouts, closed after the test."""
    session = make_session(request_timeout=5.0, connect_timeout=2.0, user_agent="syncd-test/0")
    yield session
    await session.close()


async def call(
    session: aiohttp.ClientSession,
    url: str,
    sleeps: Sleeps,
    *,
    policy: RetryPolicy | None = None,
    retries: list[RetryInfo] | None = None,
    **kwargs: Any,
) -> JsonResponse:
    """POST a small JSON body with a bearer token; backoff delays go to ``sleeps``."""
    return await request_json(
        session,
        "POST",
        url + PATH,
        op="test.op",
        policy=policy or RetryPolicy(max_retries=5),
        json_body={"limit": 2, "note": "é"},
        headers={"Authorization": f"Bearer {SECRET}"},
        sleep=sleeps,
        rand=lambda: 0.5,
        on_retry=retries.append if retries is not None else None,
        **kwargs,
    )


def ok(body: Any = None, **headers: str) -> Reply:
    """A 200 reply with a JSON body."""
    return Reply(200, {"counts": []} if body is None else body, headers=dict(headers))


async def test_success_returns_decoded_body_status_headers_and_sends_orjson_body(
    session: aiohttp.ClientSession,
) -> None:
    """A 200 comes back decoded, with its Date header; the request carries JSON headers and body."""
    date = "Wed, 01 Jan 2025 00:00:00 GMT"
    async with run_scripted([ok({"counts": [], "cursor": "c"}, Date=date)]) as server:
        response = await call(session, server.url, Sleeps())
    assert response.status == 200
    assert response.body == {"counts": [], "cursor": "c"}
    assert response.date == date
    assert response.attempts == 1
    assert response.elapsed >= 0
    (sent,) = server.requests
    assert sent.method == "POST"
    assert sent.path == PATH
    assert sent.json == {"limit": 2, "note": "é"}
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Accept"] == "application/json"
    assert sent.headers["User-Agent"] == "syncd-test/0"
    assert sent.headers["Authorization"] == f"Bearer {SECRET}"


async def test_429_with_retry_after_seconds_waits_exactly_that_long(
    session: aiohttp.ClientSession,
) -> None:
    """A 429 carrying Retry-After: 7 is retried after exactly 7 s, not after a jittered delay."""
    sleeps, retries = Sleeps(), list[RetryInfo]()
    rate_limited = Reply(
        429, square_error("RATE_LIMITED", category="RATE_LIMIT_ERROR"), headers={"Retry-After": "7"}
    )
    async with run_scripted([rate_limited, ok()]) as server:
        with capture_logs() as logs:
            response = await call(session, server.url, sleeps, retries=retries)
    assert response.status == 200
    assert response.attempts == 2
    assert sleeps.waits == [7.0]
    assert [(r.attempt, r.status, r.backoff_s) for r in retries] == [(1, 429, 7.0)]
    (event,) = [e for e in logs if e["event"] == "upstream_retry"]
    assert event["op"] == "test.op"
    assert event["path"] == PATH
    assert event["status"] == 429
    assert event["attempt"] == 1
    assert event["backoff_s"] == 7.0
    assert "RATE_LIMITED" in event["error"]
    assert event["log_level"] == "warning"


async def test_retry_after_http_date_is_honoured(session: aiohttp.ClientSession) -> None:
    """Retry-After given as an HTTP date in ~10 s waits about 10 s (the date has 1 s resolution)."""
    sleeps = Sleeps()
    when = formatdate(time.time() + 10, usegmt=True)
    async with run_scripted([Reply(503, {}, headers={"Retry-After": when}), ok()]) as server:
        await call(session, server.url, sleeps)
    (wait,) = sleeps.waits
    assert 8.0 <= wait <= 10.0


async def test_retry_after_is_capped_by_max_retry_after(session: aiohttp.ClientSession) -> None:
    """A Retry-After beyond the policy's max_retry_after waits only max_retry_after."""
    sleeps = Sleeps()
    policy = RetryPolicy(max_retries=1, max_retry_after=60.0)
    async with run_scripted([Reply(429, {}, headers={"Retry-After": "3600"}), ok()]) as server:
        await call(session, server.url, sleeps, policy=policy)
    assert sleeps.waits == [60.0]


async def test_5xx_gateway_errors_are_retried_with_full_jitter_backoff(
    session: aiohttp.ClientSession,
) -> None:
    """500, 502, 503 and 504 are each retried; delays are initial*factor**n scaled by rand()."""
    sleeps, retries = Sleeps(), list[RetryInfo]()
    script = [
        Reply(500, square_error("INTERNAL_SERVER_ERROR", category="API_ERROR")),
        Reply(502, raw=b"<html>bad gateway</html>", headers={"Content-Type": "text/html"}),
        Reply(503, square_error("SERVICE_UNAVAILABLE", category="API_ERROR")),
        Reply(504, raw=b""),
        ok(),
    ]
    async with run_scripted(script) as server:
        response = await call(session, server.url, sleeps, retries=retries)
    assert response.status == 200
    assert response.attempts == 5
    assert len(server.requests) == 5
    # initial 0.5, factor 2, rand() = 0.5
    assert sleeps.waits == [0.25, 0.5, 1.0, 2.0]
    assert [r.status for r in retries] == [500, 502, 503, 504]
    assert retries[0].error == "HTTP 500 INTERNAL_SERVER_ERROR"
    assert retries[1].error == "HTTP 502"


async def test_backoff_is_capped_by_backoff_max(session: aiohttp.ClientSession) -> None:
    """The jittered delay never exceeds backoff_max however many attempts failed."""
    sleeps = Sleeps()
    policy = RetryPolicy(max_retries=4, backoff_initial=1.0, backoff_factor=10.0, backoff_max=3.0)
    async with run_scripted([Reply(503, {})] * 4 + [ok()]) as server:
        await request_json(
            session,
            "GET",
            server.url + PATH,
            op="test.op",
            policy=policy,
            sleep=sleeps,
            rand=lambda: 1.0,
        )
    assert sleeps.waits == [1.0, 3.0, 3.0, 3.0]


async def test_retries_exhausted_raise_retryable_error_with_attempts(
    session: aiohttp.ClientSession,
) -> None:
    """After max_retries retries the last failure is raised: retryable, attempts, vendor errors."""
    sleeps, retries = Sleeps(), list[RetryInfo]()
    unavailable = Reply(503, square_error("SERVICE_UNAVAILABLE", category="API_ERROR"))
    async with run_scripted([unavailable] * 3) as server:
        with pytest.raises(UpstreamError) as caught:
            await call(
                session, server.url, sleeps, policy=RetryPolicy(max_retries=2), retries=retries
            )
    err = caught.value
    assert err.retryable is True
    assert err.status == 503
    assert err.context["attempts"] == 3
    assert err.vendor_errors[0]["code"] == "SERVICE_UNAVAILABLE"
    assert err.op == "test.op"
    assert len(server.requests) == 3
    assert len(retries) == 2
    assert len(sleeps.waits) == 2


async def test_connection_refused_exhausts_with_no_status(session: aiohttp.ClientSession) -> None:
    """A port nobody listens on is a network error: retried, then raised with status None."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = Sleeps()
    with pytest.raises(UpstreamError) as caught:
        await call(session, f"http://127.0.0.1:{port}", sleeps, policy=RetryPolicy(max_retries=1))
    assert caught.value.retryable is True
    assert caught.value.status is None
    assert caught.value.context["attempts"] == 2
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)


@pytest.mark.parametrize(
    ("status", "code", "hint_part"),
    [
        (401, "UNAUTHORIZED", "square.access_token"),
        (403, "INSUFFICIENT_SCOPES", "INVENTORY_READ"),
    ],
)
async def test_auth_errors_are_not_retried_and_carry_hints(
    session: aiohttp.ClientSession, status: int, code: str, hint_part: str
) -> None:
    """401 and 403 fail at once with the vendor errors and an operator hint."""
    sleeps = Sleeps()
    reply = Reply(status, square_error(code, category="AUTHENTICATION_ERROR", detail="nope"))
    async with run_scripted([reply, ok()]) as server:
        with pytest.raises(UpstreamError) as caught:
            await call(session, server.url, sleeps)
    err = caught.value
    assert err.retryable is False
    assert err.status == status
    assert err.hint is not None
    assert hint_part in err.hint
    assert err.vendor_errors == [
        {"category": "AUTHENTICATION_ERROR", "code": code, "detail": "nope"}
    ]
    assert code in err.message
    assert len(server.requests) == 1
    assert sleeps.waits == []


async def test_400_is_not_retried_and_hint_is_vendor_detail_and_field(
    session: aiohttp.ClientSession,
) -> None:
    """A 400 fails at once; the hint repeats Square's detail and the offending field."""
    body = square_error("VALUE_TOO_HIGH", detail="`limit` must be at most 1000", field="limit")
    async with run_scripted([Reply(400, body)]) as server:
        with pytest.raises(UpstreamError) as caught:
            await call(session, server.url, Sleeps())
    err = caught.value
    assert err.retryable is False
    assert err.status == 400
    assert err.hint == "`limit` must be at most 1000 (field: limit)"
    assert err.vendor_errors[0]["code"] == "VALUE_TOO_HIGH"
    assert err.fields()["vendor_errors"][0]["field"] == "limit"
    assert len(server.requests) == 1


async def test_job_api_errors_array_is_parsed(session: aiohttp.ClientSession) -> None:
    """A job API's ``errors[]`` (status/title/detail) is surfaced as vendor errors on a 404."""
    body = {"errors": [{"status": 404, "title": "Resource Not Found", "detail": "no such job"}]}
    async with run_scripted([Reply(404, body)]) as server:
        with pytest.raises(UpstreamError) as caught:
            await call(session, server.url, Sleeps())
    assert caught.value.vendor_errors == body["errors"]
    assert caught.value.status == 404
    assert "Resource Not Found" in caught.value.message


def test_parse_vendor_errors_shapes() -> None:
    """The default parser reads an ``errors`` list or a bare ``error`` string, and nothing else."""
    assert parse_vendor_errors(500, {"errors": [{"code": "X"}, "junk"]}) == [{"code": "X"}]
    assert parse_vendor_errors(500, {"error": "boom"}) == [{"detail": "boom"}]
    assert parse_vendor_errors(500, ["not", "an", "object"]) == []
    assert parse_vendor_errors(500, None) == []


async def test_custom_error_parser_is_used(session: aiohttp.ClientSession) -> None:
    """An adapter can pass its own error_parser for its dialect."""

    def parser(status: int, body: Any) -> list[dict[str, Any]]:
        return [{"code": f"{status}:{body['messages'][0]}"}]

    async with run_scripted([Reply(409, {"messages": ["busy"]})]) as server:
        with pytest.raises(UpstreamError) as caught:
            await call(session, server.url, Sleeps(), error_parser=parser)
    assert caught.value.vendor_errors == [{"code": "409:busy"}]


async def test_connection_reset_is_retried(session: aiohttp.ClientSession) -> None:
    """A TCP reset before any response is a network error and is retried."""
    sleeps, retries = Sleeps(), list[RetryInfo]()
    async with run_scripted([Reply(action="reset"), ok()]) as server:
        response = await call(session, server.url, sleeps, retries=retries)
    assert response.status == 200
    assert len(server.requests) == 2
    assert retries[0].status is None
    assert retries[0].error


async def test_server_closing_mid_response_is_retried(session: aiohttp.ClientSession) -> None:
    """Headers sent, then the connection closed half-way through the body: retried."""
    sleeps, retries = Sleeps(), list[RetryInfo]()
    async with run_scripted([Reply(action="close_mid_body"), ok({"ok": True})]) as server:
        response = await call(session, server.url, sleeps, retries=retries)
    assert response.body == {"ok": True}
    assert len(server.requests) == 2
    assert retries[0].status is None


async def test_timeout_is_retried() -> None:
    """A server slower than request_timeout counts as a network error and is retried."""
    sleeps, retries = Sleeps(), list[RetryInfo]()
    session = make_session(request_timeout=0.2, connect_timeout=0.2, user_agent="syncd-test/0")
    try:
        async with run_scripted([Reply(action="hang"), ok()]) as server:
            response = await call(session, server.url, sleeps, retries=retries)
    finally:
        await session.close()
    assert response.status == 200
    assert len(server.requests) == 2
    assert retries[0].status is None
    assert "Timeout" in retries[0].error


async def test_bad_json_on_200_is_a_data_error_and_not_retried(
    session: aiohttp.ClientSession,
) -> None:
    """A 2xx whose body is not JSON raises UpstreamDataError at once."""
    async with run_scripted([Reply(200, raw=b"{not json"), ok()]) as server:
        with pytest.raises(UpstreamDataError) as caught:
            await call(session, server.url, Sleeps())
    assert caught.value.status == 200
    assert caught.value.retryable is False
    assert len(server.requests) == 1


async def test_token_and_body_never_logged(session: aiohttp.ClientSession) -> None:
    """Across retries and failures, no log event contains the token or the response body."""
    marker = "BODY-MARKER-123"
    script = [
        Reply(503, {"errors": [{"code": "SERVICE_UNAVAILABLE", "detail": marker}]}),
        Reply(action="reset"),
        Reply(401, square_error("UNAUTHORIZED", detail=marker)),
    ]
    async with run_scripted(script) as server:
        with capture_logs() as logs, pytest.raises(UpstreamError):
            await call(session, server.url, Sleeps())
    assert [e["event"] for e in logs] == ["upstream_retry", "upstream_retry"]
    text = repr(logs)
    assert SECRET not in text
    assert "Bearer" not in text
    assert marker not in text


async def test_error_parser_failure_does_not_hide_the_status(
    session: aiohttp.ClientSession,
) -> None:
    """A parser that trips on an unexpected body yields no vendor errors; the 404 still surfaces."""

    def parser(status: int, body: Any) -> list[dict[str, Any]]:
        return [{"code": body["messages"][0]}]

    async with run_scripted([Reply(404, raw=b"<html>not found</html>")]) as server:
        with pytest.raises(UpstreamError) as caught:
            await call(session, server.url, Sleeps(), error_parser=parser)
    assert caught.value.status == 404
    assert caught.value.vendor_errors == []


async def test_status_hints_can_be_replaced_per_adapter(session: aiohttp.ClientSession) -> None:
    """A job adapter passes its own hints, so a 401 does not blame Square's token."""
    hints = {401: "check jobs.acme.api_key"}
    async with run_scripted([Reply(401, {"errors": [{"title": "Unauthorized"}]})]) as server:
        with pytest.raises(UpstreamError) as caught:
            await call(session, server.url, Sleeps(), status_hints=hints)
    assert caught.value.hint == "check jobs.acme.api_key"
