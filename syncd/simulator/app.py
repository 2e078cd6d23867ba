"""The simulator's aiohttp application.

The Square API routes (batch-retrieve, SearchCatalogObjects, ListLocations, the OAuth token
routes), the ``/_sim/``
control routes, and the background tasks (mutations and webhook delivery, owned by the app's
``cleanup_ctx``). The app serves a ``Marketplace``: one Square app and its sellers; ``build_app``
of a lone ``Simulator`` wraps it in one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import orjson
import structlog
from aiohttp import web

from syncd.simulator.api import (
    SquareError,
    answer,
    answer_catalog,
    check_headers,
    error,
    parse_catalog_request,
    parse_request,
)
from syncd.simulator.catalog import Simulator
from syncd.simulator.sellers import Marketplace, auth_error
from syncd.simulator.webhooks import WebhookTarget

BATCH_RETRIEVE_PATH = "/v2/inventory/counts/batch-retrieve"
LOCATIONS_PATH = "/v2/locations"
SEARCH_CATALOG_PATH = "/v2/catalog/search"
TOKEN_PATH = "/oauth2/token"
REVOKE_PATH = "/oauth2/revoke"
SIMULATOR_KEY = web.AppKey("simulator", Simulator)  # the first seller
MARKETPLACE_KEY = web.AppKey("marketplace", Marketplace)
# The seller the current API call was resolved to: set by the handler, read by the middleware
# (both run in the request's one task; a ContextVar needs no aiohttp RequestKey, new in 3.12).
_SELLER: ContextVar[Simulator | None] = ContextVar("simulator_seller", default=None)
_CONTROL_PREFIX = "/_sim/"
_OAUTH_PREFIX = "/oauth2/"
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
    """Count API calls by status and answer every API failure in Square's error envelope.

    A call counts for the app, and for the seller it acted for; a call no seller could be found
    for counts for the first seller (as with one seller), except the OAuth routes (app only).
    """
    if request.path.startswith(_CONTROL_PREFIX):
        response: web.StreamResponse = await handler(request)
        return response
    market = request.app[MARKETPLACE_KEY]
    market.requests += 1
    reset = _SELLER.set(None)
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
    market.status_counts[response.status] += 1
    seller = _SELLER.get()
    _SELLER.reset(reset)
    if seller is None and not request.path.startswith(_OAUTH_PREFIX):
        seller = market.first
    if seller is not None:
        seller.requests += 1
        seller.status_counts[response.status] += 1
    return response


def _authenticated(request: web.Request) -> Simulator:
    """The seller this API call acts for (see ``Marketplace.authenticate``); checks the
    ``Square-Version`` format too."""
    sim = request.app[MARKETPLACE_KEY].authenticate(request.headers.get("Authorization"))
    _SELLER.set(sim)
    return sim


async def _batch_retrieve(request: web.Request) -> web.Response:
    sim = _authenticated(request)
    fault = sim.next_fault()
    if fault is not None:
        raise SquareError.scripted(*fault)
    check_headers(None, request.headers.get("Square-Version"), None)
    config = sim.config
    query = parse_request(await request.read(), max_limit=config.max_limit)
    if config.page_delay > 0:
        await asyncio.sleep(config.page_delay)
    return web.Response(body=answer(sim, query), content_type="application/json")


async def _search_catalog(request: web.Request) -> web.Response:
    """SearchCatalogObjects over the token's seller's item library (``begin_time``,
    ``object_types``, ``include_deleted_objects``, ``cursor``, ``limit``)."""
    sim = _authenticated(request)
    fault = sim.next_catalog_fault()
    if fault is not None:
        raise SquareError.scripted(*fault)
    check_headers(None, request.headers.get("Square-Version"), None)
    query = parse_catalog_request(await request.read())
    return web.Response(body=answer_catalog(sim, query), content_type="application/json")


async def _list_locations(request: web.Request) -> web.Response:
    """ListLocations: every location of the token's seller, active and inactive, one page."""
    sim = _authenticated(request)
    check_headers(None, request.headers.get("Square-Version"), None)
    locations = sim.locations()
    return _json({"locations": locations} if locations else {})


