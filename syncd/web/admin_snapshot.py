"""``GET /snapshot[?source=NAME]`` on the admin listener: the mirror as NDJSON at one seq.

The answer carries ``X-Syncd-Seq`` (also in the first line) and is streamed batch by batch from one
read transaction (``syncd.store.snapshot``), so a million counts never sit in memory and syncd's
writes go on meanwhile. A consumer bootstraps with the snapshot, then reads the change log after its
seq (``GET /changes?after=SEQ``); see docs/changelog.md.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from aiohttp import web

from syncd.store.snapshot import Snapshot
from syncd.web.app import error_response

SEQ_HEADER = "X-Syncd-Seq"
_SOURCE = re.compile(r"[a-z0-9_-]{1,64}")


def add_snapshot_routes(app: web.Application, database: Path) -> None:
    """Register ``GET /snapshot`` reading ``database``."""

    async def snapshot(request: web.Request) -> web.StreamResponse:
        source = request.query.get("source")
        if source is not None and not _SOURCE.fullmatch(source):
            return error_response(400, "bad_request", "source must match [a-z0-9_-]{1,64}")
        snap = Snapshot(database, source=source)
        try:
            seq = await snap.open()
        except sqlite3.Error as exc:
            snap.close()
            return error_response(503, "snapshot_unavailable", f"cannot read the database: {exc}")
        try:
            response = web.StreamResponse(
                headers={"Content-Type": "application/x-ndjson", SEQ_HEADER: str(seq)}
            )
            await response.prepare(request)
            async for chunk in snap.lines():
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            snap.close()

    app.router.add_get("/snapshot", snapshot)
