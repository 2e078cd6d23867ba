"""Small builders and checks shared by tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson

from syncd.model import InventoryCount


def count(
    item: str = "ITEM1",
    location: str = "LOC1",
    quantity: str = "5",
    at: str = "2026-01-01T00:00:00Z",
    state: str = "IN_STOCK",
    object_type: str | None = "ITEM_VARIATION",
) -> InventoryCount:
    """An InventoryCount built through the same parser the upstream adapter uses."""
    return InventoryCount.from_api(
        {
            "catalog_object_id": item,
            "location_id": location,
            "state": state,
            "catalog_object_type": object_type,
            "quantity": quantity,
            "calculated_at": at,
        }
    )


def mirror(path: Path, source: str = "square") -> dict[tuple[str, str, str], dict[str, Any]]:
    """The mirror as stored, read through a separate read-only connection like another tool would."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT catalog_object_id, location_id, state, quantity, calculated_at,"
            " catalog_object_type, seq FROM inventory_counts WHERE source = ?",
            (source,),
        ).fetchall()
    finally:
        conn.close()
    return {
        (r[0], r[1], r[2]): {
            "quantity": r[3],
            "calculated_at": r[4],
            "catalog_object_type": r[5],
            "seq": r[6],
        }
        for r in rows
    }


def changes(path: Path) -> list[dict[str, Any]]:
    """Every change-log entry, in seq order, with old/new decoded."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT seq, kind, source, catalog_object_id, location_id, state, old, new"
            " FROM changes ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    return [
        {
            "seq": r[0],
            "kind": r[1],
            "source": r[2],
            "key": (r[3], r[4], r[5]),
            "old": orjson.loads(r[6]) if r[6] else None,
            "new": orjson.loads(r[7]) if r[7] else None,
        }
        for r in rows
    ]


def count_changes(path: Path) -> list[dict[str, Any]]:
    """The change-log entries that are changes of the mirror (``count.*`` kinds), in seq order:
    lifecycle entries (pass.*, source.*, heartbeat) and catalog or job entries left out."""
    return [e for e in changes(path) if e["kind"].startswith("count.")]


def kinds(path: Path, prefix: str = "") -> list[str]:
    """The kinds of the entries whose kind starts with ``prefix``, in seq order."""
    return [e["kind"] for e in changes(path) if e["kind"].startswith(prefix)]


def replay(entries: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Rebuild a mirror from change-log entries (count.* kinds only), as a consumer would."""
    state: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in entries:
        if e["kind"] == "count.updated":
            state[e["key"]] = {**e["new"], "seq": e["seq"]}
        elif e["kind"] == "count.removed":
            state.pop(e["key"], None)
    return state


def assert_log_invariants(path: Path, source: str = "square") -> None:
    """Seq strictly increases, no entry repeats its predecessor's value for a key, and replaying the
    log from seq 0 reproduces the mirror exactly (values and last-touching seq)."""
    entries = changes(path)
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(set(seqs)), "seq must strictly increase"
    # (source, key): the same key in two sources is two counts.
    last: dict[tuple[str, tuple[str, str, str]], Any] = {}
    for e in entries:
        if e["kind"].startswith("count."):
            key = (e["source"], e["key"])
            assert last.get(key, object()) != e["new"], f"duplicate change entry {e}"
            last[key] = e["new"]
    assert replay([e for e in entries if e["source"] == source]) == mirror(path, source)


async def project_to_schema(written: Path, old: Path, version: int) -> None:
    """Make ``old`` a database at schema ``version`` holding what ``written`` (a database at the
    current schema, written by today's store code) holds, in the columns that schema has: how
    tests build a database "as an earlier syncd left it" without running today's code on an old
    schema. Tables that schema lacks are left out; sqlite_sequence follows the inserted seqs."""
    from syncd.store.migrations import migrate
    from syncd.store.sqlite import connect_writer

    conn = await connect_writer(old)
    try:
        await migrate(conn, target=version)
    finally:
        await conn.close()
    db = sqlite3.connect(old, isolation_level=None)
    try:
        db.execute("ATTACH DATABASE ? AS written", (str(written),))
        db.execute("BEGIN")
        tables = [
            r[0]
            for r in db.execute(
                "SELECT name FROM main.sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for table in tables:
            have = {r[1] for r in db.execute(f"PRAGMA written.table_info({table})")}
            columns = [r[1] for r in db.execute(f"PRAGMA main.table_info({table})") if r[1] in have]
            if not columns:
                continue
            listed = ", ".join(columns)
            db.execute(f"DELETE FROM main.{table}")
            db.execute(f"INSERT INTO main.{table} ({listed}) SELECT {listed} FROM written.{table}")
        db.execute("COMMIT")
        db.execute("DETACH DATABASE written")
    finally:
        db.close()


def replay_catalog(path: Path, source: str | None = None) -> dict[tuple[str, str], Any]:
    """Rebuild the catalog and location tables from the log (catalog.* and location.* entries,
    each entry's new value in seq order, a ``*.removed`` one deleting), keyed (kind family, id),
    as a consumer would; ``source``: that source's entries only."""
    replayed: dict[tuple[str, str], Any] = {}
    for entry in changes(path):
        if source is not None and entry["source"] != source:
            continue
        if entry["kind"].startswith(("catalog.", "location.")):
            key = (entry["kind"].split(".")[0], entry["key"][0] or entry["key"][1])
            if entry["kind"].endswith(".removed"):
                replayed.pop(key, None)
            else:
                replayed[key] = entry["new"]
    return replayed


def catalog_tables(path: Path, source: str | None = None) -> dict[tuple[str, str], Any]:
    """The stored catalog and location rows, in the shape of ``replay_catalog``; ``source``:
    that source's rows only."""
    from syncd.store import catalog as cat

    where, params = ("", ()) if source is None else (" WHERE source = ?", (source,))
    conn = sqlite3.connect(path)
    try:
        items = conn.execute(
            "SELECT item_id, name, is_deleted FROM catalog_items" + where, params
        ).fetchall()
        variations = conn.execute(
            "SELECT variation_id, item_id, name, sku, gtin, measurement_unit_id, track_inventory,"
            " is_deleted, version FROM catalog_variations" + where,
            params,
        ).fetchall()
        locations = conn.execute(
            "SELECT location_id, name, status, timezone FROM locations" + where, params
        ).fetchall()
    finally:
        conn.close()
    stored: dict[tuple[str, str], Any] = {}
    for item_id, name, deleted in items:
        stored[("catalog", item_id)] = cat.ItemRow(item_id, name, bool(deleted), 0, "").value()
    for row in variations:
        stored[("catalog", row[0])] = cat._stored_variation(row).value()
    for row in locations:
        stored[("location", row[0])] = cat.LocationRow(*row).value()
    return stored


def metric_sum(name: str, **labels: str) -> float:
    """The sum of this process's samples of ``name`` whose labels include ``labels``."""
    from syncd.metrics import REGISTRY

    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )
