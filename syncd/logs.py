"""Logging: one structlog chain for syncd's own events and for stdlib loggers (aiohttp, asyncio).

Call :func:`configure_logging` once at startup, and again whenever the level or format changes (it
is idempotent: the previous handler is replaced, never duplicated). Every line carries ``ts`` (ISO
8601, UTC), ``level`` and ``event`` plus the context bound with ``structlog.contextvars``.

- ``json``: one JSON object per line, serialised by orjson (written as bytes when the stream has a
  binary buffer, structlog's fast path).
- ``console``: structlog's ConsoleRenderer, for people at a terminal.
- ``auto``: console when the stream is a TTY, JSON otherwise (journald, files, pipes).

Loggers come from :func:`get_logger`. The level filter is structlog's
``make_filtering_bound_logger`` (calls below the level cost one no-op method call), and loggers are
not cached on first use so that :func:`set_level` (e.g. on SIGHUP) reaches module-level loggers
too. Bind context with ``structlog.contextvars`` rather than keeping long-lived ``bind()`` results,
which keep the level they were created with.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, BinaryIO, TextIO, cast

import orjson
import structlog
from structlog.contextvars import STRUCTLOG_KEY_PREFIX, STRUCTLOG_KEY_PREFIX_LEN
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = ["LEVELS", "HotLog", "configure_logging", "get_logger", "reset_logging", "set_level"]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("auto", "json", "console")

# The root handler this module installed, so that reconfiguring replaces it instead of adding one.
_handler: logging.Handler | None = None


@dataclass(frozen=True, slots=True)
class _JsonLines:
    """What configure_logging installed for JSON lines to a binary stream (see HotLog): while
    structlog's configuration still holds these very objects, a line can be written without the
    chain and means the same bytes."""

    processors: list[Processor]
    chain: tuple[Processor, ...]  # what the list held (capture_logs swaps its items in place)
    wrapper_class: type
    logger_factory: Any
    level: int
    stamp: _UtcStamp
    render: Processor
    out: Any  # a BytesLogger on the stream: its lock, write and flush


_json_lines: _JsonLines | None = None
# Keys the chain sets or reads itself: a line passing one as a field goes through the chain.
_RESERVED = frozenset({"ts", "level", "event", "logger_name", "exc_info", "exception"})


def _level_number(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}"
        ) from None


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _binary_buffer(stream: TextIO) -> BinaryIO | None:
    buffer = getattr(stream, "buffer", None)
    return cast(BinaryIO, buffer) if buffer is not None and hasattr(buffer, "write") else None


def _lead_keys(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Put ``ts``, ``level`` and ``event`` first, so JSON lines read well in ``journalctl``."""
    lead = {key: event_dict.pop(key) for key in ("ts", "level", "event") if key in event_dict}
    lead.update(event_dict)
    return lead


def _logger_key(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Log get_logger()'s name as ``logger``, the key stdlib records use too.

    structlog reserves the ``logger`` keyword of ``get_logger()``, so the name is bound as
    ``logger_name`` and renamed here.
    """
    if "logger_name" in event_dict:
        event_dict["logger"] = event_dict.pop("logger_name")
    return event_dict


class _UtcStamp:
    """``ts`` as TimeStamper(fmt="iso", utc=True) writes it (``2026-01-02T03:04:05.123456Z``, no
    fraction at a whole second), with the part up to the seconds formatted once per second:
    building and formatting a datetime per line was a sixth of a webhook's log line (issue 13)."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        second, micros = divmod(time.time_ns() // 1000, 1_000_000)
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._prefix}.{micros:06d}Z" if micros else f"{self._prefix}Z"


_LEVEL_NAMES = {"warn": "warning", "exception": "error"}  # as structlog's add_log_level maps them


