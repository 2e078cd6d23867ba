"""Registering and controlling tracked jobs: validate, persist, and tell the poller.

The admin API and the CLI's offline mode both go through ``JobService``, so the rules are the same
either way: a known provider, a non-empty job id, every path parameter the provider needs, and
idempotence on (provider, job_id). Bad input raises ``JobProviderError`` with the reason (HTTP 400,
exit 2); an unknown job raises ``JobNotFound``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from syncd import metrics
from syncd.errors import JobNotFound, JobProviderError
from syncd.jobs.poller import JobPoller
from syncd.jobs.ports import ParamCheck
from syncd.jobs.states import parse_state
from syncd.store import Store
from syncd.store import jobs as jobs_store
from syncd.store.jobs import JobRow, NewJob
from syncd.timeutil import now_ns

JOB_ID_MAX = 256
LABEL_MAX = 200
PARAMS_MAX = 32
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# syncd's job ids are SQLite INTEGERs: a larger number cannot name one (and cannot be bound).
JOB_REF_MAX = 2**63 - 1
JOB_REF_DIGITS_MAX = 19


def _bad(message: str, hint: str | None = None, **context: Any) -> JobProviderError:
    return JobProviderError(message, op="jobs.register", hint=hint, **context)


class JobService:
    """The registry of tracked jobs; ``checks`` maps each configured provider to its validator."""

    def __init__(
        self, store: Store, checks: Mapping[str, ParamCheck], *, poller: JobPoller | None = None
    ) -> None:
        self._store = store
        self._checks = dict(checks)
        self._poller = poller

    @property
    def providers(self) -> list[str]:
        return sorted(self._checks)

    def validate(self, provider: Any, job_id: Any, params: Any = None, label: Any = None) -> NewJob:
        """Check one registration; return it normalised (id as text) or raise JobProviderError."""
        if not isinstance(provider, str) or not provider:
            raise _bad("provider is required")
        if provider not in self._checks:
            known = ", ".join(self.providers) or "none configured"
            raise _bad(
                f"unknown provider {provider!r} (configured: {known})",
                hint=f"add a [jobs.providers.{provider}] table to the config",
                provider=provider,
            )
        if isinstance(job_id, int) and not isinstance(job_id, bool):
            job_id = str(job_id)
        if not isinstance(job_id, str) or not job_id.strip():
            raise _bad("job id is empty", provider=provider)
        if len(job_id) > JOB_ID_MAX or _CONTROL.search(job_id):
            raise _bad(
                f"job id must be at most {JOB_ID_MAX} printable characters", provider=provider
            )
        params = {} if params is None else params
        if (
            not isinstance(params, dict)
            or len(params) > PARAMS_MAX
            or not all(
                isinstance(k, str) and k and isinstance(v, str | int) and not isinstance(v, bool)
                for k, v in params.items()
            )
        ):
            raise _bad(
                f"params must be an object of at most {PARAMS_MAX} name: string pairs",
                provider=provider,
            )
        clean = {k: str(v) for k, v in params.items()}
        if label is not None and (not isinstance(label, str) or len(label) > LABEL_MAX):
            raise _bad(
                f"label must be a string of at most {LABEL_MAX} characters", provider=provider
            )
        self._checks[provider](job_id, clean)
        return NewJob(provider=provider, job_id=job_id, params=clean, label=label or None)

    async def register(
        self, provider: Any, job_id: Any, params: Any = None, label: Any = None
    ) -> tuple[JobRow, bool]:
        """Register one job; returns (row, created). Idempotent on (provider, job_id)."""
        [result] = await self.register_many([self.validate(provider, job_id, params, label)])
        return result

    async def register_many(self, jobs: Sequence[NewJob]) -> list[tuple[JobRow, bool]]:
        """Register validated jobs in one transaction, then hand the new ones to the poller."""
        now = now_ns()
        results = await self._store.write(lambda conn: jobs_store.register(conn, jobs, now))
        for row, created in results:
            if created:
                metrics.JOB_TRANSITIONS.labels(row.provider, "pending").inc()
        if self._poller is not None:
            self._poller.track(row for row, created in results if created)
        return results

    async def get(self, ref: str) -> JobRow:
        """A job by syncd's numeric id or by ``PROVIDER:JOB_ID``."""
        row = await self._store.read(lambda conn: _lookup(conn, ref))
        if row is None:
            raise JobNotFound(
                f"no tracked job {ref!r}",
                op="jobs.show",
                hint="`syncd jobs list` shows the tracked jobs",
            )
        return row

    async def list_jobs(
        self, *, state: str | None = None, provider: str | None = None, limit: int = 1000
    ) -> list[JobRow]:
        """Jobs, newest first; ``state`` must be a lifecycle state name."""
        if state is not None:
            try:
                state = parse_state(state).value
            except ValueError as exc:
                raise JobProviderError(str(exc), op="jobs.list") from None
        return await self._store.read(
            lambda conn: jobs_store.list_jobs(conn, state=state, provider=provider, limit=limit)
        )

    async def forget(self, ref: str) -> JobRow:
        """Stop tracking a job and delete its row; its change entries stay in the log."""

        async def work(conn: Any) -> JobRow | None:
            row = await _lookup(conn, ref)
            if row is not None:
                await jobs_store.forget(conn, row.id)
            return row

        row = await self._store.write(work)
        if row is None:
            raise JobNotFound(
                f"no tracked job {ref!r}",
                op="jobs.forget",
                hint="`syncd jobs list` shows the tracked jobs",
            )
        if self._poller is not None:
            self._poller.forget(row.id)
        return row


def parse_ref(ref: str) -> int | tuple[str, str]:
    """``42`` (syncd's id) or ``PROVIDER:JOB_ID``; JobProviderError for anything else."""
    ref = ref.strip()
    # ASCII only: str.isdigit() also accepts "²" (which int() refuses) and other scripts' digits.
    if ref.isascii() and ref.isdigit():
        digits = ref.lstrip("0") or "0"  # measured before int(): it refuses 4,300+ digits
        if len(digits) > JOB_REF_DIGITS_MAX or int(digits) > JOB_REF_MAX:
            raise JobProviderError(
                f"job id {ref[:40]!r} is out of range",
                op="jobs.show",
                hint="use syncd's numeric job id or PROVIDER:JOB_ID",
            )
        return int(digits)
    provider, sep, job_id = ref.partition(":")
    if sep and provider and job_id:
        return provider, job_id
    raise JobProviderError(
        f"bad job reference {ref!r}",
        op="jobs.show",
        hint="use syncd's numeric job id or PROVIDER:JOB_ID",
    )


async def _lookup(conn: Any, ref: str) -> JobRow | None:
    parsed = parse_ref(ref)
    if isinstance(parsed, int):
        return await jobs_store.get(conn, parsed)
    return await jobs_store.find(conn, *parsed)
