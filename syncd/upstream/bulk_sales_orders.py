"""The bulk sales-order import job dialect (seed 001):
``GET /business_units/{businessUnitId}/sales_orders/bulk/{bulkJobId}``.

Body: ``{"data": {"jobId", "status", "failedOrders": [...], "progress": {"processed", "total"}}}``;
``status`` CREATED/INITIATED (pending), PROCESSING (running), COMPLETED. COMPLETED means the batch
was processed "whether or not there were failures": no failed orders is a success, some is
``partial``, and every order failed (as many failures as ``progress.total``) is ``failed``.
A 404 says "Job Not Found". ``businessUnitId`` comes from the job's or the provider's params.
"""

from __future__ import annotations

from typing import Any

from syncd.jobs.ports import Observation
from syncd.jobs.states import JobState
from syncd.upstream.job_api import MAX_FAILURES, JobApi, as_text, job_and_status

DIALECT = "bulk_sales_orders"
DEFAULT_PATH = "/business_units/{businessUnitId}/sales_orders/bulk/{bulkJobId}"
COMPLETED = "COMPLETED"
STATUSES = {
    "CREATED": JobState.PENDING,
    "INITIATED": JobState.PENDING,
    "PROCESSING": JobState.RUNNING,
}


def _failure(order: Any) -> dict[str, Any] | None:
    """A failed order, without the echoed original request (``item``), which can be large."""
    if not isinstance(order, dict):
        return None
    lines = order.get("lines")
    return {
        "customerOrderNumber": as_text(order.get("customerOrderNumber")),
        "message": as_text(order.get("message")),
        "lines": [
            {
                "customerLineNumber": as_text(line.get("customerLineNumber")),
                "message": as_text(line.get("message")),
            }
            for line in (lines if isinstance(lines, list) else [])
            if isinstance(line, dict)
        ][:MAX_FAILURES],
    }


def _progress(raw: Any) -> dict[str, int] | None:
    if not isinstance(raw, dict):
        return None
    found = {
        k: raw[k]
        for k in ("processed", "total")
        if isinstance(raw.get(k), int) and not isinstance(raw.get(k), bool)
    }
    return found or None


def parse(body: Any) -> Observation:
    """``{"data": job}`` -> Observation; UpstreamDataError if unreadable."""
    job, status = job_and_status(body, dialect=DIALECT, label="bulk sales-order job")
    raw_failed = job.get("failedOrders")
    failed_all = raw_failed if isinstance(raw_failed, list) else []
    failures = tuple(f for f in (_failure(o) for o in failed_all[:MAX_FAILURES]) if f is not None)
    progress = _progress(job.get("progress"))
    upper = status.upper()
    known = True
    if upper == COMPLETED:
        total = progress.get("total") if progress else None
        if not failed_all:
            state = JobState.SUCCEEDED
        elif total is not None and len(failed_all) >= total > 0:
            state = JobState.FAILED
        else:
            state = JobState.PARTIAL
    elif upper in STATUSES:
        state = STATUSES[upper]
    else:
        state, known = JobState.RUNNING, False
    result: dict[str, Any] = {"failed_orders": len(failed_all)}
    if as_text(job.get("jobId")):
        result["jobId"] = job["jobId"]
    if progress:
        result.update(progress)
    return Observation(
        state=state,
        vendor_status=status,
        known=known,
        failures=failures,
        progress=progress,
        result=result,
    )


class BulkSalesOrders(JobApi):
    """Async bulk sales-order import jobs as a JobProvider."""

    dialect = DIALECT
    default_path = DEFAULT_PATH
    job_id_names = ("bulkJobId",)

    def parse(self, body: Any) -> Observation:
        return parse(body)
