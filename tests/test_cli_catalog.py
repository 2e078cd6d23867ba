"""`syncd counts --sku/--location-name`, and the catalog in `syncd status` and `syncd sources
list`, as a user runs them (real subprocesses, a database synced from the simulator): SKU and
names beside each count, counts of unknown variations listed as unknown and counted in status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from syncd.simulator import Simulator, SimulatorConfig, serve
from syncd.store.migrations import migrate
from syncd.store.sqlite import connect_writer
from tests.process_kit import query, run_cli, write_config

Key = tuple[str, str, str]


def json_lines(out: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.splitlines()]


def keys(rows: list[dict[str, Any]]) -> set[Key]:
    return {(r["catalog_object_id"], r["location_id"], r["state"]) for r in rows}


def served(sim: Simulator, **match: str) -> set[Key]:
    """The simulator's counts whose fields equal ``match``."""
    return {
        (c["catalog_object_id"], c["location_id"], c["state"])
        for c in sim.snapshot()
        if all(c[k] == v for k, v in match.items())
    }


# The table's columns and their widths (one space between; then two and CALCULATED_AT).
COLUMNS = (
    ("SOURCE", 12),
    ("LOCATION", 16),
    ("LOCATION_NAME", 20),
    ("ITEM", 28),
    ("SKU", 16),
    ("NAME", 32),
    ("STATE", 20),
    ("QUANTITY", 14),
)


def cells(line: str) -> dict[str, str]:
    """A table line of `syncd counts`, cut at its column widths (values hold spaces)."""
    out, at = {}, 0
    for name, width in COLUMNS:
        out[name] = line[at : at + width].strip()
        at += width + 1
    out["CALCULATED_AT"] = line[at + 1 :].strip()
    return out


async def cli(*args: str) -> tuple[int, str, str]:
    return await run_cli(*args, timeout=60)


