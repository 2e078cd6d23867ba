"""Outbound webhook endpoints (table ``outbound_endpoints``, issue 14): where each one stands.

One row per ``[outbound.NAME]``: ``acked_seq`` (every entry up to it was delivered with a 2xx, or
did not match the endpoint's filter), the batch in flight (``pending_after`` .. ``pending_last``: the
log range it covers, written before its first attempt, so a retry after a crash resends exactly the
same entries under the same ``webhook-id``), the replay ``epoch`` (part of the ``webhook-id``), and
whether it is ``disabled`` and why. ``failing_since`` survives a restart, so the failure window
that disables an endpoint is not reset by one.

The deliverer (``syncd.outbound.deliverer``) is the only writer while the daemon runs; ``syncd
consumers replay`` writes through the daemon then, or here directly under the instance lock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from syncd.errors import ReplayRefused
from syncd.store import changelog
from syncd.store.outbox import RawChange

if TYPE_CHECKING:
    import aiosqlite

STATE_ACTIVE = "active"
STATE_DISABLED = "disabled"

_COLUMNS = (
    "name, acked_seq, pending_after, pending_last, epoch, state, disabled_reason, disabled_at,"
    " failing_since, last_error, updated_at"
)


@dataclass(frozen=True, slots=True)
class EndpointRow:
    """One endpoint's stored position and state."""

    name: str
    acked_seq: int
    pending_after: int | None
    pending_last: int | None
    epoch: int
    state: str
    disabled_reason: str | None
    disabled_at: str | None
    failing_since: str | None
    last_error: str | None
    updated_at: str

    @property
    def disabled(self) -> bool:
        return self.state == STATE_DISABLED

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def _row(values: Any) -> EndpointRow:
    return EndpointRow(
        name=str(values[0]),
        acked_seq=int(values[1]),
        pending_after=None if values[2] is None else int(values[2]),
        pending_last=None if values[3] is None else int(values[3]),
        epoch=int(values[4]),
        state=str(values[5]),
        disabled_reason=values[6],
        disabled_at=values[7],
        failing_since=values[8],
        last_error=values[9],
        updated_at=str(values[10]),
    )


async def load(conn: aiosqlite.Connection, name: str) -> EndpointRow | None:
    """The endpoint's row, or None for an endpoint never started on this database."""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM outbound_endpoints WHERE name = ?", (name,)
    ) as cur:
        values = await cur.fetchone()
    return None if values is None else _row(values)


async def ensure(conn: aiosqlite.Connection, name: str, *, from_head: bool, at: str) -> EndpointRow:
    """The endpoint's row, created on its first start: acknowledged up to the head with
    ``from_head`` (only entries from now on), else up to 0 (everything retained)."""
    found = await load(conn, name)
    if found is not None:
        return found
    start = await changelog.high_water(conn) if from_head else 0
    await conn.execute(
        "INSERT INTO outbound_endpoints (name, acked_seq, updated_at) VALUES (?, ?, ?)",
        (name, start, at),
    )
    created = await load(conn, name)
    assert created is not None
    return created


async def record_pending(
    conn: aiosqlite.Connection, name: str, after: int, last: int, at: str
) -> None:
    """The batch about to be sent covers the log range (``after``, ``last``]; the position is
    ``after`` (it may have moved past entries that matched nothing, or that were pruned)."""
    await conn.execute(
        "UPDATE outbound_endpoints SET acked_seq = ?, pending_after = ?, pending_last = ?,"
        " updated_at = ? WHERE name = ?",
        (after, after, last, at, name),
    )


async def record_ack(
    conn: aiosqlite.Connection,
    name: str,
    acked: int,
    at: str,
    *,
    pending: tuple[int, int] | None = None,
    failing: bool = False,
) -> None:
    """Everything up to ``acked`` is delivered (or matched no filter); ``pending`` is the range of
    a recorded batch in flight, if any. Unless ``failing``, a failure streak is over."""
    after, last = pending if pending is not None else (None, None)
    streak = "" if failing else ", failing_since = NULL, last_error = NULL"
    await conn.execute(
        "UPDATE outbound_endpoints SET acked_seq = ?, pending_after = ?, pending_last = ?,"
        f" updated_at = ?{streak} WHERE name = ?",
        (acked, after, last, at, name),
    )


async def record_failing(
    conn: aiosqlite.Connection, name: str, since: str, error: str, at: str
) -> None:
    """The endpoint has been failing since ``since``; ``error`` is the latest failure."""
    await conn.execute(
        "UPDATE outbound_endpoints SET failing_since = ?, last_error = ?, updated_at = ?"
        " WHERE name = ?",
        (since, error, at, name),
    )


async def disable(conn: aiosqlite.Connection, name: str, reason: str, at: str) -> None:
    """Stop delivering to the endpoint until it is replayed (``syncd consumers replay``)."""
    await conn.execute(
        "UPDATE outbound_endpoints SET state = ?, disabled_reason = ?, disabled_at = ?,"
        " updated_at = ? WHERE name = ?",
        (STATE_DISABLED, reason, at, at, name),
    )


async def replay(
    conn: aiosqlite.Connection, name: str, from_seq: int | None, *, from_head: bool, at: str
) -> EndpointRow:
    """Re-enable the endpoint; with ``from_seq``, deliver again from that seq on.

    Without ``from_seq`` the endpoint resumes where it stood (its batch in flight, if any, is sent
    again under the same ``webhook-id``). With it, the position moves to ``from_seq - 1`` (back or
    forward), the batch in flight is dropped and the epoch goes up: replayed batches have new
    ``webhook-id``s, so a receiver that dedupes by id processes them again. Raises ChangelogGap
    when entries from ``from_seq`` on were pruned, ReplayRefused beyond the head + 1.
    """
    row = await ensure(conn, name, from_head=from_head, at=at)
    if from_seq is None:
        await conn.execute(
            "UPDATE outbound_endpoints SET state = ?, disabled_reason = NULL,"
            " disabled_at = NULL, failing_since = NULL, last_error = NULL, updated_at = ?"
            " WHERE name = ?",
            (STATE_ACTIVE, at, name),
        )
    else:
        high = await changelog.high_water(conn)
        if from_seq < 1 or from_seq > high + 1:
            raise ReplayRefused(
                f"cannot replay {name} from seq {from_seq}: the change log's seqs are 1..{high}",
                op="outbound.replay",
                hint=f"give --from a seq between 1 and {high + 1} (the next one)",
                endpoint=name,
            )
        await changelog.check_retained(conn, from_seq - 1)
        await conn.execute(
            "UPDATE outbound_endpoints SET acked_seq = ?, pending_after = NULL,"
            " pending_last = NULL, epoch = ?, state = ?, disabled_reason = NULL,"
            " disabled_at = NULL, failing_since = NULL, last_error = NULL, updated_at = ?"
            " WHERE name = ?",
            (from_seq - 1, row.epoch + 1, STATE_ACTIVE, at, name),
        )
    done = await load(conn, name)
    assert done is not None
    return done


async def all_endpoints(conn: aiosqlite.Connection) -> list[EndpointRow]:
    """Every endpoint's row, by name (empty on a database older than schema 11)."""
    async with conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbound_endpoints'"
    ) as cur:
        if await cur.fetchone() is None:
            return []
    async with conn.execute(f"SELECT {_COLUMNS} FROM outbound_endpoints ORDER BY name") as cur:
        return [_row(values) for values in await cur.fetchall()]


# --- reading batches -----------------------------------------------------------------------------

_SELECT = (
    "SELECT seq, recorded_at, kind, source, catalog_object_id, location_id, state, job_id, old,"
    " new, sku FROM changes WHERE seq > ? AND seq <= ?"
)


@dataclass(frozen=True, slots=True)
class Filter:
    """Which entries an endpoint gets: ``kinds`` are GLOB patterns (``count.*``), ``sources``
    exact names; an empty tuple matches everything."""

    kinds: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def sql(self) -> tuple[str, tuple[str, ...]]:
        clause = ""
        params: tuple[str, ...] = ()
        if self.kinds:
            clause += " AND (" + " OR ".join("kind GLOB ?" for _ in self.kinds) + ")"
            params += self.kinds
        if self.sources:
            clause += " AND source IN (" + ", ".join("?" for _ in self.sources) + ")"
            params += self.sources
        return clause, params


async def read_batch(
    conn: aiosqlite.Connection,
    after: int,
    upto: int | None,
    limit: int,
    *,
    flt: Filter,
    window: int,
) -> tuple[list[RawChange], int]:
    """The next batch after ``after``: up to ``limit`` matching entries in seq order, and the end
    of the log range it covers (every entry in (``after``, end] not in the batch does not match).

    The range ends at ``upto`` (a batch in flight is read again over its range), else at
    ``after + window`` or the newest seq, whichever comes first (a filter that matches little
    never scans the whole log at once); and at the ``limit``-th match, if there are that many.
    """
    clause, params = flt.sql()
    end = upto if upto is not None else min(after + window, await changelog.high_water(conn))
    async with conn.execute(
        _SELECT + clause + " ORDER BY seq LIMIT ?", (after, end, *params, limit)
    ) as cur:
        rows = [RawChange._make(r) for r in await cur.fetchall()]
    if len(rows) == limit:
        end = rows[-1].seq
    return rows, max(end, after)
