"""The simulator's Square protocol: request validation, cursors, error envelopes and page bodies.

Everything here is synchronous and touches only the Simulator it reads, so a benchmark or a test
can answer a batch-retrieve body without HTTP: ``answer(sim, parse_request(body, max_limit=1000))``,
and a SearchCatalogObjects body: ``answer_catalog(sim, parse_catalog_request(body))``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

import orjson

from syncd.model import UNTRACKED_STATES
from syncd.simulator.catalog import FAULTS, INVENTORY_STATES, Simulator
from syncd.simulator.library import CATALOG_OBJECT_TYPES, DEFAULT_OBJECT_TYPES, format_ms
from syncd.timeutil import TimestampError, parse_ns

INVALID_REQUEST = "INVALID_REQUEST_ERROR"
_FIELDS = frozenset(
    {"catalog_object_ids", "location_ids", "updated_after", "cursor", "states", "limit"}
)
_SQUARE_VERSION = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_CURSOR_VERSION = 1
_SHORT_PAGE_ODDS = 1 / 3  # short_pages: share of non-final pages cut short
_TRAILING_CURSOR_ODDS = 1 / 4  # short_pages: share of final pages that still send a cursor


def error(
    code: str, detail: str, *, field: str | None = None, category: str = INVALID_REQUEST
) -> dict[str, str]:
    """One Square ``Error`` object."""
    out = {"category": category, "code": code, "detail": detail}
    if field is not None:
        out["field"] = field
    return out


class SquareError(Exception):
    """An answer in Square's error envelope: ``{"errors": [...]}`` with an HTTP status."""

    def __init__(
        self, status: int, errors: list[dict[str, str]], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {', '.join(e['code'] for e in errors)}")
        self.status = status
        self.errors = errors
        self.headers = headers or {}

    def body(self) -> bytes:
        return orjson.dumps({"errors": self.errors})

    @classmethod
    def scripted(cls, status: int, retry_after: float | None = None) -> SquareError:
        category, code, detail = FAULTS[status]
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return cls(status, [error(code, detail, category=category)], headers)


def invalid_cursor(detail: str) -> SquareError:
    return SquareError(400, [error("INVALID_CURSOR", detail, field="cursor")])


def check_headers(
    authorization: str | None, square_version: str | None, access_token: str | None
) -> None:
    """Check the bearer token (when one is configured) and the ``Square-Version`` format."""
    if access_token is not None:
        expected = f"Bearer {access_token}".encode()
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
            raise SquareError.scripted(401)
    if square_version is not None and not _SQUARE_VERSION.match(square_version):
        raise SquareError(
            400,
            [
                error(
                    "INVALID_SQUARE_VERSION_FORMAT",
                    f"Square-Version {square_version!r} is not YYYY-MM-DD.",
                    field="Square-Version",
                )
            ],
        )


@dataclass(frozen=True, slots=True)
class Query:
    """A validated BatchRetrieveInventoryCountsRequest. Empty or null filters are None (not set)."""

    object_ids: frozenset[str] | None
    location_ids: frozenset[str] | None
    states: frozenset[str] | None
    updated_after_ns: int | None
    limit: int
    cursor: str | None

    def fingerprint(self) -> str:
        """What a cursor must match: the filters, not the position nor the limit."""

        def norm(values: frozenset[str] | None) -> list[str] | None:
            return None if values is None else sorted(values)

        raw = orjson.dumps(
            [
                norm(self.object_ids),
                norm(self.location_ids),
                norm(self.states),
                None if self.updated_after_ns is None else str(self.updated_after_ns),
            ]
        )
        return hashlib.sha256(raw).hexdigest()[:16]


def _strings(body: dict[str, Any], name: str, errors: list[dict[str, str]]) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        errors.append(error("EXPECTED_ARRAY", f"Expected `{name}` to be an array.", field=name))
        return None
    for i, item in enumerate(value):
        if not isinstance(item, str):
            errors.append(
                error(
                    "EXPECTED_STRING",
                    f"Expected `{name}[{i}]` to be a string.",
                    field=f"{name}[{i}]",
                )
            )
            return None
    return value


def parse_request(raw: bytes, *, max_limit: int) -> Query:
    """Validate a request body the way Square does; SquareError(400) lists every problem."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise SquareError(
            400, [error("EXPECTED_JSON_BODY", "The request body is not a JSON object.")]
        )
    errors = [
        error("UNKNOWN_BODY_PARAMETER", f"Unrecognized body parameter `{name}`.", field=name)
        for name in body
        if name not in _FIELDS
    ]
    object_ids = _strings(body, "catalog_object_ids", errors)
    location_ids = _strings(body, "location_ids", errors)
    states = _strings(body, "states", errors)
    for i, state in enumerate(states or ()):
        if state not in INVENTORY_STATES:
            errors.append(
                error(
                    "INVALID_ENUM_VALUE",
                    f"`{state}` is not a valid value for InventoryState.",
                    field=f"states[{i}]",
                )
            )
    tracked = None if states is None else frozenset(states) - UNTRACKED_STATES
    updated_after_ns = None
    updated_after = body.get("updated_after")
    if updated_after is not None:
        if not isinstance(updated_after, str):
            errors.append(
                error(
                    "EXPECTED_STRING",
                    "Expected `updated_after` to be a string.",
                    field="updated_after",
                )
            )
        else:
            try:
                updated_after_ns = parse_ns(updated_after)
            except TimestampError:
                errors.append(
                    error(
                        "INVALID_TIME",
                        f"`updated_after` is not an RFC 3339 timestamp: {updated_after!r}.",
                        field="updated_after",
                    )
                )
    cursor = body.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        errors.append(error("EXPECTED_STRING", "Expected `cursor` to be a string.", field="cursor"))
    limit = body.get("limit")
    if limit is None:
        limit = min(1000, max_limit)
    elif not isinstance(limit, int) or isinstance(limit, bool):
        errors.append(
            error("EXPECTED_INTEGER", "Expected `limit` to be an integer.", field="limit")
        )
    elif limit < 1:
        errors.append(
            error("VALUE_TOO_LOW", f"`limit` must be at least 1, got {limit}.", field="limit")
        )
    elif limit > max_limit:
        errors.append(
            error(
                "VALUE_TOO_HIGH",
                f"`limit` must be at most {max_limit}, got {limit}.",
                field="limit",
            )
        )
    if errors:
        raise SquareError(400, errors)
    return Query(
        object_ids=frozenset(object_ids) if object_ids else None,
        location_ids=frozenset(location_ids) if location_ids else None,
        states=tracked or None,  # only untracked states in the filter: as good as no filter
        updated_after_ns=updated_after_ns,
        limit=limit,
        cursor=cursor or None,
    )


@dataclass(frozen=True, slots=True)
class Cursor:
    """What a cursor carries: issuer, query fingerprint, chain start, position, issue time."""

    instance: str
    query: str
    chain_seq: int
    position: int | None  # pos of the last row returned; None = nothing returned yet
    issued: float  # Simulator.monotonic() at issue

    def encode(self) -> str:
        # A decimal string: instants past 2262 overflow the 64-bit integers orjson writes.
        pos = None if self.position is None else str(self.position)
        raw = orjson.dumps(
            {
                "v": _CURSOR_VERSION,
                "i": self.instance,
                "q": self.query,
                "s": self.chain_seq,
                "p": pos,
                "t": self.issued,
            }
        )
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Raises SquareError(400 INVALID_CURSOR) for anything this simulator did not issue."""
        try:
            data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            pos = data["p"]
            position = None if pos is None else int(pos)
            if data["v"] != _CURSOR_VERSION:
                raise ValueError("cursor version")
            return cls(str(data["i"]), str(data["q"]), int(data["s"]), position, float(data["t"]))
        except (
            binascii.Error,
            orjson.JSONDecodeError,
            KeyError,
            IndexError,
            TypeError,
            ValueError,
        ) as exc:
            raise invalid_cursor("The pagination cursor is invalid.") from exc


def answer(sim: Simulator, query: Query) -> bytes:
    """The response body for one validated request: a page of counts and, unless last, a cursor."""
    fingerprint = query.fingerprint()
    before: int | None = None
    chain_seq = sim.seq
    if query.cursor is not None:
        cursor = Cursor.decode(query.cursor)
        if cursor.instance != sim.instance_id or cursor.query != fingerprint:
            raise invalid_cursor("The pagination cursor does not belong to this query.")
        ttl = sim.config.cursor_ttl
        if ttl is not None and sim.monotonic() - cursor.issued > ttl:
            raise invalid_cursor("The pagination cursor has expired.")
        before, chain_seq = cursor.position, cursor.chain_seq
    take = query.limit
    shaping = sim.config.short_pages
    if shaping and sim.page_rng.random() < _SHORT_PAGE_ODDS:
        take = sim.page_rng.randrange(take)  # possibly 0: an empty page that still has a cursor
    rows = sim.select(
        object_ids=query.object_ids,
        location_ids=query.location_ids,
        states=query.states,
        updated_after_ns=query.updated_after_ns,
        before_pos=before,
        chain_seq=chain_seq,
        want=take + 1,  # one more tells whether another page exists
    )
    more = len(rows) > take
    if more:
        del rows[take:]
    elif shaping and rows and sim.page_rng.random() < _TRAILING_CURSOR_ODDS:
        more = True  # the last rows, yet a cursor: the next page comes back empty and final
    parts = []
    if rows or not sim.config.omit_empty_counts:
        parts.append(b'"counts":[' + b",".join([r.json for r in rows]) + b"]")
    if more:
        position = rows[-1].pos if rows else before
        cursor_text = Cursor(
            sim.instance_id, fingerprint, chain_seq, position, sim.monotonic()
        ).encode()
        parts.append(b'"cursor":"' + cursor_text.encode() + b'"')
    return b"{" + b",".join(parts) + b"}"


# ---- SearchCatalogObjects ------------------------------------------------------------------------

CATALOG_DEFAULT_LIMIT = 100
CATALOG_MAX_LIMIT = 1000  # Square: "higher than the maximum limit of 1,000 ... will be ignored"
_CATALOG_FIELDS = frozenset(
    {
        "cursor",
        "object_types",
        "include_deleted_objects",
        "include_related_objects",
        "begin_time",
        "query",
        "limit",
        "include_category_path_to_root",
    }
)
_CATALOG_CURSOR_KIND = "catalog"


@dataclass(frozen=True, slots=True)
class CatalogQuery:
    """A validated SearchCatalogObjectsRequest (the simulator serves no ``query`` filter)."""

    object_types: frozenset[str]
    include_deleted: bool
    begin_ms: int | None  # begin_time floored to the millisecond (updated_at's precision)
    limit: int
    cursor: str | None

    def fingerprint(self) -> str:
        """What a cursor must match: the filters, not the position nor the limit."""
        raw = orjson.dumps([sorted(self.object_types), self.include_deleted, self.begin_ms])
        return hashlib.sha256(raw).hexdigest()[:16]


def _bool_field(body: dict[str, Any], name: str, errors: list[dict[str, str]]) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        errors.append(error("EXPECTED_BOOLEAN", f"Expected `{name}` to be a boolean.", field=name))
        return False
    return value


def parse_catalog_request(raw: bytes) -> CatalogQuery:
    """Validate a SearchCatalogObjects body the way Square does; SquareError(400) lists every
    problem. A ``limit`` out of 1..1000 is ignored (Square's documented behaviour), not an error."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise SquareError(
            400, [error("EXPECTED_JSON_BODY", "The request body is not a JSON object.")]
        )
    errors = [
        error("UNKNOWN_BODY_PARAMETER", f"Unrecognized body parameter `{name}`.", field=name)
        for name in body
        if name not in _CATALOG_FIELDS
    ]
    types = _strings(body, "object_types", errors)
    for i, kind in enumerate(types or ()):
        if kind not in CATALOG_OBJECT_TYPES:
            errors.append(
                error(
                    "INVALID_ENUM_VALUE",
                    f"`{kind}` is not a valid value for CatalogObjectType.",
                    field=f"object_types[{i}]",
                )
            )
    include_deleted = _bool_field(body, "include_deleted_objects", errors)
    _bool_field(body, "include_related_objects", errors)  # accepted; no related objects here
    _bool_field(body, "include_category_path_to_root", errors)
    if body.get("query") is not None:
        errors.append(
            error(
                "INVALID_VALUE",
                "The simulator does not support `query`; it serves begin_time and object_types.",
                field="query",
            )
        )
    begin_ms = None
    begin_time = body.get("begin_time")
    if begin_time is not None:
        if not isinstance(begin_time, str):
            errors.append(
                error(
                    "EXPECTED_STRING", "Expected `begin_time` to be a string.", field="begin_time"
                )
            )
        else:
            try:
                begin_ns = parse_ns(begin_time)
            except TimestampError:
                errors.append(
                    error(
                        "INVALID_TIME",
                        f"`begin_time` is not an RFC 3339 timestamp: {begin_time!r}.",
                        field="begin_time",
                    )
                )
            else:
                begin_ms = begin_ns // 1_000_000
    cursor = body.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        errors.append(error("EXPECTED_STRING", "Expected `cursor` to be a string.", field="cursor"))
    limit = body.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        errors.append(
            error("EXPECTED_INTEGER", "Expected `limit` to be an integer.", field="limit")
        )
    if errors:
        raise SquareError(400, errors)
    if not isinstance(limit, int) or not 1 <= limit <= CATALOG_MAX_LIMIT:
        limit = CATALOG_DEFAULT_LIMIT
    return CatalogQuery(
        object_types=frozenset(types) if types else DEFAULT_OBJECT_TYPES,
        include_deleted=include_deleted,
        begin_ms=begin_ms,
        limit=limit,
        cursor=cursor or None,
    )


@dataclass(frozen=True, slots=True)
class CatalogCursor:
    """What a catalog cursor carries: issuer, query fingerprint, the chain's latest_time, the
    last (updated_at ms, id) returned (None: nothing yet), issue time."""

    instance: str
    query: str
    latest_ms: int
    position: tuple[int, str] | None
    issued: float

    def encode(self) -> str:
        raw = orjson.dumps(
            {
                "v": _CURSOR_VERSION,
                "k": _CATALOG_CURSOR_KIND,
                "i": self.instance,
                "q": self.query,
                "l": self.latest_ms,
                "p": None if self.position is None else list(self.position),
                "t": self.issued,
            }
        )
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, text: str) -> CatalogCursor:
        """Raises SquareError(400 INVALID_CURSOR) for anything this simulator did not issue
        (a batch-retrieve cursor included)."""
        try:
            data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            if data["v"] != _CURSOR_VERSION or data["k"] != _CATALOG_CURSOR_KIND:
                raise ValueError("cursor kind")
            pos = data["p"]
            position = None if pos is None else (int(pos[0]), str(pos[1]))
            return cls(str(data["i"]), str(data["q"]), int(data["l"]), position, float(data["t"]))
        except (
            binascii.Error,
            orjson.JSONDecodeError,
            KeyError,
            IndexError,
            TypeError,
            ValueError,
        ) as exc:
            raise invalid_cursor("The pagination cursor is invalid.") from exc


def answer_catalog(sim: Simulator, query: CatalogQuery) -> bytes:
    """The SearchCatalogObjects answer: a page of objects ascending by (updated_at, id), a
    cursor unless it is the last page, and ``latest_time`` (the catalog's newest change when the
    chain began, the same on each of its pages)."""
    lib = sim.library
    fingerprint = query.fingerprint()
    position: tuple[int, str] | None = None
    latest_ms = lib.last_ms
    if query.cursor is not None:
        cursor = CatalogCursor.decode(query.cursor)
        if cursor.instance != sim.instance_id or cursor.query != fingerprint:
            raise invalid_cursor("The pagination cursor does not belong to this query.")
        ttl = sim.config.cursor_ttl
        if ttl is not None and sim.monotonic() - cursor.issued > ttl:
            raise invalid_cursor("The pagination cursor has expired.")
        position, latest_ms = cursor.position, cursor.latest_ms
    take = query.limit
    shaping = sim.config.short_pages
    if shaping and sim.page_rng.random() < _SHORT_PAGE_ODDS:
        take = sim.page_rng.randrange(take)  # the limit is advisory: possibly an empty page
    # begin_time is exclusive; updated_at is whole milliseconds, so an object changed in the
    # millisecond of a begin_time with finer digits is not after it either.
    rows = lib.select(
        types=query.object_types,
        include_deleted=query.include_deleted,
        begin_ms=query.begin_ms,
        after=position,
        want=take + 1,
    )
    more = len(rows) > take
    if more:
        del rows[take:]
    parts = []
    if rows:
        parts.append(b'"objects":[' + b",".join([lib.json(o) for o in rows]) + b"]")
    if more:
        last = rows[-1].key if rows else position
        text = CatalogCursor(
            sim.instance_id, fingerprint, latest_ms, last, sim.monotonic()
        ).encode()
        parts.append(b'"cursor":"' + text.encode() + b'"')
    if latest_ms:
        parts.append(b'"latest_time":"' + format_ms(latest_ms).encode() + b'"')
    return b"{" + b",".join(parts) + b"}"