def _json_head(stamp: _UtcStamp) -> Processor:
    """One processor doing what merge_contextvars, add_log_level, the ``ts`` stamp, _logger_key and
    _lead_keys do in turn, to the same dict (a webhook writes a line per request: issue 13)."""

    def head(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        for var in contextvars.copy_context():
            name = var.name
            if name.startswith(STRUCTLOG_KEY_PREFIX):
                value = var.get()
                if value is not Ellipsis:
                    event_dict.setdefault(name[STRUCTLOG_KEY_PREFIX_LEN:], value)
        event_dict["level"] = _LEVEL_NAMES.get(method, method)
        event_dict["ts"] = stamp()
        if "logger_name" in event_dict:
            event_dict["logger"] = event_dict.pop("logger_name")
        return _lead_keys(logger, method, event_dict)

    return head


def _orjson_str(obj: Any, **kwargs: Any) -> str:
    return orjson.dumps(obj, **kwargs).decode()


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger to write ``fmt`` lines at ``level``+.

    ``stream`` defaults to ``sys.stderr`` (looked up now, not at import), keeping stdout for
    command output. Raises ValueError for an unknown level or format.
    """
    global _handler
    number = _level_number(level)
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")
    out = sys.stderr if stream is None else stream
    console = fmt == "console" or (fmt == "auto" and _is_tty(out))

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts")
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamper,
    ]
    logger_factory: Any
    final: list[Processor]  # the chain of syncd's own events
    if console:
        colors = _is_tty(out) and "NO_COLOR" not in os.environ
        # plain_traceback: rich's pretty tracebacks print local variables, which may hold secrets.
        renderer: Processor = structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        )
        final = [*shared, _logger_key, renderer]
        foreign_final = [renderer]
        logger_factory = structlog.WriteLoggerFactory(file=out)
    else:
        exc = structlog.processors.format_exc_info
        buffer = _binary_buffer(out)
        text_json = structlog.processors.JSONRenderer(serializer=_orjson_str)
        # syncd's own events: the shared chain, _logger_key and _lead_keys in one processor.
        stamp = _UtcStamp()
        own: list[Processor] = [_json_head(stamp), exc]
        if buffer is not None:
            render = structlog.processors.JSONRenderer(serializer=orjson.dumps)
            final = [*own, render]
            logger_factory = structlog.BytesLoggerFactory(file=buffer)
        else:
            final = [*own, text_json]
            logger_factory = structlog.WriteLoggerFactory(file=out)
        foreign_final = [exc, _lead_keys, text_json]

    wrapper_class = structlog.make_filtering_bound_logger(number)
    structlog.configure(
        processors=final,
        wrapper_class=wrapper_class,
        context_class=dict,
        logger_factory=logger_factory,
        # Not cached: a cached logger would keep its level, and set_level() must reach it.
        cache_logger_on_first_use=False,
    )
    global _json_lines
    _json_lines = None
    if not console and buffer is not None:
        _json_lines = _JsonLines(
            final,
            tuple(final),
            wrapper_class,
            logger_factory,
            number,
            stamp,
            render,
            logger_factory(),
        )

    # stdlib records (aiohttp.access, asyncio, ...) run through the same processors.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *shared,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *foreign_final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(number)
    _handler = handler


def set_level(level: str) -> None:
    """Change the level of every logger, structlog and stdlib, without touching the format."""
    global _json_lines
    number = _level_number(level)
    wrapper_class = structlog.make_filtering_bound_logger(number)
    structlog.configure(wrapper_class=wrapper_class)
    logging.getLogger().setLevel(number)
    if _json_lines is not None:
        _json_lines = replace(_json_lines, wrapper_class=wrapper_class, level=number)


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """A structlog logger; ``name`` (e.g. ``__name__``) is logged as the ``logger`` key."""
    if name is None:
        return cast(FilteringBoundLogger, structlog.get_logger())
    return cast(FilteringBoundLogger, structlog.get_logger(logger_name=name))


def reset_logging() -> None:
    """Undo :func:`configure_logging` (structlog defaults, our root handler removed); for tests."""
    global _handler, _json_lines
    _json_lines = None
    structlog.reset_defaults()
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None
    logging.getLogger().setLevel(logging.WARNING)


class HotLog:
    """A logger for a line written once per request or pass (the webhook's canonical line, issue
    13; a pass's ``sync_pass`` and its pages' debug lines, issue 11): the same line as
    ``logger.info(...)``, at a fraction of the cost (15 us against 33; a debug line filtered out,
    about 1 us against 8).

    While structlog runs the JSON configuration ``configure_logging`` installed for a binary
    stream, a line is built and written here directly, in the order the chain gives (``ts``,
    ``level``, ``event``, the fields, the bound contextvars) and rendered by the chain's own
    renderer. Under any other configuration (console, text stream, ``capture_logs``, a level
    changed by hand), or for a line whose fields the chain treats specially, it goes through
    structlog: through a logger bound once per configuration rather than on every call.
    """

    __slots__ = ("_bound", "_key", "_logger")

    def __init__(self, logger: Any) -> None:
        self._logger = logger  # a structlog logger (lazy proxy) without bound values of its own
        self._key: tuple[object, ...] = ()
        self._bound: Any = None

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, "warning", event, fields)

    def _emit(self, number: int, method: str, event: str, fields: dict[str, Any]) -> None:
        config = structlog.get_config()
        lines = _json_lines
        if (
            lines is not None
            and config["processors"] is lines.processors
            and tuple(lines.processors) == lines.chain
            and config["wrapper_class"] is lines.wrapper_class
            and config["logger_factory"] is lines.logger_factory
            and _RESERVED.isdisjoint(fields)
        ):
            if number >= lines.level:
                _write_line(lines, method, event, fields)
            return
        key = (config["processors"], config["wrapper_class"], config["logger_factory"])
        if self._bound is None or any(a is not b for a, b in zip(key, self._key, strict=True)):
            self._bound, self._key = self._logger.bind(), key
        getattr(self._bound, method)(event, **fields)


def _write_line(lines: _JsonLines, method: str, event: str, fields: dict[str, Any]) -> None:
    """One line as the chain makes it (see _json_head), without the chain."""
    line: EventDict = {"ts": lines.stamp(), "level": method, "event": event}
    line.update(fields)
    # Walk the context's variables only when one of structlog's is bound here (a pass binds
    # source and pass_id; a webhook's context binds nothing): the walk was a quarter of the line.
    # tuple(): a copy taken at once, whatever another thread binds meanwhile.
    if _STRUCTLOG_VARS is None or any(
        var.get() is not Ellipsis for var in tuple(_STRUCTLOG_VARS.values())
    ):
        _merge_contextvars(line)
    if "logger_name" in line:  # as _json_head renames it
        line["logger"] = line.pop("logger_name")
    lines.out.msg(lines.render(lines.out, method, line))


# structlog's own variables (private; when it has none by that name, every context is walked).
_STRUCTLOG_VARS: dict[str, contextvars.ContextVar[Any]] | None = getattr(
    structlog.contextvars, "_CONTEXT_VARS", None
)


def _merge_contextvars(line: EventDict) -> None:
    """The bound contextvars into ``line``, as merge_contextvars adds them (same order)."""
    for var in contextvars.copy_context():
        name = var.name
        if name.startswith(STRUCTLOG_KEY_PREFIX):
            value = var.get()
            key = name[STRUCTLOG_KEY_PREFIX_LEN:]
            if value is not Ellipsis:
                line.setdefault(key, value)
