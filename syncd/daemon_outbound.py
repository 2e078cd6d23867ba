"""Wiring of outbound webhooks (issue 14): ``[outbound.NAME]`` -> one HTTP endpoint and one
deliverer task each, and the replay the admin API asks for.

Split from ``daemon.py`` like ``daemon_publish``: edge code that reads ``Settings`` and hands the
deliverer core plain parameters.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog

from syncd.config import Settings
from syncd.config.models import OutboundSettings
from syncd.errors import UnknownEndpoint
from syncd.outbound.deliverer import Deliverer, DelivererOptions
from syncd.outbound.http_target import HttpEndpoint
from syncd.outbound.signing import parse_secret
from syncd.store import Store
from syncd.store.outbound import EndpointRow, Filter

log = structlog.get_logger("syncd.daemon")


def deliverer_options(name: str, conf: OutboundSettings, settings: Settings) -> DelivererOptions:
    """Map ``[outbound.NAME]`` onto the deliverer's plain parameters."""
    return DelivererOptions(
        name=name,
        key=parse_secret(conf.secret.get_secret_value()),
        filter=Filter(kinds=tuple(conf.kinds), sources=tuple(conf.sources)),
        batch_size=conf.batch_size,
        backoff_initial=conf.backoff_initial,
        max_backoff=conf.max_backoff,
        disable_after=conf.disable_after,
        from_head=conf.start == "head",
        stop_grace=min(2.0, settings.shutdown_timeout / 2),
    )


def shown_url(url: str) -> str:
    """The URL for logs: without its query string or userinfo (either may carry a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(slots=True)
class Outbound:
    """Every endpoint's deliverer and HTTP client; ``tasks`` run them, ``aclose`` closes them."""

    deliverers: dict[str, Deliverer]
    endpoints: dict[str, HttpEndpoint]
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def tasks(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """One task per endpoint: independent, so a slow one never holds up another."""
        self._tasks = [
            asyncio.create_task(deliverer.run(stop), name=f"outbound-{name}")
            for name, deliverer in self.deliverers.items()
        ]
        return list(self._tasks)

    async def replay(self, name: str, from_seq: int | None) -> EndpointRow:
        """Re-enable ``name`` (and with ``from_seq``, deliver again from it) in its running loop."""
        deliverer = self.deliverers.get(name)
        if deliverer is None:
            raise UnknownEndpoint(
                f"no outbound endpoint {name!r} in the running config",
                op="outbound.replay",
                hint="endpoints are [outbound.NAME] tables; after adding one, restart syncd",
                endpoint=name,
            )
        return await deliverer.replay(from_seq)

    def states(self) -> list[dict[str, Any]]:
        return [d.state() for d in self.deliverers.values()]

    async def aclose(self) -> None:
        """Close the HTTP clients (after the deliverers stopped). Idempotent."""
        for endpoint in self.endpoints.values():
            await endpoint.aclose()
        if self.endpoints:
            log.info("component_closed", component="outbound")


def open_outbound(settings: Settings, store: Store) -> Outbound:
    """A deliverer per ``[outbound.NAME]`` (none configured: an empty Outbound). Connects lazily:
    the daemon starts while an endpoint is down."""
    deliverers: dict[str, Deliverer] = {}
    endpoints: dict[str, HttpEndpoint] = {}
    for name, conf in settings.outbound.items():
        endpoints[name] = endpoint = HttpEndpoint(conf.url, timeout=conf.timeout)
        options = deliverer_options(name, conf, settings)
        deliverers[name] = Deliverer(store, endpoint, options)
        log.info(
            "outbound_configured",
            endpoint=name,
            url=shown_url(conf.url),
            kinds=conf.kinds,
            sources=conf.sources,
            batch_size=conf.batch_size,
            start=conf.start,
        )
    return Outbound(deliverers, endpoints)
