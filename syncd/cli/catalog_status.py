"""The catalog part of `syncd status` and `syncd sources list` (issue 12): per source, whether its
catalog is mirrored, how many variations and locations, its watermark and last good pass, and how
many counts join the ``inventory`` view as unknown (their variation not in the catalog mirror yet).

The unknown figure is the one the passes stored (``catalog_state.unknown_variations``, recounted
after catalog passes that changed something, full ones and full counts passes), with its age: counting it here would read every
count, and these commands must stay fast on a large mirror.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from syncd.store import catalog as catalog_store
from syncd.timeutil import NS_PER_S, parse_ns

if TYPE_CHECKING:  # types only: importing the config models here would slow every command's start
    import aiosqlite

    from syncd.cli.sources import Configured

Record = dict[str, Any]

_FIELDS = (
    "variations",
    "locations",
    "unknown_variations",
    "unknown_checked_at",
    "latest_time",
    "last_full_at",
    "last_success_at",
    "last_error",
)


async def read_catalog(conn: aiosqlite.Connection) -> dict[str, Record]:
    """The stored catalog figures of every source, by name (inside the caller's read snapshot)."""
    return await catalog_store.overview(conn)


def _age(then: str | None, now: int) -> float | None:
    return None if then is None else round((now - parse_ns(then)) / NS_PER_S, 3)


def attach_catalog(
    rows: list[Record],
    catalog: Mapping[str, Record],
    configured: Mapping[str, Configured],
    now: int,
) -> None:
    """Give each source record a ``catalog`` object: ``sync`` (the config's ``catalog_sync``;
    None for a source the config lacks), ``read`` (whether a catalog pass ever ran), the stored
    figures (None until read or counted) and their ages at ``now`` (ns)."""
    for row in rows:
        conf = configured.get(row["source"])
        stored = catalog.get(row["source"])
        entry: Record = {
            "sync": None if conf is None else conf.catalog_sync,
            "read": stored is not None,
        }
        entry.update({name: None if stored is None else stored[name] for name in _FIELDS})
        entry["unknown_checked_age_s"] = _age(entry["unknown_checked_at"], now)
        entry["last_success_age_s"] = _age(entry["last_success_at"], now)
        row["catalog"] = entry


def _seconds(value: float | None) -> str:
    """42s, 12m, 3.5h, 2.1d (as `syncd sources list`)."""
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    if value < 172800:
        return f"{value / 3600:.1f}h"
    return f"{value / 86400:.1f}d"


def unknown_text(catalog: Record) -> str:
    """How many counts join as unknown, and how long ago that was counted."""
    if catalog["unknown_variations"] is None:
        return "unknown variations not counted yet"
    return (
        f"{catalog['unknown_variations']} counts of unknown variations"
        f" (counted {_seconds(catalog['unknown_checked_age_s'])} ago)"
    )


def catalog_text(catalog: Record) -> str:
    """One line for `syncd status`, under the source's line."""
    if not catalog["read"]:
        return "off (catalog_sync = false)" if catalog["sync"] is False else "not read yet"
    variations = "-" if catalog["variations"] is None else str(catalog["variations"])
    last = (
        f"last good pass {_seconds(catalog['last_success_age_s'])} ago"
        if catalog["last_success_at"]
        else "no good pass yet"
    )
    text = (
        f"{variations} variations, {catalog['locations']} locations; {unknown_text(catalog)};"
        f" {last}, latest_time {catalog['latest_time'] or '-'}"
    )
    return text + (f"  error: {catalog['last_error']}" if catalog["last_error"] else "")


def catalog_cell(catalog: Record) -> str:
    """The CATALOG cell of `syncd sources list`: variations, locations, counts of unknown ones."""
    if not catalog["read"]:
        return "off" if catalog["sync"] is False else "-"
    unknown = "?" if catalog["unknown_variations"] is None else str(catalog["unknown_variations"])
    variations = "?" if catalog["variations"] is None else str(catalog["variations"])
    failed = ", failing" if catalog["last_error"] else ""
    return f"{variations} var, {catalog['locations']} loc, {unknown} unknown{failed}"
