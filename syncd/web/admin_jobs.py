"""The admin API's job routes: register, list, show and forget tracked jobs (issue 4).

``POST /jobs`` ``{"provider", "job_id", "params"?, "label"?}`` -> 201 ``{"job", "created": true}``,
or 200 with ``created: false`` when (provider, job_id) is already registered. ``GET /jobs``
(``?state=&provider=&limit=``) -> ``{"jobs": [...]}``. ``GET``/``DELETE /jobs/{ref}``, where ``ref``
is syncd's numeric id or ``PROVIDER:JOB_ID`` -> ``{"job"}``. Bad input is a 400 whose message says
why; an unknown job is a 404. Handlers only translate: ``JobService`` validates and persists.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from syncd.errors import JobNotFound, JobProviderError, SyncdError
from syncd.jobs.service import JobService
from syncd.web.app import error_response, json_response

JOBS_KEY = web.AppKey("jobs", JobService)
_FIELDS = frozenset({"provider", "job_id", "params", "label"})
LIST_LIMIT_MAX = 10000


def add_job_routes(app: web.Application, service: JobService) -> None:
    """Mount the job routes on the admin application."""
    app[JOBS_KEY] = service
    app.router.add_post("/jobs", register_job)
    app.router.add_get("/jobs", list_jobs)
    app.router.add_get("/jobs/{ref}", show_job)
    app.router.add_delete("/jobs/{ref}", forget_job)


def _bad(exc: SyncdError | str) -> web.Response:
    if isinstance(exc, str):
        return error_response(400, "bad_request", exc)
    message = f"{exc.message} (try: {exc.hint})" if exc.hint else exc.message
    return error_response(400, "bad_request", message)


def _not_found(exc: JobNotFound) -> web.Response:
    return error_response(404, "not_found", exc.message)


async def register_job(request: web.Request) -> web.Response:
    """POST /jobs: register a job (idempotent on provider and job id)."""
    try:
        body: Any = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _bad("the body must be a JSON object")
    if not isinstance(body, dict):
        return _bad("the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        expected = ", ".join(sorted(_FIELDS))
        return _bad(f"unknown field(s): {', '.join(unknown)}; expected {expected}")
    try:
        row, created = await request.app[JOBS_KEY].register(
            body.get("provider"), body.get("job_id"), body.get("params"), body.get("label")
        )
    except JobProviderError as exc:
        return _bad(exc)
    return json_response(
        {"job": row.to_record(), "created": created}, status=201 if created else 200
    )


async def list_jobs(request: web.Request) -> web.Response:
    """GET /jobs: newest first, optionally one state and/or provider."""
    query = request.query
    try:
        limit = int(query.get("limit", "1000"))
    except ValueError:
        return _bad("limit must be an integer")
    if not 1 <= limit <= LIST_LIMIT_MAX:
        return _bad(f"limit must be 1..{LIST_LIMIT_MAX}")
    try:
        rows = await request.app[JOBS_KEY].list_jobs(
            state=query.get("state") or None, provider=query.get("provider") or None, limit=limit
        )
    except JobProviderError as exc:
        return _bad(exc)
    return json_response({"jobs": [row.to_record() for row in rows]})


async def show_job(request: web.Request) -> web.Response:
    """GET /jobs/{ref}: one job."""
    try:
        row = await request.app[JOBS_KEY].get(request.match_info["ref"])
    except JobProviderError as exc:
        return _bad(exc)
    except JobNotFound as exc:
        return _not_found(exc)
    return json_response({"job": row.to_record()})


async def forget_job(request: web.Request) -> web.Response:
    """DELETE /jobs/{ref}: stop tracking a job (its change entries stay)."""
    try:
        row = await request.app[JOBS_KEY].forget(request.match_info["ref"])
    except JobProviderError as exc:
        return _bad(exc)
    except JobNotFound as exc:
        return _not_found(exc)
    return json_response({"job": row.to_record(), "forgotten": True})
