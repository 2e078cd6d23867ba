"""The inventory job queue dialect (seed 000, Kibo Commerce): ``GET .../queue/{jobID}``.

Body: the job object (``jobID``, ``tenantID``, ``locationCode``, ``type`` REFRESH/ADJUST/.../DELETE,
``status`` PENDING/WORKING/SUCCESS/FAILED, ``success``, ``messages``, ``itemCount``, ``numResults``,
``added``/``started``/``finished``). A SUCCESS whose ``success`` flag is false is a failure. These
jobs change inventory, so a succeeded one pokes a sync pass.
"""

from __future__ import annotations

from typing import Any

from syncd.jobs.ports import Observation
from syncd.jobs.states import JobState
from syncd.upstream.job_api import JobApi, as_text, clip_messages, job_and_status, pick

DIALECT = "inventory_jobs"
DEFAULT_PATH = "/commerce/inventory/v1/queue/{jobID}"
STATUSES = {
    "PENDING": JobState.PENDING,
    "WORKING": JobState.RUNNING,
    "SUCCESS": JobState.SUCCEEDED,
    "FAILED": JobState.FAILED,
}
_RESULT_KEYS = (
    "jobID",
    "tenantID",
    "locationCode",
    "type",
    "success",
    "hasData",
    "itemCount",
    "numResults",
    "originalFilename",
    "added",
    "started",
    "finished",
)
_PROGRESS_KEYS = ("itemCount", "numResults")


def parse(body: Any) -> Observation:
    """A job object (bare, or in ``data``) -> Observation; UpstreamDataError if unreadable."""
    job, status = job_and_status(body, dialect=DIALECT, label="inventory job", bare_ok=True)
    state = STATUSES.get(status.upper())
    known = state is not None
    if state is None:
        state = JobState.RUNNING
    elif state is JobState.SUCCEEDED and job.get("success") is False:
        state = JobState.FAILED
    progress = {
        k: job[k]
        for k in _PROGRESS_KEYS
        if isinstance(job.get(k), int) and not isinstance(job.get(k), bool)
    }
    return Observation(
        state=state,
        vendor_status=status,
        known=known,
        job_type=as_text(job.get("type")),
        messages=clip_messages(job.get("messages")),
        progress=progress or None,
        result=pick(job, _RESULT_KEYS) or None,
    )


class InventoryJobs(JobApi):
    """Kibo's inventory job queue as a JobProvider."""

    dialect = DIALECT
    default_path = DEFAULT_PATH
    job_id_names = ("jobID",)
    affects_inventory = True

    def parse(self, body: Any) -> Observation:
        return parse(body)
