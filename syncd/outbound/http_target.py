"""The aiohttp side of outbound delivery: one client session (connection pool) per endpoint, so
a slow or dead endpoint holds only its own connections.

Redirects are not followed (a 3xx is a failed attempt: configure the final URL), the body of an
answer is read only up to ``DETAIL_BYTES`` for the log, and ``Retry-After`` is parsed as
delta-seconds or an HTTP date.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from syncd import __version__
from syncd.backoff import parse_retry_after
from syncd.outbound.ports import Answer, AttemptFailed

DETAIL_BYTES = 512
USER_AGENT = f"syncd/{__version__} (outbound webhooks)"


class HttpEndpoint:
    """POSTs to ``url`` with a total ``timeout`` per attempt (connect included)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=1, keepalive_timeout=30),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def post(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            async with self._client().post(
                self.url,
                data=body,
                headers={**headers, "Content-Type": "application/json"},
                allow_redirects=False,
            ) as resp:
                detail = await resp.content.read(DETAIL_BYTES)
                return Answer(
                    status=resp.status,
                    retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                    detail=detail.decode("utf-8", errors="replace").strip(),
                )
        except TimeoutError as exc:
            raise AttemptFailed("timeout", f"no answer within {self._timeout.total} s") from exc
        except aiohttp.ClientError as exc:
            raise AttemptFailed("connection", f"{type(exc).__name__}: {exc}".strip()) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
