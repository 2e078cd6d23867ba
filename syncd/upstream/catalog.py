"""Square's SearchCatalogObjects as a ``CatalogSource``: what each count's ``catalog_object_id`` is.

``POST /v2/catalog/search`` with::

    {"object_types": ["ITEM", "ITEM_VARIATION"], "include_deleted_objects": true,
     "limit": 1000, "begin_time": "<latest_time of the previous chain>", "cursor": "..."}

``begin_time`` is left out for a full read; it is exclusive (an object whose ``updated_at`` equals
it is not returned), so the previous chain's ``latest_time`` is exactly the next ``begin_time``.
``cursor`` is sent from the second page of a chain on; a chain ends when the answer has no cursor
(a short page is not the end: Square's ``limit`` is advisory). Deleted objects are asked for, so
a deletion reaches the mirror as ``is_deleted`` rather than as silence.

How an answer maps (``syncd.model``), every field checked; anything off is an
``UpstreamDataError`` naming the field (``objects[3].item_variation_data.sku``), its index and
the object's id:

- ``ITEM`` -> ``CatalogItem``: ``id`` -> ``item_id``, ``item_data.name`` -> ``name``,
  ``item_data.variations[].id`` -> ``variation_ids``.
- ``ITEM_VARIATION`` -> ``CatalogVariation``: ``id`` -> ``variation_id``, and from
  ``item_variation_data``: ``item_id``, ``name``, ``sku`` (None when absent or empty), ``upc`` ->
  ``gtin``, ``measurement_unit_id``, ``track_inventory``, and ``location_overrides[]``
  (``location_id``, ``track_inventory``) -> ``location_track_inventory``.
- Both: ``is_deleted`` (absent: false), ``version`` (a JSON integer; proto3's decimal-string
  spelling of an int64 is read too), ``updated_at`` (RFC 3339, kept as given, plus its instant),
  ``present_at_all_locations``. The data object (``item_data`` / ``item_variation_data``) may be
  absent only on a deleted object; a live variation must name its ``item_id``.
- Objects of any other type are skipped and counted (``CatalogPage.skipped``, by type).
- ``cursor``, ``latest_time`` (RFC 3339) as given; a missing ``objects`` array is an empty page
  (Square omits empty arrays); ``errors`` on a 200 is a data error.

Retries, the token port (``tokens=``, one refresh after a 401) and the error types are the counts
client's (``syncd.upstream.square``); a 400 ``INVALID_CURSOR`` is flagged ``cursor_invalid`` so
the caller restarts the chain.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
import structlog

from syncd.errors import UpstreamDataError, UpstreamError
from syncd.logs import HotLog
from syncd.model import (
    CATALOG_ITEM,
    CATALOG_ITEM_VARIATION,
    CatalogItem,
    CatalogPage,
    CatalogVariation,
)
from syncd.timeutil import TimestampError, parse_http_date_ns, parse_ns
from syncd.upstream.http import (
    STATUS_HINTS,
    JsonResponse,
    RetryInfo,
    parse_vendor_errors,
    request_json,
)
from syncd.upstream.square import (
    INVALID_CURSOR,
    AccessTokens,
    SquareOptions,
    authorized,
    has_code,
    request_headers,
)

if TYPE_CHECKING:
    from syncd.sync.ports import CatalogSource

log = HotLog(structlog.get_logger(__name__))  # a line or two per page and pass

OP_SEARCH_CATALOG = "square.search_catalog"
SEARCH_CATALOG_PATH = "/v2/catalog/search"
OBJECT_TYPES = (CATALOG_ITEM, CATALOG_ITEM_VARIATION)
MAX_LIMIT = 1000  # Square's search_max_page_limit; a larger limit is ignored, not an error
CATALOG_STATUS_HINTS: Mapping[int, str] = {
    **STATUS_HINTS,
    403: "the token lacks a scope (ITEMS_READ)",
}

Where = tuple[str, int, str | None]  # (field path of the object, its index, its id)


class SquareCatalog:
    """Pages of catalog items and variations from Square; implements
    ``syncd.sync.ports.CatalogSource``.

    The session is owned by the caller. ``options`` are the counts client's (base URL, token,
    ``Square-Version``, retry policy; the counts filters are not used). ``sleep``, ``rand`` and
    ``on_retry`` pass through to ``request_json``; ``tokens`` is an OAuth source's token port.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        options: SquareOptions,
        *,
        page_limit: int = MAX_LIMIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        on_retry: Callable[[RetryInfo], None] | None = None,
        tokens: AccessTokens | None = None,
    ) -> None:
        self._session = session
        self._options = options
        self._limit = _checked_limit(page_limit)
        self._tokens = tokens
        self._url = options.base_url.rstrip("/") + SEARCH_CATALOG_PATH
        self._headers = request_headers(options)
        self._sleep = sleep
        self._rand = rand
        self._on_retry = on_retry

    async def search_catalog(
        self, *, begin_time: str | None, cursor: str | None, limit: int | None = None
    ) -> CatalogPage:
        """One page of ITEM and ITEM_VARIATION objects (deleted ones included) changed after
        ``begin_time`` (None: all), continuing the chain at ``cursor`` (None: its first page)."""
        body = request_body(
            begin_time=begin_time,
            cursor=cursor,
            limit=self._limit if limit is None else _checked_limit(limit),
        )
        response = await self._post(body, had_cursor=cursor is not None)
        page = parse_catalog_page(response.body, date=response.date)
        log.debug(
            "upstream_catalog_page",
            op=OP_SEARCH_CATALOG,
            objects=len(page.objects),
            skipped=page.skipped,
            has_cursor=page.cursor is not None,
            incremental=begin_time is not None,
            duration_ms=round(response.elapsed * 1000, 1),
        )
        if page.cursor is not None and page.cursor == cursor:
            raise UpstreamDataError(
                f"{OP_SEARCH_CATALOG}: the cursor did not advance",
                status=200,
                op=OP_SEARCH_CATALOG,
                field="cursor",
                hint="restart the cursor chain from the first page",
            )
        return page

    async def _post(self, body: dict[str, Any], *, had_cursor: bool) -> JsonResponse:
        """One retried POST; a 400 INVALID_CURSOR is flagged so the caller restarts the chain."""

        def send(headers: dict[str, str]) -> Awaitable[JsonResponse]:
            return request_json(
                self._session,
                "POST",
                self._url,
                op=OP_SEARCH_CATALOG,
                policy=self._options.policy,
                json_body=body,
                headers=headers,
                sleep=self._sleep,
                rand=self._rand,
                on_retry=self._on_retry,
                status_hints=CATALOG_STATUS_HINTS,
            )

        try:
            return await authorized(self._tokens, self._headers, send)
        except UpstreamError as exc:
            if exc.status == 400 and has_code(exc.vendor_errors, INVALID_CURSOR):
                raise UpstreamError(
                    f"{OP_SEARCH_CATALOG}: Square rejected the cursor ({INVALID_CURSOR})",
                    status=400,
                    vendor_errors=exc.vendor_errors,
                    retryable=False,
                    op=OP_SEARCH_CATALOG,
                    hint="restart the cursor chain from the first page",
                    cursor_invalid=True,
                    had_cursor=had_cursor,
                ) from exc
            raise


