"""The simulator's item library: the Square catalog objects its counts are counts of.

Every count's ``catalog_object_id`` is an ITEM_VARIATION here, and every variation belongs to an
ITEM (one to three variations each). Names, SKUs (about one variation in ten has none), UPCs,
``track_inventory`` and per-location overrides are drawn from an RNG of the seller's seed, apart
from the counts' RNG, so the counts of a seed stay what they were.

Objects are ordered by ``(updated_at, id)``, ascending, in one sorted list; a change moves an
object to the end (its ``updated_at`` is the newest). A SearchCatalogObjects page is a bisect plus a
forward scan, and a cursor is the last ``(updated_at, id)`` returned: an object changed while a
chain is read moves past the cursor, so the chain returns it again (newer) rather than missing it.

Each change call is one catalog version, like one Square upsert: every object it touches gets the
same ``updated_at`` (whole milliseconds, as Square writes them) and ``version`` (that instant in
milliseconds), strictly after every earlier change. Deleted objects stay, ``is_deleted`` true.
"""

from __future__ import annotations

import base64
import random
import time
from bisect import bisect_left, bisect_right, insort
from collections.abc import Collection, Container, Iterable, Sequence

import orjson

ITEM = "ITEM"
ITEM_VARIATION = "ITEM_VARIATION"
# CatalogObjectType, as the API reference lists it: a search may name any of them.
CATALOG_OBJECT_TYPES = frozenset(
    {
        "ITEM",
        "IMAGE",
        "CATEGORY",
        "ITEM_VARIATION",
        "TAX",
        "DISCOUNT",
        "MODIFIER_LIST",
        "MODIFIER",
        "PRICING_RULE",
        "PRODUCT_SET",
        "TIME_PERIOD",
        "MEASUREMENT_UNIT",
        "SUBSCRIPTION_PLAN_VARIATION",
        "ITEM_OPTION",
        "ITEM_OPTION_VAL",
        "CUSTOM_ATTRIBUTE_DEFINITION",
        "QUICK_AMOUNT_SETTINGS",
        "SUBSCRIPTION_PLAN",
        "AVAILABILITY_PERIOD",
    }
)
# Without object_types Square returns the top-level types only: variations are nested in items.
DEFAULT_OBJECT_TYPES = frozenset({ITEM})

_MS = 1_000_000
_ADJECTIVES = (
    "Classic", "Organic", "Spicy", "Smoked", "Golden", "Rustic", "Fresh", "Roasted", "Wild",
    "Crispy", "Honey", "Dark", "Vintage", "Sparkling", "Herbal", "Salted",
)  # fmt: skip
_NOUNS = (
    "Coffee", "Tea", "Bagel", "Muffin", "Candle", "Notebook", "Soap", "Granola", "Mug", "Scarf",
    "Sauce", "Cookie", "Lamp", "Planter", "Blanket", "Chocolate",
)  # fmt: skip
_VARIANT_NAMES = (
    "Regular", "Small", "Medium", "Large", "Extra Large", "Red", "Blue", "Green", "Black",
    "White", "Half", "Double",
)  # fmt: skip
_NO_SKU = 0.1  # share of variations without a SKU
_UPC = 0.5  # share with a UPC
_MEASURED = 0.05  # share sold by a measurement unit
_OVERRIDE = 0.1  # share with a location override of track_inventory
_MUTATIONS = (
    ("rename_variation", 3),
    ("rename_item", 2),
    ("reprice", 2),
    ("sku", 1),
    ("delete_variation", 1),
    ("add_variation", 1),
)


def format_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, as Square writes ``updated_at``."""
    seconds, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:03d}Z"


def new_ids(rng: random.Random, n: int, *taken: Container[str]) -> list[str]:
    """``n`` distinct 24-character catalog ids (A-Z, 2-7), none of them in any of ``taken``."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        value = base64.b32encode(rng.randbytes(15)).decode("ascii")
        if value not in seen and not any(value in t for t in taken):
            seen.add(value)
            out.append(value)
    return out


class CatalogObject:
    """What items and variations share: identity, version, ``updated_at``, deletion."""

    __slots__ = ("_json", "id", "is_deleted", "ms", "version")
    kind = ""

    def __init__(self, object_id: str, ms: int) -> None:
        self.id = object_id
        self.ms = ms
        self.version = ms
        self.is_deleted = False
        self._json: bytes | None = None

    @property
    def key(self) -> tuple[int, str]:
        return (self.ms, self.id)

    @property
    def updated_at(self) -> str:
        return format_ms(self.ms)

    def head(self) -> dict[str, object]:
        return {
            "type": self.kind,
            "id": self.id,
            "updated_at": self.updated_at,
            "version": self.version,
            "is_deleted": self.is_deleted,
            "present_at_all_locations": True,
        }


