"""The ``jobs`` table: idempotent registration, the due-time query, recorded polls and transitions.

A registration and its ``job.pending`` entry commit together, and so does every later transition
with its ``job.<state>`` entry (issue 4): callers run these functions inside one ``Store.write``.
Updates are conditional on the state the poller last saw, so a job forgotten or moved on meanwhile
is never written back, and a state never moves twice for one observation. States are plain strings
here; ``syncd.jobs.states`` owns their meaning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import orjson

from syncd.store.changelog import NewChange, append
from syncd.timeutil import format_ns

PENDING = "pending"

_COLUMNS = (
    "id, provider, job_id, params, label, state, vendor_status, job_type, registered_at,"
    " registered_ns, updated_at, finished_at, attempts, polls, next_poll_ns, not_found_since_ns,"
    " last_error, messages, failures, progress, result"
)
# SQLite's default limit on host parameters is 32766 (999 before 3.32); stay far below either.
_CHUNK = 400


@dataclass(frozen=True, slots=True)
class NewJob:
    """A registration request, already validated against its provider."""

    provider: str
    job_id: str
    params: Mapping[str, str] = field(default_factory=dict)
    label: str | None = None


@dataclass(frozen=True, slots=True)
class JobRow:
    """One row of ``jobs``, JSON columns decoded."""

    id: int
    provider: str
    job_id: str
    params: dict[str, str]
    label: str | None
    state: str
    vendor_status: str | None
    job_type: str | None
    registered_at: str
    registered_ns: int
    updated_at: str
    finished_at: str | None
    attempts: int
    polls: int
    next_poll_ns: int
    not_found_since_ns: int | None
    last_error: str | None
    messages: list[str]
    failures: list[dict[str, Any]]
    progress: dict[str, Any] | None
    result: dict[str, Any] | None

    def to_record(self) -> dict[str, Any]:
        """The public JSON view (admin API, ``syncd jobs show``)."""
        return {
            "id": self.id,
            "provider": self.provider,
            "job_id": self.job_id,
            "label": self.label,
            "params": self.params,
            "state": self.state,
            "vendor_status": self.vendor_status,
            "job_type": self.job_type,
            "registered_at": self.registered_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "next_poll_at": None if self.finished_at else format_ns(self.next_poll_ns),
            "attempts": self.attempts,
            "polls": self.polls,
            "last_error": self.last_error,
            "messages": self.messages,
            "failures": self.failures,
            "progress": self.progress,
            "result": self.result,
        }


@dataclass(frozen=True, slots=True)
class JobUpdate:
    """What one poll changed: every mutable column's new value, and the state it was based on.

    Applied only if the row still has ``expected_state``; a different ``state`` is a transition and
    gets its change entry in the same transaction.
    """

    id: int
    expected_state: str
    state: str
    vendor_status: str | None
    job_type: str | None
    attempts: int
    polls: int
    next_poll_ns: int
    not_found_since_ns: int | None
    last_error: str | None
    messages: Sequence[str]
    failures: Sequence[Mapping[str, Any]]
    progress: Mapping[str, Any] | None
    result: Mapping[str, Any] | None
    finished: bool


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _row(row: Sequence[Any]) -> JobRow:
    return JobRow(
        id=row[0],
        provider=row[1],
        job_id=row[2],
        params=orjson.loads(row[3]),
        label=row[4],
        state=row[5],
        vendor_status=row[6],
        job_type=row[7],
        registered_at=row[8],
        registered_ns=row[9],
        updated_at=row[10],
        finished_at=row[11],
        attempts=row[12],
        polls=row[13],
        next_poll_ns=row[14],
        not_found_since_ns=row[15],
        last_error=row[16],
        messages=orjson.loads(row[17]),
        failures=orjson.loads(row[18]),
        progress=_loads(row[19]),
        result=_loads(row[20]),
    )


def entry_value(
    *,
    state: str,
    provider: str,
    job_id: str,
    label: str | None,
    params: Mapping[str, str],
    vendor_status: str | None,
    job_type: str | None,
    messages: Sequence[str],
    failures: Sequence[Mapping[str, Any]],
    progress: Mapping[str, Any] | None,
    result: Mapping[str, Any] | None,
    error: str | None,
) -> dict[str, Any]:
    """The ``new`` value of a ``job.<state>`` change entry (docs/changelog.md)."""
    return {
        "state": state,
        "provider": provider,
        "job_id": job_id,
        "label": label,
        "params": dict(params),
        "vendor_status": vendor_status,
        "job_type": job_type,
        "messages": list(messages),
        "failures": [dict(f) for f in failures],
        "progress": None if progress is None else dict(progress),
        "result": None if result is None else dict(result),
        "error": error,
    }


async def register(
    conn: aiosqlite.Connection, jobs: Sequence[NewJob], now_ns: int
) -> list[tuple[JobRow, bool]]:
    """Register jobs (first poll due at once); return each row and whether it was new.

    Idempotent on (provider, job_id): a known job is returned as stored, params and label untouched,
    and logs nothing. Each new job gets one ``job.pending`` entry. Run inside one write transaction.
    """
    if not jobs:
        return []
    existing = await _existing(conn, {(j.provider, j.job_id) for j in jobs})
    fresh: dict[tuple[str, str], NewJob] = {}
    for job in jobs:
        key = (job.provider, job.job_id)
        if key not in existing and key not in fresh:
            fresh[key] = job
    created: dict[tuple[str, str], JobRow] = {}
    if fresh:
        created = await _insert(conn, list(fresh.values()), now_ns)
        await append(conn, [_pending_entry(row) for row in created.values()], format_ns(now_ns))
    out: list[tuple[JobRow, bool]] = []
    seen: set[tuple[str, str]] = set()
    for job in jobs:
        key = (job.provider, job.job_id)
        if key in created and key not in seen:
            out.append((created[key], True))
        else:
            out.append((existing.get(key) or created[key], False))
        seen.add(key)
    return out


async def _existing(
    conn: aiosqlite.Connection, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], JobRow]:
    found: dict[tuple[str, str], JobRow] = {}
    ordered = sorted(keys)
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        values = ", ".join("(?, ?)" for _ in chunk)
        args = [part for key in chunk for part in key]
        async with conn.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE (provider, job_id) IN (VALUES {values})", args
        ) as cur:
            for row in await cur.fetchall():
                job = _row(row)
                found[(job.provider, job.job_id)] = job
    return found


async def _insert(
    conn: aiosqlite.Connection, jobs: list[NewJob], now_ns: int
) -> dict[tuple[str, str], JobRow]:
    """Insert new rows; the single writer holds the lock, so their ids are those after ``top``."""
    async with conn.execute("SELECT COALESCE(MAX(id), 0) FROM jobs") as cur:
        top_row = await cur.fetchone()
    top = int(top_row[0]) if top_row else 0
    now_text = format_ns(now_ns)
    await conn.executemany(
        "INSERT INTO jobs (provider, job_id, params, label, registered_at, registered_ns,"
        " updated_at, next_poll_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                j.provider,
                j.job_id,
                orjson.dumps(dict(j.params)).decode(),
                j.label,
                now_text,
                now_ns,
                now_text,
                now_ns,
            )
            for j in jobs
        ],
    )
    async with conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id > ? ORDER BY id", (top,)) as cur:
        rows = [_row(r) for r in await cur.fetchall()]
    return {(r.provider, r.job_id): r for r in rows}


def _pending_entry(row: JobRow) -> NewChange:
    value = entry_value(
        state=PENDING,
        provider=row.provider,
        job_id=row.job_id,
        label=row.label,
        params=row.params,
        vendor_status=None,
        job_type=None,
        messages=(),
        failures=(),
        progress=None,
        result=None,
        error=None,
    )
    return NewChange(kind=f"job.{PENDING}", source=row.provider, job_id=row.id, old=None, new=value)


async def record(
    conn: aiosqlite.Connection, updates: Sequence[JobUpdate], now_ns: int
) -> list[bool]:
    """Apply poll results in the current transaction; return, per update, whether it applied.

    An update applies when its row still exists in ``expected_state``. A state change appends one
    ``job.<state>`` entry (old: the previous state and vendor status; new: the full job value).
    """
    if not updates:
        return []
    current: dict[int, tuple[str, str | None, str, str, str | None, str]] = {}
    ids = sorted({u.id for u in updates})
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        async with conn.execute(
            "SELECT id, state, vendor_status, provider, job_id, label, params FROM jobs"
            f" WHERE id IN ({marks})",
            chunk,
        ) as cur:
            for row in await cur.fetchall():
                current[row[0]] = (row[1], row[2], row[3], row[4], row[5], row[6])
    now_text = format_ns(now_ns)
    applied: list[bool] = []
    rows: list[tuple[Any, ...]] = []
    entries: list[NewChange] = []
    for u in updates:
        found = current.get(u.id)
        if found is None or found[0] != u.expected_state:
            applied.append(False)
            continue
        applied.append(True)
        old_state, old_vendor, provider, job_id, label, params = found
        # A second update for the same job in one batch must see this one's state.
        current[u.id] = (u.state, u.vendor_status, provider, job_id, label, params)
        rows.append(
            (
                u.state,
                u.vendor_status,
                u.job_type,
                now_text,
                now_text if u.finished else None,
                u.attempts,
                u.polls,
                u.next_poll_ns,
                u.not_found_since_ns,
                u.last_error,
                orjson.dumps(list(u.messages)).decode(),
                orjson.dumps([dict(f) for f in u.failures]).decode(),
                _json(None if u.progress is None else dict(u.progress)),
                _json(None if u.result is None else dict(u.result)),
                u.id,
            )
        )
        if u.state != old_state:
            value = entry_value(
                state=u.state,
                provider=provider,
                job_id=job_id,
                label=label,
                params=orjson.loads(params),
                vendor_status=u.vendor_status,
                job_type=u.job_type,
                messages=u.messages,
                failures=u.failures,
                progress=u.progress,
                result=u.result,
                error=u.last_error,
            )
            entries.append(
                NewChange(
                    kind=f"job.{u.state}",
                    source=provider,
                    job_id=u.id,
                    old={"state": old_state, "vendor_status": old_vendor},
                    new=value,
                )
            )
    if rows:
        await conn.executemany(
            "UPDATE jobs SET state = ?, vendor_status = ?, job_type = ?, updated_at = ?,"
            " finished_at = COALESCE(?, finished_at), attempts = ?, polls = ?, next_poll_ns = ?,"
            " not_found_since_ns = ?, last_error = ?, messages = ?, failures = ?, progress = ?,"
            " result = ? WHERE id = ?",
            rows,
        )
        await append(conn, entries, now_text)
    return applied


async def get(conn: aiosqlite.Connection, id_: int) -> JobRow | None:
    """The job with syncd's id ``id_``."""
    async with conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (id_,)) as cur:
        row = await cur.fetchone()
    return None if row is None else _row(row)