def _checked_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def request_body(*, begin_time: str | None, cursor: str | None, limit: int) -> dict[str, Any]:
    """The SearchCatalogObjects body; ``begin_time`` and ``cursor`` only when set."""
    body: dict[str, Any] = {
        "object_types": list(OBJECT_TYPES),
        "include_deleted_objects": True,
        "limit": limit,
    }
    if begin_time is not None:
        body["begin_time"] = begin_time
    if cursor is not None:
        body["cursor"] = cursor
    return body


def parse_catalog_page(body: Any, *, date: str | None = None) -> CatalogPage:
    """Turn one decoded SearchCatalogObjectsResponse into a ``CatalogPage``; any shape problem
    is an ``UpstreamDataError`` naming the field."""
    if not isinstance(body, dict):
        _data_error(f"response is not a JSON object but {type(body).__name__}", field="$")
    if body.get("errors"):
        raise UpstreamDataError(
            f"{OP_SEARCH_CATALOG}: a 200 response carries errors",
            status=200,
            vendor_errors=parse_vendor_errors(200, body),
            op=OP_SEARCH_CATALOG,
            field="errors",
        )
    raw_objects = body.get("objects")
    if raw_objects is None:  # Square omits empty arrays
        raw_objects = []
    if not isinstance(raw_objects, list):
        _data_error(f"objects is not a list but {type(raw_objects).__name__}", field="objects")
    cursor = body.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        _data_error(f"cursor is not a string but {type(cursor).__name__}", field="cursor")
    latest_time = body.get("latest_time")
    if latest_time is not None:
        _timestamp(latest_time, "latest_time", None)
    objects: list[CatalogItem | CatalogVariation] = []
    skipped: Counter[str] = Counter()
    stamps: dict[str, int] = {}
    for index, raw in enumerate(raw_objects):
        parsed: CatalogItem | CatalogVariation | str | None = _quick_object(raw, stamps)
        if parsed is None:
            parsed = _object(raw, index)
        if isinstance(parsed, str):
            skipped[parsed] += 1
        else:
            objects.append(parsed)
    return CatalogPage(
        tuple(objects),
        cursor or None,
        latest_time,
        skipped=sum(skipped.values()),
        skipped_types=tuple(sorted(skipped.items())),
        server_date_ns=parse_http_date_ns(date),
    )


