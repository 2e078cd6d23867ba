"""The simulator's catalog: every current count, indexed for newest-first keyset pages.

Each count has a stable integer id (``kid``) and a position ``pos = calculated_at_ns << 32 | kid``,
so one integer orders rows newest first with ties broken by the stable id. Positions live in
ascending arrays (one for the whole catalog, one per location) with lazy deletion: a change appends
the new position and leaves the old one behind as stale; an array is compacted once stale entries
outnumber live ones. Mutations always issue a calculated_at later than any issued before, so they
append; an explicit older ``set_count`` inserts in the middle (bisect). A page is then a bisect plus
a short backwards scan: no sort per request, whatever the catalog size.
"""

from __future__ import annotations

import heapq
import random
import secrets
import time
from bisect import bisect_left, bisect_right, insort
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import orjson

from syncd.model import UNTRACKED_STATES, parse_quantity
from syncd.simulator.library import ITEM, Item, ItemLibrary, Variation, format_ms
from syncd.simulator.webhooks import WebhookSender, WebhookTarget
from syncd.timeutil import NS_PER_S, format_ns, now_ns, parse_ns

# InventoryState, as the OpenAPI document lists it.
INVENTORY_STATES = frozenset(
    {
        "CUSTOM",
        "IN_STOCK",
        "SOLD",
        "RETURNED_BY_CUSTOMER",
        "RESERVED_FOR_SALE",
        "SOLD_ONLINE",
        "ORDERED_FROM_VENDOR",
        "RECEIVED_FROM_VENDOR",
        "IN_TRANSIT_TO",
        "NONE",
        "WASTE",
        "UNLINKED_RETURN",
        "COMPOSED",
        "DECOMPOSED",
        "SUPPORTED_BY_NEWER_VERSION",
        "IN_TRANSIT",
    }
)
TRACKED_STATES = INVENTORY_STATES - UNTRACKED_STATES
ITEM_VARIATION = "ITEM_VARIATION"

KID_BITS = 32
KID_MASK = (1 << KID_BITS) - 1
# Issued calculated_at values are whole microseconds, so they survive formatting exactly.
_US = 1_000
_MS = 1_000_000
_GMTIME_MAX = 253402300800  # 10000-01-01: past it (or before 1970) fall back to timeutil
_COMPACT_MIN = 1024  # never compact an array for fewer stale entries than this
_HISTORY_MS = 30 * 24 * 3600 * 1000  # generated calculated_at values spread over the last 30 days
_SHARED_INSTANT = 0.05  # share of generated counts reusing the previous one's instant (bulk import)
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
LOCATION_STATUSES = frozenset({"ACTIVE", "INACTIVE"})
# Location timezones, in creation order (IANA names, as Square's Location.timezone).
_LOCATION_TIMEZONES = (
    "America/Los_Angeles",
    "America/New_York",
    "America/Chicago",
    "Europe/London",
)

# Statuses fail_next() can script, with the Square error each answers (the spec's added responses).
FAULTS: dict[int, tuple[str, str, str]] = {
    400: ("INVALID_REQUEST_ERROR", "BAD_REQUEST", "A general error occurred with the request."),
    401: ("AUTHENTICATION_ERROR", "UNAUTHORIZED", "A general authorization error occurred."),
    403: (
        "AUTHENTICATION_ERROR",
        "INSUFFICIENT_SCOPES",
        "The provided access token does not have permission to execute the requested action.",
    ),
    429: ("RATE_LIMIT_ERROR", "RATE_LIMITED", "Rate Limited - a general error occurred."),
    500: ("API_ERROR", "INTERNAL_SERVER_ERROR", "A general server error occurred."),
    503: ("API_ERROR", "SERVICE_UNAVAILABLE", "Service Unavailable - a general error occurred."),
}

Key = tuple[str, str, str]  # (catalog_object_id, location_id, state)
Row = dict[str, str]  # one InventoryCount as API JSON