async def _api_body(request: web.Request) -> dict[str, Any]:
    """A JSON object body of an API call, else 400 in Square's envelope."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise SquareError(
            400, [error("EXPECTED_JSON_BODY", "The request body is not a JSON object.")]
        )
    return body


def _required_string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise SquareError(
            400,
            [
                error(
                    "MISSING_REQUIRED_PARAMETER",
                    f"Missing required parameter `{name}`.",
                    field=name,
                )
            ],
        )
    return value


async def _obtain_token(request: web.Request) -> web.Response:
    """ObtainToken with ``grant_type=refresh_token`` (the only grant the simulator plays)."""
    market = request.app[MARKETPLACE_KEY]
    body = await _api_body(request)
    market.check_client(body.get("client_id"), body.get("client_secret"))
    grant_type = _required_string(body, "grant_type")
    if grant_type != "refresh_token":
        raise SquareError(
            400,
            [
                error(
                    "INVALID_VALUE",
                    f"grant_type {grant_type!r} is not supported by the simulator.",
                    field="grant_type",
                )
            ],
        )
    return _json(market.refresh(_required_string(body, "refresh_token")))


async def _revoke_token(request: web.Request) -> web.Response:
    """RevokeToken: ``Authorization: Client <secret>``; a merchant_id or an access_token."""
    market = request.app[MARKETPLACE_KEY]
    expected = f"Client {market.oauth.client_secret}"
    if request.headers.get("Authorization") != expected:
        raise auth_error("UNAUTHORIZED", "The Authorization header must be `Client <secret>`.")
    body = await _api_body(request)
    if body.get("client_id") != market.oauth.client_id:
        raise auth_error("UNAUTHORIZED", "Invalid client_id.", field="client_id")
    merchant_id, access_token = body.get("merchant_id"), body.get("access_token")
    if (merchant_id is None) == (access_token is None):
        raise SquareError(
            400,
            [error("INVALID_REQUEST", "Provide exactly one of `merchant_id` and `access_token`.")],
        )
    try:
        if access_token is not None:
            market.revoke_access_token(
                str(access_token), only_this=bool(body.get("revoke_only_access_token"))
            )
        else:
            market.revoke(str(merchant_id), revoker_type="APPLICATION")
    except KeyError:
        raise SquareError(
            404, [error("NOT_FOUND", "No such authorization.", category="INVALID_REQUEST_ERROR")]
        ) from None
    return _json({"success": True})


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


def _seller(request: web.Request, merchant_id: object = None) -> Simulator:
    """The seller a control call names (``merchant_id``; absent: the first), else a plain 404."""
    if merchant_id is None:
        merchant_id = request.query.get("merchant_id")
    try:
        return request.app[MARKETPLACE_KEY].seller(
            None if merchant_id is None else str(merchant_id)
        )
    except KeyError:
        raise web.HTTPNotFound(
            text=orjson.dumps({"error": f"no seller {merchant_id!r}"}).decode(),
            content_type="application/json",
        ) from None


async def _control_seller(request: web.Request) -> tuple[dict[str, Any], Simulator]:
    body = await _control_body(request)
    return body, _seller(request, body.get("merchant_id"))


def _count_arg(body: dict[str, Any]) -> int | None:
    n = body.get("n", 1)
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None


async def _sim_mutate(request: web.Request) -> web.Response:
    """``{"n": K, "same_instant": false}`` -> ``{"changed": [counts]}``."""
    body, sim = await _control_seller(request)
    n = _count_arg(body)
    if n is None:
        return _bad("n must be an integer >= 0")
    return _json({"changed": sim.mutate(n, same_instant=bool(body.get("same_instant")))})


async def _sim_set(request: web.Request) -> web.Response:
    """One count: catalog_object_id, location_id, state, quantity, optional calculated_at and
    catalog_object_type -> ``{"count": count}``."""
    body, sim = await _control_seller(request)
    try:
        count = sim.set_count(
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
    body, sim = await _control_seller(request)
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
    """``{"status": 429, "times": 1, "retry_after": 1}``: script the next batch-retrieve answers;
    ``{"status": 500, "seconds": 60}``: every one for the next 60 s (an outage; 0 ends it);
    ``{"route": "catalog", "status": 503, "times": 2}``: the next SearchCatalogObjects answers."""
    body, sim = await _control_seller(request)
    try:
        if body.get("route") == "catalog":
            sim.fail_catalog_next(
                int(body["status"]), int(body.get("times", 1)), body.get("retry_after")
            )
            return _json({"queued": len(sim.catalog_faults)})
        if "seconds" in body:
            sim.fail_for(int(body["status"]), float(body["seconds"]), body.get("retry_after"))
        else:
            sim.fail_next(int(body["status"]), int(body.get("times", 1)), body.get("retry_after"))
    except (KeyError, TypeError, ValueError) as exc:
        return _bad(f"bad fault: {exc}")
    outage = sim.outage
    return _json(
        {
            "queued": len(sim.faults),
            "outage_seconds": 0.0 if outage is None else max(0.0, outage[0] - sim.monotonic()),
        }
    )


async def _sim_counts(request: web.Request) -> web.Response:
    """Every current count, newest first: ``{"counts": [...]}``."""
    return _json({"counts": _seller(request).snapshot()})


async def _sim_webhooks(request: web.Request) -> web.Response:
    """``{"url": ..., "signature_key": ..., "notification_url": ...}`` sets where the app's signed
    webhooks go (every seller's); ``{"url": null}`` stops them. Answers the sender's stats."""
    body = await _control_body(request)
    sender = request.app[MARKETPLACE_KEY].webhooks
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
    """One seller's counters plus the app's: ``oauth.sellers[merchant_id].token_refreshes``."""
    sim = _seller(request)
    return _json({**sim.stats(), "oauth": request.app[MARKETPLACE_KEY].stats()})


async def _sim_sellers(request: web.Request) -> web.Response:
    """``{"sellers": [{"merchant_id", "location_ids", "static_token", "grants"}]}``."""
    return _json({"sellers": request.app[MARKETPLACE_KEY].describe()})


async def _sim_oauth_grant(request: web.Request) -> web.Response:
    """The seller authorises the app: ``{"merchant_id"}`` -> ``{"refresh_token"}``."""
    _, sim = await _control_seller(request)
    token = request.app[MARKETPLACE_KEY].grant(sim.merchant_id)
    return _json({"merchant_id": sim.merchant_id, "refresh_token": token})


async def _sim_oauth_expire(request: web.Request) -> web.Response:
    """Every live access token of the seller expires now -> ``{"expired": n}``."""
    _, sim = await _control_seller(request)
    return _json({"expired": request.app[MARKETPLACE_KEY].expire(sim.merchant_id)})


async def _sim_oauth_revoke(request: web.Request) -> web.Response:
    """The seller's grant is revoked (``revoker_type`` MERCHANT by default) -> ``{"webhook"}``."""
    body, sim = await _control_seller(request)
    try:
        sent = request.app[MARKETPLACE_KEY].revoke(
            sim.merchant_id, revoker_type=str(body.get("revoker_type", "MERCHANT"))
        )
    except ValueError as exc:
        return _bad(str(exc))
    return _json({"merchant_id": sim.merchant_id, "webhook": sent})


async def _sim_locations_add(request: web.Request) -> web.Response:
    """``{"merchant_id", "name"?}`` -> ``{"location": Location}``."""
    body, sim = await _control_seller(request)
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        return _bad("name must be a string")
    return _json({"location": sim.add_location(name)})


async def _sim_locations_rename(request: web.Request) -> web.Response:
    """``{"merchant_id", "location_id", "name"}`` -> ``{"location": Location}``."""
    body, sim = await _control_seller(request)
    try:
        location = sim.rename_location(str(body["location_id"]), str(body["name"]))
    except (KeyError, ValueError) as exc:
        return _bad(f"bad location name: {exc}")
    return _json({"location": location})


def _object_type_arg(body: dict[str, Any]) -> str:
    return str(body.get("object_type", "ITEM_VARIATION"))


async def _sim_catalog_rename(request: web.Request) -> web.Response:
    """``{"n": K, "object_type": "ITEM_VARIATION" | "ITEM"}`` -> ``{"changed": [objects]}``."""
    body, sim = await _control_seller(request)
    n = _count_arg(body)
    if n is None:
        return _bad("n must be an integer >= 0")
    try:
        return _json({"changed": sim.rename_catalog(n, _object_type_arg(body))})
    except ValueError as exc:
        return _bad(str(exc))


async def _sim_catalog_delete(request: web.Request) -> web.Response:
    """``{"n": K, "object_type": "ITEM_VARIATION" | "ITEM"}`` -> ``{"changed": [objects]}``."""
    body, sim = await _control_seller(request)
    n = _count_arg(body)
    if n is None:
        return _bad("n must be an integer >= 0")
    try:
        return _json({"changed": sim.delete_catalog(n, _object_type_arg(body))})
    except ValueError as exc:
        return _bad(str(exc))


async def _sim_catalog_add(request: web.Request) -> web.Response:
    """``{"n": K, "item_id"?}`` -> ``{"changed": [new variations, then their items]}``."""
    body, sim = await _control_seller(request)
    n = _count_arg(body)
    item_id = body.get("item_id")
    if n is None or (item_id is not None and not isinstance(item_id, str)):
        return _bad("n must be an integer >= 0 and item_id a string")
    try:
        return _json({"changed": sim.add_variations(n, item_id)})
    except ValueError as exc:
        return _bad(str(exc))


async def _sim_catalog_mutate(request: web.Request) -> web.Response:
    """``{"n": K}``: K random catalog changes in one version -> ``{"changed": [objects]}``."""
    body, sim = await _control_seller(request)
    n = _count_arg(body)
    if n is None:
        return _bad("n must be an integer >= 0")
    return _json({"changed": sim.mutate_catalog(n)})


async def _sim_catalog(request: web.Request) -> web.Response:
    """Every item and variation, ascending by (updated_at, id): ``{"objects": [...]}``;
    ``?include_deleted=0`` leaves the deleted ones out."""
    sim = _seller(request)
    include_deleted = request.query.get("include_deleted", "1") not in ("0", "false")
    return _json({"objects": sim.catalog_snapshot(include_deleted=include_deleted)})


async def _sim_locations_status(request: web.Request) -> web.Response:
    """``{"merchant_id", "location_id", "status"}`` -> ``{"location": Location}``."""
    body, sim = await _control_seller(request)
    try:
        location = sim.set_location_status(str(body["location_id"]), str(body["status"]))
    except (KeyError, ValueError) as exc:
        return _bad(f"bad location status: {exc}")
    return _json({"location": location})


# ---- background mutations ----------------------------------------------------------------------


async def _mutate_forever(sim: Simulator, *, catalog: bool = False) -> None:
    """Apply ``mutation_rate`` count changes (``catalog``: ``catalog_mutation_rate`` catalog
    changes, one catalog version per batch) per second, in batches every ``mutation_interval``.
    The batch size follows the time that really passed, so a slow loop never drifts below the
    rate."""
    loop = asyncio.get_running_loop()
    config = sim.config
    rate = config.catalog_mutation_rate if catalog else config.mutation_rate
    interval = config.mutation_interval
    apply = sim.mutate_catalog if catalog else sim.mutate
    last, carry = loop.time(), 0.0
    while True:
        await asyncio.sleep(interval)
        now = loop.time()
        due = carry + rate * (now - last)
        last, n = now, int(due)
        carry = due - n
        if n:
            apply(n)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("simulator_mutations_failed", error=repr(exc))


async def _mutations(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: own one mutation task per seller with ``mutation_rate > 0``, and one catalog
    mutation task per seller with ``catalog_mutation_rate > 0``, for the app's lifetime; reap
    them so a crash surfaces."""
    sellers = app[MARKETPLACE_KEY].sellers.items()
    tasks = [
        asyncio.create_task(_mutate_forever(sim), name=f"simulator-mutations-{mid}")
        for mid, sim in sellers
        if sim.config.mutation_rate > 0
    ]
    tasks += [
        asyncio.create_task(
            _mutate_forever(sim, catalog=True), name=f"simulator-catalog-mutations-{mid}"
        )
        for mid, sim in sellers
        if sim.config.catalog_mutation_rate > 0
    ]
    for task in tasks:
        task.add_done_callback(_log_crash)
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise


async def _webhooks(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: deliver the app's webhooks (if it has a target) for the app's lifetime."""
    async with app[MARKETPLACE_KEY].webhooks.running():
        yield


def build_app(target: Simulator | Marketplace) -> web.Application:
    """The fake Square upstream over one seller or a marketplace: the API routes plus the
    ``/_sim/`` control routes."""
    market = target if isinstance(target, Marketplace) else Marketplace([target])
    app = web.Application(middlewares=[_square_envelope])
    app[MARKETPLACE_KEY] = market
    app[SIMULATOR_KEY] = market.first
    app.router.add_post(BATCH_RETRIEVE_PATH, _batch_retrieve)
    app.router.add_post(SEARCH_CATALOG_PATH, _search_catalog)
    app.router.add_get(LOCATIONS_PATH, _list_locations)
    app.router.add_post(TOKEN_PATH, _obtain_token)
    app.router.add_post(REVOKE_PATH, _revoke_token)
    app.router.add_post("/_sim/mutate", _sim_mutate)
    app.router.add_post("/_sim/set", _sim_set)
    app.router.add_post("/_sim/remove", _sim_remove)
    app.router.add_post("/_sim/fail", _sim_fail)
    app.router.add_get("/_sim/counts", _sim_counts)
    app.router.add_get("/_sim/stats", _sim_stats)
    app.router.add_post("/_sim/webhooks", _sim_webhooks)
    app.router.add_post("/_sim/sellers", _sim_sellers)
    app.router.add_post("/_sim/oauth/grant", _sim_oauth_grant)
    app.router.add_post("/_sim/oauth/expire", _sim_oauth_expire)
    app.router.add_post("/_sim/oauth/revoke", _sim_oauth_revoke)
    app.router.add_post("/_sim/locations/add", _sim_locations_add)
    app.router.add_post("/_sim/locations/status", _sim_locations_status)
    app.router.add_post("/_sim/locations/rename", _sim_locations_rename)
    app.router.add_get("/_sim/catalog", _sim_catalog)
    app.router.add_post("/_sim/catalog/rename", _sim_catalog_rename)
    app.router.add_post("/_sim/catalog/delete", _sim_catalog_delete)
    app.router.add_post("/_sim/catalog/add", _sim_catalog_add)
    app.router.add_post("/_sim/catalog/mutate", _sim_catalog_mutate)
    app.cleanup_ctx.append(_webhooks)
    app.cleanup_ctx.append(_mutations)
    return app