_NONE = type(None)
_new = tuple.__new__
_STR_OR_NONE = frozenset({str, _NONE})
_BOOL_OR_NONE = frozenset({bool, _NONE})


def _quick_object(raw: Any, stamps: dict[str, int]) -> CatalogItem | CatalogVariation | None:
    """The record of a well-formed live ITEM or ITEM_VARIATION, checked as :func:`_object` checks
    it; None for anything else (another type, a deleted object, a field to look at closer, an
    error), which :func:`_object` then reads or names.

    The fast path of a first sync, run per object: exact ``type()`` checks instead of a helper call
    per field, no field paths built unless something is wrong, and ``updated_at`` parsed once per
    distinct text per page (``stamps``: objects edited together share it).
    """
    if type(raw) is not dict:
        return None
    kind = raw.get("type")
    object_id = raw.get("id")
    updated_at = raw.get("updated_at")
    version = raw.get("version")
    deleted = raw.get("is_deleted")
    present = raw.get("present_at_all_locations")
    if (
        type(object_id) is not str
        or not object_id
        or type(version) is not int
        or version < 0
        or (deleted is not None and deleted is not False)
        or type(present) not in _BOOL_OR_NONE
        or type(updated_at) is not str
    ):
        return None
    updated_ns = stamps.get(updated_at)
    if updated_ns is None:
        try:
            updated_ns = stamps[updated_at] = parse_ns(updated_at)
        except TimestampError:
            return None
    if kind == CATALOG_ITEM_VARIATION:
        return _quick_variation(raw, object_id, version, updated_at, updated_ns, present)
    if kind == CATALOG_ITEM:
        return _quick_item(raw, object_id, version, updated_at, updated_ns, present)
    return None


def _quick_variation(
    raw: dict[str, Any],
    object_id: str,
    version: int,
    updated_at: str,
    updated_ns: int,
    present: bool | None,
) -> CatalogVariation | None:
    """:func:`_quick_object` for a live ITEM_VARIATION."""
    data = raw.get("item_variation_data")
    if type(data) is not dict:
        return None
    get = data.get
    item_id, name, sku, upc = get("item_id"), get("name"), get("sku"), get("upc")
    unit, track, overrides = (
        get("measurement_unit_id"),
        get("track_inventory"),
        get("location_overrides"),
    )
    if (
        type(item_id) is not str
        or type(name) not in _STR_OR_NONE
        or type(sku) not in _STR_OR_NONE
        or type(upc) not in _STR_OR_NONE
        or type(unit) not in _STR_OR_NONE
        or type(track) not in _BOOL_OR_NONE
    ):
        return None
    tracked: tuple[tuple[str, bool], ...] = ()
    if overrides is not None:
        quick = _quick_overrides(overrides)
        if quick is None:
            return None
        tracked = quick
    # tuple.__new__, as a named tuple's own _make does: its __new__ is a Python function taking
    # every field by name, twice the cost again on the hot path.
    return _new(
        CatalogVariation,
        (
            object_id,
            item_id,
            name,
            sku or None,
            upc or None,
            unit,
            track,
            False,
            version,
            updated_at,
            updated_ns,
            present,
            tracked,
        ),
    )