async def test_counts_by_sku_and_location_name_with_unknown_variations_in_status(
    tmp_path: Path,
) -> None:
    """After `syncd sync` with the catalog: `counts --sku` lists exactly that SKU's counts with
    item, variation and location names; `--location-name` every location of that name (two
    here); filters combine with `--source` and `--limit`. Counts of a variation the catalog
    has not read yet are listed as unknown (`?`, JSON null), and `status` / `sources list`
    show how many (recounted by the full counts pass)."""
    async with serve(SimulatorConfig(locations=3, items=30)) as (sim, url):
        first, second, _ = sim.location_ids
        sim.rename_location(second, "Store 1")  # two stores of one name
        config = str(write_config(tmp_path, url, catalog=True))
        code, out, err = await cli("sync", "--config", config)
        assert code == 0, err
        added = sim.add_variations(1)
        new = next(str(o["id"]) for o in added if o["type"] == "ITEM_VARIATION")
        code, out, err = await cli("sync", "--no-catalog", "--full", "--config", config)
        assert code == 0, err
        variation = next(
            o
            for o in sim.catalog_snapshot(include_deleted=False)
            if o["type"] == "ITEM_VARIATION" and o["item_variation_data"].get("sku")
        )
        item = sim.catalog_object(str(variation["item_variation_data"]["item_id"]))
        assert item is not None
        unknown = served(sim, catalog_object_id=new)
        total = len(sim.snapshot())
        live = sum(
            1 for o in sim.catalog_snapshot(include_deleted=False) if o["type"] == "ITEM_VARIATION"
        )

    sku = str(variation["item_variation_data"]["sku"])
    code, out, err = await cli("counts", "--sku", sku, "--json", "--config", config)
    assert code == 0, err
    rows = json_lines(out)
    assert keys(rows) == served(sim, catalog_object_id=str(variation["id"]))
    for row in rows:
        assert row["sku"] == sku
        assert row["variation_name"] == variation["item_variation_data"]["name"]
        assert row["item_name"] == item["item_data"]["name"]  # type: ignore[index]
        assert row["location_name"] in {"Store 1", "Store 3"}
        assert row["unknown_variation"] is False

    code, out, err = await cli("counts", "--location-name", "Store 1", "--json", "--config", config)
    assert code == 0, err
    rows = json_lines(out)
    assert keys(rows) == served(sim, location_id=first) | served(sim, location_id=second)
    assert {r["location_name"] for r in rows} == {"Store 1"}
    assert [(r["location_id"], r["catalog_object_id"], r["state"]) for r in rows] == sorted(
        (r["location_id"], r["catalog_object_id"], r["state"]) for r in rows
    )
    assert {k for k in keys(rows) if k[0] == new} == {
        k for k in unknown if k[1] != sim.location_ids[2]
    }

    code, out, _ = await cli(
        "counts", "--location-name", "Store 1", "--sku", sku, "--source", "square",
        "--limit", "1", "--json", "--config", config,
    )  # fmt: skip
    assert code == 0
    [one] = json_lines(out)
    assert (one["sku"], one["location_name"]) == (sku, "Store 1")
    for args in (["--source", "nope"], ["--location-name", "Nowhere"], ["--sku", "NO-SUCH"]):
        code, out, _ = await cli("counts", *args, "--json", "--config", config)
        assert (code, out) == (0, ""), args

    # Unknown variations: listed, never dropped; `?` in the table, null in JSON.
    code, out, _ = await cli("counts", "--item", new, "--json", "--config", config)
    rows = json_lines(out)
    assert keys(rows) == unknown
    assert all(r["unknown_variation"] is True and r["sku"] is None for r in rows)
    assert all(r["item_name"] is None and r["variation_name"] is None for r in rows)
    code, out, _ = await cli("counts", "--config", config)
    header, *lines = out.splitlines()
    assert cells(header) == {**{n: n for n, _ in COLUMNS}, "CALCULATED_AT": "CALCULATED_AT"}
    assert len(lines) == total
    table = [cells(line) for line in lines]
    assert {(c["ITEM"], c["LOCATION"], c["STATE"]) for c in table} == served(sim)
    for c in table:
        if c["ITEM"] == new:
            assert (c["SKU"], c["NAME"]) == ("?", "?"), c
        else:
            assert c["NAME"] not in ("?", "-"), c
        assert c["LOCATION_NAME"] in {"Store 1", "Store 3"}
    assert any(c["SKU"] == sku for c in table)

    code, out, err = await cli("status", "--json", "--config", config)
    assert code == 0, err
    [source] = orjson.loads(out)["sources"]
    catalog = source["catalog"]
    assert (catalog["sync"], catalog["read"]) == (True, True)
    assert (catalog["variations"], catalog["locations"]) == (live - 1, 3)  # the new one: unread
    n = len(unknown)
    assert n == 3  # one count per location (one state)
    assert catalog["unknown_variations"] == n
    assert catalog["unknown_checked_age_s"] >= 0
    assert catalog["last_error"] is None
    assert catalog["latest_time"] is not None
    assert query(
        Path(tmp_path / "syncd.db"), "SELECT COUNT(*) FROM inventory WHERE unknown_variation"
    ) == [(n,)]
    code, out, _ = await cli("status", "--config", config)
    assert (
        f"    catalog: {live - 1} variations, 3 locations; {n} counts of unknown variations" in out
    )
    code, out, _ = await cli("sources", "list", "--config", config)
    assert f"{live - 1} var, 3 loc, {n} unknown" in out
    code, out, _ = await cli("sources", "list", "--json", "--config", config)
    assert orjson.loads(out)["sources"][0]["catalog"]["unknown_variations"] == n


async def test_counts_refuses_bad_filters_and_an_old_database_and_status_says_catalog_off(
    tmp_path: Path,
) -> None:
    """An empty SKU, location name or source is a usage error (exit 2); a database from before
    the catalog (schema 6) makes `counts` exit 1 with a hint, not a traceback; with
    catalog_sync off `status` says so."""
    for flag in ("--sku", "--location-name", "--source"):
        code, _, err = await cli("counts", flag, "", "--database", str(tmp_path / "x.db"))
        assert code == 2, flag
        assert "must not be empty" in err
    old = tmp_path / "old.db"
    conn = await connect_writer(old)
    await migrate(conn, target=6)
    await conn.close()
    code, _, err = await cli("counts", "--database", str(old))
    assert code == 1
    assert "predates the catalog" in err
    assert "Try:" in err
    assert "Traceback" not in err
    async with serve(SimulatorConfig(locations=1, items=5)) as (sim, url):
        config = str(write_config(tmp_path, url))
        code, _, err = await cli("sync", "--config", config)
        assert code == 0, err
        count_total = len(sim.snapshot())
    code, out, _ = await cli("status", "--config", config)
    assert "    catalog: off (catalog_sync = false)" in out
    code, out, _ = await cli("status", "--json", "--config", config)
    catalog = orjson.loads(out)["sources"][0]["catalog"]
    assert (catalog["sync"], catalog["read"], catalog["unknown_variations"]) == (False, False, None)
    code, out, _ = await cli("counts", "--config", config)
    lines = out.splitlines()[1:]
    assert len(lines) == count_total
    assert all(cells(line)["SKU"] == cells(line)["NAME"] == "?" for line in lines)
