"""`syncd sources list|forget`: the sources (sellers) the database knows and the config names.

``list`` reads the database read-only (like ``status``) and merges it with the config: one row per
source either of them has, with whether the config has it, its status, merchant, mirrored counts,
its catalog mirror (variations, locations, counts of unknown variations), last pass, and its
credential kind and token expiry. Tokens are never read: the store only says
whether one is stored, shown as ``***``.

Statuses: ``active`` (configured and running on this database), ``unauthorized`` (its OAuth grant
was refused: it needs a new refresh token), ``pending`` (configured, no daemon has started it on
this database yet), ``removed`` (the daemon stopped it when the config dropped it; its rows stay
until it is forgotten), ``unconfigured`` (the config given here lacks it but the database still has
it as active: the daemon has not been reloaded since, or runs another config).

``forget NAME`` removes a source the config no longer has: its mirror rows, each with one
``count.removed`` entry (so replaying the log still gives the mirror), its sync state, OAuth state,
webhook inbox rows and registry row, in one transaction; its earlier entries and passes stay. It is
refused (exit 2) while the config has the source, since it would come back at the next start or
reload. While the daemon runs, the daemon does it (``POST /sources/NAME/forget`` on its admin
listener, where it also checks its running config); otherwise the CLI does, holding the instance
lock like ``syncd sync``. A source the database has nothing of (never synced, or already
forgotten) is an error (exit 1, "unknown source") and writes nothing: a second forget is harmless,
and a misspelt name never passes for done.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from syncd.cli.catalog_status import attach_catalog, catalog_cell, read_catalog
from syncd.cli.common import (
    EXIT_OK,
    add_common,
    database_of,
    offline_store,
    require_database,
    settings_from,
    settings_if_configured,
    setup_logging,
)
from syncd.config.inputs import DEFAULT_SOURCE
from syncd.errors import SourceStillConfigured
from syncd.store import queries
from syncd.store.credentials import STATUS_UNAUTHORIZED
from syncd.store.readonly import ReadOnly
from syncd.timeutil import NS_PER_S, format_ns, now_ns, parse_ns

if TYPE_CHECKING:
    from syncd.config import Settings

Record = dict[str, Any]
REDACTED = "***"

STATUS_ACTIVE = "active"
STATUS_PENDING = "pending"
STATUS_REMOVED = "removed"
STATUS_UNCONFIGURED = "unconfigured"


def register(sub: Any) -> None:
    parser = sub.add_parser("sources", help="list the sources (sellers), forget a removed one")
    actions = parser.add_subparsers(dest="sources_action", metavar="ACTION", required=True)

    lister = actions.add_parser(
        "list", help="one row per source known to the database or named in the config"
    )
    add_common(lister)
    lister.add_argument("--json", action="store_true", help="machine-readable output")
    lister.set_defaults(handler=handle_list)

    forget = actions.add_parser(
        "forget",
        help="remove a source the config no longer has: its rows (one count.removed entry"
        " each), state, credentials and inbox rows",
    )
    add_common(forget)
    forget.add_argument("name", metavar="NAME", help="the source's name ([sources.NAME])")
    forget.add_argument("--json", action="store_true", help="machine-readable output")
    forget.set_defaults(handler=handle_forget)


# --- list ----------------------------------------------------------------------------------------


def handle_list(args: argparse.Namespace) -> int:
    settings = settings_if_configured(args)
    database = database_of(args, settings)
    require_database(database)
    overview, last_pass, catalog = _read(database)
    configured = configured_sources(settings)
    rows = describe_sources(overview, last_pass, configured)
    now = now_ns()
    annotate_sources(rows, now)
    attach_catalog(rows, catalog, configured, now)
    if args.json:
        sys.stdout.write(orjson.dumps({"sources": rows}).decode() + "\n")
    else:
        sys.stdout.write(render_list(rows))
    return EXIT_OK


def _read(path: Path) -> tuple[dict[str, Record], dict[str, Record], dict[str, Record]]:
    with ReadOnly.open(path) as db:
        return db.read(_snapshot)


async def _snapshot(conn: Any) -> tuple[dict[str, Record], dict[str, Record], dict[str, Record]]:
    state = await queries.service_state(conn)
    return await queries.sources_overview(conn), state["last_pass"], await read_catalog(conn)


@dataclass(frozen=True, slots=True)
class Configured:
    """What the config says of one source, as far as listing it goes: whether each credential is
    set (never its value), and whether its catalog is mirrored."""

    merchant_id: str | None = None
    access_token: bool = False
    oauth: bool = False
    refresh_token: bool = False
    catalog_sync: bool = True


def configured_sources(settings: Settings | None) -> dict[str, Configured]:
    """The sources the config names. ``None`` is settings left unloaded because nothing
    configures syncd (``settings_if_configured``): then there is the one default source at its
    defaults, as loading them gives (tests/test_cli_imports.py compares the two)."""
    if settings is None:
        return {DEFAULT_SOURCE: Configured()}
    return {
        name: Configured(
            merchant_id=conf.merchant_id,
            access_token=conf.access_token is not None,
            oauth=conf.oauth is not None,
            refresh_token=conf.oauth is not None and conf.oauth.refresh_token is not None,
            catalog_sync=conf.catalog_sync,
        )
        for name, conf in settings.sources.items()
    }


def _credential_kind(conf: Configured | None, stored: Record | None) -> str | None:
    if conf is not None:
        if conf.oauth:
            return "oauth"
        return "access_token" if conf.access_token else "none"
    if stored is not None and stored["has_refresh_token"]:
        return "oauth"
    return None


def _status(configured: bool, db: Record | None) -> str:
    if db is None or not (db["registered"] or db["counts"] or db["partitions"]):
        return STATUS_PENDING if configured else STATUS_UNCONFIGURED
    if db["removed_at"] is not None:
        return STATUS_REMOVED
    if not configured:
        return STATUS_UNCONFIGURED
    creds = db["credentials"]
    if creds is not None and creds["status"] == STATUS_UNAUTHORIZED:
        return STATUS_UNAUTHORIZED
    return STATUS_ACTIVE


def describe_sources(
    overview: dict[str, Record],
    last_pass: dict[str, Record],
    configured: dict[str, Configured],
) -> list[Record]:
    """One record per source the database knows (``queries.sources_overview``) or the config
    names, by name: never a token, only ``***`` where one is stored."""
    out = []
    for name in sorted(set(overview) | set(configured)):
        db = overview.get(name)
        conf = configured.get(name)
        stored = db["credentials"] if db else None
        merchant = (db["merchant_id"] if db else None) or (conf.merchant_id if conf else None)
        has_access = bool(stored and stored["has_access_token"]) or bool(
            conf is not None and conf.access_token
        )
        has_refresh = bool(stored and stored["has_refresh_token"]) or bool(
            conf is not None and conf.refresh_token
        )
        out.append(
            {
                "source": name,
                "configured": conf is not None,
                "status": _status(conf is not None, db),
                "merchant_id": merchant,
                "added_at": db["added_at"] if db else None,
                "removed_at": db["removed_at"] if db else None,
                "counts": db["counts"] if db else 0,
                "partitions": db["partitions"] if db else 0,
                "backlog": db["backlog"] if db else 0,
                "last_pass": last_pass.get(name),
                "credentials": {
                    "kind": _credential_kind(conf, stored),
                    "status": stored["status"] if stored else None,
                    "error": stored["error"] if stored else None,
                    "expires_at": stored["expires_at"] if stored else None,
                    "refreshed_at": stored["refreshed_at"] if stored else None,
                    "access_token": REDACTED if has_access else None,
                    "refresh_token": REDACTED if has_refresh else None,
                },
            }
        )
    return out


def _since(then: str | None, now: int) -> float | None:
    return None if then is None else round((now - parse_ns(then)) / NS_PER_S, 3)


def annotate_sources(rows: list[Record], now: int) -> None:
    """Add what depends on the time of asking: the last pass's age, the token's time left."""
    for row in rows:
        last = row["last_pass"]
        if last is not None:
            last["age_s"] = _since(last["finished_at"] or last["started_at"], now)
        creds = row["credentials"]
        expires = creds["expires_at"]
        creds["expires_in_s"] = (
            None if expires is None else round((parse_ns(expires) - now) / NS_PER_S, 3)
        )


def seconds(value: float | None) -> str:
    """A duration for people: 42s, 12m, 3.5h, 2.1d."""
    if value is None:
        return "-"
    sign, value = ("-" if value < 0 else ""), abs(value)
    if value < 120:
        return f"{sign}{value:.0f}s"
    if value < 7200:
        return f"{sign}{value / 60:.0f}m"
    if value < 172800:
        return f"{sign}{value / 3600:.1f}h"
    return f"{sign}{value / 86400:.1f}d"


def status_text(row: Record) -> str:
    if row["status"] == STATUS_REMOVED:
        return f"removed at {row['removed_at']}"
    return str(row["status"])


def last_pass_text(row: Record) -> str:
    last = row["last_pass"]
    if last is None:
        return "-"
    return f"{last['outcome']} {seconds(last.get('age_s'))} ago"


def token_text(row: Record) -> str:
    """The credential kind and, for OAuth, when the access token expires (never the token)."""
    creds = row["credentials"]
    kind = creds["kind"] or "-"
    if creds["expires_at"] is None:
        return kind
    left = creds["expires_in_s"]
    when = "expired" if left is not None and left <= 0 else f"in {seconds(left)}"
    return f"{kind}, token expires {creds['expires_at']} ({when})"


def render_list(rows: list[Record]) -> str:
    """A table: one line per source."""
    if not rows:
        return "no sources\n"
    header = (
        "SOURCE",
        "CONFIGURED",
        "STATUS",
        "MERCHANT",
        "COUNTS",
        "CATALOG",
        "LAST PASS",
        "CREDENTIALS",
    )
    table = [header] + [
        (
            row["source"],
            "yes" if row["configured"] else "no",
            status_text(row),
            row["merchant_id"] or "-",
            str(row["counts"]),
            catalog_cell(row["catalog"]) if "catalog" in row else "-",
            last_pass_text(row),
            token_text(row),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        for line in table
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


# --- forget --------------------------------------------------------------------------------------


def handle_forget(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings)
    name = args.name
    if name in settings.sources:
        raise SourceStillConfigured(
            f"source {name!r} is still in the config: it would come back at the next start or"
            " reload",
            op="sources.forget",
            hint=f"remove [sources.{name}] from the config file, reload the daemon (systemctl"
            " reload syncd), then forget it",
            source=name,
        )
    import asyncio  # forget only: see _forget

    forgotten = asyncio.run(_forget(settings, name))
    if args.json:
        sys.stdout.write(orjson.dumps({"forgotten": forgotten}).decode() + "\n")
    else:
        sys.stdout.write(render_forgotten(forgotten))
    return EXIT_OK


async def _forget(settings: Settings, name: str) -> Record:
    """Through the running daemon when it answers, else on the database under the lock."""
    # Imported here: `sources list` reads the database without asyncio, aiohttp or structlog.
    import structlog

    from syncd.cli.control import AdminClient, AdminUnavailable
    from syncd.store import sources as registry

    log = structlog.get_logger("syncd.cli")

    client = AdminClient.from_settings(settings)
    try:
        answer = await client.request("POST", f"/sources/{quote(name, safe='')}/forget")
        return dict(answer["forgotten"])
    except AdminUnavailable as exc:
        log.info(
            "daemon_not_running",
            admin=settings.admin.listen,
            reason=str(exc),
            database=str(settings.database),
        )
    daemon_does = "forgets the source itself (POST /sources/NAME/forget)"
    async with offline_store(settings, op="sources.forget", daemon_does=daemon_does) as store:
        at = format_ns(now_ns())
        forgotten = await store.write(lambda conn: registry.forget(conn, name, recorded_at=at))
    log.info("source_forgotten", **forgotten.to_record())
    return forgotten.to_record()


def _entries(n: int) -> str:
    return "entry" if n == 1 else "entries"


def render_forgotten(f: Record) -> str:
    entries = f"{f['entries']} count.removed {_entries(f['entries'])}"
    catalog = f.get("catalog_entries", 0)  # a daemon older than the catalog removal has none
    if catalog:
        entries += f" and {catalog} catalog.removed/location.removed {_entries(catalog)}"
    entries += " written"
    if f["first_seq"] is not None:
        entries += f" (seq {f['first_seq']}..{f['last_seq']})"
    removed = [f"{f['partitions']} partition states", f"{f['webhook_events']} webhook events"]
    if f["credentials"]:
        removed.append("its OAuth state")
    return f"forgot source {f['source']}: {entries}; removed " + ", ".join(removed) + "\n"
