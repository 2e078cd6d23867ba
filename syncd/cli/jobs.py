"""`syncd jobs add|list|show|forget`: register and inspect tracked upstream jobs.

Each action goes to the running daemon through its admin listener (``admin.listen``, with
``admin.token``). When no daemon listens there, the action works on the database directly (taking
the instance lock for writes), so jobs can be registered before the daemon starts; they are polled
once it runs. Bad input (unknown provider, missing path parameter, empty id) exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import orjson
import structlog

from syncd.cli.common import (
    EXIT_OK,
    add_common,
    offline_store,
    require_database,
    settings_from,
    setup_logging,
    sqlite_int,
)
from syncd.cli.control import AdminClient, AdminUnavailable
from syncd.config import Settings
from syncd.daemon_jobs import registration_checks
from syncd.jobs.service import JobService, parse_ref
from syncd.jobs.states import JobState
from syncd.store import Store

log = structlog.get_logger("syncd.cli")

Record = dict[str, Any]


def _param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def register(sub: Any) -> None:
    parser = sub.add_parser("jobs", help="track upstream jobs: add, list, show, forget")
    actions = parser.add_subparsers(dest="jobs_action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="register a job for polling (idempotent)")
    add_common(add)
    add.add_argument("provider", metavar="PROVIDER", help="a [jobs.providers.NAME] name")
    add.add_argument("job_id", metavar="JOB_ID", help="the vendor's job id")
    add.add_argument(
        "--param",
        dest="params",
        type=_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a path parameter (e.g. businessUnitId=BU1); repeat",
    )
    add.add_argument("--label", metavar="TEXT", help="a note kept with the job")
    add.add_argument("--json", action="store_true", help="machine-readable output")
    add.set_defaults(handler=handle_add)

    lister = actions.add_parser("list", help="list tracked jobs, newest first")
    add_common(lister)
    lister.add_argument("--state", choices=[s.value for s in JobState], help="only this state")
    lister.add_argument("--provider", metavar="NAME", help="only this provider")
    lister.add_argument("--limit", type=sqlite_int, default=1000, metavar="N")
    lister.add_argument("--json", action="store_true", help="machine-readable output")
    lister.set_defaults(handler=handle_list)

    show = actions.add_parser("show", help="show one job as JSON")
    add_common(show)
    show.add_argument("ref", metavar="ID", help="syncd's job id, or PROVIDER:JOB_ID")
    show.set_defaults(handler=handle_show)

    forget = actions.add_parser("forget", help="stop tracking a job (its change entries stay)")
    add_common(forget)
    forget.add_argument("ref", metavar="ID", help="syncd's job id, or PROVIDER:JOB_ID")
    forget.add_argument("--json", action="store_true", help="machine-readable output")
    forget.set_defaults(handler=handle_forget)


# --- handlers ------------------------------------------------------------------------------------


def handle_add(args: argparse.Namespace) -> int:
    params = dict(args.params)

    async def remote(client: AdminClient) -> Record:
        body = {
            "provider": args.provider,
            "job_id": args.job_id,
            "params": params,
            "label": args.label,
        }
        return dict(await client.request("POST", "/jobs", body=body))

    async def local(service: JobService) -> Record:
        row, created = await service.register(args.provider, args.job_id, params, args.label)
        return {"job": row.to_record(), "created": created}

    data = _run(args, remote, local, write=True)
    if args.json:
        _print_json(data)
    else:
        job = data["job"]
        head = "registered" if data["created"] else "already registered"
        print(f"{head}: job {job['id']} {job['provider']}/{job['job_id']} ({job['state']})")
    return EXIT_OK


def handle_list(args: argparse.Namespace) -> int:
    query = {"limit": str(args.limit)}
    if args.state:
        query["state"] = args.state
    if args.provider:
        query["provider"] = args.provider

    async def remote(client: AdminClient) -> Record:
        return dict(await client.request("GET", "/jobs", query=query))

    async def local(service: JobService) -> Record:
        rows = await service.list_jobs(state=args.state, provider=args.provider, limit=args.limit)
        return {"jobs": [row.to_record() for row in rows]}

    data = _run(args, remote, local, write=False)
    if args.json:
        _print_json(data)
    else:
        sys.stdout.write(render_list(data["jobs"]))
    return EXIT_OK


def handle_show(args: argparse.Namespace) -> int:
    parse_ref(args.ref)  # a malformed reference is bad input, whatever the daemon's state

    async def remote(client: AdminClient) -> Record:
        return dict(await client.request("GET", f"/jobs/{_path_ref(args.ref)}"))

    async def local(service: JobService) -> Record:
        return {"job": (await service.get(args.ref)).to_record()}

    _print_json(_run(args, remote, local, write=False)["job"], indent=True)
    return EXIT_OK


def handle_forget(args: argparse.Namespace) -> int:
    parse_ref(args.ref)

    async def remote(client: AdminClient) -> Record:
        return dict(await client.request("DELETE", f"/jobs/{_path_ref(args.ref)}"))

    async def local(service: JobService) -> Record:
        return {"job": (await service.forget(args.ref)).to_record(), "forgotten": True}

    data = _run(args, remote, local, write=True)
    if args.json:
        _print_json(data)
    else:
        job = data["job"]
        print(f"forgot job {job['id']} {job['provider']}/{job['job_id']} (was {job['state']})")
    return EXIT_OK


# --- plumbing ------------------------------------------------------------------------------------


def _run(
    args: argparse.Namespace,
    remote: Callable[[AdminClient], Awaitable[Record]],
    local: Callable[[JobService], Awaitable[Record]],
    *,
    write: bool,
) -> Record:
    settings = settings_from(args)
    setup_logging(settings)
    return asyncio.run(_dispatch(settings, remote, local, write=write))


async def _dispatch(
    settings: Settings,
    remote: Callable[[AdminClient], Awaitable[Record]],
    local: Callable[[JobService], Awaitable[Record]],
    *,
    write: bool,
) -> Record:
    client = AdminClient.from_settings(settings)
    try:
        return await remote(client)
    except AdminUnavailable as exc:
        log.info(
            "daemon_not_running",
            admin=settings.admin.listen,
            reason=str(exc),
            database=str(settings.database),
        )
    checks = registration_checks(settings)
    if not write:
        require_database(settings.database)
        store = await Store.open(settings.database, readonly=True)
        try:
            return await local(JobService(store, checks))
        finally:
            await store.aclose()
    async with offline_store(settings, op="jobs", create=True) as store:
        return await local(JobService(store, checks))


def _path_ref(ref: str) -> str:
    return quote(ref, safe=":")


def _print_json(data: Any, *, indent: bool = False) -> None:
    option = orjson.OPT_INDENT_2 if indent else 0
    sys.stdout.write(orjson.dumps(data, option=option).decode() + "\n")


def render_list(jobs: list[Record]) -> str:
    """One line per job: id, provider/job id, state, vendor status, last update, label."""
    if not jobs:
        return "no jobs\n"
    lines = []
    for job in jobs:
        label = f"  {job['label']}" if job.get("label") else ""
        vendor = job.get("vendor_status") or "-"
        lines.append(
            f"{job['id']:>6}  {job['provider']}/{job['job_id']}  {job['state']:<9}"
            f"  {vendor:<12}  {job['updated_at']}{label}"
        )
    return "\n".join(lines) + "\n"
