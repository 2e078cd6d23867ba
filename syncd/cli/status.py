"""`syncd status [--json]`: is the daemon up, and how is it doing, read from the database.

Up/down comes from the instance lock (a running syncd holds ``<db>.lock``); the rest from one read
snapshot: one section per source (status, merchant, mirrored counts, last pass and its age,
credential kind and token expiry; tokens only ever as ``***``; its catalog mirror and how many
counts join as unknown variations), each partition's watermark lag, the
webhook backlog,
jobs by state (when there are any), the retained change-log range, each named consumer's offset
and how far each publishing target (Redis Streams, issue 7) is behind the head, or why it refuses its
stream (issue 11); each outbound webhook endpoint's position, lag and state (issue 14); and the
database's id, the one its stream is claimed with.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from syncd.cli.catalog_status import attach_catalog, catalog_text, read_catalog
from syncd.cli.common import (
    EXIT_OK,
    add_common,
    database_of,
    require_database,
    settings_if_configured,
)
from syncd.cli.sources import (
    annotate_sources,
    configured_sources,
    describe_sources,
    last_pass_text,
    token_text,
)
from syncd.store import identity, outbound, outbox, queries
from syncd.store.lock import probe
from syncd.store.readonly import ReadOnly
from syncd.timeutil import NS_PER_S, now_ns, now_rfc3339, parse_ns


def register(sub: Any) -> None:
    parser = sub.add_parser("status", help="show sync state, last passes and change-log head")
    add_common(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = settings_if_configured(args)
    database = database_of(args, settings)
    require_database(database)
    daemon = probe(database)
    data = _read(database)
    data["database"] = str(database)
    data["daemon"] = {"running": daemon.running, "pid": daemon.pid}
    # One record per source (database and config merged, as `syncd sources list`): tokens only
    # ever as "***".
    configured = configured_sources(settings)
    data["sources"] = describe_sources(data.pop("sources_overview"), data["last_pass"], configured)
    now = now_ns()
    annotate(data, now)
    endpoints = set() if settings is None else set(settings.outbound)  # none by default
    for o in data["outbound"]:
        o["configured"] = o["name"] in endpoints
    annotate_sources(data["sources"], now)
    attach_catalog(data["sources"], data.pop("catalog"), configured, now)
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(data))
    return EXIT_OK


def _read(path: Path) -> dict[str, Any]:
    with ReadOnly.open(path) as db:
        return db.read(_snapshot)


async def _snapshot(conn: Any) -> dict[str, Any]:
    data = await queries.status(conn)
    data["publish"] = await outbox.all_offsets(conn)
    data["database_id"] = await identity.database_id(conn)
    data["sources_overview"] = await queries.sources_overview(conn)
    data["catalog"] = await read_catalog(conn)
    data["outbound"] = [row.to_record() for row in await outbound.all_endpoints(conn)]
    return data


def _age(then: str | None, now: int) -> float | None:
    return None if then is None else round((now - parse_ns(then)) / NS_PER_S, 3)


def annotate(data: dict[str, Any], now: int) -> None:
    """Add what depends on the time of asking: ages, lags and consumer offsets behind the head."""
    data["now"] = now_rfc3339()
    for last in data["last_pass"].values():
        last["age_s"] = _age(last["finished_at"] or last["started_at"], now)
    for p in data["partitions"]:
        p["lag_s"] = _age(p["watermark"], now)
    head = data["changes"]["head_seq"]
    for c in data["consumers"]:
        c["behind"] = max(0, head - c["acked_seq"])
    for p in data.get("publish", []):
        p["behind"] = max(0, head - p["published_seq"])
    for o in data.get("outbound", []):
        o["behind"] = max(0, head - o["acked_seq"])


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def _up_line(daemon: dict[str, Any]) -> str:
    if daemon["running"] is None:
        return "unknown (cannot read the lock file; run as a member of group syncd)"
    if daemon["running"]:
        return f"up (pid {daemon['pid']})" if daemon["pid"] else "up"
    return "down (no syncd holds this database)"


def render(data: dict[str, Any]) -> str:
    """Human-readable status."""
    ch = data["changes"]
    lines = [
        f"syncd      {_up_line(data['daemon'])}",
        f"database   {data['database']}"
        + (f" (id {data['database_id']})" if data.get("database_id") else ""),
        f"counts     {data['counts']}",
        f"changes    {ch['entries']} entries, head seq {ch['head_seq']}, oldest {ch['oldest_seq']}",
    ]
    for source, last in data["last_pass"].items():
        lines.append(
            f"last pass  {source}: #{last['pass_id']} {last['kind']} {last['outcome']},"
            f" {_seconds(last['age_s'])} ago, {last['changes']} changes"
            + (f"  error: {last['error']}" if last["error"] else "")
        )
    if data["sources"]:
        lines.append("sources")
    for src in data["sources"]:
        status = src["status"] + ("" if src["configured"] else " (not in the config)")
        if src["removed_at"]:
            status = f"removed at {src['removed_at']}"
        creds = src["credentials"]
        lines.append(
            f"  {src['source']}: {status}, merchant {src['merchant_id'] or '-'},"
            f" {src['counts']} counts, last pass {last_pass_text(src)}, {token_text(src)}"
            + (f"  error: {creds['error']}" if creds["error"] else "")
        )
        if "catalog" in src:
            lines.append(f"    catalog: {catalog_text(src['catalog'])}")
    lag = ", ".join(
        f"{p['source']}/{p['partition']} {_seconds(p['lag_s'])}" for p in data["partitions"]
    )
    lines.append(f"lag        {lag or '-'}  (now - watermark)")
    backlog = ", ".join(f"{source} {n}" for source, n in data["backlog"].items())
    lines.append(f"backlog    {backlog or '0'} webhook events waiting for a pass")
    if data["jobs"]:
        lines.append("jobs       " + ", ".join(f"{state} {n}" for state, n in data["jobs"].items()))
    for c in data["consumers"]:
        lines.append(
            f"consumer   {c['name']}: acked seq {c['acked_seq']} ({c['behind']} behind),"
            f" at {c['updated_at']}"
        )
    for p in data.get("publish", []):
        lines.append(
            f"publish    {p['target']} {p['stream']}: published seq {p['published_seq']}"
            f" ({p['behind']} behind), at {p['updated_at']}"
            + (f"  REFUSED: {p['refused']}" if p.get("refused") else "")
        )
    lines.extend(outbound_lines(data.get("outbound", [])))
    lines.append("partitions")
    for p in data["partitions"]:
        lines.append(
            f"  {p['source']}/{p['partition']}: {p['last_outcome'] or '-'}"
            f"  watermark {p['watermark'] or '-'}  last success {p['last_success_at'] or '-'}"
            + (f"  error: {p['error']}" if p["error"] else "")
        )
    lines.append("recent passes")
    for p in data["recent_passes"]:
        lines.append(
            f"  #{p['pass_id']} {p['kind']:<11} {p['outcome']:<11} {p['started_at']}"
            f"  pages {p['pages']} counts {p['counts']} changes {p['changes']}"
            f" removed {p['removed']}" + (f"  error: {p['error']}" if p["error"] else "")
        )
    return "\n".join(lines) + "\n"


def outbound_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per outbound webhook endpoint (issue 14): position, lag, and why it is
    disabled or since when it fails."""
    lines = []
    for o in rows:
        state = "active" if o["state"] == outbound.STATE_ACTIVE else "DISABLED"
        line = (
            f"outbound   {o['name']}: {state}, acked seq {o['acked_seq']} ({o['behind']} behind),"
            f" at {o['updated_at']}"
        )
        if not o.get("configured", True):
            line += "  (not in the config)"
        if o["state"] != outbound.STATE_ACTIVE:
            line += f"  since {o['disabled_at']}: {o['disabled_reason']}"
        elif o["failing_since"]:
            line += f"  failing since {o['failing_since']}: {o['last_error']}"
        lines.append(line)
    return lines
