"""Square's BatchRetrieveInventoryCounts as a ``CountsSource``: request body, cursor chain, pages.

POST /v2/inventory/counts/batch-retrieve, following ``cursor`` until Square omits it (a short page
is not the end). Rows marked ``is_estimated`` are dropped and counted, since the API documents that
such counts are not part of this endpoint's results.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import aiohttp
import structlog

from syncd.errors import UpstreamDataError, UpstreamError
from syncd.logs import HotLog
from syncd.model import InvalidCount, InventoryCount, Page
from syncd.timeutil import parse_http_date_ns
from syncd.upstream.http import (
    JsonResponse,
    RetryInfo,
    RetryPolicy,
    parse_vendor_errors,
    request_json,
)

if TYPE_CHECKING:
    from syncd.sync.ports import CountsSource

log = HotLog(structlog.get_logger(__name__))  # a line or two per page and pass

OP_BATCH_RETRIEVE = "square.batch_retrieve_counts"
BATCH_RETRIEVE_PATH = "/v2/inventory/counts/batch-retrieve"
INVALID_CURSOR = "INVALID_CURSOR"
# The fields InventoryCount.from_api names first in its InvalidCount messages.
_COUNT_FIELDS = frozenset(
    {
        "catalog_object_id",
        "location_id",
        "state",
        "catalog_object_type",
        "quantity",
        "calculated_at",
    }
)


class AccessTokens(Protocol):
    """Where an OAuth source's bearer token comes from (``syncd.sync.credentials.TokenKeeper``)."""

    async def token(self) -> str:
        """The current access token, refreshed first when due."""
        ...

    async def rejected(self, token: str) -> str:
        """``token`` was answered 401: refresh once and return the new one."""
        ...


async def authorized(
    tokens: AccessTokens | None,
    headers: dict[str, str],
    send: Callable[[dict[str, str]], Awaitable[JsonResponse]],
) -> JsonResponse:
    """``send(headers)`` with the current bearer token; after a 401, once more with a fresh one."""
    if tokens is None:
        return await send(headers)
    token = await tokens.token()
    try:
        return await send({**headers, "Authorization": f"Bearer {token}"})
    except UpstreamError as exc:
        if exc.status != 401:
            raise
        log.info("upstream_token_rejected", op=exc.op, hint="refreshing the access token once")
    token = await tokens.rejected(token)
    return await send({**headers, "Authorization": f"Bearer {token}"})


@dataclasses.dataclass(frozen=True, slots=True)
class SquareOptions:
    """What the adapter needs from config (built at the edge). The token is kept out of ``repr``."""

    base_url: str
    access_token: str | None = dataclasses.field(repr=False)
    api_version: str
    states: tuple[str, ...] = ()
    catalog_object_ids: tuple[str, ...] = ()
    location_ids: tuple[str, ...] = ()
    page_limit: int = 1000
    policy: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)


MEMO_COUNTS = 200
"""The largest one-page answer ``SquareCounts`` remembers, in counts."""