@dataclass
class SimulatorConfig:
    """Shape and behaviour of the fake upstream; every timing and limit is a field."""

    locations: int = 3
    items: int = 100
    states: tuple[str, ...] = ("IN_STOCK",)  # each item has one count per location per state
    seed: int = 0
    access_token: str | None = None  # set: requests need `Authorization: Bearer <token>`
    mutation_rate: float = 0.0  # random count changes per second by the background task; 0 = none
    mutation_interval: float = 0.1  # seconds between the background task's batches
    page_delay: float = 0.0  # seconds added before answering each batch-retrieve call
    max_limit: int = 1000
    cursor_ttl: float | None = None  # seconds; older cursors answer 400 INVALID_CURSOR
    short_pages: bool = False  # sometimes answer fewer rows than `limit` yet still send a cursor
    omit_empty_counts: bool = True  # like Square (proto3 JSON), an empty page has no "counts" key
    webhook: WebhookTarget | None = None  # set: signed webhooks after each change (see webhooks.py)
    merchant_id: str | None = None  # the seller's id; None = derived from the seed
    catalog_mutation_rate: float = 0.0  # random catalog changes per second (background); 0 = none

    def __post_init__(self) -> None:
        problems = []
        if self.locations < 0 or self.items < 0:
            problems.append("locations and items must be >= 0")
        bad = [s for s in self.states if s not in TRACKED_STATES]
        if bad or len(set(self.states)) != len(self.states):
            problems.append(f"states must be distinct tracked InventoryState values, got {bad}")
        if (
            self.mutation_rate < 0
            or self.catalog_mutation_rate < 0
            or self.page_delay < 0
            or self.mutation_interval <= 0
        ):
            problems.append(
                "mutation_rate, catalog_mutation_rate and page_delay must be >= 0,"
                " mutation_interval > 0"
            )
        if self.max_limit < 1:
            problems.append("max_limit must be >= 1")
        if self.cursor_ttl is not None and self.cursor_ttl <= 0:
            problems.append("cursor_ttl must be > 0 or None")
        if self.merchant_id is not None and not self.merchant_id:
            problems.append("merchant_id must be non-empty or None")
        if problems:
            raise ValueError("; ".join(problems))


def merchant_id_for_seed(seed: int) -> str:
    """A stable merchant id per seed, drawn apart from the catalog's RNG (the data stays as is)."""
    return "SIMMERCHANT" + _ids(random.Random(f"merchant:{seed}"), 1, 6)[0]


