"""The configuration tree: one frozen pydantic model per section, ``Settings`` at the root."""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    SecretStr,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from syncd.config.fields import (
    _SECTION,
    DATABASE_NAME,
    BaseUrl,
    Dialect,
    Factor,
    LogFormat,
    LogLevel,
    NonNegative,
    OptionalSecret,
    Positive,
    ProviderName,
    TcpAddress,
    UnixAddress,
    UserPath,
    _admin_listen,
    _api_version,
    _choice,
    _exact_url,
    _redis_url,
    _source_name,
    _tcp_listen,
    parse_listen,
)

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
