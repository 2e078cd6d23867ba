"""Values shared by all layers: inventory counts, pages, change entries, pass summaries.

Frozen, slotted dataclasses: cheap to build in the hot path and safe to pass between tasks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple, NoReturn

from syncd.timeutil import TimestampError, parse_ns

# Square: "a decimal string ... up to 5 digits after the decimal point", maxLength 26. ASCII digits
# only and nothing after them (``\d`` takes any Unicode digit and Decimal reads them; ``$`` allows a
# trailing newline): such text is not a decimal string (issue 6).
_QUANTITY = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
QUANTITY_MAX_LEN = 26

# States that Square's batch-retrieve `states` filter ignores (untracked).
UNTRACKED_STATES = frozenset({"NONE", "SOLD", "UNLINKED_RETURN"})


class InvalidCount(ValueError):
    """A count from upstream that cannot be stored faithfully; the message names the field."""


def parse_quantity(text: object) -> Decimal:
    """Parse a Square decimal string exactly. Rejects floats' spellings (exponents, NaN, Infinity)."""
    if not isinstance(text, str) or len(text) > QUANTITY_MAX_LEN or not _QUANTITY.fullmatch(text):
        raise InvalidCount(f"quantity is not a decimal string: {text!r}")
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise InvalidCount(f"quantity is not a decimal string: {text!r}") from exc


@dataclass(frozen=True, slots=True)
class CountKey:
    """Identity of one mirrored count within a source."""

    catalog_object_id: str
    location_id: str
    state: str


@dataclass(frozen=True, slots=True)
class InventoryCount:
    """One count as the upstream reported it, with its parsed comparison values.

    ``quantity`` and ``calculated_at`` keep the upstream's exact strings (stored losslessly);
    ``quantity_value`` and ``calculated_at_ns`` are what comparisons use.
    """

    catalog_object_id: str
    location_id: str
    state: str
    catalog_object_type: str | None
    quantity: str
    calculated_at: str
    quantity_value: Decimal
    calculated_at_ns: int

    @property
    def key(self) -> CountKey:
        return CountKey(self.catalog_object_id, self.location_id, self.state)

    @classmethod
    def from_api(cls, raw: Any) -> InventoryCount:
        """Build from a Square ``InventoryCount`` JSON object; raises InvalidCount naming the bad field.

        Runs for every count read (a first sync parses them all on the event loop's thread), so
        the checks are inline, and the location, state and object type, which repeat on every
        count, come out as one shared string each (``_shared``): a full pass holds its batches of
        counts in memory until they are written.
        """
        if not isinstance(raw, dict):
            raise InvalidCount(f"count is not an object: {type(raw).__name__}")
        get = raw.get
        object_id, location_id, state = get("catalog_object_id"), get("location_id"), get("state")
        if not (
            isinstance(object_id, str)
            and 0 < len(object_id) <= 100
            and isinstance(location_id, str)
            and 0 < len(location_id) <= 100
            and isinstance(state, str)
            and 0 < len(state) <= 100
        ):
            _bad_key(object_id, location_id, state)
        object_type = get("catalog_object_type")
        if object_type is not None and not isinstance(object_type, str):
            raise InvalidCount(f"catalog_object_type is not a string: {object_type!r}")
        quantity = get("quantity")
        value_q = parse_quantity(quantity)
        calculated_at = get("calculated_at")
        if not isinstance(calculated_at, str):
            raise InvalidCount(f"calculated_at missing or invalid: {calculated_at!r}")
        try:
            at_ns = parse_ns(calculated_at)
        except TimestampError as exc:
            raise InvalidCount(f"calculated_at is not RFC 3339: {calculated_at!r}") from exc
        assert isinstance(quantity, str)  # parse_quantity took it
        return cls(
            object_id,
            _shared(location_id),
            _shared(state),
            None if object_type is None else _shared(object_type),
            quantity,
            calculated_at,
            value_q,
            at_ns,
        )


def _bad_key(object_id: object, location_id: object, state: object) -> NoReturn:
    """Raise InvalidCount for the first of a count's key fields that is missing or invalid."""
    for name, value in (
        ("catalog_object_id", object_id),
        ("location_id", location_id),
        ("state", state),
    ):
        if not isinstance(value, str) or not value or len(value) > 100:
            raise InvalidCount(f"{name} missing or invalid: {value!r}")
    raise AssertionError("called for a valid key")  # pragma: no cover


_SHARED: dict[str, str] = {}
_SHARED_MAX = 4096


def _shared(text: str) -> str:
    """One string object per distinct value of a field that repeats on every count (a few
    locations, states and object types): about 180 bytes less per count held in memory."""
    shared = _SHARED.get(text)
    if shared is None:
        if len(_SHARED) >= _SHARED_MAX:  # an upstream sending endless distinct values
            _SHARED.clear()
        shared = _SHARED[text] = text
    return shared


