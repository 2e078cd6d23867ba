"""The webhook fast path with real processes (issue 14): a `syncd simulate` upstream that sends
signed ``inventory.count.updated`` webhooks for its changes, a `syncd run` daemon, and the mirror
read from this (third) process. While batch-retrieve answers 503 the webhooks' counts reach the
mirror and the log anyway; a replayed older payload changes nothing; once the upstream is back the
pass confirms every count and logs nothing more, and replay of the log equals the mirror."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from syncd.simulator.webhooks import SIGNATURE_HEADER, sign
from tests.helpers import assert_log_invariants, changes, mirror
from tests.process_kit import eventually, simulate, syncd, write_config
from tests.webhook_kit import KEY, NOTIFICATION_URL

pytestmark = pytest.mark.slow


def _key(count: dict[str, Any]) -> tuple[str, str, str]:
    return (count["catalog_object_id"], count["location_id"], count["state"])


def _event(counts: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(
        {
            "merchant_id": "REPLAYER",
            "type": "inventory.count.updated",
            "event_id": str(uuid.uuid4()),
            "created_at": "2026-01-01T00:00:00Z",
            "data": {"type": "inventory_counts", "id": "x", "object": {"inventory_counts": counts}},
        }
    )


async def test_fast_path_keeps_the_mirror_fresh_while_batch_retrieve_fails(tmp_path: Path) -> None:
    db = tmp_path / "syncd.db"
    async with simulate("--items", "20", "--locations", "2") as up:
        config = write_config(
            tmp_path,
            up.url,
            square=f'webhook_signature_keys = ["{KEY}"]\nnotification_url = "{NOTIFICATION_URL}"',
            extra="[webhooks]\ndebounce = 0.02\nmax_delay = 0.2\n",
        )
        async with syncd("run", "--config", str(config)) as daemon:
            started = await daemon.event("daemon_started")
            await daemon.event("sync_pass", outcome="ok")
            before = mirror(db)
            head = max(e["seq"] for e in changes(db))
            webhook_url = f"{started['public_url']}/webhooks/square"
            await up.post(
                "/_sim/webhooks",
                {"url": webhook_url, "signature_key": KEY, "notification_url": NOTIFICATION_URL},
            )
            await up.post("/_sim/fail", {"status": 503, "seconds": 60})
            mark = len(daemon.events)
            moved = (await up.post("/_sim/mutate", {"n": 5}))["changed"]
            await eventually(
                lambda: all(mirror(db)[_key(c)]["quantity"] == c["quantity"] for c in moved)
            )
            await daemon.wait_for(
                lambda e: e.get("event") == "sync_pass" and e.get("outcome") == "failed",
                after=mark,
            )

            # An older payload of one of them (its value before the change) arrives late.
            old = before[_key(moved[0])]
            late = {
                **moved[0],
                "quantity": old["quantity"],
                "calculated_at": old["calculated_at"],
            }
            body = _event([late])
            headers = {SIGNATURE_HEADER: sign(KEY, NOTIFICATION_URL, body)}
            async with (
                aiohttp.ClientSession() as client,
                client.post(webhook_url, data=body, headers=headers) as resp,
            ):
                assert resp.status == 200
            await daemon.wait_for(
                lambda e: e.get("event") == "fast_path_applied" and e.get("stale") == 1,
                after=mark,
            )
            assert mirror(db)[_key(moved[0])]["quantity"] == moved[0]["quantity"]

            mark = len(daemon.events)
            await up.post("/_sim/fail", {"status": 503, "seconds": 0})
            confirmed = await daemon.wait_for(
                lambda e: e.get("event") == "sync_pass" and e.get("outcome") == "ok",
                after=mark,
                timeout=15,
            )
            assert confirmed["changes"] == 0
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait(15) == 0, daemon.stderr.decode(errors="replace")

    for count in moved:
        [entry] = [e for e in changes(db) if e["seq"] > head and e["key"] == _key(count)]
        assert entry["new"]["quantity"] == count["quantity"]
    assert_log_invariants(db)
