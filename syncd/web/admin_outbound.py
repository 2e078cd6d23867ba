"""The admin API's outbound routes (issue 14): where each endpoint stands, and replaying one.

``GET /outbound`` -> 200 ``{"endpoints": [{"endpoint", "state", "disabled_reason", "acked_seq",
"lag", "epoch", "pending", "failures", "failing_since"}]}`` as the running deliverers see it.

``POST /outbound/{name}/replay`` with ``{}`` (or no body) re-enables the endpoint where it stood;
``{"from": SEQ}`` also moves it to deliver again from SEQ on (new webhook-ids). -> 200
``{"replayed": {...the stored row...}}``. 400 ``bad_request`` for a body that is not a JSON object
with an optional positive integer ``from``, or a seq beyond the head + 1; 404 ``unknown_endpoint``
when the running config has no such endpoint; 410 ``changelog_gap`` when the entries from SEQ on
were pruned; 503 when the deliverer did not take the request within ``REPLAY_TIMEOUT`` seconds.
``syncd consumers replay NAME [--from SEQ]`` calls it while the daemon runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from syncd.errors import ChangelogGap, ReplayRefused, SyncdError, UnknownEndpoint
from syncd.store.outbound import EndpointRow
from syncd.web.app import error_response, json_response

ReplayFn = Callable[[str, int | None], Awaitable[EndpointRow]]
StatesFn = Callable[[], list[dict[str, Any]]]
REPLAY_KEY: web.AppKey[ReplayFn] = web.AppKey("outbound_replay")
STATES_KEY: web.AppKey[StatesFn] = web.AppKey("outbound_states")

CODE_UNKNOWN = "unknown_endpoint"
REPLAY_TIMEOUT = 15.0
SEQ_MAX = 2**63 - 1


def add_outbound_routes(app: web.Application, replay: ReplayFn, states: StatesFn) -> None:
    """Mount the outbound routes on the admin application."""
    app[REPLAY_KEY] = replay
    app[STATES_KEY] = states
    app.router.add_get("/outbound", list_endpoints)
    app.router.add_post("/outbound/{name}/replay", replay_endpoint)


def _message(exc: SyncdError) -> str:
    return f"{exc.message} (try: {exc.hint})" if exc.hint else exc.message


async def list_endpoints(request: web.Request) -> web.Response:
    """GET /outbound: every configured endpoint's live state."""
    return json_response({"endpoints": request.app[STATES_KEY]()})


def _from_seq(raw: bytes) -> int | str | None:
    """The body's ``from`` (None when absent), or why the body is refused."""
    if not raw.strip():
        return None
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "the body must be a JSON object"
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    unknown = sorted(set(body) - {"from"})
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}; expected from"
    value = body.get("from")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= SEQ_MAX:
        return f"from must be a seq: an integer 1..{SEQ_MAX}"
    return int(value)


async def replay_endpoint(request: web.Request) -> web.Response:
    """POST /outbound/{name}/replay: re-enable an endpoint, optionally from an earlier seq."""
    name = request.match_info["name"]
    from_seq = _from_seq(await request.read())
    if isinstance(from_seq, str):
        return error_response(400, "bad_request", from_seq)
    try:
        async with asyncio.timeout(REPLAY_TIMEOUT):
            row = await request.app[REPLAY_KEY](name, from_seq)
    except UnknownEndpoint as exc:
        return error_response(404, CODE_UNKNOWN, _message(exc))
    except ReplayRefused as exc:
        return error_response(400, "bad_request", _message(exc))
    except ChangelogGap as exc:
        return error_response(410, "changelog_gap", _message(exc))
    except TimeoutError:
        return error_response(
            503, "unavailable", f"the deliverer of {name} did not take the replay in time"
        )
    return json_response({"replayed": row.to_record()})
