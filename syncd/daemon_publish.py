"""Wiring of change-log publishing (issue 7): ``[publish.redis]`` -> Redis target + relay.

Split from ``daemon.py`` like ``daemon_jobs``: edge code that reads ``Settings`` and hands the relay
core plain parameters.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from syncd.config import Settings
from syncd.publish.relay import Relay, RelayOptions
from syncd.store import Store

if TYPE_CHECKING:
    from syncd.publish.redis_target import RedisStreamTarget

log = structlog.get_logger("syncd.daemon")


def stream_key(settings: Settings) -> str:
    """The stream for this daemon's change log: the template with ``{instance}`` (the instance
    name, else the host name) and ``{source}`` (the only source's name; validation refuses it with
    several sources).

    One stream per database: every source's entries and job entries go there, so the stream keeps
    the log's one order.
    """
    key = settings.publish.redis.stream.replace("{instance}", settings.instance_name())
    if "{source}" in key:
        key = key.replace("{source}", next(iter(settings.sources)))
    return key


def relay_options(settings: Settings) -> RelayOptions:
    """Map ``[publish.redis]`` onto the relay's plain parameters."""
    conf = settings.publish.redis
    return RelayOptions(
        stream=stream_key(settings),
        batch_size=conf.batch_size,
        backoff_initial=conf.retry_backoff_initial,
        backoff_max=conf.retry_backoff_max,
        stop_drain_timeout=min(2.0, settings.shutdown_timeout / 2),
    )


@dataclass(slots=True)
class Publisher:
    """The relay and its target; ``run`` is a daemon task, ``aclose`` closes the connection."""

    relay: Relay
    target: RedisStreamTarget

    async def run(self, stop: asyncio.Event) -> None:
        await self.relay.run(stop)

    async def aclose(self) -> None:
        """Close the Redis connection (after the relay stopped). Idempotent."""
        await self.target.aclose()
        log.info("component_closed", component="publish_redis")


def open_publisher(settings: Settings, store: Store) -> Publisher | None:
    """The Redis Streams relay, or None when ``publish.redis.url`` is unset. Connects lazily, so
    the daemon starts (and syncs) while Redis is down."""
    conf = settings.publish.redis
    if conf.url is None:
        return None
    # Imported here: the Redis client costs ~20 MB of RSS, paid only when publishing is on.
    from syncd.publish.redis_target import RedisStreamTarget

    target = RedisStreamTarget.from_url(
        conf.url.get_secret_value(),
        maxlen=conf.maxlen,
        timeout=conf.timeout,
    )
    options = relay_options(settings)
    log.info(
        "publish_configured",
        target=target.name,
        stream=options.stream,
        maxlen=conf.maxlen,
        batch_size=conf.batch_size,
    )
    return Publisher(Relay(store, target, options), target)
