"""Hostile input on the webhook endpoint of a real `syncd run` process (issue 6): property tests over
bodies and headers, slow-loris clients, and a bounded fuzz run. Never a 500, never a traceback in a
response, never a row stored without a valid signature, memory bounded, and the daemon keeps serving
honest senders throughout."""

from __future__ import annotations

import gzip
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncd.web.signatures import SignatureVerifier
from tests.hostile_kit import (
    KEY,
    MAX_BODY,
    NOTIFICATION_URL,
    READ_TIMEOUT,
    Daemon,
    daemon_process,
    raw_exchange,
    signed,
    status_of,
)
from tests.soak.report import PropertyRun, ScenarioResult, record, scenario_seed

WEBHOOK = "/webhooks/square"
STATUSES = {200, 400, 401, 408, 413}
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    408: "request_timeout",
    413: "payload_too_large",
}
VERIFY = SignatureVerifier([KEY], NOTIFICATION_URL)
GZIP_BOMB = gzip.compress(b"\0" * 50_000_000, compresslevel=9)


@pytest.fixture(name="daemon", scope="module")
def fixture_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the module's tests (each test only adds to its inbox)."""
    with daemon_process(tmp_path_factory.mktemp("hostile-webhooks")) as daemon:
        yield daemon


def valid_event(event_id: str, type_: str = "inventory.count.updated") -> bytes:
    return orjson.dumps(
        {
            "merchant_id": "M",
            "type": type_,
            "event_id": event_id,
            "created_at": "2026-01-01T00:00:00Z",
            "data": {},
        }
    )


# --- strategies ----------------------------------------------------------------------------------

_json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50)
)
_json_values = st.recursive(
    _json_scalars,
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5)
    ),
    max_leaves=30,
)
_ids = (
    st.text(max_size=300)
    | st.integers()
    | st.none()
    | st.lists(st.text(max_size=3))
    | st.just("")
    | st.text(alphabet="\x00\n\r\u202e\ufeff\U0001f600", max_size=20)
)


def _deep(depth: int, opener: bytes, closer: bytes, core: bytes = b"") -> bytes:
    return opener * depth + core + closer * depth


bodies = st.one_of(
    st.binary(max_size=2048),
    _json_values.map(lambda v: json.dumps(v).encode()),  # json.dumps writes NaN/Infinity: not JSON
    st.fixed_dictionaries(
        {},
        optional={
            "event_id": _ids,
            "type": _ids,
            "merchant_id": _ids,
            "created_at": _ids,
            "data": _json_values,
        },
    ).map(lambda d: json.dumps(d).encode()),
    st.builds(
        lambda i, t: valid_event(i, t),
        st.text(min_size=1, max_size=255),
        st.text(min_size=1, max_size=255),
    ),
    st.integers(1, 200_000).map(lambda n: _deep(n, b"[", b"]")),
    st.integers(1, 50_000).map(lambda n: _deep(n, b'{"a":', b"}", b"1")),
    st.integers(0, 3 * MAX_BODY).map(
        lambda n: orjson.dumps({"event_id": "E" * n, "type": "inventory.count.updated"})
    ),
    st.tuples(st.text(max_size=20), st.text(max_size=20)).map(  # duplicate keys: the last wins
        lambda ab: (
            f'{{"event_id": {json.dumps(ab[0])}, "event_id": {json.dumps(ab[1])},'
            ' "type": "t", "type": "u"}'
        ).encode()
    ),
    st.sampled_from(
        [
            b'{"event_id": "\\ud800", "type": "x"}',
            b'{"event_id": "a\\u0000b", "type": "x"}',
            b"\xef\xbb\xbf{}",
            b'{"event_id": "e"',
            b"{}" * 1000,
            '{"event_id": "é", "type": "ü"}'.encode("latin-1"),
        ]
    ),
)
signings = st.sampled_from(  # "valid" weighs three: enough examples reach the inbox
    [
        "valid",
        "valid",
        "valid",
        "missing",
        "wrong_key",
        "garbage",
        "non_ascii",
        "other_url",
        "empty",
        "valid_with_spaces",
    ]
)
extras = st.sampled_from(["none", "text_plain", "gzip_header", "gzip_real", "chunked"])


