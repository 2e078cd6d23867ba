"""What syncd does when a job ends: poke a sync pass, or fetch an export's result file.

- A succeeded job of a provider whose jobs change inventory (``affects_inventory``: the inventory
  job queue's REFRESH, ADJUST, DELETE ...) pokes a sync pass, after its transition is committed.
- A succeeded job with a result link (a commerce export's ``link.href``) is downloaded *before* its
  transition is committed, so a consumer that sees ``job.succeeded`` finds the file in place, and a
  crash in between simply polls and downloads again. The link must point at the provider's own
  origin (scheme, host and port of its ``base_url``), its path may not climb (``..``), and the file
  name taken from it may not hold a path; the body is streamed into ``download_dir`` under a
  ``<provider>-<id>-<name>`` file name, never past ``max_download_bytes``. A refused or failed
  download is recorded in the job's result (``download_error``); the job still succeeded upstream.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import structlog

from syncd import metrics
from syncd.errors import DownloadRefused, UpstreamError
from syncd.jobs.ports import JobProvider, JobRef, Observation
from syncd.jobs.states import JobState

log = structlog.get_logger("syncd.jobs.reactions")

_NAME_MAX = 200
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
_DEFAULT_NAME = "export"


def download_target(
    link: str, *, base_url: str, download_dir: Path, provider: str, job: int
) -> tuple[str, Path]:
    """Check a result link and choose its file; return (absolute URL, destination path).

    Raises ``DownloadRefused`` for a link to another origin, a path with ``..`` segments (raw or
    percent-encoded), or a file name that holds a path or control characters.
    """
    url = urljoin(base_url.rstrip("/") + "/", link)
    parts, base = urlsplit(url), urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadRefused(
            f"result link is not an http(s) URL: {link[:200]!r}", op="jobs.download"
        )
    if (parts.scheme, parts.hostname, parts.port) != (base.scheme, base.hostname, base.port):
        raise DownloadRefused(
            f"result link host {parts.netloc!r} is not the provider's ({base.netloc!r})",
            op="jobs.download",
            hint="downloads are only taken from the provider's base_url host",
        )
    # Check the link as sent too: urljoin would quietly resolve "a/../../b" into "/b".
    for path in (urlsplit(link).path, parts.path):
        for segment in path.split("/"):
            decoded = unquote(segment)
            if decoded in (".", "..") or "\\" in decoded or "/" in decoded or "\x00" in decoded:
                raise DownloadRefused(
                    f"result link path climbs or hides a path: {path[:200]!r}", op="jobs.download"
                )
    segments = parts.path.split("/")
    name = unquote(segments[-1]) if segments else ""
    if not name:
        name = _DEFAULT_NAME
    if name.startswith(".") or _BAD_NAME.search(name) or len(name) > _NAME_MAX:
        raise DownloadRefused(f"result file name is unsafe: {name[:200]!r}", op="jobs.download")
    root = download_dir.resolve()
    dest = root / f"{provider}-{job}-{name}"
    if dest.resolve().parent != root:  # belt and braces: the name cannot leave the directory
        raise DownloadRefused(f"result file name is unsafe: {name[:200]!r}", op="jobs.download")
    return url, dest


class DownloadFailed(Exception):
    """A download that failed in a way a later poll may fix (network error, 5xx)."""

    def __init__(self, cause: UpstreamError) -> None:
        super().__init__(cause.message)
        self.cause = cause


class Reactions:
    """The reactions to job outcomes; ``poke`` asks the sync trigger for a pass."""

    def __init__(
        self, *, download_dir: Path, max_download_bytes: int, poke: Callable[[], None] | None = None
    ) -> None:
        self.download_dir = download_dir
        self.max_download_bytes = max_download_bytes
        self._poke = poke

    def wants_download(self, state: JobState, obs: Observation) -> bool:
        """A succeeded job with a result link gets its file fetched before the commit."""
        return state is JobState.SUCCEEDED and bool(obs.result_link)

    async def download(self, provider: JobProvider, job: JobRef, link: str) -> dict[str, Any]:
        """Fetch the result; return what to add to the job's result.

        Raises ``DownloadFailed`` for a retryable failure, so that the job stays where it was and
        the next poll tries again; anything else is recorded as ``download_error``.
        """
        try:
            url, dest = download_target(
                link,
                base_url=provider.base_url,
                download_dir=self.download_dir,
                provider=job.provider,
                job=job.id,
            )
            dest.parent.mkdir(parents=True, exist_ok=True)
            size = await provider.download(url, dest, max_bytes=self.max_download_bytes)
        except DownloadRefused as exc:
            metrics.JOB_DOWNLOADS.labels(job.provider, "refused").inc()
            log.warning(
                "job_download_refused",
                provider=job.provider,
                id=job.id,
                job_id=job.job_id,
                **exc.fields(),
            )
            return {"download_error": exc.message}
        except UpstreamError as exc:
            if exc.retryable:
                metrics.JOB_DOWNLOADS.labels(job.provider, "retry").inc()
                raise DownloadFailed(exc) from exc
            metrics.JOB_DOWNLOADS.labels(job.provider, "failed").inc()
            log.warning(
                "job_download_failed",
                provider=job.provider,
                id=job.id,
                job_id=job.job_id,
                **exc.fields(),
            )
            return {"download_error": exc.message}
        metrics.JOB_DOWNLOADS.labels(job.provider, "ok").inc()
        metrics.JOB_DOWNLOAD_BYTES.labels(job.provider).inc(size)
        log.info(
            "job_download_done",
            provider=job.provider,
            id=job.id,
            job_id=job.job_id,
            path=str(dest),
            size=size,
        )
        return {"download": {"path": str(dest), "size": size, "url": url}}

    def after_commit(self, provider: JobProvider, state: JobState) -> None:
        """Reactions that must follow the committed transition: an inventory job's sync poke."""
        if state is JobState.SUCCEEDED and provider.affects_inventory and self._poke is not None:
            self._poke()
