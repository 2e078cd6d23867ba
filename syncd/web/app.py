"""The two HTTP listeners' applications, their shared middlewares, and the server runner.

Public listener (``http.listen``): webhooks and health probes only. Admin listener (``admin.listen``, TCP
on loopback or a unix socket): the control plane (jobs, changes, metrics, status), optionally behind a
bearer token. Every error leaves through one JSON envelope: ``{"error": {"status", "code", "message"}}``;
no input produces a traceback in a response.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

log = structlog.get_logger("syncd.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The one error envelope every endpoint uses."""
    body = {"error": {"status": status, "code": code, "message": message}}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def json_response(data: object, status: int = 200) -> web.Response:
    """A JSON body encoded with orjson."""
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


_REASONS = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    503: "unavailable",
}


@web.middleware
async def error_envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's HTTP exceptions and any unexpected error into the JSON envelope."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _REASONS.get(exc.status, "error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, code, exc.reason, headers)
    except Exception as exc:  # the response never carries a traceback
        log.exception(
            "http_handler_error",
            path=request.path,
            method=request.method,
            error_type=type(exc).__name__,
        )
        return error_response(500, "internal_error", "internal error; see the daemon's log")


def bearer_auth(token: str | None) -> Middleware:
    """Middleware requiring ``Authorization: Bearer <token>`` when a token is configured."""
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error_response(
                    401,
                    "unauthorized",
                    "missing or wrong bearer token",
                    {"WWW-Authenticate": 'Bearer realm="syncd-admin"'},
                )
        return await handler(request)

    return check


def refuse_while(draining: asyncio.Event, *, retry_after: int = 5) -> Middleware:
    """Middleware answering 503 (with ``Retry-After``) once ``draining`` is set: during a graceful
    stop the public listener stays up but takes no new work, so senders retry elsewhere or later."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if draining.is_set():
            return error_response(
                503,
                "unavailable",
                "syncd is shutting down; retry later",
                {"Retry-After": str(retry_after)},
            )
        return await handler(request)

    return check


def build_public_app(*, client_max_size: int) -> web.Application:
    """The public (webhook) application; route modules add their routes to it."""
    return web.Application(middlewares=[error_envelope], client_max_size=client_max_size)


def build_admin_app(*, token: str | None) -> web.Application:
    """The admin (control plane) application; route modules add their routes to it."""
    return web.Application(middlewares=[error_envelope, bearer_auth(token)])


@dataclass(frozen=True, slots=True)
class Listener:
    """Where a server listens: host and port (port 0 = any free port), or a unix socket path."""

    host: str | None = None
    port: int = 0
    path: Path | None = None


@asynccontextmanager
async def run_server(
    app: web.Application,
    listener: Listener,
    *,
    shutdown_timeout: float = 5.0,
    read_timeout: float | None = None,
) -> AsyncIterator[str]:
    """Serve ``app`` until the block exits; yields the bound address (``http://h:p`` or ``unix:/p``).

    ``read_timeout`` closes a connection that has not sent a complete request for that many seconds
    since it opened or since its last answer (idle, or trickling its headers; aiohttp's default is
    an hour), and bounds how long the rest of a body left unread (a 413, a 408) is read and dropped
    after the answer (aiohttp's lingering time, 10 s by default).
    """
    if read_timeout is None:
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=shutdown_timeout, handle_signals=False
        )
    else:
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=shutdown_timeout,
            handle_signals=False,
            keepalive_timeout=read_timeout,
            lingering_time=read_timeout,
        )
    await runner.setup()
    try:
        site: web.BaseSite
        if listener.path is not None:
            listener.path.unlink(missing_ok=True)
            site = web.UnixSite(runner, str(listener.path))
            await site.start()
            address = f"unix:{listener.path}"
        else:
            site = web.TCPSite(runner, listener.host, listener.port, reuse_address=True)
            await site.start()
            server = site._server
            assert server is not None
            sockets = getattr(server, "sockets", None) or []
            host, port = sockets[0].getsockname()[:2]
            address = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        yield address
    finally:
        await runner.cleanup()
