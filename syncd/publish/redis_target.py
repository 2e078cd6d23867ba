"""Redis Streams as a publish target (redis-py's asyncio client): implements ``StreamTarget``.

A stream ``key`` is claimed by one database with a string key next to it, ``key:owner``, holding the
database's id: ``SET key:owner <id> NX`` (then ``GET`` to learn who won). A batch is one optimistic
transaction on one connection:
``WATCH key key:owner`` -> ``XINFO STREAM key`` (its ``last-generated-id`` must be the one the relay
expects) -> ``GET key:owner`` (must be this database's id) -> ``MULTI`` ->
``XADD key [MAXLEN ~ n] <seq>-0 field value ...`` per entry -> ``EXEC``.

- Explicit IDs: Redis refuses an ID not above the stream's last one ("equal or smaller than the
  target stream top item"), so a seq is never in the stream twice; such a refusal is counted as
  already published.
- The check before the batch catches a stream that went back (a restart that lost its last writes,
  a failover, a deleted key) before a newer ID could leave a hole; WATCH makes the batch fail if
  another client writes the key in between; MULTI/EXEC makes the batch all or nothing in the AOF
  and on replicas, and a rejected command (OOM) aborts the whole batch instead of skipping one entry.
- The claim is checked in every batch, under the same WATCH: a stream another database claimed
  (also one reset and claimed while this relay ran) gets nothing from this one.
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

from syncd.errors import PublishError, StreamConflict
from syncd.publish.ports import Message

_STALE_ID = "equal or smaller than the target stream top item"
_NO_SUCH_KEY = "no such key"
OWNER_SUFFIX = ":owner"


def owner_key(stream: str) -> str:
    """The key holding the id of the database that claimed ``stream``."""
    return stream + OWNER_SUFFIX


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

    def reset_command(self, stream: str) -> str:
        return f"redis-cli DEL {stream} {owner_key(stream)}"

    async def owner(self, stream: str) -> str | None:
        try:
            return _text(await self._client.get(owner_key(stream)))
        except RedisError as exc:
            raise _error(exc, "publish.owner", stream) from exc

    async def claim(self, stream: str, owner: str) -> str:
        key = owner_key(stream)
        try:
            # SET NX then GET (not SET NX GET: Redis < 7 refuses that). A claim deleted between
            # the two is claimed again.
            for _ in range(3):
                if await self._client.set(key, owner, nx=True):
                    return owner
                current = _text(await self._client.get(key))
                if current is not None:
                    return current
        except RedisError as exc:
            raise _error(exc, "publish.claim", stream) from exc
        raise PublishError(
            f"the claim on stream {stream} kept vanishing",
            op="publish.claim",
            stream=stream,
            hint=f"something deletes {key} over and over",
        )

    async def append(
        self, stream: str, messages: Sequence[Message], *, expect_last: int, owner: str
    ) -> int:
        key = owner_key(stream)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                await pipe.watch(stream, key)
                last = await _last_seq(pipe, stream)
                claimed = _text(await pipe.get(key))
                if claimed is None:
                    raise PublishError(
                        f"the claim on stream {stream} is gone ({key} was deleted)",
                        op="publish.append",
                        stream=stream,
                        hint="the stream was reset; the relay claims it again and goes on",
                    )
                if claimed != owner:
                    raise StreamConflict(
                        f"stream {stream} belongs to database {claimed}, not to this one ({owner})",
                        reason="owned",
                        op="publish.append",
                        stream=stream,
                        owner=claimed,
                        database_id=owner,
                    )
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


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


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
