"""The commerce "Get a Job" dialect (seed 002): ``GET /v2/jobs/{jobID}``.

Body: ``{"data": {"id", "type": "job", "job_type", "status", "error", "link": {"href"},
"timestamps": {...}}}`` with ``status`` pending/started/success/failed (any case). A succeeded
export's ``link.href`` is the CSV of exported data, which the poller downloads. Errors come as an
``errors[]`` envelope (``status``, ``title``, ``detail``).
"""

from __future__ import annotations

from typing import Any

from syncd.jobs.ports import Observation
from syncd.jobs.states import JobState
from syncd.upstream.job_api import JobApi, as_text, job_and_status, pick

DIALECT = "commerce_jobs"
DEFAULT_PATH = "/v2/jobs/{jobID}"
STATUSES = {
    "pending": JobState.PENDING,
    "started": JobState.RUNNING,
    "success": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
}


def parse(body: Any) -> Observation:
    """``{"data": job}`` -> Observation; UpstreamDataError if unreadable."""
    job, status = job_and_status(body, dialect=DIALECT, label="commerce job")
    state = STATUSES.get(status.lower())
    known = state is not None
    error = as_text(job.get("error"))
    link = job.get("link")
    href = as_text(link.get("href")) if isinstance(link, dict) else None
    result: dict[str, Any] = pick(job, ("id", "job_type"))
    timestamps = job.get("timestamps")
    if isinstance(timestamps, dict):
        result.update(pick(timestamps, ("created_at", "updated_at")))
    if href:
        result["link"] = href
    return Observation(
        state=state or JobState.RUNNING,
        vendor_status=status,
        known=known,
        job_type=as_text(job.get("job_type")),
        messages=(error,) if error else (),
        failures=({"detail": error},) if error and state is JobState.FAILED else (),
        result=result or None,
        result_link=href if state is JobState.SUCCEEDED else None,
    )


class CommerceJobs(JobApi):
    """Commerce "Get a Job" as a JobProvider."""

    dialect = DIALECT
    default_path = DEFAULT_PATH
    job_id_names = ("jobID", "id")

    def parse(self, body: Any) -> Observation:
        return parse(body)
