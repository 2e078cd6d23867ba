"""A real webhook receiver for the outbound tests: an aiohttp server on 127.0.0.1 that verifies
each POST with the ``standardwebhooks`` package (the reference implementation of the spec) and
records it, answering as the test scripts it.

In-process (``Receiver``) for the deliverer tests, or as its own process for the process test
(``python -m tests.outbound_kit --secret-file F --record F --port-file F [--port P]
[--fail-first N] [--hold-at N] [--gone]``), where it is SIGKILLed like syncd: it appends one JSON
line per delivery to the record file before answering, so a delivery it recorded may never have
been acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True, slots=True)
class Reply:
    """How the receiver answers one POST: status, headers, and seconds to wait first."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: str = "ok"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One POST as received: its headers, the changes' seqs, and whether it verified."""

    webhook_id: str
    timestamp: str
    seqs: tuple[int, ...]
    verified: bool
    status: int  # what the receiver answered
    at: float  # loop time of arrival
    body: dict[str, Any]


Script = Callable[[int], Reply]  # (index of the POST, from 0) -> the reply


def always(reply: Reply) -> Script:
    return lambda _: reply


OK = always(Reply())


def fail_first(n: int, failure: Reply | None = None) -> Script:
    """``n`` failures (500 unless given), then 200s."""
    bad = failure or Reply(500, body="try later")
    return lambda i: bad if i < n else Reply()


class Receiver:
    """The receiver's state: every delivery, in arrival order, and a way to wait for some."""

    def __init__(
        self,
        secret: str,
        script: Script = OK,
        *,
        on_delivery: Callable[[Delivery], None] | None = None,
        keep_bodies: bool = True,
    ) -> None:
        self.webhook = Webhook(secret)
        self.script = script
        self._on_delivery = on_delivery
        self._keep_bodies = keep_bodies
        self.deliveries: list[Delivery] = []
        self.url = ""
        self._grew = asyncio.Event()

    def accepted(self) -> list[Delivery]:
        """The deliveries answered with a 2xx."""
        return [d for d in self.deliveries if 200 <= d.status < 300]

    def accepted_seqs(self) -> list[int]:
        return [seq for d in self.accepted() for seq in d.seqs]

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        index = len(self.deliveries)
        reply = self.script(index)
        try:
            body = self.webhook.verify(raw, dict(request.headers))
            verified = True
        except WebhookVerificationError:
            body, verified = orjson.loads(raw), False
        status = reply.status if verified else 401
        seqs = tuple(int(c["seq"]) for c in body["data"]["changes"])
        delivery = Delivery(
            webhook_id=request.headers.get("webhook-id", ""),
            timestamp=request.headers.get("webhook-timestamp", ""),
            seqs=seqs,
            verified=verified,
            status=status,
            at=asyncio.get_running_loop().time(),
            body=body if self._keep_bodies else {},
        )
        self.deliveries.append(delivery)
        if self._on_delivery is not None:
            self._on_delivery(delivery)
        self._grew.set()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(status=status, text=reply.body, headers=reply.headers)

    async def wait_for(self, done: Callable[[Receiver], bool], timeout: float = 10.0) -> None:
        """Until ``done(self)``; fails after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not done(self):
                self._grew.clear()
                await self._grew.wait()

    async def wait_seqs(self, last: int, timeout: float = 10.0) -> None:
        """Until a 2xx-answered delivery carried seq ``last``."""
        await self.wait_for(lambda r: last in r.accepted_seqs(), timeout)


@asynccontextmanager
async def receiving(secret: str, script: Script = OK) -> AsyncIterator[Receiver]:
    """A Receiver serving on a free loopback port until the block ends."""
    receiver = Receiver(secret, script)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()


# --- as a process --------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace, secret: str, answered: int, record: Any) -> None:

    def script(index: int) -> Reply:
        number = answered + index  # counted over every run of the receiver
        if args.gone:
            return Reply(410, body="this endpoint is gone")
        if number < args.fail_first:
            return Reply(503, headers={"Retry-After": "0"}, body="warming up")
        if number == args.hold_at:
            return Reply(delay=600)  # recorded, never answered: the test kills us meanwhile
        return Reply()

    def write(d: Delivery) -> None:  # before answering: a kill may come next
        line = {"webhook_id": d.webhook_id, "seqs": d.seqs, "verified": d.verified}
        record.write(orjson.dumps({**line, "status": d.status}) + b"\n")

    receiver = Receiver(secret, script, on_delivery=write, keep_bodies=False)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    tmp = f"{args.port_file}.tmp"
    with open(tmp, "w") as out:  # noqa: ASYNC230 - once, before serving
        out.write(str(port))
    os.replace(tmp, args.port_file)
    await asyncio.Event().wait()  # until killed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--port", type=int, default=0, help="0: a free one")
    parser.add_argument("--fail-first", type=int, default=0, help="answer 503 to the first N")
    parser.add_argument("--hold-at", type=int, default=-1, help="never answer request N")
    parser.add_argument("--gone", action="store_true", help="answer 410 to everything")
    args = parser.parse_args(argv)
    secret = Path(args.secret_file).read_text().strip()
    record_path = Path(args.record)
    # Failures count across restarts of the receiver: the record file tells how many it answered.
    answered = len(record_path.read_bytes().splitlines()) if record_path.exists() else 0
    with open(record_path, "ab", buffering=0) as record:  # one raw append per delivery
        asyncio.run(_serve(args, secret, answered, record))


if __name__ == "__main__":
    main(sys.argv[1:])