class Variation(CatalogObject):
    """One ITEM_VARIATION; ``price`` is in cents (USD)."""

    __slots__ = (
        "item_id",
        "measurement_unit_id",
        "name",
        "ordinal",
        "overrides",
        "price",
        "sku",
        "track_inventory",
        "upc",
    )
    kind = ITEM_VARIATION

    def __init__(self, object_id: str, ms: int, item_id: str, name: str, ordinal: int) -> None:
        super().__init__(object_id, ms)
        self.item_id = item_id
        self.name = name
        self.ordinal = ordinal
        self.sku: str | None = None
        self.upc: str | None = None
        self.measurement_unit_id: str | None = None
        self.track_inventory: bool | None = True
        self.overrides: list[tuple[str, bool]] = []
        self.price = 500

    def json(self) -> bytes:
        if self._json is None:
            data: dict[str, object] = {"item_id": self.item_id, "name": self.name}
            if self.sku is not None:
                data["sku"] = self.sku
            if self.upc is not None:
                data["upc"] = self.upc
            data["ordinal"] = self.ordinal
            data["pricing_type"] = "FIXED_PRICING"
            data["price_money"] = {"amount": self.price, "currency": "USD"}
            if self.track_inventory is not None:
                data["track_inventory"] = self.track_inventory
            if self.measurement_unit_id is not None:
                data["measurement_unit_id"] = self.measurement_unit_id
            if self.overrides:
                data["location_overrides"] = [
                    {"location_id": loc, "track_inventory": track} for loc, track in self.overrides
                ]
            data["sellable"] = True
            data["stockable"] = True
            self._json = orjson.dumps({**self.head(), "item_variation_data": data})
        return self._json


class Item(CatalogObject):
    """One ITEM; ``variation_ids`` are its variations in order (nested in its JSON)."""

    __slots__ = ("name", "variation_ids")
    kind = ITEM

    def __init__(self, object_id: str, ms: int, name: str) -> None:
        super().__init__(object_id, ms)
        self.name = name
        self.variation_ids: list[str] = []


class _Pool:
    """Ids of live objects of one kind: O(1) add, remove and random pick (swap with the last)."""

    __slots__ = ("at", "ids")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.at: dict[str, int] = {}

    def add(self, object_id: str) -> None:
        self.at[object_id] = len(self.ids)
        self.ids.append(object_id)

    def discard(self, object_id: str) -> None:
        i = self.at.pop(object_id, None)
        if i is None:
            return
        last = self.ids.pop()
        if last != object_id:
            self.ids[i] = last
            self.at[last] = i


class ItemLibrary:
    """One seller's items and variations, ordered for SearchCatalogObjects pages (see module
    docstring). Synchronous, like the Simulator that owns it."""

    def __init__(self, rng: random.Random, location_ids: Sequence[str]) -> None:
        self.rng = rng
        self.location_ids = location_ids  # the seller's live list (overrides name one of them)
        self.objects: dict[str, Item | Variation] = {}
        self.order: list[tuple[int, str]] = []  # (ms, id) of every object, ascending
        self.last_ms = 0  # the newest updated_at: what latest_time answers
        self._live = {ITEM: _Pool(), ITEM_VARIATION: _Pool()}
        self._ordinal = 0
        self._items = 0
        self._unit_id = new_ids(rng, 1)[0]
        self._bulk = False  # True while generate() appends (it sorts once at the end)

    # ---- building --------------------------------------------------------------------------------

    def generate(self, variation_ids: Sequence[str], base_ms: int, span_ms: int) -> None:
        """Group ``variation_ids`` (in order) into items of one to three, created at random
        instants in ``[base_ms, base_ms + span_ms)``; called once, before any change."""
        rng = self.rng
        taken = set(variation_ids)
        self._bulk = True
        i = 0
        while i < len(variation_ids):
            group = variation_ids[i : i + rng.choice((1, 1, 2, 3))]
            i += len(group)
            ms = base_ms + rng.randrange(max(span_ms, 1))
            [item_id] = new_ids(rng, 1, taken)
            taken.add(item_id)
            self._new_item(item_id, ms, group, generated=True)
        self.order.sort()
        self._bulk = False

    def implicit(self, variation_id: str, ms: int) -> list[Item | Variation]:
        """A variation (in a new item of its own) for a count whose object the library did not
        have (``Simulator.set_count`` of a new id): named after its id, no RNG drawn."""
        item_id = "I" + variation_id[-23:] if len(variation_id) >= 2 else "I" + variation_id
        while item_id in self.objects:
            item_id += "X"
        item = self._new_item(item_id, ms, [variation_id], generated=False)
        return [item, *self.variations_of(item)]

    def _new_item(self, item_id: str, ms: int, group: Sequence[str], *, generated: bool) -> Item:
        rng = self.rng
        self._items += 1
        if generated:
            name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {self._items}"
        else:
            name = f"Item {group[0]}"
        item = Item(item_id, ms, name)
        self._register(item)
        names = ("Regular",) if len(group) == 1 else _VARIANT_NAMES[1 : len(group) + 1]
        for variation_id, variant in zip(group, names, strict=True):
            self._new_variation(item, variation_id, variant, ms, generated=generated)
        return item

    def _new_variation(
        self, item: Item, variation_id: str, name: str, ms: int, *, generated: bool
    ) -> Variation:
        rng = self.rng
        self._ordinal += 1
        var = Variation(variation_id, ms, item.id, name, len(item.variation_ids))
        var.sku = f"SKU-{self._ordinal:06d}"
        if generated:
            if rng.random() < _NO_SKU:
                var.sku = None
            if rng.random() < _UPC:
                var.upc = f"{rng.randrange(10**12):012d}"
            if rng.random() < _MEASURED:
                var.measurement_unit_id = self._unit_id
            roll = rng.random()
            var.track_inventory = True if roll < 0.8 else (False if roll < 0.9 else None)
            if self.location_ids and rng.random() < _OVERRIDE:
                var.overrides = [(self.location_ids[0], not var.track_inventory)]
            var.price = rng.randrange(100, 10_000)
        item.variation_ids.append(variation_id)
        self._register(var)
        return var

    def _register(self, obj: Item | Variation) -> None:
        self.objects[obj.id] = obj
        if self._bulk:
            self.order.append(obj.key)  # generate() sorts once at the end
        else:
            insort(self.order, obj.key)
        self._live[obj.kind].add(obj.id)
        self.last_ms = max(self.last_ms, obj.ms)

    # ---- reads -----------------------------------------------------------------------------------

    def variations_of(self, item: Item) -> list[Variation]:
        out = []
        for variation_id in item.variation_ids:
            var = self.objects[variation_id]
            assert isinstance(var, Variation)
            out.append(var)
        return out

    def json(self, obj: Item | Variation) -> bytes:
        """The object's CatalogObject JSON; an item nests its variations, as Square does."""
        if isinstance(obj, Variation):
            return obj.json()
        if obj._json is None:
            head = orjson.dumps(obj.head())[:-1]
            nested = b",".join(v.json() for v in self.variations_of(obj))
            name = orjson.dumps(obj.name)
            obj._json = (
                head
                + b',"item_data":{"name":'
                + name
                + b',"product_type":"REGULAR","variations":['
                + nested
                + b"]}}"
            )
        return obj._json

    def api(self, obj: Item | Variation) -> dict[str, object]:
        """The object as decoded JSON (tests, control routes)."""
        value: dict[str, object] = orjson.loads(self.json(obj))
        return value

    def live_count(self, kind: str) -> int:
        """How many objects of ``kind`` are not deleted."""
        return len(self._live[kind].ids)

    def select(
        self,
        *,
        types: Collection[str],
        include_deleted: bool,
        begin_ms: int | None,
        after: tuple[int, str] | None,
        want: int,
    ) -> list[Item | Variation]:
        """Up to ``want`` objects, ascending by (updated_at, id): of ``types``, changed strictly
        after ``begin_ms`` and strictly after the keyset position ``after``."""
        order = self.order
        start = 0
        if begin_ms is not None:
            start = bisect_right(order, (begin_ms, "\U0010ffff"))
        if after is not None:
            start = max(start, bisect_right(order, after))
        out: list[Item | Variation] = []
        if want <= 0:
            return out
        objects = self.objects
        for i in range(start, len(order)):
            obj = objects[order[i][1]]
            if obj.kind not in types or (obj.is_deleted and not include_deleted):
                continue
            out.append(obj)
            if len(out) >= want:
                break
        return out

    # ---- changes ---------------------------------------------------------------------------------

    def next_ms(self, wall_ms: int) -> int:
        """The instant of a new change: now, but strictly after every earlier one."""
        return max(wall_ms, self.last_ms + 1)

    def _touch(self, objs: Iterable[Item | Variation], ms: int) -> list[Item | Variation]:
        """Give each object (once) the change's updated_at and version; move it to the end."""
        touched: dict[str, Item | Variation] = {}
        for obj in objs:
            touched.setdefault(obj.id, obj)
        order = self.order
        for obj in touched.values():
            i = bisect_left(order, obj.key)
            assert order[i] == obj.key
            del order[i]
            obj.ms = obj.version = ms
            obj._json = None
            insort(order, obj.key)  # among the newest: a bisect near the end
            if obj.is_deleted:
                self._live[obj.kind].discard(obj.id)
            if isinstance(obj, Variation):
                parent = self.objects.get(obj.item_id)
                if parent is not None:
                    parent._json = None  # it nests this variation
        self.last_ms = max(self.last_ms, ms)
        return list(touched.values())

    def _picks(self, kind: str, n: int) -> list[Item | Variation]:
        """``n`` distinct random live objects of ``kind`` (fewer if there are fewer)."""
        pool = self._live[kind].ids
        return [self.objects[i] for i in self.rng.sample(pool, min(max(n, 0), len(pool)))]

    def rename(self, n: int, kind: str, ms: int) -> list[Item | Variation]:
        """Rename ``n`` random live objects of ``kind`` (fewer if there are fewer)."""
        picks = self._picks(kind, n)
        for obj in picks:
            self._rename(obj)
        return self._touch(picks, ms) if picks else []

    def _rename(self, obj: Item | Variation) -> None:
        rng = self.rng
        if isinstance(obj, Item):
            name = obj.name
            while name == obj.name:
                name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.randrange(1, 10_000)}"
            obj.name = name
        else:
            obj.name = rng.choice([v for v in _VARIANT_NAMES if v != obj.name])

    def delete(self, n: int, kind: str, ms: int) -> list[Item | Variation]:
        """Delete ``n`` random live objects of ``kind``. A deleted item takes its variations
        with it; a deleted variation leaves its item's list (and deletes the item when it was
        the last one)."""
        changed: list[Item | Variation] = []
        for obj in self._picks(kind, n):
            if obj.is_deleted:
                continue  # went with an item deleted earlier in this call
            changed.extend(self._delete(obj))
        return self._touch(changed, ms) if changed else []

    def _delete(self, obj: Item | Variation) -> list[Item | Variation]:
        obj.is_deleted = True
        if isinstance(obj, Item):
            nested = self.variations_of(obj)
            for var in nested:
                var.is_deleted = True
            return [obj, *nested]
        item = self.objects[obj.item_id]
        assert isinstance(item, Item)
        item.variation_ids.remove(obj.id)
        if not any(not v.is_deleted for v in self.variations_of(item)):
            item.variation_ids.append(obj.id)  # a deleted item keeps its last variation listed
            item.is_deleted = True
        return [obj, item]

    def add(
        self, n: int, ms: int, taken: Container[str], item_id: str | None = None
    ) -> list[Item | Variation]:
        """``n`` new variations, each in a random live item (or ``item_id``; a new item when
        there is no live one). Returns the new variations first, then the items they joined."""
        new: list[Item | Variation] = []
        parents: list[Item | Variation] = []
        for variation_id in new_ids(self.rng, max(n, 0), taken, self.objects):
            item = self._parent(item_id, ms, taken)
            used = {v.name for v in self.variations_of(item)}
            name = next((v for v in _VARIANT_NAMES if v not in used), f"Option {variation_id[:4]}")
            var = self._new_variation(item, variation_id, name, ms, generated=True)
            new.append(var)
            parents.append(item)
        if not new:
            return []
        return self._touch([*new, *parents], ms)

    def _parent(self, item_id: str | None, ms: int, taken: Container[str]) -> Item:
        if item_id is not None:
            item = self.objects.get(item_id)
            if not isinstance(item, Item) or item.is_deleted:
                raise ValueError(f"no live item {item_id!r}")
            return item
        live = self._live[ITEM].ids
        if live:
            chosen = self.objects[self.rng.choice(live)]
            assert isinstance(chosen, Item)
            return chosen
        [new_id] = new_ids(self.rng, 1, taken, self.objects)
        item = Item(new_id, ms, f"{self.rng.choice(_ADJECTIVES)} {self.rng.choice(_NOUNS)}")
        self._register(item)
        return item

    def reprice(self, n: int, ms: int) -> list[Item | Variation]:
        """A new price for ``n`` random variations: a version bump that changes no mirrored
        field (Square bumps the version for any change)."""
        picks = self._picks(ITEM_VARIATION, n)
        for var in picks:
            assert isinstance(var, Variation)
            var.price = self.rng.randrange(100, 10_000)
        return self._touch(picks, ms) if picks else []

    def resku(self, n: int, ms: int) -> list[Item | Variation]:
        """Give ``n`` random variations a new SKU (or take it away, or give one back)."""
        picks = self._picks(ITEM_VARIATION, n)
        for var in picks:
            assert isinstance(var, Variation)
            if var.sku is not None and self.rng.random() < 0.2:
                var.sku = None
            else:
                var.sku = f"SKU-{var.ordinal:02d}-{self.rng.randrange(10**8):08d}"
        return self._touch(picks, ms) if picks else []

    def mutation_kinds(self, n: int) -> list[str]:
        """``n`` random kinds of change for ``Simulator.mutate_catalog``."""
        kinds, weights = zip(*_MUTATIONS, strict=True)
        return self.rng.choices(kinds, weights=weights, k=max(n, 0))
