"""Tests for syncd.logs: JSON and console output, the stdlib bridge, levels and reconfiguration."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from syncd.logs import HotLog, configure_logging, get_logger, reset_logging, set_level


class _Tty(io.StringIO):
    """A text stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(name="stream", autouse=True)
def fixture_stream() -> Iterator[io.StringIO]:
    """A fresh text stream; logging and contextvars are reset after each test."""
    root_level = logging.getLogger().level
    yield io.StringIO()
    reset_logging()
    structlog.contextvars.clear_contextvars()
    logging.getLogger().setLevel(root_level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line written so far, each parsed as JSON."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_have_event_level_ts(stream: io.StringIO) -> None:
    """In json mode each event is one JSON object with event, level, an ISO UTC ts and fields."""
    configure_logging("info", "json", stream)
    get_logger("syncd.test").info("pass_finished", source="square", duration_ms=12)
    (line,) = lines(stream)
    assert line["event"] == "pass_finished"
    assert line["level"] == "info"
    assert line["source"] == "square"
    assert line["duration_ms"] == 12
    assert line["logger"] == "syncd.test"
    assert list(line)[:3] == ["ts", "level", "event"]
    ts = datetime.fromisoformat(line["ts"].replace("Z", "+00:00"))
    assert ts.utcoffset() == UTC.utcoffset(None)


def test_json_merges_contextvars(stream: io.StringIO) -> None:
    """Context bound through structlog.contextvars appears on every line."""
    configure_logging("info", "json", stream)
    structlog.contextvars.bind_contextvars(job_id="j-1")
    get_logger().warning("job_polled", attempt=2)
    (line,) = lines(stream)
    assert line["job_id"] == "j-1"
    assert line["attempt"] == 2
    assert "logger" not in line


def test_json_renders_exceptions(stream: io.StringIO) -> None:
    """log.exception() puts the formatted traceback under the exception key."""
    configure_logging("info", "json", stream)
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        get_logger().exception("pass_failed")
    (line,) = lines(stream)
    assert line["level"] == "error"
    assert "RuntimeError: kaput" in line["exception"]


def test_json_to_a_binary_stream() -> None:
    """A stream with a binary buffer takes orjson bytes directly (the fast path)."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    configure_logging("info", "json", stream)
    get_logger().info("caf\u00e9", n=1)
    logging.getLogger("aiohttp.access").info("GET /healthz 200")
    first, second = (json.loads(line) for line in raw.getvalue().decode().splitlines())
    assert first["event"] == "caf\u00e9"
    assert second["event"] == "GET /healthz 200"


def test_stdlib_logging_is_bridged(stream: io.StringIO) -> None:
    """stdlib loggers (aiohttp.access, asyncio) come out in the same JSON format."""
    configure_logging("info", "json", stream)
    logging.getLogger("aiohttp.access").info("%s %s", "GET", "/readyz", extra={"status": 200})
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    access, failure = lines(stream)
    assert access["event"] == "GET /readyz"
    assert access["logger"] == "aiohttp.access"
    assert access["level"] == "info"
    assert access["status"] == 200
    assert "ts" in access
    assert failure["logger"] == "asyncio"
    assert failure["level"] == "error"
    assert "ValueError: bad" in failure["exception"]


def test_level_filtering(stream: io.StringIO) -> None:
    """Events below the level are dropped, for structlog and stdlib loggers alike."""
    configure_logging("warning", "json", stream)
    log = get_logger()
    log.info("dropped")
    logging.getLogger("aiohttp.access").info("dropped too")
    log.warning("kept")
    logging.getLogger("asyncio").error("kept too")
    assert [line["event"] for line in lines(stream)] == ["kept", "kept too"]


def test_set_level_reaches_existing_loggers(stream: io.StringIO) -> None:
    """set_level() changes the level live, also for loggers created before the change."""
    configure_logging("info", "json", stream)
    log = get_logger("syncd.module")
    log.debug("before")
    set_level("DEBUG")
    log.debug("after")
    logging.getLogger("aiohttp.client").debug("stdlib after")
    set_level("error")
    log.warning("quiet again")
    assert [line["event"] for line in lines(stream)] == ["after", "stdlib after"]


def test_reconfigure_is_idempotent(stream: io.StringIO) -> None:
    """Configuring again (e.g. on SIGHUP) replaces the handler instead of duplicating lines."""
    configure_logging("info", "json", stream)
    configure_logging("debug", "json", stream)
    logging.getLogger("asyncio").debug("once")
    get_logger().debug("twice")
    assert [line["event"] for line in lines(stream)] == ["once", "twice"]


def test_console_mode(stream: io.StringIO) -> None:
    """console mode renders readable text (not JSON), without colours on a non-terminal."""
    configure_logging("info", "console", stream)
    get_logger().info("sync_started", source="square")
    logging.getLogger("aiohttp.access").warning("slow request")
    first, second = stream.getvalue().splitlines()
    assert "sync_started" in first
    assert "source=square" in first
    assert "info" in first
    assert "\x1b[" not in first
    assert "slow request" in second
    assert "aiohttp.access" in second
    with pytest.raises(json.JSONDecodeError):
        json.loads(first)


def test_auto_mode_picks_by_terminal(stream: io.StringIO) -> None:
    """auto is JSON on a pipe or file and console on a terminal."""
    configure_logging("info", "auto", stream)
    get_logger().info("to_a_pipe")
    assert lines(stream)[0]["event"] == "to_a_pipe"
    tty = _Tty()
    configure_logging("info", "auto", tty)
    get_logger().info("to_a_terminal")
    assert "to_a_terminal" in tty.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(tty.getvalue().splitlines()[0])


def test_bad_level_or_format_is_rejected() -> None:
    """Unknown levels and formats raise ValueError rather than logging everything."""
    with pytest.raises(ValueError, match="log level"):
        configure_logging("loud")
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml")
    with pytest.raises(ValueError, match="log level"):
        set_level("verbose")


def test_capture_logs_sees_events() -> None:
    """structlog.testing.capture_logs works with get_logger() after configuration."""
    configure_logging("info", "json", io.StringIO())
    with capture_logs() as captured:
        get_logger("syncd.x").info("webhook_accepted", event_id="e1")
    assert captured == [
        {
            "event": "webhook_accepted",
            "event_id": "e1",
            "log_level": "info",
            "logger_name": "syncd.x",
        }
    ]


def _binary() -> tuple[io.BytesIO, io.TextIOWrapper]:
    raw = io.BytesIO()
    return raw, io.TextIOWrapper(raw, encoding="utf-8", write_through=True)


def _without_ts(raw: io.BytesIO) -> list[dict[str, Any]]:
    out = []
    for text in raw.getvalue().decode().splitlines():
        line = json.loads(text)
        assert list(line)[:3] == ["ts", "level", "event"]
        datetime.fromisoformat(line.pop("ts").replace("Z", "+00:00"))
        out.append(line)
    return out


@pytest.mark.parametrize("binary", [True, False])
def test_hot_log_writes_the_line_the_logger_writes(binary: bool, stream: io.StringIO) -> None:
    """HotLog (the webhook's line, written without the chain on a binary stream) writes what the
    logger itself writes: same keys in the same order, contextvars after the fields, a field
    the chain handles itself (here exc_info) through the chain."""
    raw, out = _binary() if binary else (None, stream)
    configure_logging("info", "json", out)
    plain = structlog.get_logger("syncd.webhooks")
    hot = HotLog(plain)
    with structlog.contextvars.bound_contextvars(job_id="j-1", level="ignored"):
        for log in (plain, hot):
            log.info("webhook", source="square", n=1, ok=True, duration_ms=1.5, logger="x")
            log.warning("webhook", source="_unknown", outcome="unknown_merchant")
            log.info("webhook", exc_info=False, n=2)
    if raw is None:
        got = [dict(line) for line in lines(stream)]
        for line in got:
            line.pop("ts")
    else:
        got = _without_ts(raw)
    assert got[:3] == got[3:]
    assert got[0] == {
        "level": "info",
        "event": "webhook",
        "source": "square",
        "n": 1,
        "ok": True,
        "duration_ms": 1.5,
        "logger": "x",
        "job_id": "j-1",
    }


def test_hot_log_follows_level_changes_and_capture() -> None:
    """A level set later (SIGHUP) and structlog's capture_logs reach HotLog at once."""
    raw, out = _binary()
    configure_logging("info", "json", out)
    hot = HotLog(structlog.get_logger())
    hot.info("kept", n=1)
    set_level("warning")
    hot.info("dropped")
    hot.warning("kept too")
    with capture_logs() as captured:
        hot.warning("captured", n=2)
    set_level("info")
    hot.info("kept again")
    assert [line["event"] for line in _without_ts(raw)] == ["kept", "kept too", "kept again"]
    assert captured == [{"event": "captured", "n": 2, "log_level": "warning"}]
