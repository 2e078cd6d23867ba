"""The configuration tree: one typed, frozen ``Settings`` object, validated once at the edge.

Sources, in rising priority: field defaults < TOML file < ``SYNCD_*`` environment variables <
secret files (``$CREDENTIALS_DIRECTORY``, systemd's ``LoadCredential=``) < explicit overrides (CLI
flags). Every validation failure becomes one :class:`~syncd.errors.ConfigError` listing
``(key, value, why)`` per bad key, with secret values shown as ``***``. ``docs/config.md`` lists
every key.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import tomllib
import types
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from syncd.errors import ConfigError

__all__ = [
    "AdminSettings",
    "ChangelogSettings",
    "FieldDoc",
    "HttpSettings",
    "JobProviderSettings",
    "JobsSettings",
    "LogSettings",
    "PublishSettings",
    "RedisSettings",
    "Settings",
    "SquareSettings",
    "TcpAddress",
    "UnixAddress",
    "WebhookSettings",
    "config_error",
    "default_database",
    "describe_settings",
    "load_settings",
    "parse_listen",
    "redacted",
    "require_upstream_credentials",
]

ENV_PREFIX = "SYNCD_"
ENV_DELIMITER = "__"
CONFIG_ENV = "SYNCD_CONFIG"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
STATE_ENV = "STATE_DIRECTORY"
DATABASE_NAME = "syncd.db"
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
    if not re.fullmatch(r"[a-z0-9_-]+", value):
        raise ValueError("must be lowercase letters, digits, '_' or '-'")
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


def _expand_user(value: Path) -> Path:
    return value.expanduser()


BaseUrl = Annotated[str, AfterValidator(_base_url)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_blank_is_unset)]
NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Factor = Annotated[float, Field(ge=1)]
ProviderName = Annotated[str, AfterValidator(_provider_name)]
UserPath = Annotated[Path, AfterValidator(_expand_user)]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]
Dialect = Literal["inventory_jobs", "bulk_sales_orders", "commerce_jobs"]

_SECTION = ConfigDict(frozen=True, extra="forbid", validate_default=True)


# --- the tree ------------------------------------------------------------------------------------


class SquareSettings(BaseModel):
    """The Square-compatible upstream: where to read inventory counts from, and how hard to try."""

    model_config = _SECTION

    name: Annotated[str, AfterValidator(_source_name)] = Field(
        default="square",
        description="Source name stored with every mirrored row and change ([a-z0-9_-]+).",
    )
    base_url: BaseUrl = Field(
        default="https://connect.squareup.com",
        description="Base URL of the upstream API (http or https); the simulator's URL in tests.",
    )
    access_token: OptionalSecret = Field(
        default=None,
        description="Upstream access token (secret). Required unless running the simulator.",
    )
    api_version: Annotated[str, AfterValidator(_api_version)] = Field(
        default="2025-08-20",
        description="Square-Version header sent with every request (YYYY-MM-DD).",
    )
    location_ids: list[str] = Field(
        default_factory=list,
        description="Location ids to mirror; empty means every location the token can see.",
    )
    states: list[str] = Field(
        default_factory=list,
        description="Inventory states to mirror (e.g. IN_STOCK); empty means every state.",
    )
    catalog_object_ids: list[str] = Field(
        default_factory=list, description="Catalog object ids to mirror; empty means every object."
    )
    page_limit: int = Field(
        default=1000, ge=1, le=1000, description="Counts requested per page (1..1000)."
    )
    overlap: NonNegative = Field(
        default=120,
        description="Seconds a pass re-reads before its stored watermark, to catch late updates.",
    )
    clock_margin: NonNegative = Field(
        default=2,
        description="Seconds subtracted from the upstream Date header to form the next watermark.",
    )
    poll_interval: Positive = Field(
        default=60, description="Seconds between safety-net passes when no webhook triggers one."
    )
    partition_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Partitions (locations) synced in parallel in one pass (1..64).",
    )
    full_resync_interval: Positive = Field(
        default=86400, description="Seconds between full resyncs that ignore the watermark."
    )
    full_resync_after: Positive = Field(
        default=21600,
        description="Partitions whose last good pass is older than this (seconds) resync in full.",
    )
    request_timeout: Positive = Field(
        default=30, description="Seconds one upstream request may take in total."
    )
    connect_timeout: Positive = Field(
        default=10, description="Seconds allowed to open an upstream connection."
    )
    max_retries: int = Field(
        default=5, ge=0, le=20, description="Retries of a retryable upstream failure (0..20)."
    )
    cursor_restarts: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Times a cursor chain is read again from its start when the upstream declares "
        "its cursor invalid or expired, before the pass fails (0..100).",
    )
    retry_backoff_initial: NonNegative = Field(
        default=0.5, description="First retry delay, in seconds."
    )
    retry_backoff_factor: Factor = Field(
        default=2, description="Multiplier applied to each next delay."
    )
    retry_backoff_max: NonNegative = Field(
        default=30, description="Cap on one retry delay, in seconds."
    )
    notification_url: Annotated[str | None, AfterValidator(_exact_url)] = Field(
        default=None,
        description="Webhook URL exactly as registered upstream; it is part of the signed payload.",
    )
    webhook_signature_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Webhook signature keys (secrets); list several to rotate keys.",
    )


class HttpSettings(BaseModel):
    """The public listener: webhooks, health checks and metrics."""

    model_config = _SECTION

    listen: Annotated[str, AfterValidator(_tcp_listen)] = Field(
        default="127.0.0.1:8787", description="Public listener address: host:port or [v6]:port."
    )
    max_body_bytes: int = Field(
        default=1048576,
        ge=1,
        description="Largest webhook body accepted, in bytes; larger gets 413.",
    )
    read_timeout: Positive = Field(
        default=10,
        description="Seconds a client may take to send a whole request (headers and body); a"
        " slower one gets 408 or is disconnected, and so is a connection idle this long.",
    )
    ready_max_staleness: Positive = Field(
        default=600,
        description="/readyz fails when the last good pass is older than this (seconds).",
    )

    @property
    def address(self) -> TcpAddress:
        """The parsed listen address."""
        parsed = parse_listen(self.listen)
        assert isinstance(parsed, TcpAddress)
        return parsed


class WebhookSettings(BaseModel):
    """How webhooks turn into sync passes, and how long their records are kept."""

    model_config = _SECTION

    debounce: NonNegative = Field(
        default=0.1, description="Seconds to wait for more webhooks before starting a pass."
    )
    max_delay: NonNegative = Field(
        default=0.5, description="Most seconds between the first pending webhook and its pass."
    )
    group_commit_window: NonNegative = Field(
        default=0.002, description="Seconds webhook inserts wait to share one commit."
    )
    retain_days: NonNegative = Field(
        default=7,
        description="Days processed webhook events are kept (deduplication) before pruning.",
    )


class AdminSettings(BaseModel):
    """The admin API (jobs, status, sync now), on its own local listener."""

    model_config = _SECTION

    listen: Annotated[str, AfterValidator(_admin_listen)] = Field(
        default="127.0.0.1:8788",
        description="Admin listener: host:port, [v6]:port, an absolute socket path or unix:/path.",
    )
    token: OptionalSecret = Field(
        default=None,
        description="Bearer token the admin API requires (secret); unset: keep the listener local.",
    )

    @property
    def address(self) -> TcpAddress | UnixAddress:
        """The parsed listen address (TCP or unix socket)."""
        return parse_listen(self.listen, allow_unix=True)


class JobProviderSettings(BaseModel):
    """One asynchronous job API that syncd polls until the job finishes."""

    model_config = _SECTION

    dialect: Dialect = Field(description="Job API dialect this provider speaks.")
    base_url: BaseUrl = Field(description="Base URL of the provider's job API.")
    token: OptionalSecret = Field(
        default=None, description="Bearer token for the provider (secret)."
    )
    path: str | None = Field(
        default=None,
        description="Job status path template ({job_id} or the dialect's own name for the id,"
        " other {placeholders} from params); the dialect's default when unset.",
    )
    params: dict[str, str] = Field(
        default_factory=dict,
        description="Default path parameters (e.g. businessUnitId; a job's own params win); keys"
        " the path does not use are sent as query parameters.",
    )
    concurrency: int = Field(
        default=4, ge=1, description="Polls in flight at once for this provider."
    )
    rate_per_second: float = Field(
        default=5, gt=0, description="Polls per second for this provider."
    )


class JobsSettings(BaseModel):
    """Polling of registered upstream jobs, and where their downloads go."""

    model_config = _SECTION

    backoff_initial: NonNegative = Field(
        default=1, description="First delay between polls of a job, seconds."
    )
    backoff_factor: Factor = Field(
        default=2, description="Multiplier applied to each next poll delay."
    )
    backoff_max: NonNegative = Field(
        default=300, description="Cap on the delay between polls, seconds."
    )
    deadline: Positive = Field(
        default=86400, description="Seconds after registration when an unfinished job is given up."
    )
    not_found_grace: NonNegative = Field(
        default=300, description="Seconds a new job may answer 404 before that counts as a failure."
    )
    download_dir: UserPath = Field(
        default=Path("downloads"),
        description="Where export downloads go; relative to the database's directory.",
    )
    max_download_bytes: int = Field(
        default=104857600, ge=1, description="Largest download accepted, in bytes."
    )
    providers: dict[ProviderName, JobProviderSettings] = Field(
        default={}, description="Job providers by name ([A-Za-z0-9_-]+)."
    )


class ChangelogSettings(BaseModel):
    """Retention of the append-only change log."""

    model_config = _SECTION

    retain_days: NonNegative = Field(
        default=0, description="Days of changes to keep; 0 keeps them forever."
    )
    retain_max_rows: int = Field(
        default=0, ge=0, description="Most change rows kept; 0 is unlimited."
    )
    prune_interval: Positive = Field(
        default=600, description="Seconds between retention rounds (when a limit is set)."
    )


class RedisSettings(BaseModel):
    """Publishing changes to a Redis stream."""

    model_config = _SECTION

    url: Annotated[OptionalSecret, AfterValidator(_redis_url)] = Field(
        default=None,
        description="Redis URL (secret: may hold a password); publishing is off when unset.",
    )
    stream: str = Field(
        default="syncd:changes:{source}",
        description="Stream key; {source} becomes the source name.",
    )
    maxlen: int = Field(
        default=0, ge=0, description="Approximate stream MAXLEN; 0 means no trimming."
    )
    batch_size: int = Field(default=500, ge=1, description="Changes sent per round trip.")
    timeout: Positive = Field(
        default=5, description="Seconds to connect to Redis, and to wait for each reply."
    )
    retry_backoff_initial: Positive = Field(
        default=0.5, description="First delay before retrying after a Redis failure, in seconds."
    )
    retry_backoff_max: Positive = Field(
        default=30, description="Cap on the delay between retries while Redis fails, in seconds."
    )


class PublishSettings(BaseModel):
    """Where changes are published besides the local change log."""

    model_config = _SECTION

    redis: RedisSettings = Field(
        default_factory=RedisSettings, description="Redis stream publishing."
    )


class LogSettings(BaseModel):
    """Log level and output format."""

    model_config = _SECTION

    level: Annotated[LogLevel, _choice("debug", "info", "warning", "error")] = Field(
        default="info", description="Lowest level logged: debug, info, warning or error (any case)."
    )
    format: Annotated[LogFormat, _choice("auto", "json", "console")] = Field(
        default="auto",
        description="json, console, or auto (console on a terminal, JSON otherwise).",
    )


_LOAD_SOURCES: ContextVar[tuple[PydanticBaseSettingsSource, ...]] = ContextVar(
    "syncd_config_sources", default=()
)


class Settings(BaseSettings):
    """Everything syncd can be configured with. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", validate_default=True)

    database: UserPath = Field(
        default=Path(DATABASE_NAME),
        description="SQLite database file: the mirror, the change log and sync state.",
        json_schema_extra={"doc_default": "$STATE_DIRECTORY/syncd.db, else ./syncd.db"},
    )
    shutdown_timeout: NonNegative = Field(
        default=10, description="Seconds a graceful shutdown may take before tasks are cancelled."
    )
    square: SquareSettings = Field(default_factory=SquareSettings, description="The upstream.")
    http: HttpSettings = Field(default_factory=HttpSettings, description="The public listener.")
    webhooks: WebhookSettings = Field(
        default_factory=WebhookSettings, description="Webhook handling."
    )
    admin: AdminSettings = Field(default_factory=AdminSettings, description="The admin API.")
    jobs: JobsSettings = Field(default_factory=JobsSettings, description="Upstream job polling.")
    changelog: ChangelogSettings = Field(
        default_factory=ChangelogSettings, description="Change log retention."
    )
    publish: PublishSettings = Field(
        default_factory=PublishSettings, description="Change publishing."
    )
    log: LogSettings = Field(default_factory=LogSettings, description="Logging.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Settings(**kwargs) stays pure (kwargs + defaults, no os.environ): only load_settings()
        # adds the file, environment and secret sources, for the duration of one construction.
        return (init_settings, *_LOAD_SOURCES.get())

    def resolved_download_dir(self) -> Path:
        """``jobs.download_dir``; a relative path is taken relative to the database's directory."""
        if self.jobs.download_dir.is_absolute():
            return self.jobs.download_dir
        return self.database.parent / self.jobs.download_dir


# --- sources -------------------------------------------------------------------------------------


class _MappingSource(PydanticBaseSettingsSource):
    """Hands a ready nested dict (TOML file, environment, secrets, overrides) to pydantic."""

    def __init__(
        self, settings_cls: type[BaseSettings], data: Mapping[str, Any], name: str
    ) -> None:
        super().__init__(settings_cls)
        self._data = copy.deepcopy(dict(data))
        self._name = name

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name})"


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and Optional[...] so the structural type is left."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _resolve_key(segments: list[str]) -> tuple[list[str], Any]:
    """Map raw name segments onto the tree: field names match in any case, dict keys keep theirs.

    Returns the normalised path and the annotation at its end (None when the path leaves the tree,
    in which case validation reports the unknown key).
    """
    annotation: Any = Settings
    path: list[str] = []
    for segment in segments:
        annotation = _unwrap(annotation)
        if _is_model(annotation):
            field = annotation.model_fields.get(segment.lower())
            path.append(segment.lower())
            annotation = field.annotation if field else None
        elif get_origin(annotation) is dict:
            path.append(segment)
            annotation = get_args(annotation)[1]
        else:
            path.append(segment.lower())
            annotation = None
    return path, annotation