class SquareCounts:
    """Pages of inventory counts from Square; implements ``syncd.sync.ports.CountsSource``.

    The session is owned by the caller. ``sleep``, ``rand`` and ``on_retry`` pass through to
    ``request_json`` (tests make backoff instant; the daemon counts retries in metrics).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        options: SquareOptions,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        on_retry: Callable[[RetryInfo], None] | None = None,
        tokens: AccessTokens | None = None,
    ) -> None:
        self._session = session
        self._tokens = tokens
        self._options = options
        self._url = options.base_url.rstrip("/") + BATCH_RETRIEVE_PATH
        self._headers = request_headers(options)
        self._sleep = sleep
        self._rand = rand
        self._on_retry = on_retry
        # The last one-page chain's request, answer and page (see ``_parse``).
        self._memo: tuple[dict[str, Any], Any, Page] | None = None

    async def pages(
        self, *, location_ids: Sequence[str] | None, updated_after: str | None
    ) -> AsyncIterator[Page]:
        """Yield one ``Page`` per response of a single cursor chain, in upstream order."""
        body = request_body(self._options, location_ids=location_ids, updated_after=updated_after)
        cursor: str | None = None
        number = 0
        while True:
            request = body if cursor is None else {**body, "cursor": cursor}
            response = await self._post(request, had_cursor=cursor is not None)
            page = self._parse(request, response)
            number += 1
            log.debug(
                "upstream_page",
                op=OP_BATCH_RETRIEVE,
                page=number,
                rows=len(page.counts),
                skipped=page.skipped,
                has_cursor=page.cursor is not None,
                duration_ms=round(response.elapsed * 1000, 1),
            )
            if page.cursor is not None and page.cursor == cursor:
                raise UpstreamDataError(
                    f"{OP_BATCH_RETRIEVE}: the cursor did not advance (page {number})",
                    op=OP_BATCH_RETRIEVE,
                    field="cursor",
                )
            yield page
            if page.cursor is None:
                return
            cursor = page.cursor

    def _parse(self, request: dict[str, Any], response: JsonResponse) -> Page:
        """``parse_page``, except that the same answer to the same one-page request as last
        time gives the same counts (the same tuple, not parsed again): an idle source's every
        pass re-reads what the overlap covers, unchanged until its next change (issue 11). The
        engine knows those counts applied already. Only small pages are remembered (one per
        source, at most ``MEMO_COUNTS``)."""
        memo = self._memo
        if memo is not None and memo[0] == request and memo[1] == response.body:
            return dataclasses.replace(memo[2], server_date_ns=parse_http_date_ns(response.date))
        page = parse_page(response.body, date=response.date)
        one_page = page.cursor is None and "cursor" not in request
        small = len(page.counts) + page.skipped <= MEMO_COUNTS
        self._memo = (request, response.body, page) if one_page and small else None
        return page

    async def _post(self, body: dict[str, Any], *, had_cursor: bool) -> JsonResponse:
        """One retried POST; a 400 INVALID_CURSOR is flagged so the engine restarts the chain."""

        def send(headers: dict[str, str]) -> Awaitable[JsonResponse]:
            return request_json(
                self._session,
                "POST",
                self._url,
                op=OP_BATCH_RETRIEVE,
                policy=self._options.policy,
                json_body=body,
                headers=headers,
                sleep=self._sleep,
                rand=self._rand,
                on_retry=self._on_retry,
            )

        try:
            return await authorized(self._tokens, self._headers, send)
        except UpstreamError as exc:
            if exc.status == 400 and has_code(exc.vendor_errors, INVALID_CURSOR):
                raise UpstreamError(
                    f"{OP_BATCH_RETRIEVE}: Square rejected the cursor ({INVALID_CURSOR})",
                    status=400,
                    vendor_errors=exc.vendor_errors,
                    retryable=False,
                    op=OP_BATCH_RETRIEVE,
                    hint="restart the cursor chain from the first page",
                    cursor_invalid=True,
                    had_cursor=had_cursor,
                ) from exc
            raise


def request_body(
    options: SquareOptions, *, location_ids: Sequence[str] | None, updated_after: str | None
) -> dict[str, Any]:
    """The batch-retrieve body with only the fields that are set (absent means "no filter")."""
    locations = tuple(location_ids) if location_ids is not None else options.location_ids
    body: dict[str, Any] = {}
    if locations:
        body["location_ids"] = list(locations)
    if options.catalog_object_ids:
        body["catalog_object_ids"] = list(options.catalog_object_ids)
    if options.states:
        body["states"] = list(options.states)
    if updated_after is not None:
        body["updated_after"] = updated_after
    body["limit"] = options.page_limit
    return body


def parse_page(body: Any, *, date: str | None) -> Page:
    """Turn one decoded response into a ``Page``; any shape problem is an ``UpstreamDataError``."""
    if not isinstance(body, dict):
        _data_error(f"response is not a JSON object but {type(body).__name__}", field="$")
    errors = body.get("errors")
    if errors:
        raise UpstreamDataError(
            f"{OP_BATCH_RETRIEVE}: a 200 response carries errors",
            status=200,
            vendor_errors=parse_vendor_errors(200, body),
            op=OP_BATCH_RETRIEVE,
            field="errors",
        )
    raw_counts = body.get("counts")
    if raw_counts is None:  # Square omits empty arrays
        raw_counts = []
    if not isinstance(raw_counts, list):
        _data_error(f"counts is not a list but {type(raw_counts).__name__}", field="counts")
    cursor = body.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        _data_error(f"cursor is not a string but {type(cursor).__name__}", field="cursor")
    counts, skipped = _parse_counts(raw_counts)
    return Page(tuple(counts), cursor or None, parse_http_date_ns(date), skipped)


def _parse_counts(
    raw_counts: list[Any], *, where: str = "counts", op: str = OP_BATCH_RETRIEVE
) -> tuple[list[InventoryCount], int]:
    """Parse each count, skipping ``is_estimated`` rows; errors name ``WHERE[i].field``."""
    counts: list[InventoryCount] = []
    skipped = 0
    for index, raw in enumerate(raw_counts):
        if isinstance(raw, dict):
            estimated = raw.get("is_estimated")
            if estimated is not None and not isinstance(estimated, bool):
                _data_error(
                    f"{where}[{index}].is_estimated is not a boolean: {estimated!r}",
                    field=f"{where}[{index}].is_estimated",
                    index=index,
                    op=op,
                )
            if estimated:
                skipped += 1
                continue
        try:
            counts.append(InventoryCount.from_api(raw))
        except InvalidCount as exc:
            name = str(exc).split(" ", 1)[0]
            at = f"{where}[{index}].{name}" if name in _COUNT_FIELDS else f"{where}[{index}]"
            raise UpstreamDataError(f"{op}: {at}: {exc}", op=op, field=at, index=index) from exc
    return counts, skipped


OP_COUNT_EVENT = "square.webhook_counts"


def parse_count_event(event: Any) -> tuple[InventoryCount, ...]:
    """The counts a decoded ``inventory.count.updated`` webhook carries
    (``data.object.inventory_counts``, up to 100; a state change arrives as two), in the same
    shape as batch-retrieve's; estimated counts are skipped. Any shape problem is an
    ``UpstreamDataError`` naming the field."""
    data = event.get("data") if isinstance(event, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    raw = obj.get("inventory_counts") if isinstance(obj, dict) else None
    if not isinstance(raw, list):
        _data_error(
            "data.object.inventory_counts is missing or not a list",
            field="data.object.inventory_counts",
            op=OP_COUNT_EVENT,
        )
    counts, _ = _parse_counts(raw, where="data.object.inventory_counts", op=OP_COUNT_EVENT)
    return tuple(counts)


def _data_error(
    message: str, *, field: str, index: int | None = None, op: str = OP_BATCH_RETRIEVE
) -> NoReturn:
    """Raise the data error for a malformed answer, naming the field (and the row's index)."""
    context: dict[str, Any] = {"field": field}
    if index is not None:
        context["index"] = index
    raise UpstreamDataError(f"{op}: {message}", status=200, op=op, **context)


def request_headers(options: SquareOptions) -> dict[str, str]:
    """Request headers; ``Authorization`` only when a token is configured."""
    headers = {
        "Square-Version": options.api_version,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    if options.access_token is not None:
        headers["Authorization"] = f"Bearer {options.access_token}"
    return headers


def has_code(vendor_errors: Sequence[dict[str, Any]], code: str) -> bool:
    """Whether any vendor error carries ``code``."""
    return any(err.get("code") == code for err in vendor_errors)


if TYPE_CHECKING:
    # Static conformance: mypy fails here if SquareCounts drifts from the engine's Protocol.
    def _conforms(source: SquareCounts) -> CountsSource:
        return source
