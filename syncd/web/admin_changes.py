"""The change log over the admin API: batches with long-poll, and a Server-Sent Events stream.

``GET /changes?after=SEQ&limit=N&wait=SECONDS`` answers ``{"changes": [...], "next_after": SEQ,
"head_seq": SEQ}``; with ``wait`` and nothing new yet it holds the request until an entry commits or
``wait`` runs out. ``GET /changes/stream?after=SEQ`` is a Server-Sent Events stream, one event per
entry with ``id:`` = seq, so a reconnecting EventSource resumes with ``Last-Event-ID``. Both take
``kind=GLOB`` (repeated, or a comma list): only entries whose kind matches one of the globs. A reader
that asks for entries retention already pruned gets 410 ``changelog_gap`` (or a ``gap`` event
mid-stream). Waiters wake on the daemon's own commits (the store's HeadSignal), never by polling
SQLite; they all let go when the daemon starts stopping. Record format: docs/changelog.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from aiohttp import web

from syncd.errors import ChangelogGap
from syncd.metrics import CHANGE_STREAM_CLIENTS
from syncd.model import Change
from syncd.store import Store, changelog
from syncd.web.app import error_response, json_response


@dataclass(frozen=True, slots=True)
class FeedOptions:
    """Limits of the change-log endpoints (tests pass tiny ones)."""

    default_limit: int = 100
    max_limit: int = 1000
    max_wait: float = 60.0
    keepalive: float = 15.0
    stream_batch: int = 500


class ChangeFeed:
    """Reads the change log for HTTP clients and waits for it to grow."""

    def __init__(
        self, store: Store, stopping: asyncio.Event, options: FeedOptions | None = None
    ) -> None:
        self._store = store
        self._stopping = stopping
        self.options = options or FeedOptions()

    @property
    def head(self) -> int:
        return self._store.changelog_head.head

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def read(self, after: int, limit: int, kinds: Sequence[str] = ()) -> changelog.Batch:
        """Entries after ``after`` (at most ``limit``), of the ``kinds`` globs only when given;
        ChangelogGap when some were pruned."""
        return await self._store.read(
            lambda conn: changelog.read_batch(conn, after, limit, kinds=kinds)
        )

    async def read_waiting(
        self, position: int, limit: int, kinds: Sequence[str], within: float
    ) -> changelog.Batch:
        """After a read that found nothing up to ``position``: wait up to ``within`` seconds for
        an entry (of ``kinds``) to commit and read it; entries of other kinds move the position
        and the wait goes on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        batch = changelog.Batch([], position)
        while not batch.entries:
            left = deadline - loop.time()
            if left <= 0 or not await self.wait(batch.position, left):
                break
            batch = await self.read(batch.position, limit, kinds)
        return batch

    async def wait(self, after: int, within: float) -> bool:
        """Wait up to ``within`` seconds for an entry after ``after``; False on timeout or stop."""
        if self._stopping.is_set():
            return False
        moved = asyncio.ensure_future(self._store.changelog_head.wait_past(after))
        stopped = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait(
                [moved, stopped], timeout=within, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in (moved, stopped):
                waiter.cancel()
            await asyncio.gather(moved, stopped, return_exceptions=True)
        return moved in done and not moved.cancelled()


CHANGE_FEED = web.AppKey("change_feed", ChangeFeed)
SEQ_MAX = 2**63 - 1  # the largest seq SQLite can store


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise web.HTTPBadRequest(reason=f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(reason=f"{name} must be between {low:g} and {high:g}, got {raw}")
    return value


def _integer(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    value = _number(request, name, default, low, high)
    if value != int(value):
        raise web.HTTPBadRequest(reason=f"{name} must be a whole number, got {value:g}")
    return int(value)


def _kinds(request: web.Request) -> tuple[str, ...]:
    """The ``kind`` globs asked for (repeated or comma-separated; none: every kind)."""
    try:
        return changelog.split_kind_globs(request.query.getall("kind", []))
    except ValueError as exc:
        raise web.HTTPBadRequest(reason=f"kind: {exc}") from None


def gap_response(exc: ChangelogGap) -> web.Response:
    """410 in the one error envelope: re-read the mirror, then resume at the head."""
    return error_response(410, "changelog_gap", f"{exc.message}; {exc.hint}")


async def list_changes(request: web.Request) -> web.Response:
    """``GET /changes``: one batch, optionally long-polled."""
    feed = request.app[CHANGE_FEED]
    opts = feed.options
    after = _integer(request, "after", 0, 0, SEQ_MAX)
    limit = _integer(request, "limit", opts.default_limit, 1, opts.max_limit)
    wait = _number(request, "wait", 0.0, 0.0, opts.max_wait)
    kinds = _kinds(request)
    try:
        batch = await feed.read(after, limit, kinds)
        if not batch.entries and wait > 0:
            with CHANGE_STREAM_CLIENTS.labels(kind="long_poll").track_inprogress():
                batch = await feed.read_waiting(batch.position, limit, kinds, wait)
    except ChangelogGap as exc:
        return gap_response(exc)
    return json_response(
        {
            "changes": [e.to_record() for e in batch.entries],
            # With a kind filter it can pass the last entry: the other kinds up to it are read.
            "next_after": batch.position,
            "head_seq": feed.head,
        }
    )


def _event(entry: Change) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (entry.seq, orjson.dumps(entry.to_record()))


def _gap_event(exc: ChangelogGap) -> bytes:
    body = {"after": exc.after, "oldest": exc.oldest, "message": exc.message, "hint": exc.hint}
    return b"event: gap\ndata: %s\n\n" % orjson.dumps(body)


def _resume_point(request: web.Request) -> int:
    """``Last-Event-ID`` (a reconnecting EventSource) wins over ``?after=``."""
    last_id = request.headers.get("Last-Event-ID", "").strip()
    if not last_id:
        return _integer(request, "after", 0, 0, SEQ_MAX)
    # ASCII digits only ("²".isdigit() is true, and int() refuses it), and a seq SQLite can hold
    # (measured before int(), which refuses 4,300+ digits).
    digits = last_id.lstrip("0") or "0"
    if not (last_id.isascii() and last_id.isdigit()) or len(digits) > 19 or int(digits) > SEQ_MAX:
        raise web.HTTPBadRequest(reason=f"Last-Event-ID must be a seq, got {last_id[:40]!r}")
    return int(digits)


async def stream_changes(request: web.Request) -> web.StreamResponse:
    """``GET /changes/stream``: entries as Server-Sent Events until the client or daemon leaves."""
    feed = request.app[CHANGE_FEED]
    opts = feed.options
    after = _resume_point(request)
    kinds = _kinds(request)
    try:
        batch = await feed.read(after, opts.stream_batch, kinds)  # a gap is still a plain 410 here
    except ChangelogGap as exc:
        return gap_response(exc)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: pass events through as they come
        }
    )
    await response.prepare(request)
    with CHANGE_STREAM_CLIENTS.labels(kind="sse").track_inprogress():
        try:
            while not feed.stopping:
                if batch.entries:
                    await response.write(b"".join(_event(e) for e in batch.entries))
                elif not await feed.wait(batch.position, opts.keepalive):
                    if feed.stopping:
                        break
                    await response.write(b": keepalive\n\n")  # also how a gone client is noticed
                batch = await feed.read(batch.position, opts.stream_batch, kinds)
        except ChangelogGap as exc:
            await response.write(_gap_event(exc))
        except ConnectionResetError:  # the client went away
            return response
    return response


def add_change_routes(app: web.Application, feed: ChangeFeed) -> None:
    """Register the change-log endpoints on the admin app."""
    app[CHANGE_FEED] = feed
    app.router.add_get("/changes", list_changes)
    app.router.add_get("/changes/stream", stream_changes)
