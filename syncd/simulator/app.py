"""The simulator's aiohttp application.

The batch-retrieve route, the ``/_sim/`` control routes, and the background tasks (mutations and
webhook delivery, owned by the app's ``cleanup_ctx``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import structlog
from aiohttp import web

from syncd.simulator.api import SquareError, answer, check_headers, error, parse_request
from syncd.simulator.catalog import Simulator
from syncd.simulator.webhooks import WebhookTarget

BATCH_RETRIEVE_PATH = "/v2/inventory/counts/batch-retrieve"
SIMULATOR_KEY = web.AppKey("simulator", Simulator)
_CONTROL_PREFIX = "/_sim/"
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_ENTITY_TOO_LARGE"}

log = structlog.get_logger("syncd.simulator")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _square_error(exc: SquareError) -> web.Response:
    return web.Response(
        body=exc.body(), status=exc.status, headers=exc.headers, content_type="application/json"
    )


@web.middleware
async def _square_envelope(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count API calls by status and answer every API failure in Square's error envelope."""
    if request.path.startswith(_CONTROL_PREFIX):
        response: web.StreamResponse = await handler(request)
        return response
    sim = request.app[SIMULATOR_KEY]
    sim.requests += 1
    try:
        response = await handler(request)
    except SquareError as exc:
        response = _square_error(exc)
    except web.HTTPException as exc:
        code = _HTTP_CODES.get(exc.status, "BAD_REQUEST")
        response = _square_error(SquareError(exc.status, [error(code, exc.reason)]))
    except Exception as exc:
        log.exception("simulator_request_failed", path=request.path, error=str(exc))
        response = _square_error(SquareError.scripted(500))
    sim.status_counts[response.status] += 1
    return response


async def _batch_retrieve(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR_KEY]
    if sim.faults:
        raise SquareError.scripted(*sim.faults.popleft())
    config = sim.config
    check_headers(
        request.headers.get("Authorization"),
        request.headers.get("Square-Version"),
        config.access_token,
    )
    query = parse_request(await request.read(), max_limit=config.max_limit)
    if config.page_delay > 0:
        await asyncio.sleep(config.page_delay)
    return web.Response(body=answer(sim, query), content_type="application/json")


# ---- control routes (tests, demos): plain JSON, no auth ----------------------------------------


async def _control_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "expected a JSON object"}', content_type="application/json"
        )
    return body


def _bad(message: str) -> web.Response:
    return _json({"error": message}, status=400)


def _count_arg(body: dict[str, Any]) -> int | None:
    n = body.get("n", 1)
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None


async def _sim_mutate(request: web.Request) -> web.Response:
    """``{"n": K, "same_instant": false}`` -> ``{"changed": [counts]}``."""
    body = await _control_body(request)
    n = _count_arg(body)
    if n is None:
        return _bad("n must be an integer >= 0")
    changed = request.app[SIMULATOR_KEY].mutate(n, same_instant=bool(body.get("same_instant")))
    return _json({"changed": changed})


