"""POST /webhooks/{source} on a real daemon (port 0, real SQLite, the simulator upstream): every
answer the issue lists, what gets stored, what gets logged and counted."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from syncd import metrics
from syncd.config import Settings
from syncd.web.signatures import SIGNATURE_HEADER
from syncd.web.webhooks import _RejectionLog
from tests.webhook_kit import KEY, NOTIFICATION_URL, OLD_KEY, event, inbox_rows, rig, signed
from tests.webhook_kit import webhook_settings as settings_with_webhooks

MAX_BODY = 4096


@pytest.fixture(name="settings")
def fixture_settings(make_settings: Callable[..., Settings]) -> Settings:
    """Webhooks configured (two keys, the proxy's notification URL) and a small body limit."""
    return settings_with_webhooks(make_settings, http={"max_body_bytes": MAX_BODY})


def rejected(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "syncd_webhooks_rejected_total", {"source": "square", "reason": reason}
    )
    return value or 0.0


async def test_valid_signature_is_stored_and_answered_200(settings: Settings) -> None:
    """A correctly signed inventory event is committed to the inbox (all columns) and answered 200
    with the event id; the change it announces then reaches the mirror and the row ends
    processed."""
    async with rig(settings) as r:
        await r.first_pass()
        [changed] = r.sim.mutate(1)
        body = event("EV-1", counts=[changed])
        status, answer = await r.post(body)
        assert status == 200
        assert answer == {"status": "accepted", "event_id": "EV-1", "duplicate": False}
        [row] = inbox_rows(settings.database)
        assert row["event_id"] == "EV-1"
        assert row["source"] == "square"
        assert row["type"] == "inventory.count.updated"
        assert row["merchant_id"] == "MERCHANT1"
        assert row["created_at"] == "2026-01-01T00:00:00.123456789Z"
        assert row["body"] == body
        [row] = await r.all_processed()
        assert row["processed_at"] >= row["received_at"]


@pytest.mark.parametrize(
    "case", ["tampered_body", "wrong_url", "wrong_key", "missing_header", "empty_header"]
)
async def test_bad_signatures_get_401_and_store_nothing(settings: Settings, case: str) -> None:
    """Tampered body, a signature over another notification URL, an unknown key, and a missing or
    empty header: 401 in the error envelope, nothing stored, counted by reason, and logged without
    the body."""
    body = event("EV-BAD", secret_marker="do-not-log-me")
    headers = {
        "tampered_body": signed(event("EV-OTHER")),
        "wrong_url": signed(body, url="http://127.0.0.1:8787/webhooks/square"),
        "wrong_key": signed(body, key="some-other-key"),
        "missing_header": {"Content-Type": "application/json"},
        "empty_header": {SIGNATURE_HEADER: ""},
    }[case]
    reason = "missing_signature" if case in ("missing_header", "empty_header") else "bad_signature"
    before = rejected(reason)
    async with rig(settings) as r:
        with capture_logs() as logs:
            status, answer = await r.post(body, headers)
    assert status == 401
    assert answer["error"]["status"] == 401
    assert answer["error"]["code"] == "unauthorized"
    assert inbox_rows(settings.database) == []
    assert rejected(reason) == before + 1
    [entry] = [e for e in logs if e["event"] == "webhook_rejected"]
    assert entry["reason"] == reason
    assert entry["status"] == 401
    assert entry["bytes"] == len(body)
    assert "do-not-log-me" not in repr(logs)


async def test_rejection_log_is_rate_limited(settings: Settings) -> None:
    """A flood of bad signatures is counted in full but logged once per second per reason; the
    next line says how many were held back."""
    before = rejected("bad_signature")
    async with rig(settings) as r:
        with capture_logs() as logs:
            for i in range(5):
                body = event(f"EV-{i}")
                assert (await r.post(body, signed(body, key="wrong")))[0] == 401
    assert rejected("bad_signature") == before + 5
    lines = [e for e in logs if e["event"] == "webhook_rejected"]
    assert len(lines) == 1
    assert lines[0]["suppressed"] == 0


async def test_rotated_keys_both_accepted(settings: Settings) -> None:
    """With the old and the new key configured, webhooks signed by either are accepted."""
    async with rig(settings) as r:
        for key in (KEY, OLD_KEY):
            body = event(f"EV-{key[:3]}")
            status, _ = await r.post(body, signed(body, key=key))
            assert status == 200
    assert len(inbox_rows(settings.database)) == 2


async def test_replayed_event_id_is_stored_once(settings: Settings) -> None:
    """Square redelivers an event whose answer it did not see: the repeat (even with another body,
    correctly signed) is answered 200 as a duplicate and the first copy stays the only row."""
    async with rig(settings) as r:
        first = event("EV-SAME")
        assert (await r.post(first))[0] == 200
        status, answer = await r.post(first)
        assert status == 200
        assert answer["duplicate"] is True
        status, answer = await r.post(event("EV-SAME", created_at="2027-01-01T00:00:00Z"))
        assert status == 200
        assert answer["duplicate"] is True
    [row] = inbox_rows(settings.database)
    assert row["body"] == first


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json at all", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'{"type": "inventory.count.updated"}', "event_id"),
        (b'{"event_id": "", "type": "inventory.count.updated"}', "event_id"),
        (b'{"event_id": 42, "type": "inventory.count.updated"}', "event_id"),
        (b'{"event_id": "EV-1"}', "type"),
        (b'{"event_id": "EV-1", "type": null}', "type"),
        (b'{"event_id": "' + b"x" * 300 + b'", "type": "t"}', "event_id"),
        (b"\xff\xfe{}", "not JSON"),
    ],
)
async def test_malformed_bodies_get_400(settings: Settings, body: bytes, why: str) -> None:
    """Correctly signed but not an event (not JSON, not an object, event_id or type missing,
    empty, not a string, absurdly long): 400 saying why, nothing stored."""
    async with rig(settings) as r:
        status, answer = await r.post(body)
    assert status == 400
    assert answer["error"]["code"] == "bad_request"
    assert why in answer["error"]["message"]
    assert inbox_rows(settings.database) == []


