"""A scripted fake HTTP upstream: answers from a list of replies, in order, and records requests.

Not a simulator: each test spells out exactly what the "server" does, including misbehaviour a
real server would not choose (resetting the connection, closing mid-body, hanging past a timeout).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web

Action = Literal["reply", "reset", "close_mid_body", "hang"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``body`` is JSON-encoded unless ``raw`` is given (sent as-is)."""

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    action: Action = "reply"


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


def square_error(code: str, *, category: str = "INVALID_REQUEST_ERROR", **extra: str) -> Any:
    """A Square error envelope with one error."""
    return {"errors": [{"category": category, "code": code, **extra}]}


def count(
    obj: str = "OBJ1",
    *,
    location: str = "LOC1",
    state: str = "IN_STOCK",
    quantity: Any = "5",
    calculated_at: str = "2025-01-02T03:04:05.123Z",
    **extra: Any,
) -> dict[str, Any]:
    """A Square InventoryCount JSON object."""
    return {
        "catalog_object_id": obj,
        "catalog_object_type": "ITEM_VARIATION",
        "state": state,
        "location_id": location,
        "quantity": quantity,
        "calculated_at": calculated_at,
        **extra,
    }


@dataclass
class ScriptedServer:
    """The running server: ``url`` to call, ``requests`` seen so far, ``replies`` still to give."""

    replies: list[Reply]
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        if not self.replies:
            return web.json_response({"errors": [{"code": "SCRIPT_EXHAUSTED"}]}, status=418)
        reply = self.replies.pop(0)
        if reply.action == "reset":
            _reset(request)
            return web.Response(status=500)  # never reaches the client
        if reply.action == "close_mid_body":
            return await _close_mid_body(request)
        if reply.action == "hang":
            await asyncio.Event().wait()  # cancelled when the client gives up and disconnects
        raw = reply.raw if reply.raw is not None else orjson.dumps(reply.body)
        headers = {"Content-Type": "application/json", **reply.headers}
        return web.Response(status=reply.status, body=raw, headers=headers)


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0, then close)."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _close_mid_body(request: web.Request) -> web.StreamResponse:
    """Send headers promising 1000 bytes, write a few, then close the connection."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.content_length = 1000
    await resp.prepare(request)
    await resp.write(b'{"counts": [')
    assert request.transport is not None
    request.transport.close()
    return resp


@asynccontextmanager
async def run_scripted(replies: Iterable[Reply]) -> AsyncIterator[ScriptedServer]:
    """Serve ``replies`` on 127.0.0.1 (port 0) for the duration of the block; always stops."""
    server = ScriptedServer(list(replies))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        server.url = f"http://{host}:{port}"
        yield server
    finally:
        await runner.cleanup()