def _decode(raw: str, annotation: Any, *, lines_as_list: bool = False) -> Any:
    """JSON-decode a raw string bound for a list, dict or section; leave the rest to pydantic."""
    target = _unwrap(annotation)
    complex_target = _is_model(target) or get_origin(target) in (list, dict)
    if not complex_target:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        if lines_as_list and get_origin(target) is list:
            return [line.strip() for line in raw.splitlines() if line.strip()]
        return raw  # validation says "must be a valid list" with the key and value


def _set_nested(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for segment in path[:-1]:
        child = node.get(segment)
        if not isinstance(child, dict):
            child = node[segment] = {}
        node = child
    existing = node.get(path[-1])
    if isinstance(existing, dict) and isinstance(value, dict):
        existing.update(value)
    else:
        node[path[-1]] = value


def _nest(items: list[tuple[list[str], str]], *, lines_as_list: bool) -> dict[str, Any]:
    """Nest (raw segments, raw value) pairs; shallower keys go first so deeper ones merge in."""
    data: dict[str, Any] = {}
    top = Settings.model_fields
    for segments, raw in sorted(items, key=lambda item: len(item[0])):
        if not segments or segments[0].lower() not in top or not all(segments):
            continue
        path, annotation = _resolve_key(segments)
        _set_nested(data, path, _decode(raw, annotation, lines_as_list=lines_as_list))
    return data


def _env_data(env: Mapping[str, str]) -> dict[str, Any]:
    """``SYNCD_SQUARE__PAGE_LIMIT=5`` → ``{"square": {"page_limit": "5"}}``; empty means unset."""
    items = [
        (name[len(ENV_PREFIX) :].split(ENV_DELIMITER), value)
        for name, value in env.items()
        if name.upper().startswith(ENV_PREFIX) and name.upper() != CONFIG_ENV and value != ""
    ]
    return _nest(items, lines_as_list=False)


def _secrets_data(directory: Path, key: str) -> dict[str, Any]:
    """One file per key, named ``square.access_token`` or ``square__access_token``.

    Files whose name does not start with a top-level key are ignored: a credentials directory may
    hold other things. A list-valued key takes a JSON array or one item per line.
    """
    if not directory.is_dir():
        raise ConfigError([(key, str(directory), "is not a directory")])
    items: list[tuple[list[str], str]] = []
    for entry in sorted(directory.iterdir()):
        segments = entry.name.replace(ENV_DELIMITER, ".").split(".")
        if segments[0].lower() not in Settings.model_fields or not entry.is_file():
            continue  # not ours (another credential, a hidden file, a directory): never read it
        try:
            content = entry.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([(key, str(entry), f"cannot read secret file: {exc}")]) from exc
        items.append((segments, content))
    return _nest(items, lines_as_list=True)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            [("config_file", str(path), "file not found")],
            hint=f"create it (see config/syncd.example.toml) or unset {CONFIG_ENV}",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        message = re.sub(r"\s*\(at .*\)$", "", str(exc))
        location = f"{path}:{where.group(1)}" if where else str(path)
        at = f" at line {where.group(1)}, column {where.group(2)}" if where else ""
        raise ConfigError(
            [("config_file", location, f"TOML syntax error{at}: {message}")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("config_file", str(path), f"cannot read: {exc}")]) from None


def default_database(env: Mapping[str, str]) -> Path:
    """``$STATE_DIRECTORY/syncd.db`` (first of several, colon-separated), else ``./syncd.db``."""
    state = env.get(STATE_ENV, "").split(":")[0]
    return Path(state) / DATABASE_NAME if state else Path(DATABASE_NAME)


# --- loading and errors --------------------------------------------------------------------------


def load_settings(
    config_file: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    secrets_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read every source and validate once; raise :class:`ConfigError` listing every bad key.

    ``env=None`` reads ``os.environ``; tests pass a dict. ``config_file`` defaults to
    ``$SYNCD_CONFIG`` and ``secrets_dir`` to ``$CREDENTIALS_DIRECTORY`` when those are set.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if config_file is None and environ.get(CONFIG_ENV):
        config_file = Path(environ[CONFIG_ENV])
    secrets_key = "secrets_dir"
    if secrets_dir is None and environ.get(CREDENTIALS_ENV):
        secrets_dir, secrets_key = Path(environ[CREDENTIALS_ENV]), CREDENTIALS_ENV

    layers = [  # highest priority first, as pydantic-settings expects
        ("overrides", dict(overrides or {})),
        ("secrets", _secrets_data(secrets_dir, secrets_key) if secrets_dir else {}),
        ("environment", _env_data(environ)),
        ("toml", _read_toml(config_file) if config_file else {}),
        ("defaults", {"database": default_database(environ)}),
    ]
    sources = tuple(_MappingSource(Settings, data, name) for name, data in layers)
    token = _LOAD_SOURCES.set(sources)
    try:
        return Settings()
    except ValidationError as exc:
        raise config_error(exc) from None
    finally:
        _LOAD_SOURCES.reset(token)


def _annotation_at(loc: tuple[str | int, ...]) -> tuple[Any, type[BaseModel] | None]:
    """The annotation at an error location, and the model that holds its last key."""
    annotation: Any = Settings
    parent: type[BaseModel] | None = None
    for part in loc:
        annotation = _unwrap(annotation)
        if _is_model(annotation):
            parent = annotation
            field = annotation.model_fields.get(str(part))
            annotation = field.annotation if field else None
        elif get_origin(annotation) in (list, dict):
            parent = None
            annotation = get_args(annotation)[-1]
        else:
            return None, None
    return annotation, parent


def _contains_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_contains_secret(arg) for arg in get_args(annotation))


def _looks_secret(name: str, parent: type[BaseModel] | None) -> bool:
    """An unknown key may be a misspelt secret: mask it when it looks like one."""
    if any(word in name.lower() for word in ("token", "secret", "password", "key", "url")):
        return True
    if parent is None:
        return False
    close = difflib.get_close_matches(name, list(parent.model_fields), 1)
    return bool(close) and _contains_secret(parent.model_fields[close[0]].annotation)


def _show(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _why(error: Mapping[str, Any], key: str, parent: type[BaseModel] | None) -> str:
    kind, message = error["type"], str(error["msg"])
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        why = "unknown key"
        if parent is not None:
            close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(parent.model_fields), 1)
            why += f"; did you mean {close[0]!r}?" if close else ""
        return why
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a table (a [section] in TOML)"
    message = message.removeprefix("Value error, ")
    return re.sub(r"^Input should be ", "must be ", message)


def config_error(exc: ValidationError) -> ConfigError:
    """Turn a pydantic ValidationError into one (key, value, why) per bad key, secrets masked."""
    problems: dict[str, tuple[str, list[str]]] = {}
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if part != "[key]")
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        annotation, parent = _annotation_at(loc)
        if error["type"] == "missing":
            value = "unset"
        elif _contains_secret(annotation) or (
            error["type"] == "extra_forbidden" and _looks_secret(str(loc[-1]), parent)
        ):
            value = SECRET_MASK
        elif isinstance(error["input"], dict):
            value = "(table)"  # a whole table may hold secrets; the key is what matters
        else:
            value = _show(error["input"])
        why = _why(error, key, parent)
        _, whys = problems.setdefault(key or "(root)", (value, []))
        if why not in whys:
            whys.append(why)
    return ConfigError([(key, value, "; ".join(whys)) for key, (value, whys) in problems.items()])


