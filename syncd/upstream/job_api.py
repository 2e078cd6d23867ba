"""What the three job dialects share: the status URL template, one GET per poll, result downloads.

A dialect module subclasses ``JobApi`` with its default path, the names its template may use for
the job id, and ``parse`` (a 2xx body -> ``Observation``). Polls make one request each
(``RetryPolicy(max_retries=0)``): the poller owns backoff, Retry-After and rate limiting, and a
retry hidden in here would slip past the provider's rate limit. Template values are
percent-encoded, so a job id or parameter can never add a path segment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import aiohttp

from syncd.backoff import parse_retry_after
from syncd.errors import (
    ConfigError,
    DownloadRefused,
    JobProviderError,
    UpstreamDataError,
    UpstreamError,
)
from syncd.jobs.ports import JobRef, NotFound, Observation
from syncd.upstream.http import RETRY_STATUSES, RetryPolicy, request_json

if TYPE_CHECKING:
    from syncd.jobs.ports import JobProvider

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
GENERIC_JOB_ID = "job_id"
# A whole path segment of "." or ".." would be normalised away by the URL library: refused.
_DOT_SEGMENTS = frozenset({".", ".."})
MAX_MESSAGES = 100
MAX_FAILURES = 1000
_TEXT_MAX = 1000
_CHUNK = 65536
# A result file may take longer than one status request: no total limit, but a stalled read fails.
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
# Network failures of a download worth another try on a later poll.
_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, ConnectionError)


@dataclasses.dataclass(frozen=True, slots=True)
class JobApiOptions:
    """One provider instance, from its ``[jobs.providers.NAME]`` table (token kept out of repr)."""

    name: str
    base_url: str
    token: str | None = dataclasses.field(default=None, repr=False)
    path: str | None = None
    params: Mapping[str, str] = dataclasses.field(default_factory=dict)


class JobApi:
    """Base of the job dialects; implements ``syncd.jobs.ports.JobProvider``.

    ``session`` may be None for an instance used only to validate registrations (the CLI when the
    daemon is not running).
    """

    dialect: ClassVar[str]
    default_path: ClassVar[str]
    job_id_names: ClassVar[tuple[str, ...]]
    affects_inventory: ClassVar[bool] = False

    def __init__(
        self,
        options: JobApiOptions,
        session: aiohttp.ClientSession | None = None,
        *,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._options = options
        self._session = session
        self._policy = policy or RetryPolicy(max_retries=0)
        self.template = options.path or self.default_path
        self.placeholders = tuple(_PLACEHOLDER.findall(self.template))
        id_names = {*self.job_id_names, GENERIC_JOB_ID}
        if not id_names & set(self.placeholders):
            names = " or ".join("{" + n + "}" for n in (*self.job_id_names, GENERIC_JOB_ID))
            raise ConfigError(
                [(f"jobs.providers.{options.name}.path", self.template, f"must contain {names}")]
            )
        self._id_names = id_names
        self._headers = {"Authorization": f"Bearer {options.token}"} if options.token else {}
        self._hints = {
            401: f"check jobs.providers.{options.name}.token (missing, expired or revoked)",
            403: f"the token of jobs.providers.{options.name} may not read jobs",
        }
        self.op = f"jobs.{self.dialect}.get"

    @property
    def name(self) -> str:
        return self._options.name

    @property
    def base_url(self) -> str:
        return self._options.base_url

    def _params(self, params: Mapping[str, str]) -> dict[str, str]:
        return {**self._options.params, **params}

    def check(self, job_id: str, params: Mapping[str, str]) -> None:
        """Raise JobProviderError when the job id is empty or a path parameter has no value."""
        if not job_id.strip():
            raise JobProviderError("job id is empty", op="jobs.register", provider=self.name)
        merged = self._params(params)
        if job_id in _DOT_SEGMENTS or any(
            merged.get(p) in _DOT_SEGMENTS for p in self.placeholders
        ):
            raise JobProviderError(
                "job id and path parameters may not be '.' or '..'",
                op="jobs.register",
                provider=self.name,
            )
        missing = [p for p in self.placeholders if p not in self._id_names and not merged.get(p)]
        if missing:
            names = ", ".join(missing)
            raise JobProviderError(
                f"provider {self.name!r} needs path parameter(s) {names} for {self.template}",
                op="jobs.register",
                provider=self.name,
                hint=f"pass --param {missing[0]}=VALUE, or set jobs.providers.{self.name}.params",
            )

    def url(self, job_id: str, params: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """The status URL and the query parameters (params the path does not use)."""
        merged = self._params(params)

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            value = job_id if name in self._id_names else merged[name]
            return quote(value, safe="")

        path = _PLACEHOLDER.sub(fill, self.template)
        query = {k: v for k, v in merged.items() if k not in self.placeholders}
        return self._options.base_url.rstrip("/") + "/" + path.lstrip("/"), query

    async def fetch(self, job: JobRef) -> Observation | NotFound:
        """GET the job once: an Observation, NotFound on 404, UpstreamError otherwise."""
        assert self._session is not None, "a validation-only JobApi cannot poll"
        url, query = self.url(job.job_id, job.params)
        if query:
            url = f"{url}?{_query(query)}"
        try:
            response = await request_json(
                self._session,
                "GET",
                url,
                op=self.op,
                policy=self._policy,
                headers=self._headers,
                status_hints=self._hints,
                source=self.name,
            )
        except UpstreamError as exc:
            if exc.status == 404:
                return NotFound(_detail(exc.vendor_errors))
            raise
        return self.parse(response.body)

    def parse(self, body: Any) -> Observation:  # pragma: no cover - every dialect overrides it
        raise NotImplementedError

    async def download(self, url: str, dest: Path, *, max_bytes: int) -> int:
        """Stream ``url`` into ``dest`` via a hidden ``.part`` file; at most ``max_bytes``."""
        assert self._session is not None, "a validation-only JobApi cannot download"
        part = dest.with_name(f".{dest.name}.part")
        op = f"jobs.{self.dialect}.download"
        try:
            async with self._session.get(
                url, headers=self._headers, allow_redirects=False, timeout=DOWNLOAD_TIMEOUT
            ) as resp:
                if resp.status != 200:
                    raise UpstreamError(
                        f"{op}: HTTP {resp.status} from {resp.url.path}",
                        status=resp.status,
                        retryable=resp.status in RETRY_STATUSES,
                        op=op,
                        retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                    )
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise DownloadRefused(
                        f"result file is {resp.content_length} bytes, over jobs.max_download_bytes"
                        f" ({max_bytes})",
                        op=op,
                    )
                size = await _stream(resp, part, max_bytes, op)
            await asyncio.to_thread(os.replace, part, dest)
            return size
        except _NETWORK_ERRORS as exc:
            raise UpstreamError(
                f"{op}: {type(exc).__name__}: {exc}"[:300], retryable=True, op=op
            ) from exc
        finally:
            await asyncio.to_thread(part.unlink, missing_ok=True)


async def _stream(resp: aiohttp.ClientResponse, part: Path, max_bytes: int, op: str) -> int:
    size = 0
    handle = await asyncio.to_thread(part.open, "wb")
    try:
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise DownloadRefused(
                    f"result file exceeds jobs.max_download_bytes ({max_bytes})", op=op
                )
            await asyncio.to_thread(handle.write, chunk)
    finally:
        await asyncio.to_thread(handle.close)
    return size


def _query(params: Mapping[str, str]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())


def _detail(vendor_errors: list[dict[str, Any]]) -> str | None:
    for err in vendor_errors:
        for key in ("detail", "title", "message"):
            value = err.get(key)
            if isinstance(value, str) and value:
                return value[:_TEXT_MAX]
    return None


def job_and_status(
    body: Any, *, dialect: str, label: str, bare_ok: bool = False
) -> tuple[dict[str, Any], str]:
    """The job object of a poll answer (``{"data": job}``, or a bare job when ``bare_ok``) and its
    ``status``; UpstreamDataError naming what is missing otherwise."""
    wrapped = body.get("data") if isinstance(body, dict) else None
    job = wrapped if isinstance(wrapped, dict) else (body if bare_ok else None)
    if not isinstance(job, dict):
        what = "the body is not a job object" if bare_ok else "no data object in the body"
        raise UpstreamDataError(
            f"{label}: {what}", op=f"jobs.{dialect}", field="status" if bare_ok else "data"
        )
    status = as_text(job.get("status"))
    if status is None:
        raise UpstreamDataError(
            f"{label}: no status in the body", op=f"jobs.{dialect}", field="status"
        )
    return job, status


def as_text(value: Any) -> str | None:
    """A vendor string field, clipped; None if absent or not a string."""
    return value[:_TEXT_MAX] if isinstance(value, str) and value else None


def clip_messages(values: Any) -> tuple[str, ...]:
    """A vendor message list as clipped strings, at most MAX_MESSAGES."""
    if not isinstance(values, list):
        return ()
    return tuple(
        str(v)[:_TEXT_MAX]
        for v in values[:MAX_MESSAGES]
        if isinstance(v, str | int | float) and not isinstance(v, bool)
    )


def pick(source: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The scalar fields ``keys`` of a vendor object that are present."""
    return {
        k: source[k]
        for k in keys
        if isinstance(source.get(k), str | int | float | bool) and source.get(k) != ""
    }


if TYPE_CHECKING:

    def _conforms(api: JobApi) -> JobProvider:
        return api  # mypy checks that JobApi satisfies the JobProvider protocol
