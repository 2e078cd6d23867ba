"""Square's ListLocations: ``GET /v2/locations``, every location of the token's seller.

Square answers all of them, active and inactive, in one page (no cursor). A 401/403 is the
``UpstreamError`` of ``request_json``, with its hint; a 2xx answer of the wrong shape is an
``UpstreamDataError`` naming the field (``locations[2].status``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp

from syncd.errors import UpstreamDataError
from syncd.model import Location
from syncd.upstream.http import (
    JsonResponse,
    RetryInfo,
    RetryPolicy,
    parse_vendor_errors,
    request_json,
)
from syncd.upstream.square import AccessTokens, SquareOptions, authorized

if TYPE_CHECKING:
    from syncd.sync.ports import LocationDetailsSource, LocationsSource

__all__ = [
    "LOCATIONS_PATH",
    "LOCATION_STATUSES",
    "OP_LIST_LOCATIONS",
    "Location",
    "SquareLocations",
    "list_locations",
    "parse_locations",
]

OP_LIST_LOCATIONS = "square.list_locations"
LOCATIONS_PATH = "/v2/locations"
LOCATION_STATUSES = frozenset({"ACTIVE", "INACTIVE"})


async def list_locations(
    session: aiohttp.ClientSession,
    *,
    base_url: str,
    api_version: str,
    access_token: str | None,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    on_retry: Callable[[RetryInfo], None] | None = None,
) -> list[Location]:
    """Every location of the seller the token belongs to, in Square's order."""
    headers = {"Square-Version": api_version}
    if access_token is not None:
        headers["Authorization"] = f"Bearer {access_token}"
    response = await request_json(
        session,
        "GET",
        base_url.rstrip("/") + LOCATIONS_PATH,
        op=OP_LIST_LOCATIONS,
        policy=policy,
        headers=headers,
        sleep=sleep,
        rand=rand,
        on_retry=on_retry,
    )
    return parse_locations(response.body)


class SquareLocations:
    """The seller's locations: every one with its details (``LocationDetailsSource``: the
    catalog mirror's ``locations`` table), and the active ids (``LocationsSource``: the engine's
    partitions). Reports the merchant id the locations carry (``on_merchant``), which routes the
    app's webhooks to this source."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        options: SquareOptions,
        *,
        tokens: AccessTokens | None = None,
        on_merchant: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        on_retry: Callable[[RetryInfo], None] | None = None,
    ) -> None:
        self._session = session
        self._options = options
        self._tokens = tokens
        self._on_merchant = on_merchant
        self._sleep = sleep
        self._rand = rand
        self._on_retry = on_retry
        self._headers = {"Square-Version": options.api_version}
        # The newest answer (monotonic instant, locations): the catalog pass and the engine's
        # discovery read the same list, and discovery takes a recent one (issue 11).
        self._answer: tuple[float, tuple[Location, ...]] | None = None
        if options.access_token is not None:
            self._headers["Authorization"] = f"Bearer {options.access_token}"

    async def locations(self) -> tuple[Location, ...]:
        """Every location of the seller, ACTIVE and INACTIVE, in Square's order."""

        def send(headers: dict[str, str]) -> Awaitable[JsonResponse]:
            return request_json(
                self._session,
                "GET",
                self._options.base_url.rstrip("/") + LOCATIONS_PATH,
                op=OP_LIST_LOCATIONS,
                policy=self._options.policy,
                headers=headers,
                sleep=self._sleep,
                rand=self._rand,
                on_retry=self._on_retry,
            )

        response = await authorized(self._tokens, self._headers, send)
        locations = parse_locations(response.body)
        merchants = {loc.merchant_id for loc in locations if loc.merchant_id}
        if len(merchants) == 1 and self._on_merchant is not None:
            self._on_merchant(merchants.pop())
        answer = tuple(locations)
        self._answer = (time.monotonic(), answer)
        return answer

    @property
    def answered_at(self) -> float | None:
        return None if self._answer is None else self._answer[0]

    async def active_location_ids(self, max_age: float = 0.0) -> tuple[str, ...]:
        """The ids of the ACTIVE locations, sorted (the engine's partitions); from the newest
        answer when it is younger than ``max_age`` seconds (``locations`` always asks)."""
        answer = self._answer
        if answer is not None and time.monotonic() - answer[0] < max_age:
            found = answer[1]
        else:
            found = await self.locations()
        return tuple(sorted(loc.id for loc in found if loc.active))


def parse_locations(body: Any) -> list[Location]:
    """A ListLocationsResponse as Locations; Square omits an empty ``locations`` array."""
    if not isinstance(body, dict):
        _data_error(f"response is not a JSON object but {type(body).__name__}", field="$")
    if body.get("errors"):
        raise UpstreamDataError(
            f"{OP_LIST_LOCATIONS}: a 200 response carries errors",
            status=200,
            vendor_errors=parse_vendor_errors(200, body),
            op=OP_LIST_LOCATIONS,
            field="errors",
        )
    raw = body.get("locations")
    if raw is None:
        return []
    if not isinstance(raw, list):
        _data_error(f"locations is not a list but {type(raw).__name__}", field="locations")
    return [_location(item, f"locations[{i}]") for i, item in enumerate(raw)]


def _location(raw: Any, where: str) -> Location:
    if not isinstance(raw, dict):
        _data_error(f"{where} is not an object", field=where)
    location_id = raw.get("id")
    if not isinstance(location_id, str) or not location_id:
        _data_error(f"{where}.id is missing or empty", field=f"{where}.id")
    status = raw.get("status")
    if status not in LOCATION_STATUSES:
        _data_error(f"{where}.status is not ACTIVE or INACTIVE: {status!r}", f"{where}.status")
    return Location(
        id=location_id,
        name=_optional(raw, "name", where),
        status=str(status),
        merchant_id=_optional(raw, "merchant_id", where),
        timezone=_optional(raw, "timezone", where),
    )


def _optional(raw: dict[str, Any], name: str, where: str) -> str | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, str):
        _data_error(f"{where}.{name} is not a string", field=f"{where}.{name}")
    return value


def _data_error(message: str, field: str) -> NoReturn:
    raise UpstreamDataError(
        f"{OP_LIST_LOCATIONS}: {message}", status=200, op=OP_LIST_LOCATIONS, field=field
    )


if TYPE_CHECKING:
    # Static conformance: mypy fails here if SquareLocations drifts from the engine's Protocols.
    def _conforms(source: SquareLocations) -> tuple[LocationsSource, LocationDetailsSource]:
        return source, source