def _headers(body: bytes, signing: str) -> dict[str, str]:
    if signing == "valid":
        return signed(body)
    if signing == "valid_with_spaces":
        return {k: f"  {v}  " for k, v in signed(body).items()}
    if signing == "missing":
        return {}
    if signing == "wrong_key":
        return signed(body, key="not-the-key")
    if signing == "other_url":
        return signed(body, url="http://127.0.0.1/webhooks/square")
    if signing == "empty":
        return {"x-square-hmacsha256-signature": ""}
    if signing == "non_ascii":
        return {"x-square-hmacsha256-signature": "sïgnätüre=="}
    return {"x-square-hmacsha256-signature": "A" * 43 + "="}


def check_answer(status: int, headers: dict[str, str], raw: bytes) -> dict[str, object]:
    """A documented status, in the JSON envelope, with no traceback."""
    assert status in STATUSES, (status, raw[:200])
    assert b"Traceback" not in raw
    assert b'File "' not in raw
    assert headers.get("content-type", "").startswith("application/json")
    answer = orjson.loads(raw)
    if status != 200:
        assert answer["error"]["status"] == status
        assert answer["error"]["code"] == ERROR_CODES[status]
    return dict(answer)


# --- properties ----------------------------------------------------------------------------------


@pytest.mark.property
def test_any_request_is_answered_safely_and_only_signed_events_are_stored(daemon: Daemon) -> None:
    """Property: for any body (random bytes, JSON of any shape and type, NaN, deep nesting, huge
    strings, duplicate keys, odd unicode) with any signature (valid, missing, wrong key, garbage,
    non-ASCII, signed for another URL) and any framing (gzip headers, chunked): the answer is a
    documented status in the JSON envelope, never a 500 or a traceback; 200 only for a validly
    signed JSON object with string event_id and type; and afterwards every stored row is a body
    that was sent with a valid signature (and verifies)."""
    valid_bodies: set[bytes] = set()
    run = PropertyRun("webhook properties (hypothesis)")

    @settings(
        deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )
    @given(body=bodies, signing=signings, extra=extras)
    @example(body=valid_event("EV-OK"), signing="valid", extra="none")
    @example(body=_deep(100_000, b"[", b"]"), signing="valid", extra="none")
    @example(body=valid_event("EV-GZ"), signing="valid", extra="gzip_real")
    def one(body: bytes, signing: str, extra: str) -> None:
        run.count(checks=4)
        headers = _headers(body, signing)
        sent = body
        if extra == "text_plain":
            headers["Content-Type"] = "text/plain"
        elif extra == "gzip_header":  # claims gzip, is not
            headers["Content-Encoding"] = "gzip"
        elif extra == "gzip_real":  # gzip of the signed body: the signature covers what arrives
            sent = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        if signing in ("valid", "valid_with_spaces"):
            valid_bodies.add(body)
        payload: bytes | Iterator[bytes] = sent
        if extra == "chunked":  # http.client frames an iterable body as chunked
            payload = iter([sent[i : i + 512] for i in range(0, len(sent), 512)] or [b""])
        status, resp_headers, raw = daemon.request("POST", WEBHOOK, payload, headers)
        answer = check_answer(status, resp_headers, raw)
        if status == 200:
            assert signing in ("valid", "valid_with_spaces"), (signing, body[:100])
            data = orjson.loads(body)
            assert answer["event_id"] == data["event_id"]
            assert isinstance(data["type"], str)

    run.run(one)
    stored = daemon.inbox()
    for event_id, body in stored:
        assert body in valid_bodies, (event_id, body[:100])
        VERIFY.verify(signed(body)["x-square-hmacsha256-signature"], body)
    assert daemon.alive()
    assert daemon.events("http_handler_error") == []  # the 500 path never ran
    run.record(checks=len(stored) + 2, notes=f"{len(stored)} rows stored, all validly signed")