def format_seconds(ns: int) -> str:
    """RFC 3339 UTC to the second, like Square's ``created_at`` and ``expires_at``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // NS_PER_S))


def format_calculated_at(ns: int) -> str:
    """RFC 3339 UTC: milliseconds when the instant is a whole millisecond, else microseconds.

    Same text as ``timeutil.format_ns`` (which the tests check) but several times faster, which
    matters when generating a catalog of 200,000 counts.
    """
    seconds, frac = divmod(ns, NS_PER_S)
    if not 0 <= seconds < _GMTIME_MAX:
        text = format_ns(ns)
        return text[:-4] + "Z" if ns % _MS == 0 else text
    tm = time.gmtime(seconds)
    head = "%04d-%02d-%02dT%02d:%02d:%02d" % tm[:6]  # noqa: UP031 - the fastest spelling here
    if frac % _MS == 0:
        return f"{head}.{frac // _MS:03d}Z"
    return f"{head}.{frac // _US:06d}Z"


class Count:
    """One current count. ``json`` caches its serialized API object for the hot path."""

    __slots__ = (
        "back_seq",
        "calculated_at",
        "catalog_object_id",
        "catalog_object_type",
        "json",
        "kid",
        "location_id",
        "ns",
        "pos",
        "quantity",
        "state",
    )

    def __init__(
        self, kid: int, key: Key, object_type: str, quantity: str, ns: int, back_seq: int
    ) -> None:
        self.kid = kid
        self.catalog_object_id, self.location_id, self.state = key
        self.catalog_object_type = object_type
        self.back_seq = back_seq  # change seq at which it was created or moved back in time
        self.quantity = quantity
        self.ns = ns
        self.pos = ns << KID_BITS | kid
        self.calculated_at = format_calculated_at(ns)
        self.json = orjson.dumps(self.api())

    def update(self, quantity: str, ns: int) -> None:
        self.quantity = quantity
        if ns != self.ns:
            self.ns = ns
            self.pos = ns << KID_BITS | self.kid
            self.calculated_at = format_calculated_at(ns)
        self.json = orjson.dumps(self.api())

    def api(self) -> Row:
        return {
            "catalog_object_id": self.catalog_object_id,
            "catalog_object_type": self.catalog_object_type,
            "state": self.state,
            "location_id": self.location_id,
            "quantity": self.quantity,
            "calculated_at": self.calculated_at,
        }


class _Index:
    """Ascending positions of one partition; may hold stale entries (see module docstring)."""

    __slots__ = ("pos", "stale")

    def __init__(self, pos: list[int] | None = None) -> None:
        self.pos: list[int] = pos if pos is not None else []
        self.stale = 0

    def add(self, p: int) -> None:
        if not self.pos or p > self.pos[-1]:
            self.pos.append(p)
        else:
            insort(self.pos, p)


def random_quantity(rng: random.Random) -> str:
    """A Square decimal string: mostly integers, some with 1-5 fractional digits, a few negative."""
    r = rng.random()
    if r < 0.65:
        return str(rng.randint(0, 500))
    if r < 0.95:
        digits = rng.randint(1, 5)
        frac = f"{rng.randint(1, 10**digits - 1):0{digits}d}".rstrip("0")
        return f"{rng.randint(0, 200)}.{frac}"
    return str(-rng.randint(1, 20))


def _ids(rng: random.Random, n: int, length: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        value = "".join(rng.choices(_ID_ALPHABET, k=length))
        if value not in seen:
            seen.add(value)
            out.append(value)
    return out


class Simulator:
    """The fake upstream's state: the catalog, its indexes, request counters and scripted faults.

    Single-threaded by design: every method runs to completion on the event loop, so a page is
    always cut from one consistent state.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        wall_ns: Callable[[], int] = now_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.wall_ns = wall_ns  # source of calculated_at for changes
        self.monotonic = monotonic  # cursor ages (cursor_ttl)
        self.instance_id = secrets.token_hex(4)  # cursors from another instance are invalid
        self.page_rng = random.Random(self.config.seed + 1)  # short-page shaping, apart from data
        self.requests = 0
        self.status_counts: Counter[int] = Counter()
        self.mutations = 0
        self.removals = 0
        self.seq = 0  # bumped by every change; cursors remember where their chain began
        self.faults: deque[tuple[int, float | None]] = deque()  # scripted (status, retry_after)
        # An outage: every batch-retrieve answers this (status, retry_after) until the deadline
        # (self.monotonic()); None when there is none. See fail_for / next_fault.
        self.outage: tuple[float, int, float | None] | None = None
        self.merchant_id = self.config.merchant_id or merchant_id_for_seed(self.config.seed)
        # One signed inventory.count.updated webhook per changed count, while the app runs. In a
        # Marketplace every seller shares the app's sender and stamps its own event_merchant_id.
        self.webhooks = WebhookSender(self.config.webhook)
        self.event_merchant_id: str | None = None  # None: the target's merchant_id
        self._rng = random.Random(self.config.seed)
        self._recs: list[Count | None] = []
        self._by_key: dict[Key, int] = {}
        self._by_object: dict[str, set[int]] = {}
        self._live: list[int] = []  # live kids, for O(1) random picks
        self._live_at: dict[int, int] = {}
        self._all = _Index()
        self._by_location: dict[str, _Index] = {}
        self._last_ns = 0
        self.location_ids: list[str] = []
        self._locations: dict[str, dict[str, str]] = {}
        # The item library (library.py) is built on first use, from the generated object ids in
        # order and an RNG of its own, so counts-only runs never pay for it and the data of a
        # seed is the same whenever it is built.
        self._library: ItemLibrary | None = None
        self._generated_ids: list[str] = []
        self._implicit: list[tuple[str, int]] = []  # (object id, ms) set_count made before that
        self._base_ms = 0
        self.catalog_faults: deque[tuple[int, float | None] | None] = deque()
        self.catalog_mutations = 0  # catalog change calls (catalog versions)
        self._generate()

    # ---- generation ------------------------------------------------------------------------------

    def _generate(self) -> None:
        cfg, rng = self.config, self._rng
        self.location_ids = _ids(rng, cfg.locations, 13)
        base_ms = self._base_ms = self.wall_ns() // _MS - _HISTORY_MS
        for location in self.location_ids:
            self._describe_location(location, None, base_ms * _MS)
        ns = 0
        self._generated_ids = _ids(rng, cfg.items, 24)
        for item in self._generated_ids:
            for location in self.location_ids:
                for state in cfg.states:
                    if ns == 0 or rng.random() >= _SHARED_INSTANT:
                        ns = (base_ms + rng.randrange(_HISTORY_MS)) * _MS
                    self._add(
                        Count(
                            len(self._recs),
                            (item, location, state),
                            ITEM_VARIATION,
                            random_quantity(rng),
                            ns,
                            0,
                        )
                    )
        buckets: dict[str, list[int]] = {location: [] for location in self.location_ids}
        for r in self._recs:
            assert r is not None
            buckets[r.location_id].append(r.pos)
        self._all = _Index(sorted(p for bucket in buckets.values() for p in bucket))
        self._by_location = {location: _Index(sorted(b)) for location, b in buckets.items()}

    def _add(self, rec: Count) -> None:
        """Register a new record (not its positions)."""
        self._recs.append(rec)
        key = (rec.catalog_object_id, rec.location_id, rec.state)
        self._by_key[key] = rec.kid
        self._by_object.setdefault(rec.catalog_object_id, set()).add(rec.kid)
        self._live_at[rec.kid] = len(self._live)
        self._live.append(rec.kid)
        self._last_ns = max(self._last_ns, rec.ns)

    # ---- index upkeep ----------------------------------------------------------------------------

    def _location_index(self, location_id: str) -> _Index:
        index = self._by_location.get(location_id)
        if index is None:
            index = self._by_location[location_id] = _Index()
        return index

    def _place(self, rec: Count) -> None:
        self._all.add(rec.pos)
        self._location_index(rec.location_id).add(rec.pos)

    def _retire(self, location_id: str) -> None:
        """One entry of the catalog array and of this location's array just went stale."""
        for index in (self._all, self._by_location[location_id]):
            index.stale += 1
            if index.stale > _COMPACT_MIN and index.stale * 2 > len(index.pos):
                recs = self._recs
                index.pos = [
                    p for p in index.pos if (r := recs[p & KID_MASK]) is not None and r.pos == p
                ]
                index.stale = 0

    def _next_ns(self) -> int:
        """Now, but strictly after every calculated_at issued so far (whole microseconds)."""
        ns = max(self.wall_ns() // _US * _US, self._last_ns + _US)
        self._last_ns = ns
        return ns

    def _change(self, rec: Count, quantity: str, ns: int) -> None:
        self.seq += 1
        old = rec.pos
        rec.update(quantity, ns)
        if rec.pos == old:
            return
        if rec.pos < old:
            rec.back_seq = self.seq
        self._last_ns = max(self._last_ns, ns)
        self._place(rec)
        self._retire(rec.location_id)

    # ---- changes ---------------------------------------------------------------------------------

    def mutate(self, n: int, *, same_instant: bool = False) -> list[Row]:
        """Change ``n`` random counts (fewer if there are fewer) to a new quantity, calculated now.

        Each change gets its own calculated_at, strictly later than any issued before; with
        ``same_instant`` all of them share one (to test ties across page boundaries).
        """
        rng = self._rng
        kids = rng.sample(self._live, min(max(n, 0), len(self._live)))
        kids.sort()  # with a shared instant, ascending kids keep the appends in order
        shared = self._next_ns() if same_instant else None
        out: list[Row] = []
        for kid in kids:
            rec = self._recs[kid]
            assert rec is not None
            quantity = random_quantity(rng)
            while quantity == rec.quantity:
                quantity = random_quantity(rng)
            self._change(rec, quantity, shared if shared is not None else self._next_ns())
            out.append(rec.api())
        self.mutations += len(out)
        self._notify(out)
        return out

    def set_count(
        self,
        catalog_object_id: str,
        location_id: str,
        state: str,
        quantity: str,
        calculated_at: str | None = None,
        catalog_object_type: str = ITEM_VARIATION,
    ) -> Row:
        """Set one count explicitly, creating it if new; raises ValueError for bad values.

        ``calculated_at`` (any RFC 3339 form; sub-microsecond digits dropped) may be older than the
        current one, to play out-of-order data; None means now (monotonic, like ``mutate``).
        """
        if state not in TRACKED_STATES:
            raise ValueError(f"state must be a tracked InventoryState, got {state!r}")
        if not catalog_object_id or not location_id:
            raise ValueError("catalog_object_id and location_id must be non-empty")
        parse_quantity(quantity)  # InvalidCount is a ValueError
        ns = self._next_ns() if calculated_at is None else parse_ns(calculated_at) // _US * _US
        key = (catalog_object_id, location_id, state)
        kid = self._by_key.get(key)
        if catalog_object_id not in self._by_object and catalog_object_type == ITEM_VARIATION:
            self._implicit_variation(catalog_object_id)
        if kid is None:
            self.seq += 1
            rec = Count(len(self._recs), key, catalog_object_type, quantity, ns, self.seq)
            self._add(rec)
            self._place(rec)
        else:
            found = self._recs[kid]
            assert found is not None
            found.catalog_object_type = catalog_object_type
            self._change(found, quantity, ns)
            rec = found
        self.mutations += 1
        row = rec.api()
        self._notify([row])
        return row

    def remove(self, n: int) -> list[Row]:
        """Make ``n`` random counts vanish upstream; returns them as they last were."""
        kids = self._rng.sample(self._live, min(max(n, 0), len(self._live)))
        return [self._drop(kid) for kid in kids]

    def remove_count(self, catalog_object_id: str, location_id: str, state: str) -> Row | None:
        """Make one count vanish upstream; returns it as it last was, or None if there was none."""
        kid = self._by_key.get((catalog_object_id, location_id, state))
        return None if kid is None else self._drop(kid)

    def _drop(self, kid: int) -> Row:
        rec = self._recs[kid]
        assert rec is not None
        self.seq += 1
        self._recs[kid] = None
        del self._by_key[(rec.catalog_object_id, rec.location_id, rec.state)]
        self._by_object[rec.catalog_object_id].discard(kid)
        at = self._live_at.pop(kid)
        last = self._live.pop()
        if last != kid:
            self._live[at] = last
            self._live_at[last] = at
        self._retire(rec.location_id)
        self.removals += 1
        return rec.api()

    # ---- the item library (what the counts are counts of) ---------------------------------------

    @property
    def library(self) -> ItemLibrary:
        """The seller's items and variations (``library.py``), built on first use."""
        if self._library is None:
            lib = ItemLibrary(random.Random(f"catalog:{self.config.seed}"), self.location_ids)
            lib.generate(self._generated_ids, self._base_ms, _HISTORY_MS)
            for object_id, ms in self._implicit:
                lib.implicit(object_id, ms)
            self._implicit.clear()
            self._library = lib
        return self._library

    def _catalog_ms(self) -> int:
        """The instant of a catalog change: now, strictly after every earlier change."""
        return self.library.next_ms(self.wall_ns() // _MS)

    def _implicit_variation(self, object_id: str) -> None:
        """``set_count`` of an object the seller never had: as if it had been created in the
        catalog first (a variation in an item of its own), without a catalog webhook."""
        if self._library is None:
            self._implicit.append((object_id, self.wall_ns() // _MS))
        else:
            self._library.implicit(object_id, self._catalog_ms())

    def _catalog_changed(self, objs: list[Item | Variation]) -> list[dict[str, object]]:
        """After one change call: count it, send ``catalog.version.updated``, answer the JSON."""
        if not objs:
            return []
        lib = self.library
        self.catalog_mutations += 1
        self.webhooks.notify_catalog(format_ms(lib.last_ms), merchant_id=self.event_merchant_id)
        return [lib.api(o) for o in objs]

    def rename_catalog(self, n: int, object_type: str = ITEM_VARIATION) -> list[dict[str, object]]:
        """Rename ``n`` random live variations (or items, ``object_type="ITEM"``): one catalog
        version; returns the changed objects."""
        _check_object_type(object_type)
        return self._catalog_changed(self.library.rename(n, object_type, self._catalog_ms()))

    def delete_catalog(self, n: int, object_type: str = ITEM_VARIATION) -> list[dict[str, object]]:
        """Delete ``n`` random live variations (their items lose them; an item whose last
        variation goes is deleted too) or items (with their variations). Their counts stay.
        One catalog version; returns every object changed."""
        _check_object_type(object_type)
        return self._catalog_changed(self.library.delete(n, object_type, self._catalog_ms()))

    def add_variations(self, n: int, item_id: str | None = None) -> list[dict[str, object]]:
        """``n`` new variations, in random live items (or ``item_id``), each with one count per
        location per state, issued as count changes (with their inventory webhooks). One
        catalog version; returns the new variations, then the items they joined."""
        objs = self.library.add(n, self._catalog_ms(), self._by_object, item_id)
        rows: list[Row] = []
        for obj in objs:
            if isinstance(obj, Variation):
                rows.extend(self._new_counts(obj.id))
        self.mutations += len(rows)
        self._notify(rows)
        return self._catalog_changed(objs)

    def _new_counts(self, object_id: str) -> list[Row]:
        """One new count of ``object_id`` per location per state, calculated now."""
        rows: list[Row] = []
        for location_id in self.location_ids:
            for state in self.config.states:
                self.seq += 1
                rec = Count(
                    len(self._recs),
                    (object_id, location_id, state),
                    ITEM_VARIATION,
                    random_quantity(self._rng),
                    self._next_ns(),
                    self.seq,
                )
                self._add(rec)
                self._place(rec)
                rows.append(rec.api())
        return rows

    def mutate_catalog(self, n: int) -> list[dict[str, object]]:
        """``n`` random catalog changes in one catalog version: renames of variations and
        items, new prices (a version bump that changes no mirrored field), new SKUs, deleted
        and added variations. Returns every object changed (once, as it ends up)."""
        lib = self.library
        ms = self._catalog_ms()
        changed: dict[str, Item | Variation] = {}
        new_counts: list[Row] = []
        for kind in lib.mutation_kinds(n):
            if kind == "rename_variation":
                objs = lib.rename(1, ITEM_VARIATION, ms)
            elif kind == "rename_item":
                objs = lib.rename(1, ITEM, ms)
            elif kind == "reprice":
                objs = lib.reprice(1, ms)
            elif kind == "sku":
                objs = lib.resku(1, ms)
            elif kind == "delete_variation":
                objs = lib.delete(1, ITEM_VARIATION, ms)
            else:
                objs = lib.add(1, ms, self._by_object)
                for obj in objs:
                    if isinstance(obj, Variation):
                        new_counts.extend(self._new_counts(obj.id))
            for obj in objs:
                changed[obj.id] = obj
        self.mutations += len(new_counts)
        self._notify(new_counts)
        return self._catalog_changed(list(changed.values()))

    def catalog_object(self, object_id: str) -> dict[str, object] | None:
        """One item or variation as CatalogObject JSON (deleted ones too), or None."""
        obj = self.library.objects.get(object_id)
        return None if obj is None else self.library.api(obj)

    def catalog_snapshot(self, *, include_deleted: bool = True) -> list[dict[str, object]]:
        """Every item and variation as CatalogObject JSON, ascending by (updated_at, id)."""
        lib = self.library
        objs = (lib.objects[object_id] for _, object_id in lib.order)
        return [lib.api(o) for o in objs if include_deleted or not o.is_deleted]

    def fail_catalog_next(
        self, status: int, times: int = 1, retry_after: float | None = None, *, after: int = 0
    ) -> None:
        """Answer ``times`` SearchCatalogObjects calls with this error status, after ``after``
        calls answered normally (a fault mid-chain); like ``fail_next``, which scripts
        batch-retrieve only."""
        bad = times < 0 or after < 0 or (retry_after is not None and retry_after < 0)
        if status not in FAULTS or bad:
            raise ValueError(f"cannot script status {status} x{times} (known: {sorted(FAULTS)})")
        self.catalog_faults.extend([None] * after)
        self.catalog_faults.extend([(status, retry_after)] * times)

    def next_catalog_fault(self) -> tuple[int, float | None] | None:
        """The error the next SearchCatalogObjects call answers, or None."""
        return self.catalog_faults.popleft() if self.catalog_faults else None

    # ---- locations -------------------------------------------------------------------------------

    def _describe_location(self, location_id: str, name: str | None, created_ns: int) -> None:
        """Record a location's Square metadata; names follow creation order ("Store 3")."""
        self._locations[location_id] = {
            "id": location_id,
            "name": name or f"Store {len(self._locations) + 1}",
            "merchant_id": self.merchant_id,
            "status": "ACTIVE",
            "timezone": _LOCATION_TIMEZONES[len(self._locations) % len(_LOCATION_TIMEZONES)],
            "created_at": format_seconds(created_ns),
            "business_name": f"Sim Seller {self.merchant_id}",
            "type": "PHYSICAL",
            "country": "US",
            "currency": "USD",
            "language_code": "en-US",
        }

    def locations(self) -> list[dict[str, str]]:
        """Every location, active and inactive, as Square Location JSON (ListLocations order)."""
        return [dict(self._locations[location]) for location in self.location_ids]

    def add_location(self, name: str | None = None) -> dict[str, str]:
        """Open a new active location with one count per existing item per state.

        The counts are issued as changes (calculated now, after every earlier one), so an
        incremental sync sees them and a webhook goes out for each, like a mutation.
        """
        location_id = _ids(self._rng, 1, 13)[0]
        while location_id in self._locations:
            location_id = _ids(self._rng, 1, 13)[0]
        self.location_ids.append(location_id)
        self._describe_location(location_id, name, self.wall_ns())
        items = sorted(oid for oid, kids in self._by_object.items() if kids)
        rows: list[Row] = []
        for item in items:
            for state in self.config.states:
                self.seq += 1
                rec = Count(
                    len(self._recs),
                    (item, location_id, state),
                    ITEM_VARIATION,
                    random_quantity(self._rng),
                    self._next_ns(),
                    self.seq,
                )
                self._add(rec)
                self._place(rec)
                rows.append(rec.api())
        self.mutations += len(rows)
        self._notify(rows)
        return dict(self._locations[location_id])

    def set_location_status(self, location_id: str, status: str) -> dict[str, str]:
        """Mark a location ACTIVE or INACTIVE (its counts stay); raises ValueError otherwise."""
        if status not in LOCATION_STATUSES:
            raise ValueError(f"status must be ACTIVE or INACTIVE, got {status!r}")
        location = self._locations.get(location_id)
        if location is None:
            raise ValueError(f"no location {location_id!r} at {self.merchant_id}")
        location["status"] = status
        return dict(location)

    def rename_location(self, location_id: str, name: str) -> dict[str, str]:
        """Give a location a new name; raises ValueError for an unknown location or empty name."""
        location = self._locations.get(location_id)
        if location is None:
            raise ValueError(f"no location {location_id!r} at {self.merchant_id}")
        if not name:
            raise ValueError("a location name must be non-empty")
        location["name"] = name
        return dict(location)

    def _notify(self, rows: list[Row]) -> None:
        self.webhooks.notify(rows, merchant_id=self.event_merchant_id)

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``times`` batch-retrieve calls with this error status.

        400, 401, 403, 429, 500 or 503 in Square's envelope (``FAULTS``), optionally with a
        ``Retry-After`` header (seconds).
        """
        if status not in FAULTS or times < 0 or (retry_after is not None and retry_after < 0):
            raise ValueError(f"cannot script status {status} x{times} (known: {sorted(FAULTS)})")
        self.faults.extend([(status, retry_after)] * times)

    def fail_for(self, status: int, seconds: float, retry_after: float | None = None) -> None:
        """Answer every batch-retrieve call with this error status for the next ``seconds``
        (an outage of this seller; ``seconds`` 0 ends one). Scripted ``fail_next`` answers go
        first."""
        if status not in FAULTS or seconds < 0 or (retry_after is not None and retry_after < 0):
            raise ValueError(
                f"cannot script status {status} for {seconds} s (known: {sorted(FAULTS)})"
            )
        self.outage = (self.monotonic() + seconds, status, retry_after) if seconds else None

    def next_fault(self) -> tuple[int, float | None] | None:
        """The error the next batch-retrieve call answers (a scripted one, else the outage's),
        or None for normal service."""
        if self.faults:
            return self.faults.popleft()
        if self.outage is not None:
            until, status, retry_after = self.outage
            if self.monotonic() < until:
                return status, retry_after
            self.outage = None
        return None

    # ---- reads -----------------------------------------------------------------------------------

    def get(self, catalog_object_id: str, location_id: str, state: str) -> Row | None:
        """One current count as API JSON, or None."""
        kid = self._by_key.get((catalog_object_id, location_id, state))
        rec = None if kid is None else self._recs[kid]
        return None if rec is None else rec.api()

    def snapshot(self) -> list[Row]:
        """Every current count as API JSON, newest first."""
        return [r.api() for r in self._desc(self._all, None, None)]

    def count_total(self) -> int:
        return len(self._live)

    def _desc(self, index: _Index, lo: int | None, hi: int | None) -> Iterator[Count]:
        """Live records of one array with lo < pos < hi (None = unbounded), newest first."""
        arr, recs = index.pos, self._recs
        start = len(arr) if hi is None else bisect_left(arr, hi)
        stop = 0 if lo is None else bisect_right(arr, lo)
        for i in range(start - 1, stop - 1, -1):
            p = arr[i]
            r = recs[p & KID_MASK]
            if r is not None and r.pos == p:
                yield r

    def select(
        self,
        *,
        object_ids: Collection[str] | None,
        location_ids: Collection[str] | None,
        states: Collection[str] | None,
        updated_after_ns: int | None,
        before_pos: int | None,
        chain_seq: int | None,
        want: int,
    ) -> list[Count]:
        """Up to ``want`` matching counts, newest first.

        Rows are strictly after ``updated_after_ns`` and strictly before the keyset position
        ``before_pos``. Rows created or moved back in time after ``chain_seq`` (the change seq at
        which a cursor chain began) are left out, so a chain never repeats a row.
        """
        lo = None if updated_after_ns is None else ((updated_after_ns + 1) << KID_BITS) - 1
        rows: Iterator[Count]
        location_filter: Collection[str] | None = None
        if object_ids is not None:
            recs = self._recs
            found = [recs[k] for oid in object_ids for k in self._by_object.get(oid, ())]
            cands = [
                r
                for r in found
                if r is not None
                and (lo is None or r.pos > lo)
                and (before_pos is None or r.pos < before_pos)
            ]
            # A few counts per requested object: sorting them is cheap, unlike sorting the catalog.
            cands.sort(key=_pos_of, reverse=True)
            rows, location_filter = iter(cands), location_ids
        elif location_ids is not None:
            parts = [
                self._desc(ix, lo, before_pos)
                for loc in location_ids
                if (ix := self._by_location.get(loc)) is not None
            ]
            rows = parts[0] if len(parts) == 1 else heapq.merge(*parts, key=_pos_of, reverse=True)
        else:
            rows = self._desc(self._all, lo, before_pos)
        out: list[Count] = []
        if want <= 0:
            return out
        for r in rows:
            if states is not None and r.state not in states:
                continue
            if location_filter is not None and r.location_id not in location_filter:
                continue
            if chain_seq is not None and r.back_seq > chain_seq:
                continue
            out.append(r)
            if len(out) >= want:
                break
        return out

    def stats(self) -> dict[str, object]:
        """Counters for ``GET /_sim/stats`` and logs."""
        return {
            "merchant_id": self.merchant_id,
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.status_counts.items())},
            "counts": self.count_total(),
            "locations": list(self.location_ids),
            "mutations": self.mutations,
            "removals": self.removals,
            "seq": self.seq,
            "index_entries": len(self._all.pos),  # live + not yet compacted stale entries
            "webhooks": self.webhooks.stats(),
            "catalog": None if self._library is None else self._catalog_stats(self._library),
        }

    def _catalog_stats(self, lib: ItemLibrary) -> dict[str, object]:
        return {
            "objects": len(lib.objects),
            "items": lib.live_count(ITEM),
            "variations": lib.live_count(ITEM_VARIATION),
            "latest_time": format_ms(lib.last_ms) if lib.last_ms else None,
            "mutations": self.catalog_mutations,
        }


def _pos_of(rec: Count) -> int:
    return rec.pos


def _check_object_type(object_type: str) -> None:
    if object_type not in (ITEM, ITEM_VARIATION):
        raise ValueError(f"object_type must be ITEM or ITEM_VARIATION, got {object_type!r}")
