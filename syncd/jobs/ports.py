"""What the job poller needs from a job API: fetch one job's status, and download its result.

The core owns these types; each vendor dialect in ``syncd.upstream`` implements ``JobProvider``
(litestream's ReplicaClient pattern). Adapters normalise the vendor's status into a ``JobState`` and
keep the raw status, so the poller never needs to know a dialect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from syncd.jobs.states import JobState


@dataclass(frozen=True, slots=True)
class JobRef:
    """The job to ask about: syncd's id, the provider instance, the vendor's id, the params.

    ``params`` holds only what was given at registration; the provider merges its own defaults.
    """

    id: int
    provider: str
    job_id: str
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Observation:
    """One answer from the provider, normalised.

    ``state`` is the vendor status mapped onto the lifecycle (never ``lost`` or ``expired``: only
    the poller decides those). ``vendor_status`` is the raw status as sent; ``known`` is False
    when the adapter did not recognise it (the state is then ``running``). ``failures`` are vendor
    objects (failed orders and their lines, error objects); ``progress`` is whatever progress
    figures the vendor gave (compared between polls to reset the backoff); ``result`` holds vendor
    facts worth keeping (item counts, job type, timestamps); ``result_link`` is an export file to
    download.
    """

    state: JobState
    vendor_status: str
    known: bool = True
    job_type: str | None = None
    messages: tuple[str, ...] = ()
    failures: tuple[dict[str, Any], ...] = ()
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    result_link: str | None = None


@dataclass(frozen=True, slots=True)
class NotFound:
    """The provider says the job does not exist (HTTP 404), with its own words if it gave any."""

    detail: str | None = None


class ParamCheck(Protocol):
    """Validates a registration before it is stored: raises ``JobProviderError`` with the reason."""

    def __call__(self, job_id: str, params: Mapping[str, str]) -> None: ...


class JobProvider(Protocol):
    """One configured job API instance (a ``[jobs.providers.NAME]`` table)."""

    @property
    def name(self) -> str:
        """The provider instance name registrations use."""
        ...

    @property
    def base_url(self) -> str:
        """The configured base URL; downloads are accepted only from its host."""
        ...

    @property
    def affects_inventory(self) -> bool:
        """True when a succeeded job changed inventory counts (a sync pass should follow)."""
        ...

    def check(self, job_id: str, params: Mapping[str, str]) -> None:
        """Raise ``JobProviderError`` if the job cannot be polled (empty id, missing path param)."""
        ...

    async def fetch(self, job: JobRef) -> Observation | NotFound:
        """One status request, no retries of its own (the poller backs off and rate-limits).

        Raises ``UpstreamError`` for anything but a 2xx or 404 (``retry_after`` set from 429/503),
        ``UpstreamDataError`` for a 2xx body the dialect cannot read.
        """
        ...

    async def download(self, url: str, dest: Path, *, max_bytes: int) -> int:
        """Stream ``url`` into ``dest`` (an absolute path the caller chose); return its size.

        Raises ``DownloadRefused`` when the body would exceed ``max_bytes`` (nothing is left behind)
        and ``UpstreamError`` when the request fails.
        """
        ...