# --- slow clients --------------------------------------------------------------------------------


def test_slow_loris_body_gets_408_and_is_disconnected(daemon: Daemon) -> None:
    """A client that sends its headers and then trickles the body one byte at a time gets a 408
    in the envelope after http.read_timeout (1 s here), and the connection is closed at most
    read_timeout later (aiohttp reads and drops what is left that long); nothing is stored."""
    head = (
        b"POST /webhooks/square HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 400\r\n\r\n"
    )
    before = len(daemon.inbox())
    t0 = time.monotonic()
    raw = raw_exchange(daemon.public, [head, *[b"{"] * 40], pause=0.1, timeout=5)
    elapsed = time.monotonic() - t0
    assert status_of(raw) == 408, raw[:300]
    assert b'"request_timeout"' in raw
    assert READ_TIMEOUT <= elapsed < 2 * READ_TIMEOUT + 2
    assert len(daemon.inbox()) == before


def test_slow_headers_and_idle_connections_are_closed(daemon: Daemon) -> None:
    """A client that trickles its header lines, or connects and sends nothing, is disconnected
    after http.read_timeout (without an answer: there is no request yet)."""
    for chunks in ([b"POST /webhooks/square HTTP/1.1\r\n", *[b"X"] * 40], []):
        t0 = time.monotonic()
        raw = raw_exchange(daemon.public, chunks, pause=0.1, timeout=10)
        elapsed = time.monotonic() - t0
        assert status_of(raw) in (None, 400, 408), raw[:200]
        assert elapsed < READ_TIMEOUT + 2, f"connection held {elapsed:.1f} s"