@dataclass(frozen=True, slots=True)
class Page:
    """One page of batch-retrieve results, in upstream order (newest calculated_at first).

    ``server_date_ns`` is the upstream's own clock from the HTTP ``Date`` header, when it sent one.
    ``skipped`` counts rows the adapter dropped on purpose (e.g. ``is_estimated`` counts).
    """

    counts: tuple[InventoryCount, ...]
    cursor: str | None
    server_date_ns: int | None = None
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    """One change-log entry as read back from the store."""

    seq: int
    recorded_at: str
    kind: str
    source: str
    catalog_object_id: str | None
    location_id: str | None
    state: str | None
    job_id: int | None
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    sku: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The public JSON record (docs/changelog.md)."""
        return {
            "seq": self.seq,
            "recorded_at": self.recorded_at,
            "kind": self.kind,
            "source": self.source,
            "catalog_object_id": self.catalog_object_id,
            "location_id": self.location_id,
            "state": self.state,
            "sku": self.sku,
            "job_id": self.job_id,
            "old": self.old,
            "new": self.new,
        }


@dataclass(slots=True)
class PassSummary:
    """What one sync pass did; mutable while the pass runs, returned at its end."""

    source: str
    # None until the pass's row is written: an incremental pass writes it with its first change
    # or at its end (a returned summary always has its id).
    pass_id: int | None
    kind: str  # "incremental" | "full"
    started_ns: int
    partitions: list[str] = field(default_factory=list)
    pages: int = 0
    counts: int = 0
    changes: int = 0
    removed: int = 0
    skipped: int = 0
    finished_ns: int | None = None
    error: str | None = None
    # A partition failed because the upstream refused the source's token (HTTP 401 after the
    # one refresh, or a revoked OAuth grant): the source is unauthorized, not just failing.
    unauthorized: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.finished_ns is not None


# ---- the catalog: what a count means (issue 12) ----------------------------------------------------

CATALOG_ITEM = "ITEM"
CATALOG_ITEM_VARIATION = "ITEM_VARIATION"


class CatalogItem(NamedTuple):
    """One Square ``CatalogObject`` of type ITEM, as the upstream sent it.

    ``name`` is ``item_data.name`` (None when absent, e.g. on a deleted object without data);
    ``variation_ids`` the ids of ``item_data.variations``, in Square's order. ``version`` is the
    object's catalog version (never goes backwards for one object); ``updated_at`` its RFC 3339
    text exactly as given, ``updated_at_ns`` the instant it names (what comparisons use).

    A named tuple rather than a frozen dataclass, as is :class:`CatalogVariation`: a first catalog
    sync builds one per object read (80,000 for 50,000 variations), and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) cost 4 us each, a named tuple 0.4-0.8 us.
    """

    item_id: str
    name: str | None
    is_deleted: bool
    version: int
    updated_at: str
    updated_at_ns: int
    present_at_all_locations: bool | None = None
    variation_ids: tuple[str, ...] = ()


class CatalogVariation(NamedTuple):
    """One Square ``CatalogObject`` of type ITEM_VARIATION (what a count's ``catalog_object_id``
    names), as the upstream sent it; fields from ``item_variation_data``.

    ``sku`` is None when Square sends none (or an empty one); ``gtin`` is Square's ``upc`` (a
    UPC/EAN/GTIN of 12-14 digits, not checked further); ``track_inventory`` None when absent;
    ``location_track_inventory`` the per-location ``location_overrides[].track_inventory`` values
    that are set, as ``(location_id, bool)`` pairs in Square's order. A deleted variation may come
    without data: ``item_id`` and the data fields are then None.
    """

    variation_id: str
    item_id: str | None
    name: str | None
    sku: str | None
    gtin: str | None
    measurement_unit_id: str | None
    track_inventory: bool | None
    is_deleted: bool
    version: int
    updated_at: str
    updated_at_ns: int
    present_at_all_locations: bool | None = None
    location_track_inventory: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class CatalogPage:
    """One page of SearchCatalogObjects results, in upstream order.

    ``cursor`` is None on the last page. ``latest_time`` is Square's "when the catalog was last
    updated" (the same on every page of one cursor chain; None when not sent): the ``begin_time``
    of the next incremental read. ``skipped`` counts objects of other types (not mirrored), by
    type in ``skipped_types``. ``server_date_ns`` is the HTTP ``Date`` of the answer, when sent.
    """

    objects: tuple[CatalogItem | CatalogVariation, ...]
    cursor: str | None
    latest_time: str | None
    skipped: int = 0
    skipped_types: tuple[tuple[str, int], ...] = ()
    server_date_ns: int | None = None

    @property
    def items(self) -> tuple[CatalogItem, ...]:
        return tuple(o for o in self.objects if isinstance(o, CatalogItem))

    @property
    def variations(self) -> tuple[CatalogVariation, ...]:
        return tuple(o for o in self.objects if isinstance(o, CatalogVariation))


@dataclass(frozen=True, slots=True)
class Location:
    """One seller location (ListLocations); ``status`` is ACTIVE or INACTIVE."""

    id: str
    name: str | None
    status: str
    merchant_id: str | None
    timezone: str | None

    @property
    def active(self) -> bool:
        return self.status == "ACTIVE"
