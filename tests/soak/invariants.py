"""The invariants of syncd's promise ("never loses or double-reports a change"), as counted checks.

A ``Checker`` follows one database through a run. ``committed_state()`` holds at *every* committed
state, so the drivers call it after each SIGKILL as well as at the end: the file is intact, seqs
strictly increase and are never reused or rewritten (each entry first read is compared with what the
same seq holds later), ``sqlite_sequence`` is at least the head, no change entry repeats its
predecessor's value and each one's ``old`` is its predecessor's ``new`` (nothing lost in between),
job entries only move forward, and replaying the log from seq 0 gives the mirror exactly.
``converged()`` adds what holds once the upstream is quiet and the daemon had its pass: the mirror
equals the upstream, every accepted webhook's inbox row is processed, every registered job reached
its true end state (with its download in place), no partial download is left behind.

A failed check is recorded, not raised, so a soak run reports every violation with its count of
checks; tests assert ``checker.violations == []``.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

Key = tuple[str, str, str]
TERMINAL = ("succeeded", "failed", "partial", "lost", "expired")
_RANK = {"pending": 0, "running": 1}


@dataclass(frozen=True)
class ExpectedJob:
    """A job the driver registered and the end state its scripted provider leads to; for an export,
    the bytes its link serves (the download must hold exactly these)."""

    provider: str
    job_id: str
    state: str
    download: bytes | None = None


def _ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)


def _rw(db: Path) -> sqlite3.Connection:
    """Read-write (so a hot WAL is recovered, as syncd would) but never creating the file."""
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=10)


@dataclass
class Checker:
    """Counts checks and collects violations for one database."""

    db: Path
    source: str = "square"
    checks: int = 0
    violations: list[str] = field(default_factory=list)
    seen: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # seq -> entry as first read
    context: str = ""  # e.g. "round 7 (between_pages)", prefixed to violations

    def check(self, ok: bool, what: str) -> bool:
        self.checks += 1
        if not ok:
            self.violations.append(f"{self.context}: {what}" if self.context else what)
        return ok

    # --- at every committed state ----------------------------------------------------------------

    def committed_state(self) -> None:
        """Everything that must hold whenever syncd is not in the middle of a transaction.

        A kill before the first migration committed legitimately leaves no database file, or one
        with ``user_version`` 0 and no tables: that is the empty state (no entries, empty mirror),
        and it is only acceptable while nothing was ever read from this database before.
        """
        if self.is_empty():
            self.check(
                not self.seen,
                f"the database is empty again after {len(self.seen)} entries were read",
            )
            return
        self.check(self._integrity() == "ok", "PRAGMA integrity_check is not ok")
        entries = self._entries()
        self._seq_order(entries)
        self._durable(entries)
        self._count_chains(entries)
        self._job_chains(entries)
        self._replay(entries)

    def is_empty(self) -> bool:
        """No schema yet: no file, or a file with ``user_version`` 0 and no tables. Never creates
        the file it inspects."""
        if not self.db.exists():
            return True
        conn = _rw(self.db)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        finally:
            conn.close()
        return bool(version == 0 and tables == 0)

    def _integrity(self) -> str:
        conn = _rw(self.db)  # read-write: recovers a hot WAL like syncd
        try:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            conn.close()

    def _entries(self) -> list[tuple[Any, ...]]:
        conn = _ro(self.db)
        try:
            return conn.execute(
                "SELECT seq, kind, source, catalog_object_id, location_id, state, job_id, old, new"
                " FROM changes ORDER BY seq"
            ).fetchall()
        finally:
            conn.close()

    def _seq_order(self, entries: list[tuple[Any, ...]]) -> None:
        seqs = [e[0] for e in entries]
        self.check(
            all(a < b for a, b in itertools.pairwise(seqs)), "seq does not strictly increase"
        )
        conn = _ro(self.db)
        try:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        finally:
            conn.close()
        head = seqs[-1] if seqs else 0
        self.check(
            (row[0] if row else 0) >= head,
            f"sqlite_sequence {row} is behind the head seq {head}: a seq could be reused",
        )

    def _durable(self, entries: list[tuple[Any, ...]]) -> None:
        """A seq once read keeps its entry forever: never reused, rewritten or lost (no retention)."""
        now = {e[0]: e for e in entries}
        lost = [seq for seq in self.seen if seq not in now]
        self.check(not lost, f"entries vanished after they were read: seqs {lost[:10]}")
        changed = [seq for seq, e in self.seen.items() if seq in now and now[seq] != e]
        self.check(not changed, f"seqs reused or rewritten: {changed[:10]}")
        for seq, e in now.items():
            self.seen.setdefault(seq, e)

    def _count_chains(self, entries: list[tuple[Any, ...]]) -> None:
        """Per key: no entry repeats its predecessor's value, and each ``old`` is the predecessor's
        ``new`` (null on first sight and after a removal): nothing lost or doubled in between."""
        last: dict[Key, Any] = {}
        dup: list[int] = []
        broken: list[int] = []
        for seq, kind, _source, obj, loc, state, _job, old_raw, new_raw in entries:
            if not kind.startswith("count."):
                continue
            key = (obj, loc, state)
            old = orjson.loads(old_raw) if old_raw else None
            new = orjson.loads(new_raw) if new_raw else None
            prev = last.get(key)
            if prev is not None and prev == new:
                dup.append(seq)
            if old != prev:
                broken.append(seq)
            last[key] = new
        self.check(not dup, f"duplicate change entries (same key, same new value): seqs {dup[:10]}")
        self.check(not broken, f"entries whose old is not the previous new: seqs {broken[:10]}")

    def _job_chains(self, entries: list[tuple[Any, ...]]) -> None:
        """Per job: job.pending first (once), then only forward moves, nothing after an end."""
        states: dict[int, str] = {}
        bad: list[str] = []
        for seq, kind, _source, _obj, _loc, _state, job_id, old_raw, new_raw in entries:
            if not kind.startswith("job."):
                continue
            new_state = kind.removeprefix("job.")
            old = orjson.loads(old_raw) if old_raw else None
            prev = states.get(job_id)
            if prev is None:
                if new_state != "pending" or old is not None:
                    bad.append(f"seq {seq}: job {job_id} starts with {kind}")
            elif prev in TERMINAL:
                bad.append(f"seq {seq}: job {job_id} {kind} after its end ({prev})")
            elif _RANK.get(new_state, 2) <= _RANK.get(prev, 2):
                bad.append(f"seq {seq}: job {job_id} {prev} -> {new_state} is not forward")
            elif old is None or old.get("state") != prev:
                bad.append(f"seq {seq}: job {job_id} old {old} is not its previous state {prev}")
            new = orjson.loads(new_raw) if new_raw else {}
            if new.get("state") != new_state:
                bad.append(f"seq {seq}: {kind} carries new.state {new.get('state')}")
            states[job_id] = new_state
        self.check(not bad, f"job change entries out of order: {bad[:5]}")

    def _replay(self, entries: list[tuple[Any, ...]]) -> None:
        replayed: dict[Key, dict[str, Any]] = {}
        for seq, kind, source, obj, loc, state, _job, _old, new_raw in entries:
            if source != self.source:
                continue
            if kind == "count.updated":
                replayed[(obj, loc, state)] = {**orjson.loads(new_raw), "seq": seq}
            elif kind == "count.removed":
                replayed.pop((obj, loc, state), None)
        mirror = self.mirror()
        diff = [k for k in set(replayed) | set(mirror) if replayed.get(k) != mirror.get(k)]
        self.check(
            not diff,
            f"replaying the log does not give the mirror: {len(diff)} keys differ,"
            f" e.g. {[(k, replayed.get(k), mirror.get(k)) for k in diff[:2]]}",
        )

    def mirror(self) -> dict[Key, dict[str, Any]]:
        """The mirror as stored: key -> value and last-touching seq."""
        conn = _ro(self.db)
        try:
            rows = conn.execute(
                "SELECT catalog_object_id, location_id, state, quantity, calculated_at,"
                " catalog_object_type, seq FROM inventory_counts WHERE source = ?",
                (self.source,),
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

    # --- once converged --------------------------------------------------------------------------

    def converged(
        self,
        upstream: Iterable[Mapping[str, Any]],
        *,
        accepted_events: Iterable[str] = (),
        jobs: Iterable[ExpectedJob] = (),
        download_dir: Path | None = None,
    ) -> None:
        """The end state after the last restart and a quiet pass (call after ``committed_state``)."""
        self.mirror_equals(upstream)
        self.inbox_processed(accepted_events)
        self.jobs_ended(list(jobs), download_dir)

    def mirror_equals(self, upstream: Iterable[Mapping[str, Any]]) -> None:
        want = {
            (r["catalog_object_id"], r["location_id"], r["state"]): (
                r["quantity"],
                r["calculated_at"],
                r.get("catalog_object_type"),
            )
            for r in upstream
        }
        got = {
            k: (v["quantity"], v["calculated_at"], v["catalog_object_type"])
            for k, v in self.mirror().items()
        }
        diff = [k for k in set(want) | set(got) if want.get(k) != got.get(k)]
        self.check(
            not diff,
            f"mirror != upstream: {len(diff)} keys differ of {len(want)},"
            f" e.g. {[(k, want.get(k), got.get(k)) for k in diff[:3]]}",
        )

    def inbox_processed(self, accepted_events: Iterable[str]) -> None:
        conn = _ro(self.db)
        try:
            rows = dict(conn.execute("SELECT event_id, processed_at FROM webhook_events"))
        finally:
            conn.close()
        accepted = set(accepted_events)
        missing = [e for e in accepted if e not in rows]
        self.check(not missing, f"accepted webhooks missing from the inbox: {missing[:5]}")
        pending = [e for e, at in rows.items() if at is None]
        self.check(not pending, f"inbox rows never processed: {len(pending)}, e.g. {pending[:3]}")

    def jobs_ended(self, expected: list[ExpectedJob], download_dir: Path | None) -> None:
        conn = _ro(self.db)
        try:
            cur = conn.execute("SELECT id, provider, job_id, state, finished_at, result FROM jobs")
            rows = {(r[1], r[2]): r for r in cur.fetchall()}
            terminal_entries = dict(
                conn.execute(
                    "SELECT job_id, COUNT(*) FROM changes WHERE kind IN"
                    " ('job.succeeded', 'job.failed', 'job.partial', 'job.lost', 'job.expired')"
                    " GROUP BY job_id"
                ).fetchall()
            )
        finally:
            conn.close()
        for job in expected:
            row = rows.get((job.provider, job.job_id))
            if not self.check(
                row is not None, f"registered job {job.provider}:{job.job_id} is gone"
            ):
                continue
            assert row is not None
            id_, _, _, state, finished_at, result_raw = row
            self.check(
                state == job.state and finished_at is not None,
                f"job {id_} {job.provider}:{job.job_id} is {state}, expected {job.state}",
            )
            self.check(
                terminal_entries.get(id_) == 1,
                f"job {id_} has {terminal_entries.get(id_)} end entries, expected 1",
            )
            if job.download is not None:
                result = orjson.loads(result_raw) if result_raw else {}
                download = result.get("download") or {}
                path = Path(download.get("path", "/nonexistent"))
                ok = path.is_file() and path.read_bytes() == job.download
                inside = download_dir is not None and path.parent == download_dir.resolve()
                self.check(
                    ok and inside,
                    f"job {id_}: download {download or result} is not the"
                    f" {len(job.download)} bytes served, in {download_dir}",
                )
        unexpected = sorted(set(rows) - {(j.provider, j.job_id) for j in expected})
        self.check(not unexpected, f"jobs nobody registered: {unexpected[:5]}")
        if download_dir is not None and download_dir.exists():
            parts = [p.name for p in download_dir.iterdir() if p.name.endswith(".part")]
            self.check(not parts, f"partial downloads left behind: {parts}")