def test_many_slow_clients_do_not_starve_honest_senders(daemon: Daemon) -> None:
    """While 60 slow-loris connections hold bodies open, a signed webhook is still answered 200
    promptly, and each slow one ends with a 408 (or the connection closed)."""
    head = b"POST /webhooks/square HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    results: list[int | None] = []

    def slow() -> None:
        results.append(
            status_of(raw_exchange(daemon.public, [head, *[b"a"] * 30], pause=0.1, timeout=8))
        )

    threads = [threading.Thread(target=slow) for _ in range(60)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    body = valid_event("EV-HONEST")
    t0 = time.monotonic()
    status, headers, raw = daemon.request("POST", WEBHOOK, body, signed(body))
    assert (status, check_answer(status, headers, raw)["event_id"]) == (200, "EV-HONEST")
    assert time.monotonic() - t0 < 1.0
    for t in threads:
        t.join(15)
    assert set(results) <= {408, None}, results
    assert results.count(408) >= 50


# --- the bounded fuzz run ------------------------------------------------------------------------


def fuzz(daemon: Daemon, *, requests: int, seed: int) -> ScenarioResult:
    """``requests`` hostile requests of every kind (including oversize declared and streamed
    bodies, bad framing, garbage request lines), then the checks: never a 500, stored rows all
    validly signed, resident memory grown by less than 64 MiB, the daemon alive and serving."""
    rng = random.Random(seed)
    started = time.monotonic()
    statuses: dict[int | None, int] = {}
    valid: set[bytes] = set()
    violations: list[str] = []
    rss_before = daemon.rss_kb()
    for i in range(requests):
        kind = rng.choice(
            [
                "random",
                "declared_huge",
                "streamed_huge",
                "signed",
                "bad_sig",
                "garbage_line",
                "deep",
                "wrong_method",
                "bad_chunks",
                "gzip_bomb",
            ]
        )
        raw: bytes
        if kind == "random":
            body = rng.randbytes(rng.randrange(0, 4096))
            raw = raw_exchange(daemon.public, [_post_head(len(body)) + body])
        elif kind == "declared_huge":  # refused from Content-Length before any body byte
            raw = raw_exchange(daemon.public, [_post_head(rng.randrange(MAX_BODY + 1, 2**40))])
        elif kind == "streamed_huge":  # chunked, cut off as soon as it passes the limit
            chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
            raw = raw_exchange(daemon.public, [_post_head(None) + chunk * 40 + b"0\r\n\r\n"])
        elif kind in ("signed", "bad_sig"):
            body = valid_event(f"FZ-{seed}-{i}", rng.choice(["inventory.count.updated", "x"]))
            sig = signed(body) if kind == "signed" else signed(body + b" ")
            if kind == "signed":
                valid.add(body)
            raw = raw_exchange(daemon.public, [_post_head(len(body), sig) + body])
        elif kind == "garbage_line":
            raw = raw_exchange(daemon.public, [rng.randbytes(rng.randrange(1, 300)) + b"\r\n\r\n"])
        elif kind == "deep":
            body = _deep(rng.randrange(1000, 60_000), b"[", b"]")
            raw = raw_exchange(daemon.public, [_post_head(len(body), signed(body)) + body])
            valid.add(body)
        elif kind == "wrong_method":
            method = rng.choice([b"GET", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"])
            raw = raw_exchange(
                daemon.public,
                [
                    method + b" /webhooks/square HTTP/1.1\r\n"
                    b"Host: x\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                ],
            )
        elif kind == "gzip_bomb":  # ~50 KB that inflate to 50 MB: cut off at the limit
            body = GZIP_BOMB
            raw = raw_exchange(
                daemon.public,
                [_post_head(len(body), {"Content-Encoding": "gzip", **signed(body)}) + body],
            )
        else:  # broken chunked framing
            raw = raw_exchange(daemon.public, [_post_head(None) + b"zz\r\nabc\r\n0\r\n\r\n"])
        status = status_of(raw)
        statuses[status] = statuses.get(status, 0) + 1
        if status is not None and (status >= 500 or b"Traceback" in raw):
            violations.append(f"{kind}: {raw[:200]!r}")
    rss_after = daemon.rss_kb()
    checks = requests
    for event_id, body in daemon.inbox():
        checks += 1
        if event_id.startswith("FZ-") and body not in valid:
            violations.append(f"stored without a valid signature: {event_id}")
    checks += 3
    if rss_after - rss_before > 64 * 1024:
        violations.append(f"resident memory grew {rss_before} -> {rss_after} KiB")
    if not daemon.alive():
        violations.append("the daemon died")
    body = valid_event(f"FZ-{seed}-after")
    status, _, _ = daemon.request("POST", WEBHOOK, body, signed(body))
    if status != 200:
        violations.append(f"an honest webhook after the fuzz run got {status}")
    return ScenarioResult(
        "webhook fuzz (real process)",
        seed=seed,
        rounds=requests,
        faults=requests,
        checks=checks,
        violations=violations,
        seconds=time.monotonic() - started,
        notes=f"statuses {dict(sorted(statuses.items(), key=str))}; RSS {rss_before // 1024}"
        f" -> {rss_after // 1024} MiB",
    )


def _post_head(length: int | None, extra: dict[str, str] | None = None) -> bytes:
    lines = [
        b"POST /webhooks/square HTTP/1.1",
        b"Host: x",
        b"Content-Type: application/json",
        b"Connection: close",
    ]
    lines.append(
        b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    )
    lines += [f"{k}: {v}".encode() for k, v in (extra or {}).items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_bounded_fuzz_run(daemon: Daemon) -> None:
    """A short fuzz run (CI): see ``fuzz``."""
    result = fuzz(daemon, requests=300, seed=scenario_seed())
    record(result)
    assert result.violations == [], result.describe()


@pytest.mark.soak
def test_fuzz_run_soak(tmp_path: Path) -> None:
    """The long fuzz run for `make soak`: 20,000 requests against a fresh daemon."""
    with daemon_process(tmp_path) as daemon:
        result = fuzz(daemon, requests=20_000, seed=scenario_seed())
    record(result)
    assert result.violations == [], result.describe()
