"""Redis Streams as a publish target (redis-py's asyncio client): implements ``StreamTarget``.

A batch is one optimistic transaction on one connection:
``WATCH key`` -> ``XINFO STREAM key`` (its ``last-generated-id`` must be the one the relay expects)
-> ``MULTI`` -> ``XADD key [MAXLEN ~ n] <seq>-0 field value ...`` per entry -> ``EXEC``.

- Explicit IDs: Redis refuses an ID not above the stream's last one ("equal or smaller than the
  target stream top item"), so a seq is never in the stream twice; such a refusal is counted as
  already published.
- The check before the batch catches a stream that went back (a restart that lost its last writes,
  a failover, a deleted key) before a newer ID could leave a hole; WATCH makes the batch fail if
  another client writes the key in between; MULTI/EXEC makes the batch all or nothing in the AOF
  and on replicas, and a rejected command (OOM) aborts the whole batch instead of skipping one entry.
- No retries inside the client (``retries=0``): the relay owns backoff and reconciles first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError, WatchError
from redis.typing import EncodableT, FieldT

from syncd.errors import PublishError
from syncd.publish.ports import Message

_STALE_ID = "equal or smaller than the target stream top item"
_NO_SUCH_KEY = "no such key"


class RedisStreamTarget:
    """Publishes to Redis streams through one client (a small connection pool)."""

    name = "redis"

    def __init__(self, client: Redis, *, maxlen: int = 0) -> None:
        self._client = client
        self._maxlen = maxlen if maxlen > 0 else None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, maxlen: int = 0, timeout: float = 5.0) -> RedisStreamTarget:
        """A target for ``redis://``, ``rediss://`` or ``unix://`` URL (nothing connects yet).

        No client name is set: CLIENT SETNAME would be one more command a restricted ACL user
        needs, and its refusal fails the connection.
        """
        client = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, maxlen=maxlen)

    async def last_seq(self, stream: str) -> int:
        try:
            return await _last_seq(self._client, stream)
        except RedisError as exc:
            raise _error(exc, "publish.last_id", stream) from exc

    async def append(self, stream: str, messages: Sequence[Message], *, expect_last: int) -> int:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                await pipe.watch(stream)
                last = await _last_seq(pipe, stream)
                if last != expect_last:
                    raise PublishError(
                        f"stream {stream} moved: its last ID is {last}-0, expected {expect_last}-0",
                        op="publish.append",
                        stream=stream,
                        stream_last=last,
                        expected_last=expect_last,
                        hint="the stream lost entries or another client wrote to it;"
                        " the relay reconciles and goes on",
                    )
                pipe.multi()  # type: ignore[no-untyped-call]  # untyped in redis-py
                for message in messages:
                    # redis-py's dict key type is invariant; the fields are str -> str | bytes.
                    fields = cast("dict[FieldT, EncodableT]", message.fields)
                    pipe.xadd(
                        stream, fields, id=f"{message.seq}-0", maxlen=self._maxlen, approximate=True
                    )
                results = await pipe.execute(raise_on_error=False)
        except WatchError as exc:
            raise PublishError(
                f"stream {stream} was written by another client during a batch",
                op="publish.append",
                stream=stream,
                hint="does another syncd publish to this stream?",
            ) from exc
        except RedisError as exc:
            raise _error(exc, "publish.append", stream) from exc
        refused = 0
        for result in results:
            if isinstance(result, ResponseError):
                if _STALE_ID in str(result):
                    refused += 1
                    continue
                raise _error(result, "publish.append", stream) from result
        return refused

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()


async def _last_seq(client: Redis | Pipeline, stream: str) -> int:
    """The seq (ms part) of the stream's ``last-generated-id``; 0 when the key does not exist."""
    try:
        info: dict[str, Any] = await client.xinfo_stream(stream)
    except ResponseError as exc:
        if _NO_SUCH_KEY in str(exc).lower():
            return 0
        raise
    last = info["last-generated-id"]
    text = last.decode() if isinstance(last, bytes) else str(last)
    return int(text.partition("-")[0])


def _error(exc: RedisError, op: str, stream: str) -> PublishError:
    """A Redis failure as a PublishError (the message never holds the URL or its password)."""
    return PublishError(
        f"redis: {exc}" if str(exc) else f"redis: {type(exc).__name__}",
        op=op,
        stream=stream,
        redis_error=type(exc).__name__,
    )
