"""The catalog mirror end to end (issue 12), with real processes: a `syncd simulate` upstream, a
`syncd run` daemon pointed at it with webhooks on, and the mirror read from this (third) process
like any tool would. First sync, renames, deletions and new variations announced by
``catalog.version.updated`` webhooks, counts joined by SKU and location name through the
``inventory`` view, and a replay of the log that reproduces counts and catalog tables alike."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import assert_log_invariants, catalog_tables, replay_catalog
from tests.process_kit import eventually, query, simulate, syncd, write_config
from tests.webhook_kit import KEY, NOTIFICATION_URL

pytestmark = pytest.mark.slow


def daemon_config(tmp_path: Path, upstream: str) -> Path:
    return write_config(
        tmp_path,
        upstream,
        catalog=True,
        square=f'webhook_signature_keys = ["{KEY}"]\nnotification_url = "{NOTIFICATION_URL}"',
        extra="[webhooks]\ndebounce = 0.02\nmax_delay = 0.2\n",
    )


def inventory(db: Path, where: str, *params: Any) -> list[tuple[Any, ...]]:
    return query(
        db,
        "SELECT catalog_object_id, location_id, quantity, sku, item_name, variation_name,"
        f" location_name, unknown_variation, catalog_deleted FROM inventory WHERE {where}"
        " ORDER BY catalog_object_id, location_id",
        params,
    )


async def test_catalog_mirror_follows_the_upstream_on_webhooks(tmp_path: Path) -> None:
    db = tmp_path / "syncd.db"
    async with simulate("--items", "40", "--locations", "3") as up:
        config = daemon_config(tmp_path, up.url)
        async with syncd("run", "--config", str(config)) as daemon:
            started = await daemon.event("daemon_started")
            first = await daemon.event("catalog_pass", kind="catalog_full", outcome="ok")
            await daemon.event("sync_pass", outcome="ok")

            # First sync: every served variation, with its SKU, joins its counts.
            served = {o["id"]: o for o in (await up.get("/_sim/catalog"))["objects"]}
            variations = {i: o for i, o in served.items() if o["type"] == "ITEM_VARIATION"}
            counts = (await up.get("/_sim/counts"))["counts"]
            assert first["changes"] == len(served) + 3  # and the 3 locations
            with_sku = next(o for o in variations.values() if o["item_variation_data"].get("sku"))
            sku = with_sku["item_variation_data"]["sku"]
            rows = inventory(db, "sku = ?", sku)
            assert {(r[0], r[1], r[2]) for r in rows} == {
                (c["catalog_object_id"], c["location_id"], c["quantity"])
                for c in counts
                if c["catalog_object_id"] == with_sku["id"]
            }
            assert all(r[5] == with_sku["item_variation_data"]["name"] for r in rows)
            assert all(r[4] and r[6] and r[7] == 0 for r in rows)
            location_name = rows[0][6]
            at_location = inventory(db, "location_name = ?", location_name)
            assert len(at_location) == sum(1 for c in counts if c["location_id"] == rows[0][1])
            assert query(db, "SELECT COUNT(*) FROM inventory WHERE unknown_variation = 1") == [(0,)]

            # From now on the catalog changes only reach the daemon by webhook: a pass is
            # triggered by catalog.version.updated (the catalog poll is 300 s away).
            await up.post(
                "/_sim/webhooks",
                {
                    "url": f"{started['public_url']}/webhooks/square",
                    "signature_key": KEY,
                    "notification_url": NOTIFICATION_URL,
                },
            )
            mark = len(daemon.events)
            renamed = (await up.post("/_sim/catalog/rename", {"n": 4}))["changed"]
            webhook = await daemon.wait_for(
                lambda e: (
                    e.get("event") == "webhook" and e.get("type") == "catalog.version.updated"
                ),
                after=mark,
            )
            assert webhook["acted_on"] is True
            renamed_pass = await daemon.wait_for(
                lambda e: e.get("event") == "catalog_pass" and e.get("changes", 0) >= 4,
                after=mark,
            )
            assert renamed_pass["kind"] == "catalog"
            renamed_ids = [o["id"] for o in renamed]
            names = dict(
                query(
                    db,
                    "SELECT variation_id, name FROM catalog_variations WHERE variation_id IN"
                    f" ({','.join('?' * len(renamed_ids))})",
                    tuple(renamed_ids),
                )
            )
            assert names == {o["id"]: o["item_variation_data"]["name"] for o in renamed}

            mark = len(daemon.events)
            deleted = (await up.post("/_sim/catalog/delete", {"n": 1}))["changed"]
            added = (await up.post("/_sim/catalog/add", {"n": 2}))["changed"]
            new_ids = [o["id"] for o in added if o["type"] == "ITEM_VARIATION"]
            deleted_id = next(o["id"] for o in deleted if o["type"] == "ITEM_VARIATION")
            marks = ",".join("?" * len(new_ids))

            def caught_up() -> bool:
                gone = query(
                    db,
                    "SELECT 1 FROM catalog_variations WHERE variation_id = ? AND is_deleted = 1",
                    (deleted_id,),
                )
                known = query(
                    db,
                    f"SELECT COUNT(*) FROM catalog_variations WHERE variation_id IN ({marks})",
                    tuple(new_ids),
                )
                return bool(gone) and known == [(len(new_ids),)]

            await eventually(caught_up)
            await daemon.wait_for(lambda e: e.get("event") == "catalog_pass", after=mark)
            assert query(
                db,
                "SELECT is_deleted FROM catalog_variations WHERE variation_id = ?",
                (deleted_id,),
            ) == [(1,)]
            assert all(r[8] == 1 for r in inventory(db, "catalog_object_id = ?", deleted_id))
            await up.post("/_sim/mutate", {"n": 1})  # an inventory webhook: a counts pass
            await daemon.wait_for(
                lambda e: e.get("event") == "sync_pass" and e.get("outcome") == "ok", after=mark
            )
            for vid in new_ids:
                joined = inventory(db, "catalog_object_id = ?", vid)
                assert joined, f"no counts for the new variation {vid}"
                assert all(r[7] == 0 and r[5] for r in joined)

            daemon.signal(signal.SIGTERM)
            assert await daemon.wait(15) == 0, daemon.stderr.decode(errors="replace")

    # The log alone rebuilds the mirror: counts (with their SKUs beside them) and catalog.
    assert_log_invariants(db)
    assert replay_catalog(db) == catalog_tables(db)
    skus = dict(query(db, "SELECT variation_id, sku FROM catalog_variations"))
    entries = query(db, "SELECT catalog_object_id, sku FROM changes WHERE kind = 'count.updated'")
    assert entries
    assert all(sku is None or sku == skus.get(vid) for vid, sku in entries)
    assert any(sku is not None for _, sku in entries)