async def test_oversize_body_gets_413(settings: Settings) -> None:
    """A body over http.max_body_bytes is refused with 413 whether it declares its length or is
    chunked; a body of exactly the limit is read (and, unsigned, refused with 401 instead)."""
    async with rig(settings) as r:
        big = event("EV-BIG", padding="x" * MAX_BODY)
        status, answer = await r.post(big)
        assert status == 413
        assert answer["error"]["code"] == "payload_too_large"

        async def chunks() -> object:
            for _ in range(8):
                yield b"x" * 1024

        assert r.daemon.public_url is not None
        async with r.client.post(
            r.daemon.public_url + "/webhooks/square", data=chunks(), headers=signed(b"")
        ) as resp:
            assert resp.status == 413
        exact = b"y" * MAX_BODY
        status, _ = await r.post(exact, {"Content-Type": "application/json"})
        assert status == 401
    assert inbox_rows(settings.database) == []


async def test_oversize_is_refused_before_the_body_is_sent(settings: Settings) -> None:
    """A request declaring a 100 MiB body gets its 413 from the headers alone: the client sends
    no body byte, so the daemon cannot have read it."""
    async with rig(settings) as r:
        assert r.daemon.public_url is not None
        address = urlsplit(r.daemon.public_url)
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        writer.write(
            b"POST /webhooks/square HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(5):
            status_line = await reader.readline()
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_wrong_method_gets_405(settings: Settings, method: str) -> None:
    """Any method but POST on the webhook route: 405 with Allow: POST, in the error envelope."""
    async with rig(settings) as r, r.client.request(method, r.webhook_url) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        answer = orjson.loads(await resp.read())
    assert answer["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "path",
    [
        "/webhooks/shopify",
        "/webhooks/SQUARE",
        "/webhooks/square/extra",
        "/",
        "/metrics",
    ],
)
async def test_unknown_path_or_source_gets_404(settings: Settings, path: str) -> None:
    """An unknown source or any other path: 404 in the error envelope, nothing stored."""
    async with rig(settings) as r:
        body = event("EV-404")
        status, answer = await r.post(body, signed(body), path=path)
    assert status == 404
    assert answer["error"]["code"] == "not_found"
    assert inbox_rows(settings.database) == []


async def test_unknown_event_type_is_stored_but_does_not_poke(settings: Settings) -> None:
    """An event syncd does not act on (catalog.version.updated) is verified, stored already
    processed, answered 200, and starts no pass."""
    async with rig(settings) as r:
        await r.first_pass()
        assert r.daemon.trigger is not None
        passes = r.daemon.trigger.passes
        status, answer = await r.post(event("EV-CAT", type="catalog.version.updated"))
        assert status == 200
        assert answer["duplicate"] is False
        await asyncio.sleep(settings.webhooks.max_delay * 3)
        assert r.daemon.trigger.passes == passes
    [row] = inbox_rows(settings.database)
    assert row["type"] == "catalog.version.updated"
    assert row["processed_at"] is not None


async def test_unconfigured_source_refuses_every_webhook(
    make_settings: Callable[..., Settings],
) -> None:
    """Without signature keys nothing can be verified: every webhook is refused with 401
    (reason not_configured) and the daemon says so at start."""
    settings = make_settings(square={"notification_url": NOTIFICATION_URL})
    with capture_logs() as logs:
        async with rig(settings) as r:
            body = event("EV-1")
            status, answer = await r.post(body)
    assert status == 401
    assert "not configured" in answer["error"]["message"]
    assert any(e["event"] == "webhooks_not_configured" for e in logs)
    assert inbox_rows(settings.database) == []


async def test_no_input_produces_a_500(settings: Settings) -> None:
    """Random methods, paths, headers and bodies (signed or not, JSON or not) never produce a 500
    or a traceback: every answer is one of the documented statuses, in the JSON envelope."""
    rng = random.Random(3)
    samples = [
        b"",
        b"{}",
        b"null",
        b'{"event_id": {}, "type": []}',
        event("EV-F"),
        b'{"event_id": "E", "type": "t", "created_at": 5, "merchant_id": [1]}',
        bytes(rng.randrange(256) for _ in range(64)),
        b"\x00" * 32,
        "é".encode(),
    ]
    async with (
        rig(settings) as r,
        aiohttp.ClientSession(
            # A fresh connection per request: after an undecodable gzip body aiohttp closes the
            # connection (once the answer is sent), which a reused connection would see as an error.
            connector=aiohttp.TCPConnector(force_close=True)
        ) as client,
    ):
        assert r.daemon.public_url is not None
        for i in range(60):
            body = rng.choice(samples)
            headers = rng.choice(
                [
                    signed(body),
                    {},
                    {SIGNATURE_HEADER: "x" * 200},
                    {"Content-Type": "text/plain", **signed(body)},
                    {"Content-Encoding": "gzip", **signed(body)},
                ]
            )
            method = rng.choice(["POST", "POST", "POST", "GET", "OPTIONS"])
            path = rng.choice(["/webhooks/square", "/webhooks/x", "/readyz", "/healthz"])
            async with client.request(
                method, r.daemon.public_url + path, data=body, headers=headers
            ) as resp:
                text = await resp.read()
                assert resp.status in (200, 400, 401, 404, 405, 413, 503), (i, resp.status)
                assert b"Traceback" not in text
                orjson.loads(text)


def test_rejection_log_reports_what_it_held_back() -> None:
    """After the quiet interval, the next rejection line carries the number suppressed since the
    previous line, per reason."""
    reject = _RejectionLog(interval=0.05)
    with capture_logs() as logs:
        for _ in range(4):
            reject("square", "bad_signature")
        reject("square", "too_large")
        time.sleep(0.06)
        reject("square", "bad_signature")
    assert [(e["reason"], e["suppressed"]) for e in logs] == [
        ("bad_signature", 0),
        ("too_large", 0),
        ("bad_signature", 3),
    ]
