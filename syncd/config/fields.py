"""Config building blocks: environment names, listen addresses, and the field types and validators
whose messages operators read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
)

from syncd.config.inputs import expand_user

SECRET_MASK = "***"


# --- listen addresses ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TcpAddress:
    """A TCP listen address; ``host`` has no brackets (``::1``, not ``[::1]``)."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """A unix domain socket listen address."""

    path: Path


def parse_listen(value: str, *, allow_unix: bool = False) -> TcpAddress | UnixAddress:
    """Parse ``host:port`` or ``[v6]:port``; with ``allow_unix``, ``/path`` or ``unix:/path``."""
    if allow_unix and (value.startswith(("/", "unix:"))):
        path = Path(value.removeprefix("unix:"))
        if not path.is_absolute():
            raise ValueError("a unix socket path must be absolute")
        return UnixAddress(path)
    match = re.fullmatch(r"\[([0-9A-Fa-f:.%\w]+)\]:(\d+)|([^:\[\]\s]+):(\d+)", value)
    if match is None:
        forms = "host:port, [v6]:port" + (", an absolute path or unix:/path" if allow_unix else "")
        raise ValueError(f"must be {forms}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError("port must be 0..65535")
    return TcpAddress(host, port)


# --- field validators (messages are what operators read) -----------------------------------------


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _base_url(value: str) -> str:
    """A base URL loses its trailing slash, so that callers can append ``/v2/...``."""
    return _check_http_url(value).rstrip("/")


def _exact_url(value: str | None) -> str | None:
    """Kept byte for byte: the webhook signature covers the notification URL as registered."""
    return None if value is None else _check_http_url(value)


def _source_name(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", value) or len(value) > 64:
        raise ValueError(
            "must be 1..64 lowercase letters, digits, '_' or '-', starting with a letter or digit"
        )
    return value


def _instance_name(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
        raise ValueError("must be 1..64 letters, digits, '_', '.' or '-'")
    return value


def _provider_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise ValueError("provider names must be letters, digits, '_' or '-'")
    return value


def _api_version(value: str) -> str:
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a date in the form YYYY-MM-DD") from None
    return value


def _tcp_listen(value: str) -> str:
    parse_listen(value)
    return value


def _admin_listen(value: str) -> str:
    parse_listen(value, allow_unix=True)
    return value


def _redis_url(value: SecretStr | None) -> SecretStr | None:
    if value is not None and urlsplit(value.get_secret_value()).scheme not in (
        "redis",
        "rediss",
        "unix",
    ):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return value


def _stream_template(value: str) -> str:
    """A Redis stream key template: not empty, and not ending in ``:owner`` (the suffix of the key
    next to each stream that names the database owning it)."""
    if not value.strip():
        raise ValueError("must not be empty")
    if value.endswith(":owner"):
        raise ValueError("must not end in ':owner' (KEY:owner holds the claim on stream KEY)")
    return value


def _endpoint_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", value):
        raise ValueError(
            "endpoint names must be 1..64 letters, digits, '_' or '-', starting with a letter or"
            " digit"
        )
    return value


def _outbound_url(value: str) -> str:
    """An outbound endpoint's URL: http(s) with a host, kept as written."""
    return _check_http_url(value)


def _webhook_secret(value: SecretStr) -> SecretStr:
    """A Standard Webhooks secret (``whsec_`` + base64 of 24..64 bytes)."""
    from syncd.outbound.signing import parse_secret  # the one place that knows the format

    parse_secret(value.get_secret_value())
    return value


def _kind_pattern(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._*?\[\]-]{1,64}", value):
        raise ValueError(
            "a kind pattern is a kind (count.updated) or a glob of kinds (count.*, job.*):"
            " letters, digits, '.', '_', '-', '*', '?', '[', ']'"
        )
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _blank_is_unset(value: Any) -> Any:
    """An empty secret (empty env var, empty credential file) means "not set"."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _choice(*allowed: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if isinstance(value, str) and value.lower() in allowed:
            return value.lower()
        raise ValueError("must be one of " + ", ".join(allowed))

    return BeforeValidator(check)


BaseUrl = Annotated[str, AfterValidator(_base_url)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_blank_is_unset)]
NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Factor = Annotated[float, Field(ge=1)]
ProviderName = Annotated[str, AfterValidator(_provider_name)]
EndpointName = Annotated[str, AfterValidator(_endpoint_name)]
OutboundUrl = Annotated[str, AfterValidator(_outbound_url)]
WebhookSecret = Annotated[SecretStr, AfterValidator(_webhook_secret)]
KindPattern = Annotated[str, AfterValidator(_kind_pattern)]
NonEmpty = Annotated[str, AfterValidator(_non_empty)]
# Source names key the config's [sources.NAME] tables and every per-source row in the database; a
# leading '_' is reserved (the inbox keeps events of unknown merchants under "_unknown").
SourceName = Annotated[str, AfterValidator(_source_name)]
InstanceName = Annotated[str | None, AfterValidator(_instance_name)]
UserPath = Annotated[Path, AfterValidator(expand_user)]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]
Dialect = Literal["inventory_jobs", "bulk_sales_orders", "commerce_jobs"]

_SECTION = ConfigDict(frozen=True, extra="forbid", validate_default=True)