def _quick_overrides(raw: Any) -> tuple[tuple[str, bool], ...] | None:
    """:func:`_overrides` of a well-formed list, else None."""
    if type(raw) is not list:
        return None
    out: list[tuple[str, bool]] = []
    for override in raw:
        if type(override) is not dict:
            return None
        location_id, track = override.get("location_id"), override.get("track_inventory")
        if type(location_id) is not str or not location_id or type(track) not in _BOOL_OR_NONE:
            return None
        if track is not None:
            out.append((location_id, track))
    return tuple(out)


def _quick_item(
    raw: dict[str, Any],
    object_id: str,
    version: int,
    updated_at: str,
    updated_ns: int,
    present: bool | None,
) -> CatalogItem | None:
    """:func:`_quick_object` for a live ITEM."""
    data = raw.get("item_data")
    if type(data) is not dict:
        return None
    name, nested = data.get("name"), data.get("variations")
    if type(name) not in _STR_OR_NONE:
        return None
    ids: list[str] = []
    if nested is not None:
        if type(nested) is not list:
            return None
        for variation in nested:
            if type(variation) is not dict:
                return None
            nested_id, nested_kind = variation.get("id"), variation.get("type")
            if type(nested_id) is not str or not nested_id:
                return None
            if nested_kind is not None and nested_kind != CATALOG_ITEM_VARIATION:
                return None
            ids.append(nested_id)
    return _new(
        CatalogItem, (object_id, name, False, version, updated_at, updated_ns, present, tuple(ids))
    )


def _object(raw: Any, index: int) -> CatalogItem | CatalogVariation | str:
    """One CatalogObject: a record for the mirrored types, else its type name (skipped). Every
    field checked, and any problem named (what :func:`_quick_object` leaves to it)."""
    at: Where = (f"objects[{index}]", index, None)
    if not isinstance(raw, dict):
        _data_error(f"{at[0]} is not an object but {type(raw).__name__}", field=at[0], index=index)
    kind = raw.get("type")
    if not isinstance(kind, str) or not kind:
        _fail(at, "type", f"is missing or not a non-empty string: {_short(kind)}")
    object_id = raw.get("id")
    if not isinstance(object_id, str) or not object_id:
        _fail(at, "id", f"is missing or not a non-empty string: {_short(object_id)}")
    if kind not in OBJECT_TYPES:
        return kind
    at = (at[0], index, object_id)
    updated_at = raw.get("updated_at")
    updated_ns = _timestamp(updated_at, "updated_at", at)
    assert isinstance(updated_at, str)
    version = _version(raw.get("version"), at)
    is_deleted = _bool(raw, "is_deleted", at)
    present = _bool(raw, "present_at_all_locations", at)
    data_key = "item_data" if kind == CATALOG_ITEM else "item_variation_data"
    data = raw.get(data_key)
    if data is None and not is_deleted:
        _fail(at, data_key, f"is missing on a live {kind}")
    if data is not None and not isinstance(data, dict):
        _fail(at, data_key, f"is not an object but {type(data).__name__}")
    deleted = bool(is_deleted)
    if kind == CATALOG_ITEM:
        return CatalogItem(
            item_id=object_id,
            name=_text(data, "name", at, data_key),
            is_deleted=deleted,
            version=version,
            updated_at=updated_at,
            updated_at_ns=updated_ns,
            present_at_all_locations=present,
            variation_ids=_variation_ids(data, at),
        )
    item_id = _text(data, "item_id", at, data_key)
    if item_id is None and not deleted:
        _fail(at, f"{data_key}.item_id", "is missing on a live ITEM_VARIATION")
    return CatalogVariation(
        variation_id=object_id,
        item_id=item_id,
        name=_text(data, "name", at, data_key),
        sku=_text(data, "sku", at, data_key) or None,
        gtin=_text(data, "upc", at, data_key) or None,
        measurement_unit_id=_text(data, "measurement_unit_id", at, data_key),
        track_inventory=None if data is None else _bool(data, "track_inventory", at, data_key),
        is_deleted=deleted,
        version=version,
        updated_at=updated_at,
        updated_at_ns=updated_ns,
        present_at_all_locations=present,
        location_track_inventory=_overrides(data, at, data_key),
    )