async def find(conn: aiosqlite.Connection, provider: str, job_id: str) -> JobRow | None:
    """The job registered as (provider, job_id)."""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE provider = ? AND job_id = ?", (provider, job_id)
    ) as cur:
        row = await cur.fetchone()
    return None if row is None else _row(row)


async def list_jobs(
    conn: aiosqlite.Connection,
    *,
    state: str | None = None,
    provider: str | None = None,
    limit: int = 1000,
) -> list[JobRow]:
    """Jobs, newest registration first, optionally of one state and/or provider."""
    where: list[str] = []
    args: list[Any] = []
    if state is not None:
        where.append("state = ?")
        args.append(state)
    if provider is not None:
        where.append("provider = ?")
        args.append(provider)
    sql = f"SELECT {_COLUMNS} FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    args.append(limit)
    async with conn.execute(sql + " ORDER BY id DESC LIMIT ?", args) as cur:
        return [_row(r) for r in await cur.fetchall()]


async def unfinished(
    conn: aiosqlite.Connection, providers: Iterable[str] | None = None
) -> list[JobRow]:
    """Every job still being polled, soonest due first (walks the ``jobs_due`` index)."""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE finished_at IS NULL ORDER BY next_poll_ns"
    ) as cur:
        rows = [_row(r) for r in await cur.fetchall()]
    if providers is None:
        return rows
    wanted = set(providers)
    return [r for r in rows if r.provider in wanted]


async def due(conn: aiosqlite.Connection, before_ns: int, limit: int = 1000) -> list[JobRow]:
    """Unfinished jobs whose next poll is due before ``before_ns``, soonest first (``jobs_due``)."""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE finished_at IS NULL AND next_poll_ns < ?"
        " ORDER BY next_poll_ns LIMIT ?",
        (before_ns, limit),
    ) as cur:
        return [_row(r) for r in await cur.fetchall()]


async def forget(conn: aiosqlite.Connection, id_: int) -> bool:
    """Stop tracking a job: delete its row (its change entries stay). True if it existed."""
    async with conn.execute("DELETE FROM jobs WHERE id = ?", (id_,)) as cur:
        return cur.rowcount == 1


async def counts_by_state(conn: aiosqlite.Connection) -> dict[str, int]:
    """How many jobs are in each state (for status output)."""
    async with conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state") as cur:
        return {str(r[0]): int(r[1]) for r in await cur.fetchall()}
