"""Wiring of job tracking (issue 4): config -> job adapters, poller, reactions and service.

Split from ``daemon.py`` so the composition root stays small; like it, this is edge code that may
read ``Settings`` and hands the core plain parameters. The CLI uses ``registration_checks`` to
validate registrations when it writes to the database itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import structlog

from syncd import __version__
from syncd.config import Settings
from syncd.jobs.poller import JobPoller, PollerOptions, ProviderLimits
from syncd.jobs.ports import JobProvider, ParamCheck
from syncd.jobs.reactions import Reactions
from syncd.jobs.service import JobService
from syncd.jobs.tracking import Timing
from syncd.store import Store
from syncd.upstream.http import make_session
from syncd.upstream.job_api import JobApi, JobApiOptions
from syncd.upstream.job_dialects import DIALECTS

log = structlog.get_logger("syncd.daemon")


def job_apis(settings: Settings, session: aiohttp.ClientSession | None) -> dict[str, JobApi]:
    """One adapter per ``[jobs.providers.NAME]``; ``session=None`` gives validation-only ones."""
    apis: dict[str, JobApi] = {}
    for name, conf in settings.jobs.providers.items():
        options = JobApiOptions(
            name=name,
            base_url=conf.base_url,
            token=conf.token.get_secret_value() if conf.token else None,
            path=conf.path,
            params=dict(conf.params),
        )
        apis[name] = DIALECTS[conf.dialect](options, session)
    return apis


def registration_checks(settings: Settings) -> dict[str, ParamCheck]:
    """Each configured provider's registration validator (no network)."""
    return {name: api.check for name, api in job_apis(settings, None).items()}


def poller_options(settings: Settings) -> PollerOptions:
    """Map ``[jobs]`` onto the poller's plain parameters."""
    jobs = settings.jobs
    return PollerOptions(
        timing=Timing(
            backoff_initial=jobs.backoff_initial,
            backoff_factor=jobs.backoff_factor,
            backoff_max=jobs.backoff_max,
            deadline=jobs.deadline,
            not_found_grace=jobs.not_found_grace,
        )
    )


@dataclass(slots=True)
class JobTracking:
    """The job-tracking components; ``poller.run`` is a daemon task, ``aclose`` ends the session."""

    service: JobService
    poller: JobPoller
    session: aiohttp.ClientSession

    async def aclose(self) -> None:
        """Close the job providers' HTTP session (after the poller stopped). Idempotent."""
        if not self.session.closed:
            await self.session.close()
            log.info("component_closed", component="jobs_session")


def open_job_tracking(
    settings: Settings, store: Store, poke: Callable[[], None] | None
) -> JobTracking:
    """Build the job adapters (one HTTP session for all), poller and service.

    Call from the running event loop; the caller owns ``aclose``.
    """
    providers = settings.jobs.providers
    apis = job_apis(settings, None)  # validates every path template before anything opens
    session = make_session(
        request_timeout=settings.jobs.request_timeout,
        connect_timeout=settings.jobs.connect_timeout,
        user_agent=f"syncd/{__version__}",
        limit=max(8, sum(p.concurrency for p in providers.values()) + 4),
        limit_per_host=0,  # each provider's lane bounds its own concurrency
    )
    apis = job_apis(settings, session)
    lanes: dict[str, tuple[JobProvider, ProviderLimits]] = {
        name: (api, ProviderLimits(providers[name].concurrency, providers[name].rate_per_second))
        for name, api in apis.items()
    }
    reactions = Reactions(
        download_dir=settings.resolved_download_dir(),
        max_download_bytes=settings.jobs.max_download_bytes,
        poke=poke,
    )
    poller = JobPoller(store, lanes, poller_options(settings), reactions=reactions)
    service = JobService(store, {name: api.check for name, api in apis.items()}, poller=poller)
    return JobTracking(service=service, poller=poller, session=session)