def _variation_ids(data: dict[str, Any] | None, at: Where) -> tuple[str, ...]:
    """The ids of ``item_data.variations`` (nested ITEM_VARIATION objects)."""
    raw = None if data is None else data.get("variations")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        _fail(at, "item_data.variations", f"is not a list but {type(raw).__name__}")
    ids: list[str] = []
    for i, nested in enumerate(raw):
        where = f"item_data.variations[{i}]"
        if not isinstance(nested, dict):
            _fail(at, where, f"is not an object but {type(nested).__name__}")
        kind = nested.get("type")
        if kind is not None and kind != CATALOG_ITEM_VARIATION:
            _fail(at, f"{where}.type", f"is not ITEM_VARIATION: {_short(kind)}")
        nested_id = nested.get("id")
        if not isinstance(nested_id, str) or not nested_id:
            _fail(at, f"{where}.id", f"is missing or not a non-empty string: {_short(nested_id)}")
        ids.append(nested_id)
    return tuple(ids)


def _overrides(
    data: dict[str, Any] | None, at: Where, data_key: str
) -> tuple[tuple[str, bool], ...]:
    """``location_overrides[]`` as (location_id, track_inventory) where track_inventory is set."""
    raw = None if data is None else data.get("location_overrides")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        _fail(at, f"{data_key}.location_overrides", f"is not a list but {type(raw).__name__}")
    out: list[tuple[str, bool]] = []
    for i, override in enumerate(raw):
        where = f"{data_key}.location_overrides[{i}]"
        if not isinstance(override, dict):
            _fail(at, where, f"is not an object but {type(override).__name__}")
        location_id = override.get("location_id")
        if not isinstance(location_id, str) or not location_id:
            _fail(at, f"{where}.location_id", f"is not a non-empty string: {_short(location_id)}")
        track = _bool(override, "track_inventory", at, where)
        if track is not None:
            out.append((location_id, track))
    return tuple(out)


def _timestamp(value: Any, name: str, at: Where | None) -> int:
    """The instant of an RFC 3339 string field, else a data error."""
    if isinstance(value, str):
        try:
            return parse_ns(value)
        except TimestampError:
            pass
    message = f"is not an RFC 3339 timestamp: {_short(value)}"
    if at is None:
        _data_error(f"{name} {message}", field=name)
    _fail(at, name, message)


def _version(value: Any, at: Where) -> int:
    """A catalog version: a non-negative JSON integer, or its proto3 decimal-string form."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and 0 < len(value) <= 20 and value.isascii() and value.isdigit():
        return int(value)
    _fail(at, "version", f"is missing or not a non-negative integer: {_short(value)}")


def _bool(raw: dict[str, Any], name: str, at: Where, prefix: str | None = None) -> bool | None:
    """An optional boolean field (None when absent); ``prefix`` is the path of a nested object."""
    value = raw.get(name)
    if value is not None and not isinstance(value, bool):
        field = name if prefix is None else f"{prefix}.{name}"
        _fail(at, field, f"is not a boolean: {_short(value)}")
    return value


def _text(data: dict[str, Any] | None, name: str, at: Where, data_key: str) -> str | None:
    """An optional string field of the data object (None when absent or no data)."""
    value = None if data is None else data.get(name)
    if value is not None and not isinstance(value, str):
        _fail(at, f"{data_key}.{name}", f"is not a string: {_short(value)}")
    return value


def _short(value: Any) -> str:
    """A value for an error message: its repr, cut short (bodies are never logged whole)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(at: Where, name: str, message: str) -> NoReturn:
    """Raise the data error for one field of one object."""
    where, index, object_id = at
    context: dict[str, Any] = {"index": index}
    if object_id is not None:
        context["object_id"] = object_id
    _data_error(f"{where}.{name} {message}", field=f"{where}.{name}", **context)


def _data_error(message: str, *, field: str, **context: Any) -> NoReturn:
    raise UpstreamDataError(
        f"{OP_SEARCH_CATALOG}: {message}",
        status=200,
        op=OP_SEARCH_CATALOG,
        field=field,
        **context,
    )


if TYPE_CHECKING:
    # Static conformance: mypy fails here if SquareCatalog drifts from the engine's Protocol.
    def _conforms(source: SquareCatalog) -> CatalogSource:
        return source