def require_upstream_credentials(settings: Settings) -> None:
    """Raise ConfigError unless an upstream access token is set (the simulator needs none)."""
    token = settings.square.access_token
    if token is None or not token.get_secret_value():
        raise ConfigError(
            [
                (
                    "square.access_token",
                    "unset",
                    "required to talk to the real upstream; set SYNCD_SQUARE__ACCESS_TOKEN or a "
                    "square.access_token credential file, or run against the simulator",
                )
            ]
        )


# --- output --------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return SECRET_MASK
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration as a JSON-able dict; each secret is ``"***"`` (null if unset)."""
    result = _plain(settings)
    assert isinstance(result, dict)
    return result


@dataclass(frozen=True, slots=True)
class FieldDoc:
    """One documented key: dotted name (``<name>`` for a map key), type, default and meaning.

    ``type`` escapes ``|`` as ``\\|`` so that it can go straight into a Markdown table.
    """

    key: str
    type: str
    default: str
    description: str
    secret: bool


_TYPE_NAMES = {str: "string", int: "integer", float: "number", Path: "path", SecretStr: "secret"}


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_name(get_args(annotation)[0])
    if origin is Literal:
        return " \\| ".join(f'"{a}"' for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        name = " \\| ".join(_type_name(a) for a in members)
        return f"{name} (optional)" if len(members) < len(get_args(annotation)) else name
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        return f"table of {_type_name(get_args(annotation)[1])}"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default_text(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("doc_default"), str):
        return str(extra["doc_default"])
    if field.is_required():
        return "required"
    value = _plain(field.get_default(call_default_factory=True))
    return "unset" if value is None else json.dumps(value)


def describe_settings(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[FieldDoc]:
    """Yield every leaf key of the tree (for the docs, the example config, ``config`` commands)."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        target = _unwrap(field.annotation)
        if _is_model(target):
            yield from describe_settings(target, f"{key}.")
        elif get_origin(target) is dict and _is_model(_unwrap(get_args(target)[1])):
            yield from describe_settings(_unwrap(get_args(target)[1]), f"{key}.<name>.")
        else:
            yield FieldDoc(
                key=key,
                type=_type_name(field.annotation),
                default=_default_text(field),
                description=field.description or "",
                secret=_contains_secret(field.annotation),
            )