async def _sim_set(request: web.Request) -> web.Response:
    """One count: catalog_object_id, location_id, state, quantity, optional calculated_at and
    catalog_object_type -> ``{"count": count}``."""
    body = await _control_body(request)
    try:
        count = request.app[SIMULATOR_KEY].set_count(
            body["catalog_object_id"],
            body["location_id"],
            body.get("state", "IN_STOCK"),
            body["quantity"],
            body.get("calculated_at"),
            body.get("catalog_object_type", "ITEM_VARIATION"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        return _bad(f"bad count: {exc}")
    return _json({"count": count})


async def _sim_remove(request: web.Request) -> web.Response:
    """``{"n": K}`` (random counts) or one key (catalog_object_id, location_id, state) ->
    ``{"removed": [counts]}``."""
    body = await _control_body(request)
    sim = request.app[SIMULATOR_KEY]
    if "catalog_object_id" in body:
        one = sim.remove_count(
            str(body["catalog_object_id"]),
            str(body.get("location_id")),
            str(body.get("state", "IN_STOCK")),
        )
        return _json({"removed": [] if one is None else [one]})
    n = _count_arg(body)
    if n is None:
        return _bad("n must be an integer >= 0")
    return _json({"removed": sim.remove(n)})


async def _sim_fail(request: web.Request) -> web.Response:
    """``{"status": 429, "times": 1, "retry_after": 1}``: script the next batch-retrieve answers."""
    body = await _control_body(request)
    try:
        request.app[SIMULATOR_KEY].fail_next(
            int(body["status"]), int(body.get("times", 1)), body.get("retry_after")
        )
    except (KeyError, TypeError, ValueError) as exc:
        return _bad(f"bad fault: {exc}")
    return _json({"queued": len(request.app[SIMULATOR_KEY].faults)})


async def _sim_counts(request: web.Request) -> web.Response:
    """Every current count, newest first: ``{"counts": [...]}``."""
    return _json({"counts": request.app[SIMULATOR_KEY].snapshot()})


async def _sim_webhooks(request: web.Request) -> web.Response:
    """``{"url": ..., "signature_key": ..., "notification_url": ...}`` sets where signed webhooks go
    after each change; ``{"url": null}`` stops them. Answers the sender's stats."""
    body = await _control_body(request)
    sender = request.app[SIMULATOR_KEY].webhooks
    if body.get("url") is None:
        sender.target = None
    else:
        try:
            sender.target = WebhookTarget(
                url=str(body["url"]),
                signature_key=str(body["signature_key"]),
                notification_url=str(body["notification_url"])
                if body.get("notification_url")
                else None,
            )
        except KeyError as exc:
            return _bad(f"missing {exc}")
    return _json(sender.stats())


async def _sim_stats(request: web.Request) -> web.Response:
    return _json(request.app[SIMULATOR_KEY].stats())


# ---- background mutations ----------------------------------------------------------------------


async def _mutate_forever(sim: Simulator) -> None:
    """Apply ``mutation_rate`` changes per second, in batches every ``mutation_interval``. The batch
    size follows the time that really passed, so a slow loop never drifts below the rate."""
    loop = asyncio.get_running_loop()
    rate, interval = sim.config.mutation_rate, sim.config.mutation_interval
    last, carry = loop.time(), 0.0
    while True:
        await asyncio.sleep(interval)
        now = loop.time()
        due = carry + rate * (now - last)
        last, n = now, int(due)
        carry = due - n
        if n:
            sim.mutate(n)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("simulator_mutations_failed", error=repr(exc))


async def _mutations(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: own the mutation task for the app's lifetime; reap it so a crash surfaces."""
    sim = app[SIMULATOR_KEY]
    if sim.config.mutation_rate <= 0:
        yield
        return
    task = asyncio.create_task(_mutate_forever(sim), name="simulator-mutations")
    task.add_done_callback(_log_crash)
    try:
        yield
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise


async def _webhooks(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: deliver the simulator's webhooks (if it has a target) for the app's lifetime."""
    async with app[SIMULATOR_KEY].webhooks.running():
        yield


def build_app(sim: Simulator) -> web.Application:
    """The fake Square upstream over ``sim``: batch-retrieve plus the ``/_sim/`` control routes."""
    app = web.Application(middlewares=[_square_envelope])
    app[SIMULATOR_KEY] = sim
    app.router.add_post(BATCH_RETRIEVE_PATH, _batch_retrieve)
    app.router.add_post("/_sim/mutate", _sim_mutate)
    app.router.add_post("/_sim/set", _sim_set)
    app.router.add_post("/_sim/remove", _sim_remove)
    app.router.add_post("/_sim/fail", _sim_fail)
    app.router.add_get("/_sim/counts", _sim_counts)
    app.router.add_get("/_sim/stats", _sim_stats)
    app.router.add_post("/_sim/webhooks", _sim_webhooks)
    app.cleanup_ctx.append(_webhooks)
    app.cleanup_ctx.append(_mutations)
    return app
