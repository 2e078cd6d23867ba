"""The admin API's source routes (issue 11): forgetting a source the config no longer has.

``POST /sources/{name}/forget`` -> 200 ``{"forgotten": {"source", "entries", "first_seq",
"last_seq", "partitions", "webhook_events", "credentials"}}``: the daemon removed the source's
mirror rows (one ``count.removed`` entry each, ``entries`` of them with seqs ``first_seq ..
last_seq``), its sync state, OAuth state, inbox rows and registry row, in one transaction.
409 ``source_configured`` while the running config still has the source (or its runner is still
stopping); 404 ``unknown_source`` when the database has nothing of it (never synced, or already
forgotten). ``syncd sources forget NAME`` calls it while the daemon runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from syncd.errors import SourceStillConfigured, SyncdError, UnknownSource
from syncd.store.sources import Forgotten
from syncd.web.app import error_response, json_response

ForgetFn = Callable[[str], Awaitable[Forgotten]]
FORGET_KEY: web.AppKey[ForgetFn] = web.AppKey("forget_source")

CODE_UNKNOWN = "unknown_source"
CODE_CONFIGURED = "source_configured"


def add_source_routes(app: web.Application, forget: ForgetFn) -> None:
    """Mount the source routes on the admin application."""
    app[FORGET_KEY] = forget
    app.router.add_post("/sources/{name}/forget", forget_source)


def _message(exc: SyncdError) -> str:
    return f"{exc.message} (try: {exc.hint})" if exc.hint else exc.message


async def forget_source(request: web.Request) -> web.Response:
    """POST /sources/{name}/forget: forget a source that is no longer configured."""
    name = request.match_info["name"]
    try:
        forgotten = await request.app[FORGET_KEY](name)
    except SourceStillConfigured as exc:
        return error_response(409, CODE_CONFIGURED, _message(exc))
    except UnknownSource as exc:
        return error_response(404, CODE_UNKNOWN, _message(exc))
    return json_response({"forgotten": forgotten.to_record()})
