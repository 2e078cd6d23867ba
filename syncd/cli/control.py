"""A thin client for the running daemon's admin listener (TCP or unix socket, optional token).

``AdminUnavailable`` means nobody is listening (connection refused, no socket file, or a listen
address the CLI cannot dial, like port 0): the caller may then work on the database directly. Any
other failure (a timeout, a wrong token) is an error, never a reason to bypass the daemon.
Error answers come back in the admin API's envelope and become the matching ``SyncdError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from syncd.config import Settings, TcpAddress, parse_listen
from syncd.errors import (
    ChangelogGap,
    JobNotFound,
    JobProviderError,
    SourceStillConfigured,
    SyncdError,
    UnknownEndpoint,
    UnknownSource,
)

DEFAULT_TIMEOUT = 10.0
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - dial, not bind


class AdminUnavailable(Exception):
    """No daemon is listening on the admin address."""


class AdminClient:
    """Requests to the admin API; ``listen`` is the daemon's ``admin.listen`` value."""

    def __init__(
        self, listen: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.listen = listen
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        address = parse_listen(listen, allow_unix=True)
        self._port: int | None
        if isinstance(address, TcpAddress):
            host = _LOOPBACK.get(address.host, address.host)
            self._unix: str | None = None
            self._base = (
                f"http://[{host}]:{address.port}"
                if ":" in host
                else f"http://{host}:{address.port}"
            )
            self._port = address.port
        else:
            self._unix = str(address.path)
            self._base = "http://localhost"
            self._port = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminClient:
        token = settings.admin.token.get_secret_value() if settings.admin.token else None
        return cls(settings.admin.listen, token)

    async def request(
        self, method: str, path: str, *, body: Any = None, query: Mapping[str, str] | None = None
    ) -> Any:
        """One request; the decoded JSON of a 2xx answer, else the matching error."""
        if self._port == 0:
            raise AdminUnavailable(f"admin.listen {self.listen} has no fixed port")
        connector = aiohttp.UnixConnector(path=self._unix) if self._unix else None
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=self._timeout) as session,
                session.request(
                    method, self._base + path, data=data, headers=headers, params=dict(query or {})
                ) as resp,
            ):
                status, raw = resp.status, await resp.read()
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError | FileNotFoundError):
                raise AdminUnavailable(str(exc)) from exc
            raise SyncdError(
                f"cannot reach the admin API at {self.listen}: {exc}", op="admin.request"
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SyncdError(
                f"the admin API at {self.listen} did not answer: "
                f"{type(exc).__name__} {exc}".rstrip(),
                op="admin.request",
                hint="is the daemon overloaded or stuck? see its log",
            ) from exc
        payload = _decode(raw)
        if 200 <= status < 300:
            return payload
        raise _error(status, payload, self.listen)


def _decode(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _error(status: int, payload: Any, listen: str) -> SyncdError:
    message = f"HTTP {status}"
    code = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        message = str(payload["error"].get("message") or message)
        code = payload["error"].get("code")
    if code == "source_configured":  # syncd.web.admin_sources
        return SourceStillConfigured(message, op="admin.request")
    if code == "unknown_source":
        return UnknownSource(message, op="admin.request")
    if code == "unknown_endpoint":  # syncd.web.admin_outbound
        return UnknownEndpoint(message, op="admin.request")
    if code == "changelog_gap":
        return ChangelogGap(0, 0, message=message, hint="replay from a seq that is still kept")
    if status == 400:
        return JobProviderError(message, op="admin.request")
    if status == 404:
        return JobNotFound(message, op="admin.request")
    if status == 401:
        return SyncdError(
            f"the admin API at {listen} refused the token",
            op="admin.request",
            hint="set admin.token (e.g. SYNCD_ADMIN__TOKEN) to the daemon's token",
        )
    return SyncdError(f"the admin API at {listen} answered {message}", op="admin.request")
